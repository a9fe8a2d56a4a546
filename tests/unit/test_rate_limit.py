"""RateLimiter: rate parsing, the token bucket, waiting, per-key buckets."""

from __future__ import annotations

import anyio
import pytest

import aio_client as ac
from aio_client import RateLimitedError, RateLimiter
from aio_client.policies import parse_rate


class FakeClock:
    """A monotonic clock that moves only when told to."""

    def __init__(self, now: float = 500.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


async def noop(*args: object, **kwargs: object) -> str:
    return "ran"


@pytest.mark.parametrize(
    ("rate", "expected"),
    [
        ("100/minute", (100, 60.0)),
        ("10/second", (10, 1.0)),
        ("5/hour", (5, 3600.0)),
        ("1/day", (1, 86400.0)),
        ("10/s", (10, 1.0)),
        ("3/m", (3, 60.0)),
        ("2/h", (2, 3600.0)),
        ("7/d", (7, 86400.0)),
        (" 20 / Minute ", (20, 60.0)),
        ((3, 0.5), (3, 0.5)),
        ((1, 2), (1, 2.0)),
    ],
)
def test_rates_parse(rate: str | tuple[int, float], expected: tuple[int, float]) -> None:
    """Strings with second|minute|hour|day or s|m|h|d, and (count, period) pairs, parse."""
    assert parse_rate(rate) == expected
    assert RateLimiter(rate).rate == expected


@pytest.mark.parametrize(
    "rate",
    [
        "100/minutes",
        "100 per minute",
        "100",
        "/minute",
        "0/second",
        "-1/second",
        "1.5/second",
        "10/0s",
        "",
        "100/week",
        (0, 1.0),
        (1, 0),
        (1, -1.0),
        (1, float("inf")),
        (1, float("nan")),
        (True, 1.0),
        (10**400, 1.0),
        (1, 2, 3),
        100,
        None,
    ],
)
def test_invalid_rates_are_config_errors(rate: object) -> None:
    """A rate that cannot be read is a ConfigError (a ValueError), never 'no limit'."""
    with pytest.raises(ac.ConfigError) as info:
        RateLimiter(rate)  # type: ignore[arg-type]
    assert isinstance(info.value, ValueError)


def test_other_settings_are_validated() -> None:
    """burst, max_wait, key, max_keys, clock are checked at construction."""
    for options, name in [
        ({"burst": 0}, "burst"),
        ({"burst": 10**400}, "burst"),
        ({"max_wait": -1}, "max_wait"),
        ({"max_wait": float("inf")}, "max_wait"),
        ({"key": "tenant"}, "key"),
        ({"max_keys": 0}, "max_keys"),
        ({"clock": 1.0}, "clock"),
    ]:
        with pytest.raises(ac.ConfigError, match=name):
            RateLimiter("1/s", **options)  # type: ignore[arg-type]


async def test_bucket_allows_a_burst_then_refills_at_the_rate() -> None:
    """'4/second': four at once, then one every 0.25 s, refusals carrying retry_after."""
    clock = FakeClock()
    limiter = RateLimiter("4/second", clock=clock)
    guarded = limiter(noop)
    for _ in range(4):
        assert await guarded() == "ran"
    with pytest.raises(RateLimitedError) as info:
        await guarded()
    assert info.value.retry_after == pytest.approx(0.25)
    assert info.value.may_have_reached_server is False
    assert isinstance(info.value, ac.AioClientError)
    clock.advance(0.1)
    with pytest.raises(RateLimitedError) as info:
        await guarded()
    assert info.value.retry_after == pytest.approx(0.15)
    clock.advance(0.15)
    assert await guarded() == "ran"
    clock.advance(10.0)  # idle: the bucket fills to its capacity, no more
    assert limiter.available() == pytest.approx(4.0)


async def test_burst_sets_the_bucket_size() -> None:
    """burst=1 with '60/minute' allows one call per second, no burst."""
    clock = FakeClock()
    limiter = RateLimiter("60/minute", burst=1, clock=clock)
    assert limiter.try_acquire() == 0.0
    assert limiter.try_acquire() == pytest.approx(1.0)
    clock.advance(1.0)
    assert limiter.try_acquire() == 0.0


async def test_per_key_buckets_are_independent_and_bounded() -> None:
    """Each key has its own bucket; beyond max_keys the least recently used is dropped."""
    clock = FakeClock()
    limiter = RateLimiter("1/minute", key=lambda tenant, **_: tenant, max_keys=2, clock=clock)
    guarded = limiter(noop)
    await guarded("a")
    await guarded("b")
    with pytest.raises(RateLimitedError, match="'a'"):
        await guarded("a")
    await guarded("c")  # a third key: "b", least recently used, is dropped
    with pytest.raises(RateLimitedError):
        await guarded("a")
    with pytest.raises(RateLimitedError):
        await guarded("c")
    assert await guarded("b") == "ran"  # forgotten, so it starts again full


async def test_waiting_callers_are_served_in_order_at_the_rate() -> None:
    """With max_wait, callers over the limit wait their turn: one every period / count."""
    limiter = RateLimiter("2/second", max_wait=5.0)
    arrivals: list[float] = []

    async def call() -> None:
        await limiter.acquire()
        arrivals.append(anyio.current_time())

    start = anyio.current_time()
    async with anyio.create_task_group() as tg:
        for _ in range(6):
            tg.start_soon(call)
    offsets = [round(at - start, 3) for at in arrivals]
    assert offsets == [0.0, 0.0, 0.5, 1.0, 1.5, 2.0]


async def test_wait_longer_than_max_wait_is_refused() -> None:
    """A wait above max_wait is refused at once, not slept through."""
    limiter = RateLimiter("1/second", max_wait=0.5)
    await limiter.acquire()
    start = anyio.current_time()
    with pytest.raises(RateLimitedError) as info:
        await limiter.acquire()
    assert info.value.retry_after == pytest.approx(1.0)
    assert anyio.current_time() == start


async def test_wait_past_the_ambient_deadline_is_refused() -> None:
    """A wait the caller's deadline cannot cover is refused at once."""
    limiter = RateLimiter("1/second", max_wait=5.0)
    await limiter.acquire()
    with ac.ambient(timeout=0.5), pytest.raises(RateLimitedError):
        await limiter.acquire()
    with ac.ambient(timeout=2.0):
        await limiter.acquire()  # 1 s of waiting fits


async def test_cancelled_waiter_returns_its_token() -> None:
    """A waiter cancelled mid-wait gives its reservation back to the bucket."""
    limiter = RateLimiter("1/second", max_wait=10.0)
    await limiter.acquire()
    with anyio.move_on_after(0.2):
        await limiter.acquire()
    # Only the first token is spent; the next is due 1 s after it, not 2 s.
    start = anyio.current_time()
    await limiter.acquire()
    assert anyio.current_time() - start == pytest.approx(0.8)


async def test_async_with_takes_from_the_shared_bucket() -> None:
    """async with takes a token; a keyed limiter refuses async with (the key is unknown)."""
    clock = FakeClock()
    limiter = RateLimiter((1, 10.0), clock=clock)
    async with limiter:
        pass
    with pytest.raises(RateLimitedError):
        async with limiter:
            pytest.fail("entered without a token")
    keyed = RateLimiter("1/s", key=lambda *args: args[0])
    with pytest.raises(TypeError, match="keyed"):
        async with keyed:
            pass
