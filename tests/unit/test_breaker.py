"""CircuitBreaker: both opening modes, half-open probing, epochs, listeners, cancellation."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import anyio
import anyio.lowlevel
import pytest

import aio_client as ac
from aio_client import CircuitBreaker, CircuitState
from aio_client import CircuitOpenError as CircuitBreakerError

CLOSED, OPEN, HALF_OPEN = CircuitState.CLOSED, CircuitState.OPEN, CircuitState.HALF_OPEN


class FakeClock:
    """A monotonic clock that moves only when told to."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class DownError(ConnectionError):
    """The failure the tests' dependencies raise."""


async def ok() -> str:
    return "ok"


async def boom() -> str:
    raise DownError("down")


async def fail(breaker: CircuitBreaker, times: int = 1) -> None:
    for _ in range(times):
        with pytest.raises(DownError):
            await breaker.call(boom)


def consecutive(clock: FakeClock, **options: object) -> CircuitBreaker:
    settings: dict[str, object] = {"failure_threshold": 3, "break_duration": 10.0, "clock": clock}
    settings.update(options)
    return CircuitBreaker(**settings)  # type: ignore[arg-type]


# -- consecutive mode ------------------------------------------------------------


async def test_opens_after_threshold_consecutive_failures() -> None:
    """Three failures in a row open it; the next call is refused without running."""
    clock = FakeClock()
    breaker = consecutive(clock)
    await fail(breaker, 2)
    assert breaker.state is CLOSED
    assert breaker.failure_count == 2
    await fail(breaker)
    assert breaker.state is OPEN
    ran = False

    async def work() -> None:
        nonlocal ran
        ran = True

    with pytest.raises(ac.CircuitOpenError) as info:
        await breaker.call(work)
    assert not ran
    assert info.value.retry_after == pytest.approx(10.0)
    assert info.value.may_have_reached_server is False


async def test_success_resets_the_consecutive_count() -> None:
    """A success between failures starts the count again."""
    breaker = consecutive(FakeClock())
    await fail(breaker, 2)
    assert await breaker.call(ok) == "ok"
    await fail(breaker, 2)
    assert breaker.state is CLOSED
    assert breaker.failure_count == 2


async def test_break_duration_counts_from_the_moment_it_opened() -> None:
    """retry_after shrinks with the clock; at break_duration a probe is let in."""
    clock = FakeClock()
    breaker = consecutive(clock)
    await fail(breaker, 3)
    clock.advance(4.0)
    with pytest.raises(ac.CircuitOpenError) as info:
        await breaker.call(ok)
    assert info.value.retry_after == pytest.approx(6.0)
    assert breaker.open_remaining == pytest.approx(6.0)
    clock.advance(6.0)
    assert breaker.state is HALF_OPEN  # a view: nothing moved yet
    assert await breaker.call(ok) == "ok"
    assert breaker.state is CLOSED


async def test_probe_failure_reopens_for_a_full_break() -> None:
    """A failed probe opens it again, for break_duration from the re-opening."""
    clock = FakeClock()
    breaker = consecutive(clock)
    await fail(breaker, 3)
    clock.advance(10.0)
    await fail(breaker)
    assert breaker.state is OPEN
    clock.advance(9.9)
    with pytest.raises(ac.CircuitOpenError):
        await breaker.call(ok)
    clock.advance(0.1)
    assert await breaker.call(ok) == "ok"


async def test_success_threshold_needs_that_many_probe_successes() -> None:
    """With success_threshold=3 it stays half-open until the third probe succeeds."""
    clock = FakeClock()
    breaker = consecutive(clock, success_threshold=3)
    await fail(breaker, 3)
    clock.advance(10.0)
    await breaker.call(ok)
    await breaker.call(ok)
    assert breaker.state is HALF_OPEN
    await breaker.call(ok)
    assert breaker.state is CLOSED


async def test_non_matching_exceptions_are_neither_failure_nor_success() -> None:
    """An exception outside expected_exception neither counts nor resets the count."""
    breaker = consecutive(FakeClock(), expected_exception=ConnectionError)

    async def bug() -> None:
        raise KeyError("not the dependency's fault")

    await fail(breaker, 2)
    for _ in range(5):
        with pytest.raises(KeyError):
            await breaker.call(bug)
    assert breaker.failure_count == 2
    await fail(breaker)
    assert breaker.state is OPEN


async def test_failure_predicate_filters_matching_exceptions() -> None:
    """Only exceptions the predicate accepts count as failures."""
    breaker = consecutive(
        FakeClock(), failure_threshold=1, failure_predicate=lambda exc: "fatal" in str(exc)
    )

    async def mild() -> None:
        raise DownError("mild")

    async def fatal() -> None:
        raise DownError("fatal")

    with pytest.raises(DownError):
        await breaker.call(mild)
    assert breaker.state is CLOSED
    with pytest.raises(DownError):
        await breaker.call(fatal)
    assert breaker.state is OPEN


async def test_cancellation_is_neither_success_nor_failure() -> None:
    """A cancelled call neither resets the count nor adds to it."""
    breaker = consecutive(FakeClock())
    await fail(breaker, 2)
    with anyio.move_on_after(1.0):
        await breaker.call(anyio.sleep_forever)
    assert breaker.failure_count == 2
    await fail(breaker)
    assert breaker.state is OPEN


async def test_cancelled_probe_gives_its_slot_back() -> None:
    """A probe cancelled in half-open frees its slot; the breaker stays half-open."""
    clock = FakeClock()
    breaker = consecutive(clock)
    await fail(breaker, 3)
    clock.advance(10.0)
    with anyio.move_on_after(1.0):
        await breaker.call(anyio.sleep_forever)
    assert breaker.state is HALF_OPEN
    assert await breaker.call(ok) == "ok"
    assert breaker.state is CLOSED


async def test_late_success_after_opening_does_not_close_it() -> None:
    """A call admitted while closed that succeeds after the breaker opened changes nothing."""
    breaker = consecutive(FakeClock())
    release = anyio.Event()

    async def slow() -> str:
        await release.wait()
        return "late"

    results: list[str] = []

    async def run_slow() -> None:
        results.append(await breaker.call(slow))

    async with anyio.create_task_group() as tg:
        tg.start_soon(run_slow)
        await anyio.wait_all_tasks_blocked()
        await fail(breaker, 3)
        assert breaker.state is OPEN
        release.set()
    assert results == ["late"]
    assert breaker.state is OPEN


async def test_late_failure_after_closing_does_not_count() -> None:
    """A call from an earlier closed period failing after a recovery adds no failure."""
    clock = FakeClock()
    breaker = consecutive(clock, failure_threshold=1)
    release = anyio.Event()

    async def slow_failure() -> None:
        await release.wait()
        raise DownError("stale")

    async def run_slow() -> None:
        with pytest.raises(DownError):
            await breaker.call(slow_failure)

    async with anyio.create_task_group() as tg:
        tg.start_soon(run_slow)
        await anyio.wait_all_tasks_blocked()
        await fail(breaker)
        clock.advance(10.0)
        await breaker.call(ok)
        assert breaker.state is CLOSED
        release.set()
    assert breaker.state is CLOSED
    assert breaker.failure_count == 0


async def test_stale_probe_from_an_earlier_half_open_does_not_close() -> None:
    """A probe admitted in one half-open period cannot close the breaker in the next."""
    clock = FakeClock()
    breaker = consecutive(clock, half_open_max_calls=2)
    await fail(breaker, 3)
    clock.advance(10.0)
    release = anyio.Event()

    async def slow_probe() -> str:
        await release.wait()
        return "stale"

    async with anyio.create_task_group() as tg:
        tg.start_soon(breaker.call, slow_probe)
        await anyio.wait_all_tasks_blocked()
        await fail(breaker)  # the second probe fails: open again
        clock.advance(10.0)
        assert breaker.state is HALF_OPEN
        release.set()
    assert breaker.state is HALF_OPEN
    # Both probe slots of the new half-open period are still free.
    gate = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(breaker.call, gate.wait)
        tg.start_soon(breaker.call, gate.wait)
        await anyio.wait_all_tasks_blocked()
        with pytest.raises(ac.CircuitOpenError) as info:
            await breaker.call(ok)
        assert info.value.retry_after == 0.0
        gate.set()
    assert breaker.state is CLOSED


# -- half-open under load ----------------------------------------------------------


@pytest.mark.parametrize("probes", [1, 3])
async def test_half_open_admits_exactly_n_of_1000_concurrent_callers(probes: int) -> None:
    """1,000 callers arrive at a half-open breaker with async listeners: exactly N run."""
    clock = FakeClock()
    heard: list[tuple[CircuitState, CircuitState]] = []

    async def slow_listener(breaker: CircuitBreaker, old: CircuitState, new: CircuitState) -> None:
        await anyio.sleep(0.01)  # yields: other callers arrive meanwhile
        heard.append((old, new))

    breaker = consecutive(clock, half_open_max_calls=probes, listeners=[slow_listener])
    await fail(breaker, 3)
    clock.advance(10.0)
    gate = anyio.Event()
    settled = anyio.Event()  # every caller is running a probe or was refused
    running = peak = refused = 0

    async def probe() -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        if running + refused == 1000:
            settled.set()
        await gate.wait()
        running -= 1

    guarded = breaker(probe)

    async def caller() -> None:
        nonlocal refused
        try:
            await guarded()
        except ac.CircuitOpenError:
            refused += 1
            if running + refused == 1000:
                settled.set()

    async with anyio.create_task_group() as tg:
        for _ in range(1000):
            tg.start_soon(caller)
        with anyio.fail_after(5.0):
            await settled.wait()
        await anyio.wait_all_tasks_blocked()
        assert (running, refused) == (probes, 1000 - probes)
        gate.set()
    assert peak == probes
    assert breaker.state is CLOSED
    assert heard == [(CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, CLOSED)]


async def test_cancellation_storm_on_probes_leaves_slots_intact() -> None:
    """Cancelling every probe and waiter at once leaves half-open with all slots free."""
    clock = FakeClock()
    breaker = consecutive(clock, half_open_max_calls=4)
    await fail(breaker, 3)
    clock.advance(10.0)
    async with anyio.create_task_group() as tg:
        for _ in range(200):
            tg.start_soon(_swallow_refusal, breaker)
        await anyio.wait_all_tasks_blocked()
        tg.cancel_scope.cancel()
    assert breaker.state is HALF_OPEN
    gate = anyio.Event()
    admitted = 0

    async def probe() -> None:
        nonlocal admitted
        admitted += 1
        await gate.wait()

    async with anyio.create_task_group() as tg:
        for _ in range(10):
            tg.start_soon(_swallow_refusal, breaker, probe)
        await anyio.wait_all_tasks_blocked()
        assert admitted == 4
        gate.set()


async def _swallow_refusal(breaker: CircuitBreaker, work: object = anyio.sleep_forever) -> None:
    try:
        await breaker.call(work)  # type: ignore[arg-type]
    except ac.CircuitOpenError:
        pass


# -- ratio mode --------------------------------------------------------------------


def ratio_breaker(clock: FakeClock, **options: object) -> CircuitBreaker:
    settings: dict[str, object] = {
        "failure_ratio": 0.5,
        "minimum_throughput": 10,
        "sampling_duration": 10.0,
        "buckets": 10,
        "break_duration": 5.0,
        "clock": clock,
    }
    settings.update(options)
    return CircuitBreaker(**settings)  # type: ignore[arg-type]


async def test_ratio_mode_waits_for_minimum_throughput() -> None:
    """Nine failures out of nine calls do not open it below a throughput of ten."""
    breaker = ratio_breaker(FakeClock())
    await fail(breaker, 9)
    assert breaker.state is CLOSED
    await fail(breaker)
    assert breaker.state is OPEN


async def test_ratio_mode_opens_at_the_failure_ratio() -> None:
    """Interleaved outcomes open it exactly when failures reach half of the calls."""
    breaker = ratio_breaker(FakeClock())
    for _ in range(6):
        await breaker.call(ok)
    await fail(breaker, 5)  # 5 of 11: below one half
    assert breaker.state is CLOSED
    await fail(breaker)  # 6 of 12
    assert breaker.state is OPEN


async def test_ratio_mode_forgets_outcomes_older_than_the_window() -> None:
    """Failures that slid out of the sampling window no longer count."""
    clock = FakeClock()
    breaker = ratio_breaker(clock)
    await fail(breaker, 9)
    clock.advance(10.0)  # every bucket of those failures has expired
    await fail(breaker)
    assert breaker.state is CLOSED
    assert breaker.failure_count == 1


async def test_ratio_mode_buckets_slide_one_at_a_time() -> None:
    """Once the oldest bucket leaves the window its failures drop out, newer successes stay."""
    clock = FakeClock()
    breaker = ratio_breaker(clock, minimum_throughput=4)
    await fail(breaker, 2)
    clock.advance(5.0)
    for _ in range(2):
        await breaker.call(ok)
    clock.advance(5.0)  # the two failures leave the window; the successes do not
    await fail(breaker)
    assert breaker.state is CLOSED  # 1 failure of 3 calls (3 of 5 had they stayed)
    await fail(breaker)
    assert breaker.state is OPEN  # 2 of 4


async def test_slow_call_ratio_opens_the_breaker() -> None:
    """Calls slower than slow_call_duration open it at slow_call_ratio, even if they succeed."""
    clock = FakeClock()
    breaker = ratio_breaker(
        clock,
        failure_ratio=1.0,
        minimum_throughput=4,
        slow_call_duration=1.0,
        slow_call_ratio=0.5,
    )

    async def slow() -> str:
        clock.advance(1.5)
        return "slow"

    await breaker.call(ok)
    await breaker.call(ok)
    await breaker.call(slow)
    assert breaker.state is CLOSED
    await breaker.call(slow)
    assert breaker.state is OPEN


async def test_slow_probe_reopens() -> None:
    """In half-open, a probe slower than slow_call_duration counts as failed."""
    clock = FakeClock()
    breaker = ratio_breaker(clock, failure_ratio=0.5, minimum_throughput=1, slow_call_duration=1.0)
    await fail(breaker)
    clock.advance(5.0)

    async def slow() -> str:
        clock.advance(2.0)
        return "slow"

    await breaker.call(slow)
    assert breaker.state is OPEN


# -- listeners ----------------------------------------------------------------------


async def test_sync_and_async_listeners_hear_every_change_in_order() -> None:
    """Both kinds hear CLOSED→OPEN→HALF_OPEN→CLOSED, before the triggering call returns."""
    clock = FakeClock()
    sync_heard: list[CircuitState] = []
    async_heard: list[CircuitState] = []

    def on_sync(breaker: CircuitBreaker, old: CircuitState, new: CircuitState) -> None:
        assert breaker.state is new  # the state is complete when listeners run
        sync_heard.append(new)

    async def on_async(breaker: CircuitBreaker, old: CircuitState, new: CircuitState) -> None:
        await anyio.lowlevel.checkpoint()
        async_heard.append(new)

    breaker = consecutive(clock, failure_threshold=1, listeners=[on_sync, on_async])
    await fail(breaker)
    assert sync_heard == async_heard == [OPEN]
    clock.advance(10.0)
    await breaker.call(ok)
    assert sync_heard == async_heard == [OPEN, HALF_OPEN, CLOSED]


async def test_async_listener_may_use_the_breaker_without_deadlock() -> None:
    """A listener that calls through the same breaker runs: no lock is held while it is awaited."""
    clock = FakeClock()
    inner: list[str] = []

    async def on_change(breaker: CircuitBreaker, old: CircuitState, new: CircuitState) -> None:
        if new is CLOSED:
            inner.append(await breaker.call(ok))

    breaker = consecutive(clock, failure_threshold=1, listeners=[on_change])
    await fail(breaker)
    clock.advance(10.0)
    with anyio.fail_after(1.0):
        await breaker.call(ok)
    assert inner == ["ok"]


async def test_failing_listener_is_logged_and_does_not_break_the_call(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A listener raising is logged; the call's own outcome is what the caller sees."""

    def broken(breaker: CircuitBreaker, old: CircuitState, new: CircuitState) -> None:
        raise RuntimeError("listener bug")

    async def broken_async(breaker: CircuitBreaker, old: CircuitState, new: CircuitState) -> None:
        raise RuntimeError("async listener bug")

    breaker = consecutive(FakeClock(), failure_threshold=1, listeners=[broken, broken_async])
    with caplog.at_level(logging.ERROR, logger="aio_client.policies"):
        await fail(breaker)
    assert breaker.state is OPEN
    assert sum("listener" in record.message for record in caplog.records) == 2


async def test_listener_can_be_removed() -> None:
    """A removed listener hears nothing more; removing an unknown one is a ValueError."""
    heard: list[CircuitState] = []

    def listener(breaker: CircuitBreaker, old: CircuitState, new: CircuitState) -> None:
        heard.append(new)

    breaker = consecutive(FakeClock(), failure_threshold=1)
    breaker.add_listener(listener)
    breaker.remove_listener(listener)
    await fail(breaker)
    assert heard == []
    with pytest.raises(ValueError, match="not a listener"):
        breaker.remove_listener(listener)


# -- other ways to use it -------------------------------------------------------------


async def test_async_with_counts_and_refuses() -> None:
    """async with records the block's outcome and refuses entry when open."""
    breaker = consecutive(FakeClock(), failure_threshold=2)
    for _ in range(2):
        with pytest.raises(DownError):
            async with breaker:
                raise DownError("down")
    entered = False
    with pytest.raises(CircuitBreakerError):
        async with breaker:
            entered = True
    assert not entered


async def test_async_with_is_per_task() -> None:
    """Concurrent async-with blocks in many tasks each record their own outcome."""
    breaker = consecutive(FakeClock(), failure_threshold=50)
    finished = 0

    async def block(index: int) -> None:
        nonlocal finished
        try:
            async with breaker:
                await anyio.sleep(0.0 if index < 20 else 0.01 * (index % 3 + 1))
                if index >= 20:
                    raise DownError("down")
        except DownError:
            pass
        finished += 1

    async with anyio.create_task_group() as tg:
        for index in range(40):
            tg.start_soon(block, index)
    assert finished == 40
    # The 20 failing blocks finish last, interleaved among themselves: all 20 count.
    assert breaker.failure_count == 20


async def test_default_clock_is_the_event_loop_clock() -> None:
    """Without an injected clock, break_duration passes on the (virtual) loop clock."""
    breaker = CircuitBreaker(failure_threshold=1, break_duration=30.0)
    with pytest.raises(DownError):
        await breaker.call(boom)
    await anyio.sleep(29.0)
    assert breaker.opened
    await anyio.sleep(1.0)
    assert await breaker.call(ok) == "ok"
    assert breaker.closed


def test_settings_are_validated_at_construction() -> None:
    """Out-of-range or contradictory settings raise ConfigError naming the parameter."""
    bad: list[tuple[dict[str, object], str]] = [
        ({"failure_threshold": 0}, "failure_threshold"),
        ({"failure_threshold": 2, "failure_ratio": 0.5}, "not both"),
        ({"failure_ratio": 1.5}, "failure_ratio"),
        ({"failure_ratio": 0.5, "minimum_throughput": 0}, "minimum_throughput"),
        ({"failure_ratio": 0.5, "sampling_duration": -1}, "sampling_duration"),
        ({"failure_ratio": 0.5, "buckets": 0}, "buckets"),
        ({"slow_call_duration": 1.0}, "slow_call_duration"),
        ({"failure_ratio": 0.5, "slow_call_ratio": 0}, "slow_call_ratio"),
        ({"break_duration": float("inf")}, "break_duration"),
        ({"half_open_max_calls": 0}, "half_open_max_calls"),
        ({"success_threshold": True}, "success_threshold"),
        ({"expected_exception": KeyboardInterrupt}, "expected_exception"),
        ({"expected_exception": "ValueError"}, "expected_exception"),
        ({"failure_predicate": 3}, "failure_predicate"),
        ({"listeners": [3]}, "listener"),
    ]
    for options, name in bad:
        with pytest.raises(ac.ConfigError, match=name):
            CircuitBreaker(**options)  # type: ignore[arg-type]
    assert issubclass(ac.ConfigError, ValueError)


def test_decorating_a_sync_function_is_refused() -> None:
    """The breaker guards coroutines only; a plain function is a ConfigError."""
    with pytest.raises(ac.ConfigError, match="not an async function"):
        CircuitBreaker()(lambda: None)  # type: ignore[arg-type, return-value]  # deliberately sync


def test_circuit_breaker_error_is_circuit_open_error() -> None:
    """CircuitBreakerError is the core CircuitOpenError under aiocircuitbreaker's name."""
    assert CircuitBreakerError is ac.CircuitOpenError


# -- the admission ticket --------------------------------------------------------


async def test_ticket_settles_once() -> None:
    """A ticket records one outcome; later settling calls change nothing."""
    clock = FakeClock()
    breaker = consecutive(clock, failure_threshold=1)
    ticket = breaker.admit()
    assert not ticket.settled
    assert ticket.succeeded() is False
    assert ticket.settled
    assert ticket.failed(DownError("late")) is False
    assert ticket.timed_out() is False
    ticket.released()
    assert breaker.state is CLOSED
    assert breaker.failure_count == 0


async def test_released_ticket_gives_its_probe_slot_back_once() -> None:
    """Releasing a probe frees its slot for one more probe, however often it is called."""
    clock = FakeClock()
    breaker = consecutive(clock, failure_threshold=1)
    await fail(breaker)
    clock.advance(10.0)
    probe = breaker.admit()
    with pytest.raises(ac.CircuitOpenError):
        breaker.admit()
    probe.released()
    probe.released()
    second = breaker.admit()
    with pytest.raises(ac.CircuitOpenError):
        breaker.admit()
    assert breaker.state is HALF_OPEN
    assert second.succeeded() is False
    assert breaker.state is CLOSED


async def test_ticket_tells_async_listeners_only_when_awaited() -> None:
    """A recording that changes the state returns True; notify() then delivers it."""
    heard: list[CircuitState] = []

    async def listener(_: CircuitBreaker, old: CircuitState, new: CircuitState) -> None:
        heard.append(new)

    breaker = consecutive(FakeClock(), failure_threshold=1, listeners=[listener])
    ticket = breaker.admit()
    assert ticket.failed(DownError("down")) is True
    assert ticket.waiting
    assert heard == []
    await ticket.notify()
    assert heard == [OPEN]
    assert not ticket.waiting


async def _through_decorator(breaker: CircuitBreaker) -> None:
    @breaker
    async def upstream() -> None:
        raise ac.DeadlineExceededError("upstream too slow")

    await upstream()


async def _through_call(breaker: CircuitBreaker) -> None:
    async def upstream() -> None:
        raise ac.DeadlineExceededError("upstream too slow")

    await breaker.call(upstream)


async def _through_async_with(breaker: CircuitBreaker) -> None:
    async with breaker:
        raise ac.DeadlineExceededError("upstream too slow")


async def _through_ticket(breaker: CircuitBreaker) -> None:
    breaker.admit().failed(ac.DeadlineExceededError("upstream too slow"))
    raise ac.DeadlineExceededError("upstream too slow")


@pytest.mark.parametrize(
    "entry", [_through_decorator, _through_call, _through_async_with, _through_ticket]
)
async def test_deadline_rule_holds_in_every_entry_point(
    entry: Callable[[CircuitBreaker], Awaitable[None]],
) -> None:
    """A DeadlineExceededError counts only when the call had min_deadline_budget at admission."""
    breaker = CircuitBreaker(failure_threshold=1, min_deadline_budget=1.0)
    with ac.ambient(timeout=0.2), pytest.raises(ac.DeadlineExceededError):
        await entry(breaker)
    assert breaker.state is CLOSED
    with ac.ambient(timeout=3.0), pytest.raises(ac.DeadlineExceededError):
        await entry(breaker)
    assert breaker.state is OPEN
