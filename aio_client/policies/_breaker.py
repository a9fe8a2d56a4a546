"""The circuit breaker: fail fast while a dependency is failing, then probe it back.

States and moves::

    CLOSED ──(too many failures)──▶ OPEN ──(break_duration passed)──▶ HALF_OPEN
       ▲                              ▲                                  │
       └──(success_threshold probes ok)┴──────(a probe failed)───────────┘

Concurrency rules (one breaker per event loop; it is not thread-safe):

- Every state change happens in synchronous code, between two ``await``s,
  so admission ("is there a probe slot?") and taking the slot are one step:
  half-open admits exactly ``half_open_max_calls`` concurrent probes under
  any number of callers, with no lock.
- Each state period has an *epoch*. A call remembers the epoch it was
  admitted in (on its :class:`BreakerTicket`, the one way in for the
  decorator, :meth:`~CircuitBreaker.call`, ``async with``, the client stage
  and the server guard); its outcome only counts if the breaker is still in
  that epoch. A call that started while closed and ends after the breaker opened
  (or a stale probe) changes nothing.
- Cancellation and exceptions that do not match ``expected_exception`` (and
  ``failure_predicate``) count as neither success nor failure; a probe that
  ends that way gives its slot back.
- Listeners run after the state is fully updated. Sync listeners are called
  right away; async listeners are awaited, in order, by the task whose call
  caused the change, after recording and before it returns (never while any
  state is half-updated). A change made by a cancelled task is delivered by
  the next task that records an outcome.
"""

from __future__ import annotations

import functools
import inspect
import logging
import math
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Final, ParamSpec, TypeVar, cast, final

from .. import _clock
from .._circuit_state import CircuitState
from .._deadline import current_deadline
from .._errors import CircuitOpenError, ConfigError, DeadlineExceededError
from .._validation import (
    ExceptionTypes,
    exception_types,
    positive_int,
    positive_seconds,
    ratio,
    validate_timeout,
)
from ._entries import pop_entry, push_entry
from ._window import RollingWindow

if TYPE_CHECKING:
    from types import TracebackType

__all__ = ["BreakerTicket", "CircuitBreaker", "CircuitState", "StateListener"]

_P = ParamSpec("_P")
_T = TypeVar("_T")

_log: Final = logging.getLogger("aio_client.policies")

_CLOSED: Final = CircuitState.CLOSED
_OPEN: Final = CircuitState.OPEN
_HALF_OPEN: Final = CircuitState.HALF_OPEN
_INF: Final = math.inf
_SETTLED: Final = -1  # a settled ticket's epoch: no breaker's epoch is negative

#: ``listener(breaker, old_state, new_state)``: a plain function or an ``async def``.
StateListener = Callable[["CircuitBreaker", CircuitState, CircuitState], "Awaitable[None] | None"]
_AsyncListener = Callable[["CircuitBreaker", CircuitState, CircuitState], Awaitable[None]]
_SyncListener = Callable[["CircuitBreaker", CircuitState, CircuitState], object]


@dataclass(frozen=True, slots=True)
class _Settings:
    failure_threshold: int
    failure_ratio: float | None
    minimum_throughput: int
    sampling_duration: float
    buckets: int
    slow_call_duration: float | None
    slow_call_ratio: float
    break_duration: float
    half_open_max_calls: int
    success_threshold: int
    expected_exception: tuple[type[Exception], ...]
    failure_predicate: Callable[[Exception], bool] | None
    fallback: Callable[..., Any] | None
    clock: Callable[[], float]
    min_deadline_budget: float


class CircuitBreaker:
    """Stops calling a failing dependency, and lets it back in gradually.

    Two ways to open, chosen by configuration:

    - **consecutive failures** (default): opens after ``failure_threshold``
      failures in a row (5); a success resets the count.
    - **failure ratio** (when ``failure_ratio`` is given): opens when, over the
      last ``sampling_duration`` seconds (10, in ``buckets`` slots), at least
      ``minimum_throughput`` calls (10) ended and ``failure_ratio`` of them
      failed. With ``slow_call_duration`` (seconds), calls that took at least
      that long are *slow*, and a ``slow_call_ratio`` share (1.0) of slow
      calls opens the breaker too; a slow probe counts as a failed one.

    Once open, calls are refused with :class:`~aio_client.CircuitOpenError`
    (carrying ``retry_after``) for ``break_duration`` seconds (30) counted from
    the moment it opened. Then it is half-open: exactly
    ``half_open_max_calls`` (1) concurrent probes run; ``success_threshold``
    (1) successful probes close it, one failed probe opens it again.

    A *failure* is an exception that is an instance of ``expected_exception``
    (``Exception``) and, if given, for which ``failure_predicate(exc)`` is
    true. Other exceptions and cancellation count as neither success nor
    failure.

    A call cut short by its caller's own deadline says nothing about the
    dependency: a :class:`~aio_client.DeadlineExceededError` (or, in the
    client stage, an attempt cancelled as its deadline passed) counts as a
    failure only when the call was given at least ``min_deadline_budget``
    seconds (1.0) of budget by the ambient deadline when it started; with
    less it counts as neither. Set it to about the dependency's slowest
    healthy latency; ``0`` counts every such timeout.

    ``clock`` (seconds, monotonic) defaults to the event loop's.
    ``listeners`` are told of every state change (see the module docstring
    for when). ``name`` labels errors and metrics.

    Use it as a decorator (``@breaker``), as ``async with breaker:``, through
    :meth:`call`, or as a client stage (one state per endpoint: see
    :class:`~aio_client.policies.CircuitBreakerStage`). With a ``fallback``,
    the decorator calls ``fallback(*args, **kwargs)`` instead of raising when
    the breaker refuses. Underneath, each of these takes a
    :class:`BreakerTicket` from :meth:`admit`; code of your own can too.

    Subclasses may set the aiocircuitbreaker-style class attributes
    ``FAILURE_THRESHOLD``, ``RECOVERY_TIMEOUT`` (the default
    ``break_duration``), ``EXPECTED_EXCEPTION`` and ``FALLBACK_FUNCTION`` to
    change the defaults.
    """

    FAILURE_THRESHOLD: ClassVar[int] = 5
    RECOVERY_TIMEOUT: ClassVar[float] = 30.0
    EXPECTED_EXCEPTION: ClassVar[ExceptionTypes] = Exception
    FALLBACK_FUNCTION: ClassVar[Callable[..., Any] | None] = None

    __slots__ = (
        "_async_listeners",
        "_break_duration",
        "_clock",
        "_draining",
        "_epoch",
        "_expected",
        "_failure_ratio",
        "_failure_threshold",
        "_failures",
        "_fallback",
        "_half_open_max",
        "_last_failure",
        "_min_budget",
        "_min_throughput",
        "_name",
        "_open_until",
        "_pending",
        "_predicate",
        "_probe_successes",
        "_probes",
        "_settings",
        "_slow_duration",
        "_slow_ratio",
        "_state",
        "_success_threshold",
        "_sync_listeners",
        "_timed",
        "_window",
    )

    def __init__(
        self,
        *,
        failure_threshold: int | None = None,
        failure_ratio: float | None = None,
        minimum_throughput: int = 10,
        sampling_duration: float = 10.0,
        buckets: int = 10,
        slow_call_duration: float | None = None,
        slow_call_ratio: float = 1.0,
        break_duration: float | None = None,
        half_open_max_calls: int = 1,
        success_threshold: int = 1,
        expected_exception: ExceptionTypes | None = None,
        failure_predicate: Callable[[Exception], bool] | None = None,
        name: str | None = None,
        fallback: Callable[..., Any] | None = None,
        listeners: Iterable[StateListener] = (),
        clock: Callable[[], float] | None = None,
        min_deadline_budget: float = 1.0,
    ) -> None:
        cls = type(self)
        if failure_ratio is not None:
            if failure_threshold is not None:
                raise ConfigError(
                    "pass failure_threshold (consecutive mode) or failure_ratio "
                    "(rolling-window mode), not both"
                )
            threshold = 1
            failure_ratio = ratio(failure_ratio, "failure_ratio")
        else:
            threshold = positive_int(
                cls.FAILURE_THRESHOLD if failure_threshold is None else failure_threshold,
                "failure_threshold",
            )
            if slow_call_duration is not None:
                raise ConfigError(
                    "slow_call_duration needs the rolling-window mode: pass failure_ratio too"
                )
        if failure_predicate is not None and not callable(failure_predicate):
            raise ConfigError(f"failure_predicate must be callable; got {failure_predicate!r}")
        fallback = cls.FALLBACK_FUNCTION if fallback is None else fallback
        if fallback is not None and not callable(fallback):
            raise ConfigError(f"fallback must be callable; got {fallback!r}")
        if name is not None and not isinstance(name, str):
            raise ConfigError(f"name must be a str; got {name!r}")
        if clock is not None and not callable(clock):
            raise ConfigError(f"clock must be callable; got {clock!r}")
        settings = _Settings(
            failure_threshold=threshold,
            failure_ratio=failure_ratio,
            minimum_throughput=positive_int(minimum_throughput, "minimum_throughput"),
            sampling_duration=positive_seconds(sampling_duration, "sampling_duration"),
            buckets=positive_int(buckets, "buckets", maximum=1000),
            slow_call_duration=(
                None
                if slow_call_duration is None
                else positive_seconds(slow_call_duration, "slow_call_duration")
            ),
            slow_call_ratio=ratio(slow_call_ratio, "slow_call_ratio"),
            break_duration=positive_seconds(
                cls.RECOVERY_TIMEOUT if break_duration is None else break_duration,
                "break_duration",
            ),
            half_open_max_calls=positive_int(half_open_max_calls, "half_open_max_calls"),
            success_threshold=positive_int(success_threshold, "success_threshold"),
            expected_exception=exception_types(
                cls.EXPECTED_EXCEPTION if expected_exception is None else expected_exception,
                "expected_exception",
            ),
            failure_predicate=failure_predicate,
            fallback=fallback,
            clock=clock if clock is not None else _clock.now,
            min_deadline_budget=validate_timeout(min_deadline_budget, "min_deadline_budget"),
        )
        sync_listeners: list[_SyncListener] = []
        async_listeners: list[_AsyncListener] = []
        self._setup(settings, name or None, sync_listeners, async_listeners)
        for listener in listeners:
            self.add_listener(listener)

    def _setup(
        self,
        settings: _Settings,
        name: str | None,
        sync_listeners: list[_SyncListener],
        async_listeners: list[_AsyncListener],
    ) -> None:
        self._settings = settings
        self._name = name
        # Hot-path copies of the settings: one attribute load each.
        self._failure_threshold = settings.failure_threshold
        self._failure_ratio = settings.failure_ratio
        self._min_throughput = settings.minimum_throughput
        self._slow_duration = settings.slow_call_duration
        self._slow_ratio = settings.slow_call_ratio
        self._break_duration = settings.break_duration
        self._half_open_max = settings.half_open_max_calls
        self._success_threshold = settings.success_threshold
        self._expected = settings.expected_exception
        self._predicate = settings.failure_predicate
        self._fallback = settings.fallback
        self._clock = settings.clock
        self._min_budget = settings.min_deadline_budget
        self._timed = settings.slow_call_duration is not None
        self._window = (
            None
            if settings.failure_ratio is None
            else RollingWindow(settings.sampling_duration, settings.buckets, settings.clock())
        )
        self._sync_listeners = sync_listeners
        self._async_listeners = async_listeners
        self._pending: deque[tuple[_AsyncListener, CircuitState, CircuitState]] = deque()
        self._draining = False
        self._state = _CLOSED
        self._epoch = 0
        self._failures = 0
        self._probes = 0
        self._probe_successes = 0
        self._open_until = 0.0
        self._last_failure: Exception | None = None

    def _spawn(self, name: str) -> CircuitBreaker:
        """A fresh breaker with the same settings and the same (shared) listeners."""
        twin = object.__new__(type(self))
        twin._setup(self._settings, name, self._sync_listeners, self._async_listeners)
        return twin

    # -- observing -------------------------------------------------------------

    @property
    def name(self) -> str:
        """The breaker's name (``""`` until given one or it decorates a function)."""
        return self._name or ""

    @property
    def state(self) -> CircuitState:
        """The state a call arriving now would find.

        An open breaker whose ``break_duration`` has passed reads as
        ``HALF_OPEN``; the move itself (and its listeners) happens when the
        next call arrives.
        """
        if self._state is _OPEN and self._clock() >= self._open_until:
            return _HALF_OPEN
        return self._state

    @property
    def closed(self) -> bool:
        """Whether calls run normally."""
        return self._state is _CLOSED

    @property
    def opened(self) -> bool:
        """Whether a call arriving now would be refused without probing."""
        return self.state is _OPEN

    @property
    def open_remaining(self) -> float:
        """Seconds until an open breaker lets probes through (``0.0`` if not open)."""
        if self._state is not _OPEN:
            return 0.0
        return max(0.0, self._open_until - self._clock())

    @property
    def failure_count(self) -> int:
        """Failures counted so far: in a row, or in the window in ratio mode."""
        window = self._window
        return self._failures if window is None else window.failures

    @property
    def last_failure(self) -> Exception | None:
        """The last exception that counted as a failure while closed (``None`` once closed)."""
        return self._last_failure

    @property
    def fallback_function(self) -> Callable[..., Any] | None:
        """What the decorator calls instead of raising when the breaker refuses."""
        return self._fallback

    # -- listeners -------------------------------------------------------------

    def add_listener(self, listener: StateListener) -> None:
        """Tell ``listener(breaker, old, new)`` about every state change."""
        if not callable(listener):
            raise ConfigError(f"a listener must be callable; got {listener!r}")
        if _is_async_callable(listener):
            self._async_listeners.append(cast(_AsyncListener, listener))
        else:
            self._sync_listeners.append(listener)

    def remove_listener(self, listener: StateListener) -> None:
        """Stop telling ``listener``; a ``ValueError`` if it was not registered."""
        for group in (self._sync_listeners, self._async_listeners):
            if listener in group:
                group.remove(listener)  # type: ignore[arg-type]  # either kind matches
                return
        raise ValueError(f"{listener!r} is not a listener of {self!r}")

    # -- use -------------------------------------------------------------------

    def __call__(self, func: Callable[_P, Awaitable[_T]]) -> Callable[_P, Coroutine[Any, Any, _T]]:
        """``@breaker``: guard an async function (same as :meth:`decorate`)."""
        return self.decorate(func)

    def decorate(self, func: Callable[_P, Awaitable[_T]]) -> Callable[_P, Coroutine[Any, Any, _T]]:
        """Guard the async function ``func``; an unnamed breaker takes its qualified name."""
        if not _is_async_callable(func):
            raise ConfigError(f"{func!r} is not an async function; the breaker guards awaitables")
        if self._name is None:
            self._name = getattr(func, "__qualname__", None) or repr(func)

        @functools.wraps(func)
        async def guarded(*args: _P.args, **kwargs: _P.kwargs) -> _T:
            if self._state is _CLOSED:
                ticket = BreakerTicket(self, self._epoch)  # closed: no refusal to handle
            else:
                try:
                    ticket = self.admit()
                except CircuitOpenError:
                    fallback = self._fallback
                    if fallback is None:
                        raise
                    result = fallback(*args, **kwargs)
                    if inspect.isawaitable(result):
                        result = await result
                    return cast(_T, result)
            try:
                if self._pending:
                    await self._drain()
                result = await func(*args, **kwargs)
            except BaseException as exc:
                if ticket.ended(exc):
                    await self._drain()
                raise
            if ticket.succeeded():
                await self._drain()
            return result

        return guarded

    async def call(
        self, func: Callable[_P, Awaitable[_T]], *args: _P.args, **kwargs: _P.kwargs
    ) -> _T:
        """Run ``await func(*args, **kwargs)`` through the breaker (no fallback)."""
        ticket = self.admit()
        try:
            if self._pending:
                await self._drain()
            result = await func(*args, **kwargs)
        except BaseException as exc:
            if ticket.ended(exc):
                await self._drain()
            raise
        if ticket.succeeded():
            await self._drain()
        return result

    async def __aenter__(self) -> CircuitBreaker:
        ticket = self.admit()
        if self._pending:
            try:
                await self._drain()
            except BaseException:
                ticket.released()
                raise
        push_entry(self, ticket)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        ticket = cast(BreakerTicket, pop_entry(self))
        if ticket.ended(exc):
            await self._drain()

    def admit(self) -> BreakerTicket:
        """Let one call in, or raise :class:`~aio_client.CircuitOpenError` (with ``retry_after``).

        The ticket records the call's outcome; settle it exactly once, however
        the call ends (see :class:`BreakerTicket`). Half-open, it holds one of
        the ``half_open_max_calls`` probe slots until settled.
        """
        return BreakerTicket(self, self._admit())

    # -- the state machine (synchronous: no await may split a step) ----------

    def _admit(self) -> int:
        """Let a call in (returning its epoch) or raise :class:`CircuitOpenError`."""
        state = self._state
        if state is _CLOSED:
            return self._epoch
        if state is _OPEN:
            now = self._clock()
            if now < self._open_until:
                raise self._refusal(self._open_until - now)
            self._move(_HALF_OPEN)
        if self._probes >= self._half_open_max:
            # Every probe slot is taken; one frees as soon as a probe finishes.
            raise self._refusal(0.0)
        self._probes += 1
        return self._epoch

    def _on_success(self, epoch: int, start: float) -> bool:
        """Record a success; ``True`` when async listeners are waiting to be told."""
        if epoch != self._epoch:
            return False  # admitted in an earlier state period: stale
        window = self._window
        if self._state is _CLOSED:
            if window is None:
                self._failures = 0
                return False
            now = self._clock()
            slow = self._timed and now - start >= cast(float, self._slow_duration)
            window.record(now, False, slow)
            if slow and self._tripped(window):
                self._open(now)
            return bool(self._pending)
        # Half-open: this was a probe.
        self._probes -= 1
        if self._timed:
            now = self._clock()
            if now - start >= cast(float, self._slow_duration):
                self._open(now)
                return bool(self._pending)
        self._probe_successes += 1
        if self._probe_successes >= self._success_threshold:
            self._close()
        return bool(self._pending)

    def _on_failure(self, epoch: int, start: float, exc: Exception | None) -> bool:
        """Record a failure (``exc`` may be ``None`` for a failed response)."""
        if epoch != self._epoch:
            return False
        if self._state is _HALF_OPEN:
            self._probes -= 1
            self._open(self._clock())
            return bool(self._pending)
        self._last_failure = exc
        window = self._window
        if window is None:
            self._failures += 1
            if self._failures >= self._failure_threshold:
                self._open(self._clock())
        else:
            now = self._clock()
            slow = self._timed and now - start >= cast(float, self._slow_duration)
            window.record(now, True, slow)
            if self._tripped(window):
                self._open(now)
        return bool(self._pending)

    def _release(self, epoch: int) -> None:
        """Neither success nor failure: give a probe slot back if it was one."""
        if epoch == self._epoch and self._state is _HALF_OPEN:
            self._probes -= 1

    def _counts(self, exc: Exception) -> bool:
        if not isinstance(exc, self._expected):
            return False
        predicate = self._predicate
        return predicate is None or bool(predicate(exc))

    def _tripped(self, window: RollingWindow) -> bool:
        calls = window.calls
        if calls < self._min_throughput:
            return False
        if window.failures >= cast(float, self._failure_ratio) * calls:
            return True
        return self._timed and window.slow >= self._slow_ratio * calls

    def _open(self, now: float) -> None:
        self._open_until = now + self._break_duration
        self._move(_OPEN)

    def _close(self) -> None:
        self._last_failure = None
        if self._window is not None:
            self._window.reset(self._clock())
        self._move(_CLOSED)

    def _move(self, new: CircuitState) -> None:
        old = self._state
        self._state = new
        self._epoch += 1
        self._probes = 0
        self._probe_successes = 0
        self._failures = 0
        # The state is complete before anyone hears of it.
        for listener in self._sync_listeners:
            try:
                listener(self, old, new)
            except Exception:
                _log.exception("circuit breaker %r: state listener %r failed", self.name, listener)
        for async_listener in self._async_listeners:
            self._pending.append((async_listener, old, new))

    async def _drain(self) -> None:
        """Await pending async listeners in order; one task drains at a time."""
        if self._draining:
            return  # the draining task will deliver what we queued, in order
        self._draining = True
        try:
            pending = self._pending
            while pending:
                listener, old, new = pending.popleft()
                try:
                    await listener(self, old, new)
                except Exception:
                    _log.exception(
                        "circuit breaker %r: state listener %r failed", self.name, listener
                    )
        finally:
            self._draining = False

    def _refusal(self, retry_after: float) -> CircuitOpenError:
        name = self.name or "circuit"
        if retry_after > 0.0:
            message = f"{name!r} is open; probes allowed in {retry_after:.3f} s"
        else:
            message = f"{name!r} is half-open and all {self._half_open_max} probe slot(s) are busy"
        return CircuitOpenError(message, retry_after=retry_after)

    def __repr__(self) -> str:
        mode = (
            f"failure_threshold={self._failure_threshold}"
            if self._window is None
            else f"failure_ratio={self._failure_ratio}"
        )
        return f"<{type(self).__name__} {self.name!r} {self.state.value} {mode}>"


@final
class BreakerTicket:
    """One call let in by a :class:`CircuitBreaker`: made by :meth:`CircuitBreaker.admit`.

    It holds what the call's outcome needs: the state period (epoch) it was
    admitted in, its start on the breaker's clock (seconds; read only when
    slow calls are tracked) and :attr:`budget`. Settle it once, however the
    call ends, with :meth:`succeeded`, :meth:`failed`, :meth:`timed_out`,
    :meth:`released` or :meth:`ended`; a ticket already settled ignores
    later calls. A half-open ticket holds a probe slot until then.

    The recording methods return ``True`` when async state listeners are
    waiting to be told: ``await`` :meth:`notify` then, off the cancellation
    path (a cancelled task leaves them to the next caller). Before the call,
    ``if ticket.waiting: await ticket.notify()`` delivers changes others left.
    """

    # ``_epoch`` is the state period admitted in, or -1 once settled (one
    # slot fewer: a ticket is made on every call's path).
    __slots__ = ("_breaker", "_budget", "_epoch", "_start")

    def __init__(self, breaker: CircuitBreaker, epoch: int) -> None:
        self._breaker = breaker
        self._epoch = epoch
        self._start = breaker._clock() if breaker._timed else 0.0
        deadline = current_deadline()
        self._budget = _INF if deadline is None else deadline.remaining()

    @property
    def budget(self) -> float:
        """Seconds the ambient deadline left the call when admitted (``inf``: no deadline)."""
        return self._budget

    @property
    def settled(self) -> bool:
        """Whether the outcome is recorded (or the ticket released)."""
        return self._epoch < 0

    @property
    def waiting(self) -> bool:
        """Whether async state listeners are waiting to be told (see :meth:`notify`)."""
        return bool(self._breaker._pending)

    def succeeded(self) -> bool:
        """Record a success; ``True`` when async listeners are waiting."""
        epoch = self._epoch
        if epoch < 0:
            return False
        self._epoch = _SETTLED
        breaker = self._breaker
        if breaker._state is _CLOSED and breaker._window is None and epoch == breaker._epoch:
            breaker._failures = 0  # the common case, without a call
            return False
        return breaker._on_success(epoch, self._start)

    def failed(self, exc: Exception | None = None) -> bool:
        """Record a failure: ``exc`` raised, or ``None`` for a failed response.

        A :class:`~aio_client.DeadlineExceededError` counts only when
        :attr:`budget` was at least the breaker's ``min_deadline_budget``
        (seconds); with less the ticket is released instead (the caller's
        short budget ran out, which says nothing about the dependency).
        ``True`` when async listeners are waiting.
        """
        if isinstance(exc, DeadlineExceededError):
            return self.timed_out(exc)
        epoch = self._epoch
        if epoch < 0:
            return False
        self._epoch = _SETTLED
        return self._breaker._on_failure(epoch, self._start, exc)

    def timed_out(self, exc: Exception | None = None) -> bool:
        """The call's own deadline passed: ``exc`` is the error it raised, or ``None``
        when it was cancelled as the deadline passed.

        A failure when :attr:`budget` was at least the breaker's
        ``min_deadline_budget`` (seconds), else neither (the ticket is
        released). ``True`` when async listeners are waiting.
        """
        epoch = self._epoch
        if epoch < 0:
            return False
        self._epoch = _SETTLED
        breaker = self._breaker
        if self._budget < breaker._min_budget:
            breaker._release(epoch)
            return False
        return breaker._on_failure(epoch, self._start, exc)

    def released(self) -> None:
        """Neither success nor failure (cancelled, or an error that does not count):
        a probe gives its slot back."""
        epoch = self._epoch
        if epoch < 0:
            return
        self._epoch = _SETTLED
        self._breaker._release(epoch)

    def ended(self, exc: BaseException | None) -> bool:
        """Settle by the breaker's own rules: how the call ended (``None``: it returned).

        An exception that is an ``expected_exception`` (and passes
        ``failure_predicate``) is a failure, under the deadline rule of
        :meth:`failed`; anything else, cancellation included, releases the
        ticket. ``True`` when async listeners are waiting.
        """
        if exc is None:
            return self.succeeded()
        if isinstance(exc, Exception) and self._breaker._counts(exc):
            return self.failed(exc)
        self.released()
        return False

    async def notify(self) -> None:
        """Await the breaker's waiting async state listeners, in order.

        Only one task delivers at a time; if another is already at it, this
        returns at once and that task delivers what is queued.
        """
        await self._breaker._drain()

    def __repr__(self) -> str:
        status = "settled" if self._epoch < 0 else f"epoch={self._epoch}"
        return f"<BreakerTicket {self._breaker.name!r} {status}>"


def _is_async_callable(func: object) -> bool:
    while isinstance(func, functools.partial):
        func = func.func
    return inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(
        getattr(func, "__call__", None)  # noqa: B004 - an object with an async __call__
    )
