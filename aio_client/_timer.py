"""Call deadlines on asyncio: many calls, one armed event-loop timer.

``asyncio.timeout_at`` costs a ``Timeout`` object, a ``TimerHandle`` pushed on
the loop's heap and cancelled again, and two coroutine frames: about 3.7 µs of
every call on the machines we measure on, the largest single cost of a call.
A client's calls share one :class:`DeadlineTimer` instead: starting a call
pushes a small entry on the timer's own heap, finishing it marks the entry
done, and the loop timer is re-armed only when a call's deadline is nearer
than the armed one.

The cancellation protocol is asyncio's own (the one ``asyncio.timeout`` keeps):
an expired call's task is cancelled natively, and when the call ends the
cancellation is withdrawn with ``Task.uncancel()``; it is reported as the
deadline's only when no other cancellation of the task arrived meanwhile.
"""

from __future__ import annotations

import asyncio
import itertools
import math
from heapq import heapify, heappop, heappush
from typing import Any, Final, final

__all__ = ["DeadlineTimer"]

# An entry is a list, the cheapest mutable record: [at, seq, task, cancelling, state].
# The heap orders entries by deadline; the unique sequence number breaks ties so
# that the comparison never reaches the task.
_AT: Final = 0
_TASK: Final = 2
_CANCELLING: Final = 3
_STATE: Final = 4

_PENDING: Final = 0
_FIRED: Final = 1
_DONE: Final = 2

# Finished entries stay on the heap until their deadline or until they
# outnumber the pending ones by this margin, when the heap is rebuilt
# (amortised O(1) per call, as asyncio does with cancelled timer handles).
_COMPACT_SLACK: Final = 256

#: A registered call: see the layout above.
Entry = list[Any]


@final
class DeadlineTimer:
    """Cancels each registered task whose deadline passes; one per event loop."""

    __slots__ = ("_armed_at", "_handle", "_heap", "_pending", "_seq", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        #: The event loop whose clock the deadlines are on.
        self.loop = loop
        self._heap: list[Entry] = []
        self._handle: asyncio.TimerHandle | None = None
        self._armed_at = math.inf
        self._pending = 0
        self._seq = itertools.count()

    def start(self, at: float, task: asyncio.Task[object]) -> Entry:
        """Cancel ``task`` at loop time ``at`` unless :meth:`finish` comes first."""
        entry: Entry = [at, next(self._seq), task, task.cancelling(), _PENDING]
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
        if state is _DONE:
            return False
        task = entry[_TASK]
        entry[_STATE] = _DONE
        entry[_TASK] = None  # the heap may hold the entry a while: not the task
        self._pending -= 1
        heap = self._heap
        if not self._pending:
            heap.clear()  # everything left is finished; the armed timer fires harmlessly
        elif len(heap) > 2 * self._pending + _COMPACT_SLACK:
            heap[:] = [item for item in heap if item[_STATE] is not _DONE]
            heapify(heap)
        # Withdraw the deadline's cancellation; it was the only one unless
        # somebody else cancelled the task too.
        return state is _FIRED and task.uncancel() <= entry[_CANCELLING]

    def close(self) -> None:
        """Disarm the loop timer (entries still pending are no longer enforced)."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._armed_at = math.inf

    def _arm(self, at: float) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._handle = self.loop.call_at(at, self._fire)
        self._armed_at = at

    def _fire(self) -> None:
        self._handle = None
        self._armed_at = math.inf
        now = self.loop.time()
        heap = self._heap
        while heap and heap[0][_AT] <= now:
            entry = heappop(heap)
            if entry[_STATE] is _PENDING:
                entry[_STATE] = _FIRED
                entry[_TASK].cancel()
        if heap:
            self._arm(heap[0][_AT])
