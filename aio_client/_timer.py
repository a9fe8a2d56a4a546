"""Call deadlines on asyncio: many calls, one armed event-loop timer.

``asyncio.timeout_at`` costs a ``Timeout`` object, a ``TimerHandle`` pushed on
the loop's heap and cancelled again, and two coroutine frames: when measured,
the largest single cost of a call (see ``benchmarks/README.md``).
A client's calls share one :class:`DeadlineTimer` instead: starting a call
pushes a small entry on the timer's own heap, finishing it marks the entry
done, and the loop timer is re-armed only when a call's deadline is nearer
than the armed one. Hedged strategies put their hedge timers on the same
heap (:meth:`DeadlineTimer.call_at`), for the same reason.

The cancellation protocol is asyncio's own (the one ``asyncio.timeout`` keeps):
an expired call's task is cancelled natively, and when the call ends the
cancellation is withdrawn with ``Task.uncancel()``; it is reported as the
deadline's only when no other cancellation of the task arrived meanwhile.

An asyncio cancellation is delivered once, and code inside a call can lose
it: a cancel scope whose own deadline falls in the same loop iteration may
take it for its own, a careless ``except`` may drop it. So the deadline is
level-triggered, as anyio's and trio's scopes are: a call still running past
its deadline is cancelled again, and again, until it ends. Again at once
when the cancellation was visibly lost (something withdrew it with
``uncancel()`` and carried on), else every :data:`_GRACE` seconds: a native
cancellation cuts through anyio's shields, and the pause leaves the cleanup
the first cancellation started (closing a connection, giving a pool slot
back) time to finish undisturbed.
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import math
from collections.abc import Callable
from heapq import heapify, heappop, heappush
from typing import Any, Final, final

__all__ = ["DeadlineTimer"]

# An entry is a list, the cheapest mutable record:
# [at, seq, task, cancelling, state, times cancelled, last cancelled at], or
# for a callback [at, seq, callback, _CALLBACK, state, 0, 0.0].
# The heap orders entries by deadline; the unique sequence number breaks ties so
# that the comparison never reaches the task.
_AT: Final = 0
_TASK: Final = 2
_CANCELLING: Final = 3
_STATE: Final = 4
_CANCELS: Final = 5
_LAST: Final = 6
# In the cancelling slot: the entry calls a function instead of cancelling a task.
_CALLBACK: Final = -1

_PENDING: Final = 0
_FIRED: Final = 1
_DONE: Final = 2

# Finished entries stay on the heap until their deadline or until they
# outnumber the pending ones by this margin, when the heap is rebuilt
# (amortised O(1) per call, as asyncio does with cancelled timer handles).
_COMPACT_SLACK: Final = 256

# Seconds between checks on calls that outlive their deadline, and between
# cancellations of a call that still runs although its cancellation was not lost.
_CHECK_EVERY: Final = 0.005
_GRACE: Final = 0.1

#: A registered call: see the layout above.
Entry = list[Any]


@final
class DeadlineTimer:
    """Cancels each registered task whose deadline passes; one per event loop."""

    __slots__ = (
        "_armed_at",
        "_context",
        "_expired",
        "_handle",
        "_heap",
        "_pending",
        "_refire",
        "_seq",
        "loop",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        #: The event loop whose clock the deadlines are on.
        self.loop = loop
        self._heap: list[Entry] = []
        self._handle: asyncio.TimerHandle | None = None
        self._armed_at = math.inf
        self._pending = 0
        self._seq = itertools.count()
        # Entries whose task was cancelled and whose call has not ended yet.
        self._expired: list[Entry] = []
        self._refire: asyncio.TimerHandle | None = None
        # The loop timers run in an empty context of their own, not in the one of
        # whichever call happened to arm them; callbacks bring their own.
        self._context = contextvars.Context()

    def start(self, at: float, task: asyncio.Task[object]) -> Entry:
        """Cancel ``task`` at loop time ``at`` unless :meth:`finish` comes first."""
        entry: Entry = [at, next(self._seq), task, task.cancelling(), _PENDING, 0, 0.0]
        heappush(self._heap, entry)
        self._pending += 1
        if at < self._armed_at:
            self._arm(at)
        return entry

    def call_at(self, at: float, callback: Callable[[], object]) -> Entry:
        """Call ``callback()`` at loop time ``at`` unless :meth:`finish` comes first.

        Cheaper than ``loop.call_at`` when most such timers are withdrawn
        before they are due: a withdrawn one costs no loop timer at all.
        """
        entry: Entry = [at, next(self._seq), callback, _CALLBACK, _PENDING, 0, 0.0]
        heappush(self._heap, entry)
        self._pending += 1
        if at < self._armed_at:
            self._arm(at)
        return entry

    def finish(self, entry: Entry) -> bool:
        """Forget ``entry``; ``True`` when its deadline is why its task was cancelled.

        Idempotent. A fired entry's cancellation is withdrawn here, whatever the
        call ended with.
        """
        state = entry[_STATE]
        if state == _DONE:
            return False
        task: asyncio.Task[object] = entry[_TASK]
        entry[_STATE] = _DONE
        entry[_TASK] = None  # the heap may hold the entry a while: not the task
        self._pending -= 1
        heap = self._heap
        if not self._pending:
            heap.clear()  # everything left is finished; the armed timer fires harmlessly
        elif len(heap) > 2 * self._pending + _COMPACT_SLACK:
            heap[:] = [item for item in heap if item[_STATE] != _DONE]
            heapify(heap)
        if state != _FIRED:
            return False
        # Withdraw the deadline's cancellations; they were the only ones unless
        # somebody else cancelled the task too.
        baseline: int = entry[_CANCELLING]
        for _ in range(entry[_CANCELS]):
            if task.cancelling() <= baseline:
                break  # something inside withdrew one already (and lost it)
            task.uncancel()
        return task.cancelling() <= baseline

    @property
    def pending(self) -> int:
        """Entries not yet finished (deadlines still to enforce)."""
        return self._pending

    def close(self) -> None:
        """Disarm the loop timer (entries still pending are no longer enforced)."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._armed_at = math.inf
        if self._refire is not None:
            self._refire.cancel()
            self._refire = None
        self._expired.clear()

    def _arm(self, at: float) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._handle = self.loop.call_at(at, self._fire, context=self._context)
        self._armed_at = at

    def _fire(self) -> None:
        self._handle = None
        self._armed_at = math.inf
        now = self.loop.time()
        heap = self._heap
        due: list[Callable[[], object]] = []
        while heap and heap[0][_AT] <= now:
            entry = heappop(heap)
            if entry[_STATE] != _PENDING:
                continue
            if entry[_CANCELLING] == _CALLBACK:
                entry[_STATE] = _DONE
                self._pending -= 1
                due.append(entry[_TASK])
                entry[_TASK] = None
            else:
                entry[_STATE] = _FIRED
                self._cancel(entry, now)
                self._expired.append(entry)
        while heap and heap[0][_STATE] == _DONE:
            heappop(heap)  # finished early: no reason to wake the loop for them
        if heap:
            self._arm(heap[0][_AT])
        if self._expired and self._refire is None:
            self._refire = self.loop.call_later(
                _CHECK_EVERY, self._cancel_again, context=self._context
            )
        # Last, once the heap is consistent: a callback may add entries.
        for callback in due:
            try:
                callback()
            except Exception as exc:
                self.loop.call_exception_handler(
                    {"message": "a timer callback raised", "exception": exc}
                )

    @staticmethod
    def _cancel(entry: Entry, now: float) -> None:
        entry[_CANCELS] += 1
        entry[_LAST] = now
        entry[_TASK].cancel()

    def _cancel_again(self) -> None:
        # Level-triggered: a call still running past its deadline is cancelled
        # again until it ends and finish() forgets it (see the module docstring).
        self._refire = None
        now = self.loop.time()
        expired = self._expired = [entry for entry in self._expired if entry[_STATE] == _FIRED]
        for entry in expired:
            task = entry[_TASK]
            if task.done():
                continue
            if task.cancelling() <= entry[_CANCELLING] or now - entry[_LAST] >= _GRACE:
                self._cancel(entry, now)
        if expired:
            self._refire = self.loop.call_later(
                _CHECK_EVERY, self._cancel_again, context=self._context
            )
