"""Timeout, Fallback and retry: the ambient deadline, substitutes, sequential retries."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Never, assert_type

import anyio
import pytest

import aio_client as ac
from aio_client import Fallback, Timeout, retry

# -- Timeout --------------------------------------------------------------------------


async def test_timeout_cancels_a_slow_call_and_raises_deadline_exceeded() -> None:
    """The call is cancelled at `seconds`; DeadlineExceededError (a TimeoutError) is raised."""
    cancelled = False

    @Timeout(0.5)
    async def slow() -> None:
        nonlocal cancelled
        try:
            await anyio.sleep(10.0)
        except anyio.get_cancelled_exc_class():
            cancelled = True
            raise

    start = anyio.current_time()
    with pytest.raises(ac.DeadlineExceededError, match=r"0\.5 s timeout") as info:
        await slow()
    assert anyio.current_time() - start == pytest.approx(0.5)
    assert cancelled
    assert isinstance(info.value, TimeoutError)


async def test_timeout_passes_results_and_errors_through() -> None:
    """A call that finishes in time returns its value or raises its own error."""
    timeout = Timeout(1.0)

    async def value() -> int:
        await anyio.sleep(0.1)
        return 42

    async def broken() -> None:
        raise KeyError("own error")

    assert await timeout.call(value) == 42
    with pytest.raises(KeyError):
        await timeout.call(broken)


async def test_timeout_sets_the_ambient_deadline_for_the_call() -> None:
    """Inside, current_deadline() is the nearest of the timeout and the inherited deadline."""
    seen: list[float] = []

    @Timeout(2.0)
    async def observe() -> None:
        deadline = ac.current_deadline()
        assert deadline is not None
        seen.append(round(deadline.remaining(), 3))

    await observe()
    with ac.ambient(timeout=0.5):
        await observe()
    with ac.ambient(timeout=5.0):
        await observe()
    assert seen == [2.0, 0.5, 2.0]
    assert ac.current_deadline() is None  # reset on the way out


async def test_inherited_deadline_is_enforced_and_named() -> None:
    """A nearer inherited deadline ends the call; the error says it was the inherited one."""
    with ac.ambient(timeout=0.3):
        start = anyio.current_time()
        with pytest.raises(ac.DeadlineExceededError, match="inherited"):
            await Timeout(5.0).call(anyio.sleep, 10.0)
        assert anyio.current_time() - start == pytest.approx(0.3)


async def test_expired_deadline_does_not_run_the_call() -> None:
    """With the inherited deadline already past, the call is not started."""
    ran = False

    async def work() -> None:
        nonlocal ran
        ran = True

    with ac.ambient(timeout=0.0), pytest.raises(ac.DeadlineExceededError) as info:
        await Timeout(1.0).call(work)
    assert not ran
    assert info.value.may_have_reached_server is False


async def test_timeout_as_async_with() -> None:
    """async with bounds its block, yields the deadline, and resets the ambient one."""
    async with Timeout(1.0) as deadline:
        assert ac.current_deadline() == deadline
        await anyio.sleep(0.5)
    assert ac.current_deadline() is None
    start = anyio.current_time()
    with pytest.raises(ac.DeadlineExceededError):
        async with Timeout(0.25):
            await anyio.sleep(10.0)
    assert anyio.current_time() - start == pytest.approx(0.25)
    assert ac.current_deadline() is None


async def test_outer_cancellation_is_not_turned_into_a_timeout() -> None:
    """A cancellation from outside passes through the Timeout as a cancellation."""
    with anyio.move_on_after(0.2) as outer:
        await Timeout(5.0).call(anyio.sleep, 10.0)
    assert outer.cancelled_caught


def test_timeout_seconds_are_validated() -> None:
    """Zero, negative, infinite or non-numeric budgets are ConfigErrors."""
    for bad in (0, -1.0, float("inf"), "1", None):
        with pytest.raises(ac.ConfigError, match="seconds"):
            Timeout(bad)  # type: ignore[arg-type]


# -- Fallback -------------------------------------------------------------------------


async def test_fallback_value_replaces_a_matching_error() -> None:
    """A matching error gives the substitute; others propagate."""
    fallback: Fallback[str] = Fallback("cached", on=ConnectionError)

    async def down() -> str:
        raise ConnectionError("down")

    async def bug() -> str:
        raise KeyError("bug")

    assert await fallback.call(down) == "cached"
    with pytest.raises(KeyError):
        await fallback.call(bug)


async def test_fallback_callable_gets_the_same_arguments() -> None:
    """A callable substitute (sync or async) is called with the guarded call's arguments."""

    async def async_maker(item: int, *, tag: str) -> str:
        return f"async {item} {tag}"

    cases: tuple[tuple[Callable[..., str | Awaitable[str]], str], ...] = (
        (lambda item, *, tag: f"sync {item} {tag}", "sync 3 x"),
        (async_maker, "async 3 x"),
    )
    for maker, expected in cases:
        # Fallback[str] spelled out: the cases mix sync and async makers.
        @Fallback[str](maker)
        async def fetch(item: int, *, tag: str) -> str:
            raise RuntimeError("down")

        assert await fetch(3, tag="x") == expected


async def test_fallback_infers_the_substitutes_type() -> None:
    """Fallback(async maker), Fallback(sync maker) and Fallback(value) type as the result's type
    (checked by mypy --strict over the tests), and each substitutes at run time."""

    async def async_maker() -> str:
        return "async"

    def sync_maker() -> int:
        return 2

    by_async = Fallback(async_maker)
    by_sync = Fallback(sync_maker)
    by_value = Fallback(1.5)
    assert_type(by_async, Fallback[str])
    assert_type(by_sync, Fallback[int])
    assert_type(by_value, Fallback[float])

    async def down() -> Never:
        raise RuntimeError("down")

    assert (await by_async.call(down), await by_sync.call(down)) == ("async", 2)
    assert await by_value.call(down) == 1.5


async def test_fallback_never_replaces_cancellation() -> None:
    """Even with on=Exception, a cancelled call stays cancelled."""
    fallback: Fallback[str | None] = Fallback("substitute")
    with anyio.move_on_after(0.1) as scope:
        await fallback.call(anyio.sleep, 10.0)
    assert scope.cancelled_caught


def test_fallback_refuses_non_exception_triggers() -> None:
    """on= may only name Exception subclasses: never BaseException or cancellation."""
    for bad in (BaseException, KeyboardInterrupt, (ValueError, "x"), ()):
        with pytest.raises(ac.ConfigError, match="on"):
            Fallback(1, on=bad)  # type: ignore[arg-type]


# -- retry ----------------------------------------------------------------------------


class Flaky:
    """Fails with the given errors in turn, then succeeds; records call times."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.times: list[float] = []

    async def __call__(self, value: str = "done") -> str:
        self.times.append(anyio.current_time())
        if self.errors:
            raise self.errors.pop(0)
        return value


async def test_retry_retries_matching_errors_after_the_delays() -> None:
    """Two ConnectionErrors then success: three calls, 0.1 s apart with constant delays."""
    flaky = Flaky(ConnectionError("a"), ConnectionError("b"))
    guarded = retry(on=ConnectionError, attempts=3, delays=ac.constant_delays(0.1))(flaky)
    assert await guarded("value") == "value"
    start = flaky.times[0]
    assert [round(t - start, 3) for t in flaky.times] == [0.0, 0.1, 0.2]


async def test_retry_gives_up_after_attempts_with_the_last_error() -> None:
    """After `attempts` failures the last error propagates unchanged."""
    last = ConnectionError("third")
    flaky = Flaky(ConnectionError("1"), ConnectionError("2"), last, ConnectionError("4"))
    with pytest.raises(ConnectionError) as info:
        await retry(on=ConnectionError, attempts=3, delays=ac.constant_delays(0.0)).call(flaky)
    assert info.value is last
    assert len(flaky.times) == 3


async def test_retry_does_not_retry_other_errors() -> None:
    """An error outside `on` propagates at once."""
    flaky = Flaky(KeyError("bug"))
    with pytest.raises(KeyError):
        await retry(on=ConnectionError).call(flaky)
    assert len(flaky.times) == 1


async def test_retry_never_retries_cancellation() -> None:
    """A cancelled attempt ends the call: no further attempt starts."""
    attempts = 0

    async def hang() -> None:
        nonlocal attempts
        attempts += 1
        await anyio.sleep(10.0)

    with anyio.move_on_after(0.5):
        await retry(on=Exception, attempts=5, delays=ac.constant_delays(0.0)).call(hang)
    assert attempts == 1


async def test_retry_stops_when_the_budget_is_empty() -> None:
    """A RetryBudget with no reserve allows only ratio x calls of retries."""
    budget = ac.RetryBudget(ratio=0.5, min_per_second=0.0)
    policy = retry(on=ConnectionError, attempts=5, delays=ac.constant_delays(0.0), budget=budget)
    flaky = Flaky(*(ConnectionError(str(n)) for n in range(10)))
    with pytest.raises(ConnectionError):
        await policy.call(flaky)  # one deposit: 0.5 tokens, no retry
    assert len(flaky.times) == 1
    with pytest.raises(ConnectionError):
        await policy.call(flaky)  # two deposits: 1.0 token, one retry
    assert len(flaky.times) == 3
    assert budget.exhausted_count == 2


async def test_retry_stops_when_the_deadline_leaves_no_room() -> None:
    """No retry starts if, after its delay, less than low_timeout of the deadline is left."""
    flaky = Flaky(*(ConnectionError(str(n)) for n in range(10)))
    policy = retry(on=ConnectionError, attempts=10, delays=ac.constant_delays(0.3))
    with ac.ambient(timeout=1.0), pytest.raises(ConnectionError):
        await policy.call(flaky)
    start = flaky.times[0]
    assert [round(t - start, 3) for t in flaky.times] == [0.0, 0.3, 0.6, 0.9]


async def test_retry_does_not_start_with_no_time_left() -> None:
    """With less than low_timeout left, not even the first attempt runs."""
    flaky = Flaky()
    with ac.ambient(timeout=0.001), pytest.raises(ac.DeadlineExceededError):
        await retry(on=ConnectionError).call(flaky)
    assert flaky.times == []


def test_retry_settings_are_validated() -> None:
    """on is required; bad attempts, delays, budget, low_timeout are ConfigErrors."""
    with pytest.raises(TypeError):
        retry()  # type: ignore[call-arg]
    for options, name in [
        ({"on": BaseException}, "on"),
        ({"on": ValueError, "attempts": 0}, "attempts"),
        ({"on": ValueError, "attempts": 101}, "attempts"),
        ({"on": ValueError, "delays": 0.1}, "delays"),
        ({"on": ValueError, "budget": 3}, "budget"),
        ({"on": ValueError, "low_timeout": -1}, "low_timeout"),
    ]:
        with pytest.raises(ac.ConfigError, match=name):
            retry(**options)  # type: ignore[arg-type]
