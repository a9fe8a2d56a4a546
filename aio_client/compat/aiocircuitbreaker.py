"""aiocircuitbreaker 2.0's API over aio_client's circuit breaker: migrate by changing one import.

::

    from aio_client.compat.aiocircuitbreaker import circuit  # was: from aiocircuitbreaker ...

The names (``circuit``, ``CircuitBreaker``, ``CircuitBreakerError``,
``State``), the signatures (positional arguments included), the class
attributes (``FAILURE_THRESHOLD``, ``RECOVERY_TIMEOUT``,
``EXPECTED_EXCEPTION``, ``FALLBACK_FUNCTION``) and what the properties read
are aiocircuitbreaker 2.0's. So are its counting rules, which differ from
:class:`aio_client.CircuitBreaker`'s:

- an exception that is not an ``expected_exception`` counts as a success;
- every success closes the breaker and clears ``failure_count`` and
  ``last_failure``, whenever the call started;
- every failure is counted (``failure_count`` goes on from the threshold:
  a failed probe makes it 4 with a threshold of 3) and, at or past the
  threshold, opens the breaker for ``recovery_timeout`` seconds from now;
- only the decorator refuses calls; :meth:`CircuitBreaker.call` and
  ``with breaker:`` run the function in every state and record its outcome;
- ``open_remaining`` is measured from the last opening (from construction
  before that) and goes negative once the recovery timeout has passed.

Three deliberate differences, and only these:

- **Half-open admits exactly one probe.** Once the recovery timeout has
  passed, one decorated call runs; until it ends, the others get the
  fallback or :class:`CircuitBreakerError` (aiocircuitbreaker lets every
  caller through, so a recovering dependency takes the whole backlog).
- **A cancelled call is neither success nor failure** (aiocircuitbreaker
  counts it as a success: it resets the failure count and closes an open
  breaker, although the dependency never answered).
- **Clocks are monotonic**: the break is timed on the event loop's
  monotonic clock (the process's outside a loop), and ``open_until`` is
  derived from it; a wall-clock jump cannot shorten or stretch a break.

Underneath, the breaker's state, the end of its break, the probe admission
and the clock are an :class:`aio_client.CircuitBreaker`'s; this module adds
aiocircuitbreaker's counters and rules on top. :class:`CircuitBreakerError`
is a :class:`~aio_client.CircuitOpenError`, with ``retry_after`` in seconds.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import inspect
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Literal, ParamSpec, TypeVar, cast, final, overload

from .._circuit_state import CircuitState
from .._errors import CircuitOpenError, ConfigError
from .._validation import exception_types, positive_int, positive_seconds
from ..policies._breaker import CircuitBreaker as _Breaker

if TYPE_CHECKING:
    from types import TracebackType

__all__ = ["CircuitBreaker", "CircuitBreakerError", "State", "circuit"]

_P = ParamSpec("_P")
_T = TypeVar("_T")

#: An exception class or a tuple of them, as ``except`` (and aiocircuitbreaker) take.
_ExpectedException = type[Exception] | tuple[type[Exception], ...]


class State(enum.Enum):
    """Where a breaker is; the values are aiocircuitbreaker's."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@final
class _Gate(_Breaker):
    """Our breaker, moved from outside where aiocircuitbreaker's rules say so.

    It admits calls (one probe when half-open) and times the break; the
    compatibility breaker decides when it opens and closes.
    """

    __slots__ = ()

    @property
    def held_state(self) -> CircuitState:
        """The state as last moved (an expired break still reads ``OPEN``)."""
        return self._state

    def now(self) -> float:
        """Seconds on the breaker's monotonic clock."""
        return self._clock()

    def open_since(self, opened: float) -> None:
        """Open, with the break counted from ``opened`` (seconds on :meth:`now`)."""
        self._open(opened)

    def close(self) -> None:
        if self._state is not CircuitState.CLOSED:
            self._close()

    def half_open(self) -> None:
        if self._state is not CircuitState.HALF_OPEN:
            self._move(CircuitState.HALF_OPEN)


def _is_cancellation(exc_type: type[BaseException]) -> bool:
    return issubclass(exc_type, asyncio.CancelledError) or (
        exc_type.__name__ == "Cancelled" and exc_type.__module__.startswith("trio")
    )


class CircuitBreaker:
    """aiocircuitbreaker 2.0's ``CircuitBreaker``: see the module docstring.

    Opens after ``failure_threshold`` (5) failures without a success in
    between, stays open ``recovery_timeout`` seconds (30), then lets one probe
    through; a failure is an exception that is an ``expected_exception``
    (``Exception``; a class or a tuple of classes). While open, the decorator
    calls ``fallback_function(*args, **kwargs)`` (awaited if it is an
    ``async def``) instead of raising :class:`CircuitBreakerError`. A falsy
    argument (``None``, ``0``) takes the class attribute's value, so a
    subclass changes the defaults by setting the class attributes.

    Instances take attributes of their own, as aiocircuitbreaker's do (no
    ``__slots__``). Assigning a :class:`State` to ``_state``, as tests written
    for aiocircuitbreaker do, moves the breaker to it.
    """

    FAILURE_THRESHOLD: ClassVar[int] = 5
    RECOVERY_TIMEOUT: ClassVar[float] = 30
    EXPECTED_EXCEPTION: ClassVar[_ExpectedException] = Exception
    FALLBACK_FUNCTION: ClassVar[Callable[..., Any] | None] = None

    def __init__(
        self,
        failure_threshold: int | None = None,
        recovery_timeout: float | None = None,
        expected_exception: _ExpectedException | None = None,
        name: str = "",
        fallback_function: Callable[..., Any] | None = None,
    ) -> None:
        threshold = positive_int(failure_threshold or self.FAILURE_THRESHOLD, "failure_threshold")
        recovery = recovery_timeout or self.RECOVERY_TIMEOUT
        break_duration = positive_seconds(recovery, "recovery_timeout")
        expected = exception_types(
            expected_exception or self.EXPECTED_EXCEPTION, "expected_exception"
        )
        # Read through the instance, as aiocircuitbreaker does: a plain function
        # set as FALLBACK_FUNCTION in a class body is bound to the breaker.
        fallback = fallback_function or self.FALLBACK_FUNCTION
        if fallback is not None and not callable(fallback):
            raise ConfigError(f"fallback_function must be callable; got {fallback!r}")
        if name is None:  # passed on by code that forwards an optional name
            name = ""
        elif not isinstance(name, str):
            raise ConfigError(f"name must be a str; got {name!r}")
        self._failure_threshold = threshold
        self._recovery_timeout = recovery
        self._expected_exception = expected
        self._fallback_function = fallback
        self._name = name
        self._failure_count = 0
        self._last_failure: Exception | None = None
        self._gate = _Gate(
            failure_threshold=threshold, break_duration=break_duration, name=name or None
        )
        #: When the breaker last opened (construction until then), on the gate's clock.
        self._opened = self._gate.now()

    # -- observing -------------------------------------------------------------

    @property
    def state(self) -> State:
        """``OPEN`` until ``recovery_timeout`` has passed since opening, ``HALF_OPEN`` after."""
        held = self._gate.held_state
        if held is CircuitState.CLOSED:
            return State.CLOSED
        if held is CircuitState.OPEN and self.open_remaining > 0:
            return State.OPEN
        return State.HALF_OPEN

    @property
    def _state(self) -> State:
        """The state as last moved: ``CLOSED`` or ``OPEN`` (an expired break stays ``OPEN``)."""
        return State.CLOSED if self._gate.held_state is CircuitState.CLOSED else State.OPEN

    @_state.setter
    def _state(self, state: State) -> None:
        # An opening set by hand counts its break from the last opening (or
        # construction), as aiocircuitbreaker's does.
        if state is State.CLOSED:
            self._gate.close()
        elif state is State.OPEN:
            self._gate.open_since(self._opened)
        elif state is State.HALF_OPEN:
            self._gate.half_open()
        else:
            raise ConfigError(f"_state must be a State; got {state!r}")

    @property
    def open_until(self) -> datetime:
        """When the break ends, as a naive UTC datetime (derived from the monotonic clock)."""
        return datetime.now(UTC).replace(tzinfo=None) + timedelta(seconds=self.open_remaining)

    @property
    def open_remaining(self) -> float:
        """Seconds until the break ends; negative once it has (measured from construction
        until the breaker first opens)."""
        return self._opened + self._recovery_timeout - self._gate.now()

    @property
    def failure_count(self) -> int:
        """Failures since the last success; counting goes on while open."""
        return self._failure_count

    @property
    def closed(self) -> bool:
        """Whether the breaker is closed (not after an expired break: that is half-open)."""
        return self._gate.held_state is CircuitState.CLOSED

    @property
    def opened(self) -> bool:
        """Whether the decorator refuses calls now (open, break not over)."""
        return self.state is State.OPEN

    @property
    def name(self) -> str:
        """The name given (``""`` by default)."""
        return self._name

    @property
    def last_failure(self) -> Exception | None:
        """The last failure's exception; ``None`` after any success."""
        return self._last_failure

    @property
    def fallback_function(self) -> Callable[..., Any] | None:
        """What the decorator calls instead of raising while open."""
        return self._fallback_function

    # -- use -------------------------------------------------------------------

    def __call__(
        self, wrapped: Callable[_P, Awaitable[_T]]
    ) -> Callable[_P, Coroutine[Any, Any, _T]]:
        """``@breaker``: same as :meth:`decorate`."""
        return self.decorate(wrapped)

    def decorate(
        self, function: Callable[_P, Awaitable[_T]]
    ) -> Callable[_P, Coroutine[Any, Any, _T]]:
        """Guard the ``async def`` ``function`` (a ``ConfigError``, a ``ValueError``, otherwise).

        While open, the guarded function calls the fallback or raises
        :class:`CircuitBreakerError`; otherwise it runs ``function`` through
        :meth:`call`. After the break, one call runs as the probe and the
        others are refused until it ends.
        """
        if not inspect.iscoroutinefunction(function):
            label = getattr(function, "__name__", None) or repr(function)
            raise ConfigError(f'function "{label}" is not awaitable')

        @functools.wraps(function)
        async def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _T:
            if self._gate.closed:  # nothing to refuse, no probe slot to hold
                return await self.call(function, *args, **kwargs)
            if self.opened:
                return cast(_T, await self._refuse(args, kwargs))
            try:
                ticket = self._gate.admit()
            except CircuitOpenError:  # half-open, and the probe is out
                return cast(_T, await self._refuse(args, kwargs))
            try:
                return await self.call(function, *args, **kwargs)
            finally:
                # The outcome was recorded by ``call``; a probe that neither
                # closed nor reopened the breaker (cancelled) frees its slot.
                ticket.released()

        return wrapper

    async def call(
        self, func: Callable[_P, Awaitable[_T]], *args: _P.args, **kwargs: _P.kwargs
    ) -> _T:
        """Run ``await func(*args, **kwargs)`` in any state and record how it ended."""
        with self:
            return await func(*args, **kwargs)

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> Literal[False]:
        if exc_type is None:
            self._call_succeeded()
        elif _is_cancellation(exc_type):
            pass  # the dependency never answered: no evidence either way
        elif issubclass(exc_type, self._expected_exception):
            self._last_failure = cast(Exception, exc_value)
            self._call_failed()
        else:
            self._call_succeeded()
        return False

    # -- aiocircuitbreaker's rules ---------------------------------------------

    def _call_succeeded(self) -> None:
        self._failure_count = 0
        self._last_failure = None
        self._gate.close()

    def _call_failed(self) -> None:
        self._failure_count += 1
        if self._failure_count >= self._failure_threshold:
            self._opened = self._gate.now()
            self._gate.open_since(self._opened)

    async def _refuse(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        fallback = self.fallback_function
        if not fallback:
            raise CircuitBreakerError(self)
        if inspect.iscoroutinefunction(fallback):
            return await fallback(*args, **kwargs)
        return fallback(*args, **kwargs)


class CircuitBreakerError(CircuitOpenError):
    """Raised by the decorator of an open :class:`CircuitBreaker`.

    ``CircuitBreakerError(breaker, *args)`` as in aiocircuitbreaker; its
    message is read from the breaker when shown. It is a
    :class:`~aio_client.CircuitOpenError` (so ``except RefusedError`` catches
    it) whose ``retry_after`` is the seconds the break had left when raised.
    """

    def __init__(self, circuit_breaker: CircuitBreaker, *args: object) -> None:
        remaining = getattr(circuit_breaker, "open_remaining", 0.0)
        retry_after = max(0.0, float(remaining)) if isinstance(remaining, (int, float)) else 0.0
        super().__init__("", retry_after=retry_after)
        self.args = args
        self._circuit_breaker = circuit_breaker

    def __str__(self) -> str:
        breaker = self._circuit_breaker
        return (
            f'Circuit "{breaker.name}" OPEN until {breaker.open_until} '
            f"({breaker.failure_count} failures, {round(breaker.open_remaining)} sec remaining) "
            f"(last_failure: {breaker.last_failure!r})"
        )


_Breakers = TypeVar("_Breakers", bound=CircuitBreaker)


@overload
def circuit(
    failure_threshold: Callable[_P, Awaitable[_T]],
) -> Callable[_P, Coroutine[Any, Any, _T]]: ...


@overload
def circuit(
    failure_threshold: int | None = None,
    recovery_timeout: float | None = None,
    expected_exception: _ExpectedException | None = None,
    name: str = "",
    fallback_function: Callable[..., Any] | None = None,
) -> CircuitBreaker: ...


@overload
def circuit(
    failure_threshold: int | None = None,
    recovery_timeout: float | None = None,
    expected_exception: _ExpectedException | None = None,
    name: str = "",
    fallback_function: Callable[..., Any] | None = None,
    *,
    cls: type[_Breakers],
) -> _Breakers: ...


def circuit(
    failure_threshold: int | Callable[..., Awaitable[Any]] | None = None,
    recovery_timeout: float | None = None,
    expected_exception: _ExpectedException | None = None,
    name: str = "",
    fallback_function: Callable[..., Any] | None = None,
    cls: type[CircuitBreaker] = CircuitBreaker,
) -> CircuitBreaker | Callable[..., Coroutine[Any, Any, Any]]:
    """``@circuit`` (defaults) or ``@circuit(...)`` (a ``cls`` breaker made with these).

    Bare, the decorated function arrives as ``failure_threshold`` and is
    guarded by ``cls()``. With arguments (positional too), it returns
    ``cls(failure_threshold=..., recovery_timeout=..., expected_exception=...,
    name=..., fallback_function=...)``, which decorates the function.
    """
    if not (isinstance(cls, type) and issubclass(cls, CircuitBreaker)):
        raise ConfigError(
            f"cls must be a subclass of aio_client.compat.aiocircuitbreaker.CircuitBreaker; "
            f"got {cls!r}"
        )
    if callable(failure_threshold):
        return cls().decorate(failure_threshold)
    return cls(
        failure_threshold=failure_threshold,
        recovery_timeout=recovery_timeout,
        expected_exception=expected_exception,
        name=name,
        fallback_function=fallback_function,
    )
