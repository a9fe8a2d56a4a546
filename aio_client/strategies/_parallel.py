"""Hedged attempts: start another attempt when the first is slow, keep the first good answer.

How a hedged call runs on asyncio, where nearly every call ends with attempt 1:

- Attempt 1 runs inline, in the caller's task, exactly as a sequential call's
  does. The hedge delay is one entry on the client's shared
  :class:`~aio_client._timer.DeadlineTimer`, withdrawn when attempt 1 answers
  first: that entry is all the common case pays for.
- When the delay passes, the next attempt starts as a task of its own, in
  the caller's context; only from then on is there anything concurrent to
  manage.
- When an attempt running in a task wins while the caller's task is still in
  its own attempt, that attempt is interrupted by cancelling the caller's
  task, and the race withdraws its cancellation with ``Task.uncancel()`` (the
  protocol ``asyncio.timeout`` follows). Any other cancellation arriving
  meanwhile, the call's deadline included, is kept and propagates.
- Losers are cancelled once and awaited before
  :meth:`ParallelStrategy.execute` returns or raises; a cancellation of the
  caller arriving while they are awaited cancels them again, and is raised
  once they are gone.

Inside a fan-out, the fan-out may move the armed timer earlier
(:meth:`_Race.straggling`, see :mod:`aio_client._siblings`): the hedge it
starts is the same next attempt, with the same budget and deadline checks.

On any other event loop (trio, through anyio) every attempt runs in a task
group and the timer is a sleeping task: slower, with the same decisions,
which :class:`_Race` makes for both.
"""

from __future__ import annotations

import asyncio
import contextvars
import math
from asyncio import CancelledError
from collections.abc import Callable, Sequence
from typing import Final, cast, final

import anyio
from anyio.abc import TaskGroup

from .. import _clock
from .._attempts import AttemptKind
from .._call import _HEDGED, Call, Outcome
from .._cancel import CancelReason
from .._classifier import Verdict
from .._errors import ConfigError, RefusedError
from .._models import Response
from .._timer import DeadlineTimer, Entry
from .._validation import positive_int, validate_timeout
from ._adaptive import AdaptiveDelays, DelayKey
from ._base import Strategy, provably_unsent, requested_wait
from ._delays import Delays

__all__ = ["HedgeDelays", "ParallelStrategy", "parallel_strategy"]

#: A fixed delay (seconds), one per hedge, a function of the hedge number, or adaptive.
HedgeDelays = float | Sequence[float] | Delays | AdaptiveDelays

# Looked up once: enum members cost a class attribute lookup each time.
_FIRST: Final = AttemptKind.FIRST
_RETRY: Final = AttemptKind.RETRY
_HEDGE: Final = AttemptKind.HEDGE
_RETRY_VERDICT: Final = Verdict.RETRY
_ACCEPT: Final = Verdict.ACCEPT


@final
class _Entry:
    """An attempt in flight."""

    __slots__ = ("endpoint", "start", "task")

    def __init__(self, endpoint: str, start: float) -> None:
        self.endpoint = endpoint
        #: Loop time it started.
        self.start = start
        #: The task running it, or ``None`` when it runs in the caller's task.
        self.task: asyncio.Task[None] | None = None


@final
class ParallelStrategy:
    """Hedged attempts; see :func:`parallel_strategy`."""

    __slots__ = ("_adaptive", "_attempts", "_delays", "_max_retry_after")

    def __init__(self, attempts: int, delays: HedgeDelays, max_retry_after: float = 30.0) -> None:
        self._attempts = positive_int(attempts, "attempts", maximum=10)
        self._adaptive = delays if isinstance(delays, AdaptiveDelays) else None
        self._delays = _fixed_delays(delays) if self._adaptive is None else None
        self._max_retry_after = validate_timeout(max_retry_after, "max_retry_after")

    async def execute(self, call: Call, /) -> Response:
        """Run attempts, hedging after the delay or at once after a retryable failure."""
        timer = call.timer
        if timer is not None and call.task is not None:
            return await _AsyncioRace(self, call, timer, call.task).run()
        return await _AnyioRace(self, call).run()

    def _delay(self, number: int, key: DelayKey | None) -> float:
        """Seconds after attempt ``number`` starts before the next one is due."""
        if self._adaptive is not None and key is not None:
            return self._adaptive.delay(key)
        return cast(Delays, self._delays)(number)

    def __repr__(self) -> str:
        delays = self._adaptive if self._adaptive is not None else self._delays
        return f"parallel_strategy(attempts={self._attempts}, delays={delays!r})"


class _Race:
    """One hedged call's decisions: when an attempt starts, which outcome ends the call.

    Runs on one event loop thread; every method is called from the caller's
    task, an attempt's task or a timer callback, never concurrently. The
    runner subclasses decide *where* attempts run and how the caller waits.
    """

    __slots__ = (
        "began",
        "busy",
        "call",
        "clock",
        "due",
        "error",
        "final",
        "in_flight",
        "inline",
        "key",
        "last",
        "latest",
        "limit",
        "may_launch",
        "not_before",
        "paused",
        "siblings",
        "started",
        "strategy",
        "took",
    )

    def __init__(self, strategy: ParallelStrategy, call: Call, clock: Callable[[], float]) -> None:
        self.strategy = strategy
        self.call = call
        self.clock = clock
        #: Most attempts this call may make.
        self.limit = strategy._attempts if call.retries_allowed else 1
        #: The adaptive delays' key, or None for fixed delays.
        self.key: DelayKey | None = (
            None
            if strategy._adaptive is None
            else (call.endpoint_for(1), call.request.method, call.request.route)
        )
        self.started = 0
        self.in_flight: dict[int, _Entry] = {}
        #: The outcome that ends the call (accepted, or final and not good).
        self.final: Outcome | None = None
        #: The latest retryable outcome: the call's result when nothing better comes.
        self.last: Outcome | None = None
        #: A bug raised by an attempt or a callback: raised to the caller.
        self.error: Exception | None = None
        #: False once an extra attempt was refused (budget, deadline, Retry-After).
        self.may_launch = True
        #: No attempt starts before this loop time (a ``Retry-After`` asked so).
        self.not_before = -math.inf
        #: The attempt the caller's task should run next: (number, kind, entry).
        self.inline: tuple[int, AttemptKind, _Entry] | None = None
        #: Whether the caller's task is inside an attempt of its own.
        self.busy = False
        #: Loop time the next attempt is due (the armed timer); inf when none is.
        self.due = math.inf
        #: Loop times attempt 1 and the newest attempt started.
        self.began = self.latest = 0.0
        #: The other calls of the fan-out this call is part of, if any.
        self.siblings = call.siblings
        #: Seconds from attempt 1's start to the accepted answer, once there is one.
        self.took: float | None = None
        #: While the newest attempt waits for a connection: (loop time it began
        #: waiting, seconds the held timer had left or None); see :meth:`queued`.
        self.paused: tuple[float, float | None] | None = None

    # -- runner hooks ---------------------------------------------------------------

    def _runs_inline(self) -> bool:
        """Whether the next attempt may run in the caller's task."""
        return False

    def _spawn(self, number: int, kind: AttemptKind, entry: _Entry) -> None:
        raise NotImplementedError

    def _arm(self, at: float) -> None:
        """Call :meth:`_on_timer` at loop time ``at`` (replacing an armed timer)."""
        raise NotImplementedError

    def _disarm(self) -> None:
        raise NotImplementedError

    def _armed(self) -> bool:
        raise NotImplementedError

    def _notify(self) -> None:
        """Wake the caller's task if it is waiting for the race to change."""
        raise NotImplementedError

    def _decided(self) -> None:
        """The call's end was decided (an outcome or a bug): wake or interrupt the caller."""
        self._notify()

    def _ended(self, entry: _Entry) -> None:
        """An attempt running in a task of its own ended, however it ended."""

    async def _attempt(self, number: int, kind: AttemptKind, entry: _Entry) -> None:
        """Run attempt ``number`` in a task of its own and settle its outcome."""
        try:
            outcome = await self.call.attempt(number, kind, endpoint=entry.endpoint)
        except Exception as exc:
            self.in_flight.pop(number, None)
            self.fail(exc)
            return
        except BaseException:  # cancelled: a loser, or the whole call
            self.in_flight.pop(number, None)
            raise
        finally:
            self._ended(entry)
        self.settle(number, outcome)

    # -- decisions ------------------------------------------------------------------

    def over(self) -> bool:
        """Whether nothing more can happen: an outcome ended the call, or no attempt
        is in flight and none is due."""
        return (
            self.final is not None
            or self.error is not None
            or (not self.in_flight and not self._armed())
        )

    def start(self, kind: AttemptKind) -> None:
        """Start the next attempt, in the caller's task when it is free, else in a task."""
        number = self.started = self.started + 1
        call = self.call
        endpoint = call.endpoint_for(1) if number == 1 else _pick(call, self.in_flight)
        now = self.latest = self.clock()
        entry = _Entry(endpoint, now)
        self.in_flight[number] = entry
        siblings = self.siblings
        if number == 1:
            self.began = now
            if siblings is not None and self.limit > 1:
                siblings.join(self)
        if self.may_launch and number < self.limit:
            at = now + self.strategy._delay(number, self.key)
            if siblings is not None:
                straggler = siblings.straggler_delay()
                if straggler is not None and now + straggler < at:
                    at = now + straggler
            self._arm(at if at > self.not_before else self.not_before)
        if self._runs_inline():
            self.inline = (number, kind, entry)
            self._notify()
        else:
            self._spawn(number, kind, entry)

    def settle(self, number: int, outcome: Outcome) -> None:
        """Take attempt ``number``'s outcome: end the call, or start the next attempt."""
        entry = self.in_flight.pop(number, None)
        if self.final is not None or self.error is not None or entry is None:
            return  # a loser finishing late
        call = self.call
        verdict = call.classify(outcome)
        if verdict is not _RETRY_VERDICT:
            if self.in_flight and isinstance(outcome, RefusedError):
                # A local policy refused this attempt before it was sent (a
                # half-open breaker letting its one probe through, a full
                # bulkhead): the attempts in flight may still answer. No more
                # attempts go out; the call waits for those.
                self.last = outcome
                self.may_launch = False
                return
            self.final = outcome
            self._disarm()
            if verdict is _ACCEPT:
                self._record(entry, number)
                self.took = self.clock() - self.began
            self._decided()
            return
        self.last = outcome
        if self.started == 1 and self.limit == 1 and provably_unsent(outcome):
            self.limit = 2  # never sent: safe to send once more, even a POST
        if self.may_launch and self.started < self.limit:
            wait = self._wait_asked(outcome)
            if wait is None:
                self.may_launch = False
            elif wait > 0.0:
                # Every further attempt waits, hedges included: the server asked.
                self.not_before = self.clock() + wait
                self._arm(self.not_before)
            elif self._may_send(_RETRY):
                self.start(_RETRY)  # a retryable failure starts the next attempt at once
            else:
                self.may_launch = False
        if not self.in_flight and not (self.may_launch and self.started < self.limit):
            self._disarm()
        if self.over():
            self._notify()

    def fail(self, exc: Exception) -> None:
        """An attempt or a callback raised (a bug): end the call with it."""
        if self.error is None:
            self.error = exc
            self._disarm()
            self._decided()

    def straggling(self, delay: float) -> None:
        """The fan-out is down to its last calls: hedge this one as soon as its
        newest attempt has run ``delay`` seconds, if its strategy has a hedge left."""
        if self.final is not None or self.error is not None or not self._armed():
            return
        at = self.latest + delay
        if at < self.not_before:
            at = self.not_before
        if at < self.due:
            self._arm(at)

    def queued(self, number: int, waiting: bool) -> None:
        """Attempt ``number`` began (``waiting``) or ended waiting for a connection.

        A hedge is for an attempt the server is slow to answer, not for one
        still waiting in the transport's pool: a hedge sent then would only
        queue behind it, or take the connection it waits for. So while the
        newest attempt waits, the timer is held; once it is sent, the timer
        runs for what was left. Its time (for adaptive delays and a fan-out's
        stragglers) counts from then, too.
        """
        if number != self.started or self.final is not None or self.error is not None:
            return
        now = self.clock()
        if waiting:
            # What the timer had left; None when none is armed (no hedge to come).
            left = None
            if self._armed():
                left = max(self.due - now, 0.0)
                self._disarm()
            self.paused = (now, left)
            return
        paused = self.paused
        if paused is None:
            return
        self.paused = None
        began, left = paused
        waited = now - began
        self.latest += waited
        entry = self.in_flight.get(number)
        if entry is not None:
            entry.start += waited
        if number == 1:
            self.began += waited
        if left is not None:
            at = now + left
            self._arm(at if at > self.not_before else self.not_before)

    def left(self) -> None:
        """The race is over: its fan-out, if any, stops watching it."""
        if self.siblings is not None:
            self.siblings.leave(self, self.took)

    def _on_timer(self) -> None:
        """The hedge delay (or a ``Retry-After`` wait) passed: start the next attempt."""
        try:
            if self.final is not None or self.error is not None:
                return
            if not self.may_launch or self.started >= self.limit:
                return
            if self.clock() < self.not_before:
                self._arm(self.not_before)
                return
            kind = _HEDGE if self.in_flight else _RETRY
            if self._may_send(kind):
                self.start(kind)
            else:
                self.may_launch = False
                if self.over():
                    self._notify()
        except Exception as exc:  # an observer refusing loudly: the call ends with it
            self.fail(exc)

    def _may_send(self, kind: AttemptKind) -> bool:
        """Whether one more attempt may go out: time left, and a budget token."""
        call = self.call
        return call.remaining() >= call.low_timeout and call.try_extra_attempt(kind)

    def _wait_asked(self, outcome: Outcome) -> float | None:
        """Seconds to wait before the next attempt as a ``Retry-After`` asks (0.0: none),
        or ``None`` when the wait is too long or would not fit in the budget."""
        asked = requested_wait(outcome)
        if asked is None or asked <= 0.0:
            return 0.0
        call = self.call
        if asked > self.strategy._max_retry_after or call.remaining() - asked < call.low_timeout:
            return None
        return asked

    def _record(self, entry: _Entry, number: int) -> None:
        adaptive = self.strategy._adaptive
        key = self.key
        if adaptive is None or key is None:
            return
        now = self.clock()
        adaptive.record((entry.endpoint, key[1], key[2]), now - entry.start)
        first = self.in_flight.get(1)
        if first is not None and number != 1:
            # The first attempt lost while still running: it took at least this
            # long. Counting it keeps the slow tail in the percentile, which
            # would otherwise drift down as hedging hides slow answers.
            adaptive.record((first.endpoint, key[1], key[2]), now - first.start)

    def result(self) -> Response:
        """The call's response, or its error raised with the history."""
        if self.error is not None:
            raise self.error
        outcome = self.final if self.final is not None else self.last
        if outcome is None:
            # Every attempt ended without an outcome: only a cancellation that
            # something inside swallowed can do that, so the deadline passed.
            raise self.call.deadline_error()
        return self.call.result(outcome)


@final
class _AsyncioRace(_Race):
    """Attempt 1 (and any attempt started while nothing else runs) in the caller's
    task; later ones in tasks; the hedge delay on the client's loop timer."""

    __slots__ = (
        "_baseline",
        "_clock_timer",
        "_context",
        "_entry_cancelling",
        "_interrupting",
        "_loop",
        "_task",
        "_tasks",
        "_timer",
        "_waiter",
    )

    def __init__(
        self,
        strategy: ParallelStrategy,
        call: Call,
        timer: DeadlineTimer,
        task: asyncio.Task[object],
    ) -> None:
        loop = timer.loop
        super().__init__(strategy, call, loop.time)
        self._loop = loop
        self._task = task
        self._clock_timer = timer
        self._timer: Entry | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._tasks: set[asyncio.Task[None]] | None = None
        self._interrupting = False
        self._baseline = 0
        self._entry_cancelling = task.cancelling()
        # The caller's context (its ambient deadline, its tracing span): hedges
        # and the timer callback run in it, never in whatever context the shared
        # loop timer happens to carry.
        self._context = contextvars.copy_context()

    async def run(self) -> Response:
        call = self.call
        # Pool gates tell queued() of this call's attempts (see _HEDGED).
        key = id(call.deadline)
        _HEDGED[key] = self
        try:
            self.start(_FIRST)
            while True:
                inline = self.inline
                if inline is not None:
                    self.inline = None
                    number, kind, entry = inline
                    self.busy = True
                    try:
                        outcome = await call.attempt(number, kind, endpoint=entry.endpoint)
                    except CancelledError:
                        self.busy = False
                        if not self._withdraw_interrupt():
                            raise
                        self.in_flight.pop(number, None)  # lost to a faster attempt
                        continue
                    self.busy = False
                    if self._interrupting:
                        self._interrupt_swallowed()
                    self.settle(number, outcome)
                elif self.over():
                    break
                else:
                    waiter = self._waiter = self._loop.create_future()
                    try:
                        await waiter
                    finally:
                        self._waiter = None
        except BaseException:
            _forget(key)
            self._disarm()
            self.left()
            if self._tasks:
                await self._abandon()
            raise
        try:
            del _HEDGED[key]  # the common path: cheaper than pop()
        except KeyError:
            pass  # the same call raced by another strategy at once took it out
        self.left()
        if self._tasks:
            await self._abandon()
        return self.result()

    # -- runner hooks ---------------------------------------------------------------

    def _runs_inline(self) -> bool:
        return not self.busy and self.inline is None

    def _spawn(self, number: int, kind: AttemptKind, entry: _Entry) -> None:
        tasks = self._tasks
        if tasks is None:
            tasks = self._tasks = set()
        task = self._loop.create_task(
            self._attempt(number, kind, entry), context=self._context.copy()
        )
        if not task.done():  # an eager task may already have finished
            tasks.add(task)
            entry.task = task

    def _arm(self, at: float) -> None:
        if self._timer is not None:
            self._clock_timer.finish(self._timer)
        self._timer = self._clock_timer.call_at(at, self._fire)
        self.due = at

    def _disarm(self) -> None:
        if self._timer is not None:
            self._clock_timer.finish(self._timer)
            self._timer = None
            self.due = math.inf

    def _armed(self) -> bool:
        return self._timer is not None

    def _fire(self) -> None:
        self._timer = None
        self.due = math.inf
        self._context.run(self._on_timer)

    def _notify(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _decided(self) -> None:
        if self.busy:
            self._interrupt()
        else:
            self._notify()

    # -- attempts in tasks ----------------------------------------------------------

    def _ended(self, entry: _Entry) -> None:
        if entry.task is not None and self._tasks is not None:
            self._tasks.discard(entry.task)

    def _interrupt(self) -> None:
        """Cancel the caller's own attempt: another attempt decided the call."""
        task = self._task
        if self._interrupting or task.cancelling() > self._entry_cancelling:
            # Another cancellation (the deadline, the caller's caller) is already
            # on its way: it ends the attempt, and the call with it.
            return
        self._interrupting = True
        self._baseline = task.cancelling()
        task.cancel(CancelReason.HEDGE_LOST)

    def _withdraw_interrupt(self) -> bool:
        """After the caller's task caught a cancellation: ``True`` when it was only
        the race's interrupt, which is withdrawn; ``False`` when it must propagate."""
        if not self._interrupting:
            return False
        self._interrupting = False
        return self._task.uncancel() <= self._baseline

    def _interrupt_swallowed(self) -> None:
        # Something inside the attempt swallowed the interrupt and the attempt
        # finished anyway: withdraw the count it left, if it left one.
        self._interrupting = False
        if self._task.cancelling() > self._baseline:
            self._task.uncancel()

    async def _abandon(self) -> None:
        """Cancel the attempts still running and wait until they have ended.

        Each is cancelled once: a second native cancellation would cut through
        the shielded cleanup the first one started (a transport giving its
        connection back). Only when the caller is cancelled again while it
        waits (its deadline is level-triggered) are they cancelled again; that
        cancellation is raised once they are gone: nothing outlives the call.
        """
        tasks = self._tasks or set()
        pending = {task for task in tasks if not task.done()}
        for task in pending:
            task.cancel(CancelReason.HEDGE_LOST)
        caught: BaseException | None = None
        while pending:
            try:
                _, pending = await asyncio.wait(pending)
            except CancelledError as exc:
                caught = exc
                pending = {task for task in pending if not task.done()}
                for task in pending:
                    task.cancel()
        tasks.clear()
        if caught is not None:
            raise caught


@final
class _AnyioRace(_Race):
    """Every attempt in an anyio task group; the timer is a sleeping task (trio)."""

    __slots__ = ("_changed", "_group", "_timer")

    def __init__(self, strategy: ParallelStrategy, call: Call) -> None:
        super().__init__(strategy, call, _clock.now)
        self._group: TaskGroup | None = None
        self._timer: anyio.CancelScope | None = None
        self._changed = anyio.Event()

    async def run(self) -> Response:
        # Pool gates tell queued() of this call's attempts (see _HEDGED).
        key = id(self.call.deadline)
        _HEDGED[key] = self
        try:
            async with anyio.create_task_group() as group:
                self._group = group
                self.start(_FIRST)
                while not self.over():
                    await self._changed.wait()
                    self._changed = anyio.Event()
                group.cancel_scope.cancel()  # losers are cancelled and awaited here
        except BaseExceptionGroup as group_error:
            # Attempts never raise into the group (bugs go to ``fail``), so a
            # group holds a cancellation or a bug of ours: never hand callers
            # a one-member group.
            if len(group_error.exceptions) == 1:
                raise group_error.exceptions[0] from None
            raise
        finally:
            _forget(key)
            self.left()
        return self.result()

    def _spawn(self, number: int, kind: AttemptKind, entry: _Entry) -> None:
        cast(TaskGroup, self._group).start_soon(self._attempt, number, kind, entry)

    def _arm(self, at: float) -> None:
        self._disarm()
        scope = self._timer = anyio.CancelScope()
        self.due = at
        cast(TaskGroup, self._group).start_soon(self._sleep_until, at, scope)

    async def _sleep_until(self, at: float, scope: anyio.CancelScope) -> None:
        with scope:
            await anyio.sleep_until(at)
            if self._timer is scope:
                self._timer = None
                self.due = math.inf
                self._on_timer()

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self.due = math.inf

    def _armed(self) -> bool:
        return self._timer is not None

    def _notify(self) -> None:
        self._changed.set()


def _forget(key: int) -> None:
    """Take a race out of the pool gates' registry (see ``_HEDGED``)."""
    _HEDGED.pop(key, None)


def _pick(call: Call, in_flight: dict[int, _Entry]) -> str:
    """The next endpoint in rotation that no in-flight attempt is using."""
    busy = {entry.endpoint for entry in in_flight.values()}
    candidates = call.endpoints
    for endpoint in candidates:
        if endpoint not in busy:
            return endpoint
    return candidates[len(in_flight) % len(candidates)]


class _Sequence:
    __slots__ = ("_values",)

    def __init__(self, values: Sequence[float]) -> None:
        if not values:
            raise ConfigError("delays must not be an empty sequence")
        self._values = tuple(validate_timeout(v, "delays[]") for v in values)

    def __call__(self, n: int) -> float:
        return self._values[min(n, len(self._values)) - 1]

    def __repr__(self) -> str:
        return repr(list(self._values))


class _Constant:
    __slots__ = ("_value",)

    def __init__(self, value: float) -> None:
        self._value = validate_timeout(value, "delays")

    def __call__(self, n: int) -> float:
        return self._value

    def __repr__(self) -> str:
        return repr(self._value)


def _fixed_delays(delays: HedgeDelays) -> Delays:
    if isinstance(delays, (int, float)) and not isinstance(delays, bool):
        return _Constant(delays)
    if isinstance(delays, Sequence) and not isinstance(delays, str):
        return _Sequence(delays)
    if callable(delays):
        return delays
    raise ConfigError(
        "delays must be seconds, a sequence of seconds, a function of the hedge number, "
        f"or adaptive_delays(...); got {delays!r}"
    )


def parallel_strategy(
    attempts: int = 3, delays: HedgeDelays = 0.05, *, max_retry_after: float = 30.0
) -> Strategy:
    """Hedged requests: up to ``attempts`` concurrent attempts; the first good answer wins.

    Attempt 1 starts at once; attempt ``k + 1`` starts when ``delays`` has
    passed since attempt ``k`` started, or at once when an attempt fails with a
    retryable outcome. Losers are cancelled and awaited; their connections are
    closed. Every hedge draws from the client's retry budget (none is sent when
    it is empty) and only idempotent requests are hedged unless the call opts
    in. With several endpoints, a hedge goes to one no in-flight attempt uses.

    ``delays``: seconds (``0.05``), one per hedge (``[0.02, 0.05]``), a
    function of the hedge number (``linear_delays(...)``), or
    :func:`adaptive_delays` to follow the observed latency percentile.

    A retryable answer carrying ``Retry-After`` (seconds or an HTTP date)
    holds back every further attempt, hedges included, until that time; when
    the wait is longer than ``max_retry_after`` seconds or would not fit in
    the call's budget, no further attempt is sent and the call ends with that
    answer unless an attempt still in flight does better.

    Attempt 1 runs in the caller's own task: a call whose first attempt
    answers before the delay costs about what a sequential call costs.

    Inside a fan-out (:meth:`Client.fan_out`), a call still running when the
    fan-out is down to its last calls is hedged sooner, once its newest attempt
    has run twice the median time its siblings took (``hedge_stragglers``).
    """
    return ParallelStrategy(attempts, delays, max_retry_after)
