"""aio_client.compat.aiocircuitbreaker: aiocircuitbreaker 2.0's API and behaviour, 3 fixes aside.

Unit tests run on a virtual-time loop, so the breakers are made inside the
tests and ``anyio.sleep`` moves their clock.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import anyio.lowlevel
import pytest

import aio_client as ac
from aio_client.compat import aiocircuitbreaker as acb
from aio_client.compat.aiocircuitbreaker import CircuitBreaker, CircuitBreakerError, State, circuit


class DownError(ConnectionError):
    """The failure the tests' dependencies raise."""


class Dependency:
    """An async dependency: fails with ``error`` while it is set, waits on ``gate`` if set."""

    def __init__(self) -> None:
        self.calls: list[tuple[tuple[object, ...], dict[str, object]]] = []
        self.error: BaseException | None = None
        self.gate: anyio.Event | None = None

    async def __call__(self, *args: object, **kwargs: object) -> str:
        self.calls.append((args, kwargs))
        if self.gate is not None:
            await self.gate.wait()
        if self.error is not None:
            raise self.error
        return "ok"


def guarded(
    breaker: CircuitBreaker,
) -> tuple[Dependency, Callable[..., Coroutine[Any, Any, str]]]:
    """A dependency and the breaker's decorator around it."""
    dependency = Dependency()

    async def remote(*args: object, **kwargs: object) -> str:
        return await dependency(*args, **kwargs)

    return dependency, breaker(remote)


async def fail(call: Callable[[], Awaitable[object]], times: int = 1) -> None:
    for _ in range(times):
        with pytest.raises(DownError):
            await call()


def state_of(breaker: CircuitBreaker) -> State:
    """``breaker.state``, read afresh (type checkers would narrow the property)."""
    return breaker.state


def raising(exc: BaseException) -> Callable[[], Awaitable[None]]:
    """An async function that raises ``exc``."""

    async def raise_it() -> None:
        raise exc

    return raise_it


async def down() -> str:
    raise DownError("down")


async def up() -> str:
    return "up"


# -- names and construction ------------------------------------------------------


def test_exports_exactly_aiocircuitbreakers_public_names() -> None:
    """The module exports circuit, CircuitBreaker, CircuitBreakerError and State, nothing more."""
    assert acb.__all__ == ["CircuitBreaker", "CircuitBreakerError", "State", "circuit"]


def test_state_members_and_values() -> None:
    """State has CLOSED, OPEN and HALF_OPEN with aiocircuitbreaker's string values."""
    assert [(state.name, state.value) for state in State] == [
        ("CLOSED", "closed"),
        ("OPEN", "open"),
        ("HALF_OPEN", "half_open"),
    ]
    assert State("half_open") is State.HALF_OPEN


def test_class_attributes_hold_the_defaults() -> None:
    """FAILURE_THRESHOLD 5, RECOVERY_TIMEOUT 30, EXPECTED_EXCEPTION Exception, no fallback."""
    assert CircuitBreaker.FAILURE_THRESHOLD == 5
    assert CircuitBreaker.RECOVERY_TIMEOUT == 30
    assert CircuitBreaker.EXPECTED_EXCEPTION is Exception
    assert CircuitBreaker.FALLBACK_FUNCTION is None


async def test_defaults_open_after_five_failures_for_thirty_seconds() -> None:
    """Made with no arguments: any Exception counts, 5 open it, the break is 30 s, name ''."""
    breaker = CircuitBreaker()
    assert breaker.name == ""
    assert breaker.fallback_function is None
    for _ in range(4):
        with pytest.raises(KeyError):
            await breaker.call(raising(KeyError("any Exception")))
    assert breaker.closed
    with pytest.raises(KeyError):
        await breaker.call(raising(KeyError("fifth")))
    assert breaker.opened
    assert breaker.open_remaining == pytest.approx(30.0)


async def test_keyword_and_positional_construction_are_the_same() -> None:
    """CircuitBreaker(3, 10, DownError, 'n', fb) equals the keyword form, in behaviour."""

    def fallback(*args: object, **kwargs: object) -> str:
        return "fallback"

    by_keyword = CircuitBreaker(
        failure_threshold=3,
        recovery_timeout=10,
        expected_exception=DownError,
        name="n",
        fallback_function=fallback,
    )
    by_position = CircuitBreaker(3, 10, DownError, "n", fallback)
    for breaker in (by_keyword, by_position):
        _, remote = guarded(breaker)
        assert breaker.name == "n"
        assert breaker.fallback_function is fallback
        await fail(functools.partial(breaker.call, down), 2)
        assert breaker.closed
        await fail(functools.partial(breaker.call, down))
        assert breaker.opened
        assert breaker.open_remaining == pytest.approx(10.0)
        assert await remote() == "fallback"


async def test_falsy_arguments_take_the_class_defaults() -> None:
    """0 and None fall back to the class attributes, as aiocircuitbreaker's ``or`` does."""
    breaker = CircuitBreaker(0, 0, None, "", None)
    await fail(lambda: breaker.call(down), 4)
    assert breaker.closed
    await fail(lambda: breaker.call(down))
    assert breaker.opened
    assert breaker.open_remaining == pytest.approx(30.0)


async def test_subclass_class_attributes_change_the_defaults() -> None:
    """A subclass's FAILURE_THRESHOLD, RECOVERY_TIMEOUT, EXPECTED_EXCEPTION apply; args win."""

    class Mine(CircuitBreaker):
        FAILURE_THRESHOLD = 2
        RECOVERY_TIMEOUT = 60
        EXPECTED_EXCEPTION = DownError

    breaker = Mine()
    with pytest.raises(KeyError):
        await breaker.call(raising(KeyError("not a DownError")))
    assert breaker.failure_count == 0
    await fail(lambda: breaker.call(down), 2)
    assert breaker.opened
    assert breaker.open_remaining == pytest.approx(60.0)
    overridden = Mine(failure_threshold=1, recovery_timeout=5)
    await fail(lambda: overridden.call(down))
    assert overridden.open_remaining == pytest.approx(5.0)


async def test_fallback_function_class_attribute_is_bound_like_a_method() -> None:
    """A plain function set as FALLBACK_FUNCTION gets the breaker first, as in aiocircuitbreaker."""
    seen: list[tuple[object, ...]] = []

    class WithFallback(CircuitBreaker):
        FAILURE_THRESHOLD = 1

        def FALLBACK_FUNCTION(*args: object, **kwargs: object) -> str:  # noqa: N802
            seen.append((*args, *kwargs.items()))
            return "fallback"

    breaker = WithFallback()
    _, remote = guarded(breaker)
    await fail(lambda: breaker.call(down))
    assert await remote(1, key="v") == "fallback"
    assert seen == [(breaker, 1, ("key", "v"))]


async def test_circuit_with_arguments_returns_the_breaker() -> None:
    """circuit(3, 10, DownError, 'n', fb) and its keyword form return a configured breaker."""

    def fallback() -> str:
        return "fallback"

    positional = circuit(3, 10, DownError, "n", fallback)
    keyword = circuit(failure_threshold=3, recovery_timeout=10, name="n")
    assert isinstance(positional, CircuitBreaker)
    assert positional.name == keyword.name == "n"
    assert circuit(name=None).name == ""  # type: ignore[call-overload]  # forwarded optional names
    assert positional.fallback_function is fallback
    await fail(lambda: positional.call(down), 3)
    assert positional.opened
    assert positional.open_remaining == pytest.approx(10.0)


async def test_bare_circuit_guards_with_the_defaults() -> None:
    """@circuit keeps the function's name and runs it; five failures open it."""
    dependency = Dependency()

    @circuit
    async def external_call(*args: object) -> str:
        return await dependency(*args)

    assert external_call.__name__ == "external_call"
    assert await external_call(1) == "ok"
    dependency.error = DownError("down")
    await fail(external_call, 5)
    with pytest.raises(CircuitBreakerError) as info:
        await external_call()
    assert str(info.value).startswith('Circuit "" OPEN until ')
    assert len(dependency.calls) == 6


async def test_cls_makes_the_breaker_with_the_arguments_by_keyword() -> None:
    """circuit(cls=...) passes its arguments to the subclass by keyword, like aiocircuitbreaker."""
    made: list[dict[str, object]] = []

    class Recording(CircuitBreaker):
        RECOVERY_TIMEOUT = 7

        def __init__(
            self,
            failure_threshold: int | None = None,
            recovery_timeout: float | None = None,
            expected_exception: type[Exception] | tuple[type[Exception], ...] | None = None,
            name: str = "",
            fallback_function: Callable[..., Any] | None = None,
        ) -> None:
            made.append(
                {
                    "failure_threshold": failure_threshold,
                    "recovery_timeout": recovery_timeout,
                    "expected_exception": expected_exception,
                    "name": name,
                    "fallback_function": fallback_function,
                }
            )
            super().__init__(failure_threshold, recovery_timeout, expected_exception, name or "rec")

    breaker = circuit(2, cls=Recording)
    assert isinstance(breaker, Recording)
    assert made == [
        {
            "failure_threshold": 2,
            "recovery_timeout": None,
            "expected_exception": None,
            "name": "",
            "fallback_function": None,
        }
    ]
    assert breaker.name == "rec"
    await fail(lambda: breaker.call(down), 2)
    assert breaker.open_remaining == pytest.approx(7.0)

    @circuit(cls=Recording)
    async def external_call() -> str:
        return "ok"

    assert await external_call() == "ok"
    assert len(made) == 2


def test_cls_must_be_a_compatibility_breaker() -> None:
    """circuit(cls=aio_client.CircuitBreaker) is a ConfigError: its constructor differs."""
    with pytest.raises(ac.ConfigError, match="cls must be a subclass"):
        circuit(cls=ac.CircuitBreaker)  # type: ignore[type-var]


def test_a_sync_function_is_refused() -> None:
    """Decorating a plain function raises ValueError (a ConfigError) naming it."""

    def plain() -> None:
        return None

    with pytest.raises(ValueError, match='function "plain" is not awaitable') as info:
        CircuitBreaker().decorate(plain)  # type: ignore[arg-type]
    assert isinstance(info.value, ac.ConfigError)
    with pytest.raises(ac.ConfigError, match="not awaitable"):
        circuit(plain)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("options", "parameter"),
    [
        ({"failure_threshold": -1}, "failure_threshold"),
        ({"failure_threshold": "3"}, "failure_threshold"),
        ({"recovery_timeout": -5}, "recovery_timeout"),
        ({"recovery_timeout": float("inf")}, "recovery_timeout"),
        ({"expected_exception": "DownError"}, "expected_exception"),
        ({"expected_exception": [DownError]}, "expected_exception"),
        ({"expected_exception": lambda exc: True}, "expected_exception"),
        ({"expected_exception": KeyboardInterrupt}, "expected_exception"),
        ({"fallback_function": "later"}, "fallback_function"),
        ({"name": 42}, "name"),
    ],
)
def test_bad_settings_are_config_errors_naming_the_parameter(
    options: dict[str, object], parameter: str
) -> None:
    """A bad argument fails at construction with a ConfigError that names it."""
    with pytest.raises(ac.ConfigError, match=parameter):
        CircuitBreaker(**options)  # type: ignore[arg-type]


# -- what counts -----------------------------------------------------------------


async def test_expected_exception_as_a_class_or_a_tuple() -> None:
    """Only instances of the class (or of a tuple member) count as failures."""
    single = CircuitBreaker(failure_threshold=2, expected_exception=DownError)
    pair = CircuitBreaker(failure_threshold=2, expected_exception=(DownError, KeyError))
    for breaker in (single, pair):
        await fail(functools.partial(breaker.call, down))
        assert breaker.failure_count == 1
    with pytest.raises(KeyError):
        await pair.call(raising(KeyError("counts")))
    assert pair.opened
    with pytest.raises(KeyError):
        await single.call(raising(KeyError("does not count")))
    assert single.closed


async def test_an_exception_that_does_not_count_is_a_success() -> None:
    """A non-expected exception propagates and, as in aiocircuitbreaker, resets like a success."""
    breaker = CircuitBreaker(failure_threshold=3, expected_exception=DownError)
    await fail(lambda: breaker.call(down), 2)
    with pytest.raises(ValueError, match="bad input"):
        await breaker.call(raising(ValueError("bad input")))
    assert breaker.failure_count == 0
    assert breaker.last_failure is None


# -- failure_count, last_failure, open_remaining, state --------------------------


async def test_failure_count_keeps_counting_after_opening() -> None:
    """3 open it; refusals do not count; a failed probe makes it 4; a success makes it 0."""
    breaker = CircuitBreaker(failure_threshold=3, recovery_timeout=10)
    dependency, remote = guarded(breaker)
    dependency.error = DownError("down")
    await fail(remote, 3)
    assert breaker.failure_count == 3
    with pytest.raises(CircuitBreakerError):
        await remote()
    assert breaker.failure_count == 3
    await anyio.sleep(10)
    await fail(remote)
    assert breaker.failure_count == 4
    assert breaker.opened
    await anyio.sleep(10)
    dependency.error = None
    assert await remote() == "ok"
    assert breaker.failure_count == 0
    assert breaker.closed


async def test_last_failure_is_cleared_by_every_success() -> None:
    """last_failure holds the last counted exception; any success clears it, even while closed."""
    breaker = CircuitBreaker(failure_threshold=5)
    assert breaker.last_failure is None
    first, second = DownError("first"), DownError("second")
    await fail(lambda: breaker.call(raising(first)))
    await fail(lambda: breaker.call(raising(second)))
    assert breaker.last_failure is second
    assert breaker.closed
    assert await breaker.call(up) == "up"
    assert breaker.last_failure is None


async def test_open_remaining_counts_down_and_goes_negative() -> None:
    """Seconds left of the break: from construction first, from each opening after; then < 0."""
    breaker = CircuitBreaker(failure_threshold=1, recovery_timeout=30)
    assert breaker.open_remaining == pytest.approx(30.0)
    await anyio.sleep(12)
    assert breaker.open_remaining == pytest.approx(18.0)
    assert breaker.closed
    await fail(lambda: breaker.call(down))
    assert breaker.open_remaining == pytest.approx(30.0)
    await anyio.sleep(29)
    assert state_of(breaker) is State.OPEN
    assert breaker.opened
    await anyio.sleep(3)
    assert breaker.open_remaining == pytest.approx(-2.0)
    assert state_of(breaker) is State.HALF_OPEN
    assert not breaker.opened
    assert not breaker.closed


async def test_open_until_is_a_naive_utc_datetime_at_the_end_of_the_break() -> None:
    """open_until is now (naive UTC) plus open_remaining, derived from the monotonic clock."""
    breaker = CircuitBreaker(failure_threshold=1, recovery_timeout=30)
    await fail(lambda: breaker.call(down))
    expected = datetime.now(UTC).replace(tzinfo=None) + timedelta(seconds=30)
    assert breaker.open_until.tzinfo is None
    assert abs(breaker.open_until - expected) < timedelta(seconds=1)


async def test_every_success_closes_even_one_that_started_before_the_opening() -> None:
    """As in aiocircuitbreaker, a call that started closed and succeeds once open closes it."""
    breaker = CircuitBreaker(failure_threshold=1, recovery_timeout=30)
    slow, remote = guarded(breaker)
    slow.gate = anyio.Event()
    results: list[str] = []

    async def slow_call() -> None:
        results.append(await remote())

    async with anyio.create_task_group() as tg:
        tg.start_soon(slow_call)
        await anyio.lowlevel.checkpoint()
        await fail(lambda: breaker.call(down))
        assert breaker.opened
        slow.gate.set()
    assert results == ["ok"]
    assert breaker.closed
    assert breaker.failure_count == 0


async def test_a_failure_while_open_restarts_the_break() -> None:
    """A failure recorded while open counts and starts the recovery timeout again from now."""
    breaker = CircuitBreaker(failure_threshold=1, recovery_timeout=30)
    await fail(lambda: breaker.call(down))
    await anyio.sleep(20)
    assert breaker.open_remaining == pytest.approx(10.0)
    await fail(lambda: breaker.call(down))  # call() runs in every state
    assert breaker.failure_count == 2
    assert breaker.open_remaining == pytest.approx(30.0)


async def test_call_and_with_run_in_every_state_and_record_the_outcome() -> None:
    """call() and ``with breaker:`` never refuse; their outcomes count like the decorator's."""
    breaker = CircuitBreaker(failure_threshold=1, recovery_timeout=30)
    with pytest.raises(DownError), breaker:
        raise DownError("sync code")
    assert breaker.opened
    assert isinstance(breaker.last_failure, DownError)
    with breaker as entered:
        assert entered is None
    assert breaker.closed
    await fail(lambda: breaker.call(down))
    assert breaker.opened
    assert await breaker.call(up) == "up"
    assert breaker.closed


async def test_setting_state_by_hand_moves_the_breaker() -> None:
    """``breaker._state = State.OPEN``, as aiocircuitbreaker's tests do, opens it; CLOSED closes."""
    breaker = CircuitBreaker(recovery_timeout=30)
    dependency, remote = guarded(breaker)
    await anyio.sleep(5)
    breaker._state = State.OPEN
    assert breaker.opened
    assert breaker.open_remaining == pytest.approx(25.0)
    with pytest.raises(CircuitBreakerError):
        await remote()
    breaker._state = State.CLOSED
    assert breaker.closed
    assert await remote() == "ok"
    assert len(dependency.calls) == 1


# -- refusals: error and fallbacks -----------------------------------------------


def test_circuit_breaker_error_takes_the_breaker_and_reads_it_when_shown() -> None:
    """CircuitBreakerError(breaker, *args): aiocircuitbreaker's message, read at str() time."""
    breaker = CircuitBreaker(name="Foobar")
    breaker._last_failure = DownError("down")
    error = CircuitBreakerError(breaker)
    assert error.args == ()
    assert CircuitBreakerError(breaker, "detail", 1).args == ("detail", 1)
    message = str(error)
    assert message.startswith('Circuit "Foobar" OPEN until ')
    assert message.endswith("(0 failures, 30 sec remaining) (last_failure: DownError('down'))")
    until = message.removeprefix('Circuit "Foobar" OPEN until ').split(" (")[0]
    assert datetime.fromisoformat(until).tzinfo is None
    breaker._failure_count = 2
    assert "(2 failures," in str(error)


async def test_the_error_is_a_circuit_open_error_with_retry_after() -> None:
    """The refusal is a CircuitOpenError (a RefusedError) with the break's seconds left."""
    breaker = CircuitBreaker(failure_threshold=2, recovery_timeout=30, name="rates")
    dependency, remote = guarded(breaker)
    dependency.error = DownError("down")
    await fail(remote, 2)
    await anyio.sleep(10)
    with pytest.raises(ac.RefusedError) as info:
        await remote()
    error = info.value
    assert isinstance(error, CircuitBreakerError)
    assert isinstance(error, ac.CircuitOpenError)
    assert error.retry_after == pytest.approx(20.0)
    assert error.may_have_reached_server is False
    assert "(2 failures, 20 sec remaining) (last_failure: DownError('down'))" in str(error)
    assert len(dependency.calls) == 2


async def test_sync_fallback_gets_the_arguments_instead_of_the_call() -> None:
    """While open, a sync fallback_function gets the call's arguments; its value is returned."""
    received: list[tuple[tuple[object, ...], dict[str, object]]] = []

    def fallback(*args: object, **kwargs: object) -> str:
        received.append((args, kwargs))
        return "cached"

    breaker = CircuitBreaker(failure_threshold=1, fallback_function=fallback)
    dependency, remote = guarded(breaker)
    dependency.error = DownError("down")
    await fail(remote)
    assert await remote("EUR", fresh=True) == "cached"
    assert received == [(("EUR",), {"fresh": True})]
    assert len(dependency.calls) == 1


async def test_async_fallback_is_awaited() -> None:
    """While open, an async fallback_function is awaited with the call's arguments."""

    async def fallback(*args: object, **kwargs: object) -> str:
        await anyio.lowlevel.checkpoint()
        return f"cached {args} {kwargs}"

    breaker = circuit(failure_threshold=1, fallback_function=fallback)
    dependency, remote = guarded(breaker)
    dependency.error = DownError("down")
    await fail(remote)
    assert await remote("EUR", fresh=True) == "cached ('EUR',) {'fresh': True}"
    assert len(dependency.calls) == 1


# -- the three deliberate differences --------------------------------------------


async def test_half_open_admits_exactly_one_probe() -> None:
    """After the break one decorated call runs; the rest are refused until it ends, then run."""
    breaker = CircuitBreaker(failure_threshold=1, recovery_timeout=10)
    dependency, remote = guarded(breaker)
    dependency.error = DownError("down")
    await fail(remote)
    await anyio.sleep(10)
    dependency.error = None
    dependency.gate = anyio.Event()
    results: list[str] = []

    async def probe() -> None:
        results.append(await remote("probe"))

    async with anyio.create_task_group() as tg:
        tg.start_soon(probe)
        await anyio.lowlevel.checkpoint()
        assert breaker.state is State.HALF_OPEN
        for _ in range(3):
            with pytest.raises(CircuitBreakerError) as info:
                await remote("other")
            assert info.value.retry_after == 0.0
        dependency.gate.set()
    assert results == ["ok"]
    assert breaker.closed
    dependency.gate = None
    assert await remote("after") == "ok"
    assert [args for args, _ in dependency.calls] == [(), ("probe",), ("after",)]


async def test_callers_refused_while_the_probe_runs_get_the_fallback() -> None:
    """With a fallback, the callers turned away during the probe get the fallback's value."""
    breaker = CircuitBreaker(
        failure_threshold=1, recovery_timeout=10, fallback_function=lambda: "cached"
    )
    dependency, remote = guarded(breaker)
    dependency.error = DownError("down")
    await fail(remote)
    await anyio.sleep(10)
    dependency.error = None
    dependency.gate = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(remote)
        await anyio.lowlevel.checkpoint()
        assert await remote() == "cached"
        dependency.gate.set()
    assert breaker.closed


async def test_a_cancelled_call_is_neither_success_nor_failure() -> None:
    """Cancelled while closed, count and last_failure stand; cancelled while open, it stays open."""
    breaker = CircuitBreaker(failure_threshold=3, recovery_timeout=30)
    dependency, remote = guarded(breaker)
    failure = DownError("down")
    dependency.error = failure
    await fail(remote, 2)
    dependency.error = None
    dependency.gate = anyio.Event()
    with anyio.move_on_after(1):
        await remote()
    assert breaker.failure_count == 2
    assert breaker.last_failure is failure
    dependency.error, dependency.gate = failure, None
    await fail(remote)
    assert breaker.opened
    with anyio.move_on_after(1):
        await breaker.call(anyio.sleep_forever)
    assert breaker.opened
    assert breaker.failure_count == 3


async def test_a_cancelled_probe_lets_the_next_caller_probe() -> None:
    """A probe cancelled half-open frees its slot: the breaker stays half-open for the next."""
    breaker = CircuitBreaker(failure_threshold=1, recovery_timeout=10)
    dependency, remote = guarded(breaker)
    dependency.error = DownError("down")
    await fail(remote)
    await anyio.sleep(10)
    dependency.error = None
    dependency.gate = anyio.Event()
    with anyio.move_on_after(1):
        await remote("cancelled probe")
    assert breaker.state is State.HALF_OPEN
    assert breaker.failure_count == 1
    dependency.gate = None
    assert await remote("next probe") == "ok"
    assert breaker.closed


async def test_the_break_is_timed_on_the_monotonic_loop_clock() -> None:
    """The break ends when the event loop's monotonic clock says so, whatever the wall clock."""
    breaker = CircuitBreaker(failure_threshold=1, recovery_timeout=3600)
    _, remote = guarded(breaker)
    await fail(lambda: breaker.call(down))
    wall = datetime.now(UTC)
    await anyio.sleep(3599)
    assert breaker.opened
    await anyio.sleep(1)
    assert breaker.state is State.HALF_OPEN
    assert datetime.now(UTC) - wall < timedelta(minutes=59)  # the virtual hour took no wall hour
    assert await remote() == "ok"
    assert breaker.closed
