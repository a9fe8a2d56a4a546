"""The retry budget and the delay providers."""

from __future__ import annotations

import anyio
import pytest

import aio_client as ac
from aio_client._retry_after import parse_retry_after
from aio_client.transports import MemoryTransport


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_budget_allows_ratio_of_calls_plus_reserve() -> None:
    """Withdrawals are capped at reserve + ratio * deposits within the window."""
    clock = FakeClock()
    budget = ac.RetryBudget(ratio=0.1, min_per_second=0.5, ttl=10.0, clock=clock)  # reserve 5
    for _ in range(100):
        budget.deposit()
    granted = sum(budget.try_withdraw() for _ in range(50))
    assert granted == 15
    assert budget.exhausted_count == 35


def test_budget_window_forgets_old_activity() -> None:
    """After ttl seconds, old deposits and withdrawals no longer count."""
    clock = FakeClock()
    budget = ac.RetryBudget(ratio=0.5, min_per_second=0.0, ttl=10.0, clock=clock)
    for _ in range(10):
        budget.deposit()
    assert sum(budget.try_withdraw() for _ in range(10)) == 5
    clock.now = 10.5
    assert budget.try_withdraw() is False
    budget.deposit()
    budget.deposit()
    assert budget.try_withdraw() is True
    assert budget.balance() == pytest.approx(0.0)


def test_budget_deposits_leave_the_window_bucket_by_bucket() -> None:
    """Deposits made at different times expire in turn, ttl seconds after each."""
    clock = FakeClock()
    budget = ac.RetryBudget(ratio=1.0, min_per_second=0.0, ttl=10.0, clock=clock)
    for at, calls in ((0.5, 4), (3.2, 2), (9.9, 1)):
        clock.now = at
        for _ in range(calls):
            budget.deposit()
    assert budget.balance() == pytest.approx(7.0)
    for at, left in ((10.6, 3.0), (13.3, 1.0), (19.95, 0.0)):
        clock.now = at
        assert budget.balance() == pytest.approx(left), at
    clock.now = 25.0
    budget.deposit()
    assert budget.balance() == pytest.approx(1.0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"ratio": -0.1},
        {"ratio": float("nan")},
        {"ttl": 0},
        {"min_per_second": -1},
        {"ratio": "x"},
        {"clock": 5.0},
    ],
)
def test_budget_rejects_bad_settings(kwargs: dict[str, object]) -> None:
    """Negative, NaN, zero-ttl or non-number settings are ConfigErrors."""
    with pytest.raises(ac.ConfigError):
        ac.RetryBudget(**kwargs)  # type: ignore[arg-type]


def test_exponential_delays_full_jitter_and_cap() -> None:
    """Delays are uniform up to base * 2^(n-1), capped at max_delay."""
    top = ac.exponential_delays(0.1, max_delay=1.0, random_fn=lambda: 0.999999)
    assert [round(top(n), 3) for n in (1, 2, 3, 4, 5, 50)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    bottom = ac.exponential_delays(0.1, random_fn=lambda: 0.0)
    assert bottom(3) == 0.0
    plain = ac.exponential_delays(0.1, max_delay=1.0, jitter=False)
    assert plain(3) == pytest.approx(0.4)


def test_delay_providers_reject_bad_values() -> None:
    """Negative delays, max below min and multipliers below 1 are ConfigErrors."""
    with pytest.raises(ac.ConfigError, match="delay"):
        ac.constant_delays(-1)
    with pytest.raises(ac.ConfigError, match="max_delay"):
        ac.linear_delays(1.0, 0.1, max_delay=0.5)
    with pytest.raises(ac.ConfigError, match="multiplier"):
        ac.exponential_delays(0.1, multiplier=0.5)


def test_linear_delays_grow_and_cap() -> None:
    """Linear delays grow by step and stop at max_delay."""
    delays = ac.linear_delays(0.1, 0.5, max_delay=1.0)
    assert [delays(n) for n in (1, 2, 3)] == [0.1, 0.6, 1.0]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("5", 5.0),
        (" 0 ", 0.0),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),
        ("soon", None),
        ("-3", None),
        ("", None),
    ],
)
def test_parse_retry_after(value: str, expected: float | None) -> None:
    """Retry-After: delta-seconds, past HTTP dates give 0, garbage gives None."""
    assert parse_retry_after(value) == expected


def test_parse_retry_after_future_date() -> None:
    """A future HTTP date gives the seconds until it."""
    assert (
        parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", wall_clock=lambda: 1445412480.0) == 10.0
    )


async def test_a_clients_calls_count_in_the_budget_on_the_loops_clock() -> None:
    """Each call deposits at the loop's time of the call (the client passes its own reading),
    so deposits leave the window ``ttl`` seconds later on that clock."""

    async def ok(_: ac.Request, /) -> ac.Response:
        return ac.Response(200)

    budget = ac.RetryBudget(ratio=1.0, min_per_second=0.0, ttl=10.0)
    async with ac.Client(MemoryTransport(ok), "http://svc.test", budget=budget) as client:
        for _ in range(5):
            await client.get("/")
        assert budget.balance() == pytest.approx(5.0)
        await anyio.sleep(11.0)  # virtual time in the unit suite
        assert budget.balance() == pytest.approx(0.0)
        await client.get("/")
        assert budget.balance() == pytest.approx(1.0)
