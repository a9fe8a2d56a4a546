"""The pool gate: how many requests a transport lets at its connections, and in what order."""

from __future__ import annotations

from collections import deque
from typing import final

import anyio

from .._call import _ATTEMPT, _HEDGED
from .._errors import DeadlineExceededError
from .._models import Request
from ._base import restamped

__all__ = ["PoolGate"]


@final
class _Waiter:
    __slots__ = ("event", "gone")

    def __init__(self) -> None:
        self.event = anyio.Event()
        # Left the queue (cancelled, or out of time) before it was handed a slot.
        self.gone = False


@final
class PoolGate:
    """At most ``limit`` requests hold a connection at once; the rest wait their turn.

    Waiting hedges and retries go before waiting first attempts. A hedge is
    sent because its call is late, and the connection it needs is often held
    by that call's own stalled first attempt. In a queue of arrival, newer
    first attempts would take each connection given back, and when some of
    them stall too, stalled first attempts fill the pool while the hedges that
    would end them wait behind it. A hedge served first wins its call, which
    cancels the stalled attempt and gives its connection back. Later attempts
    are bounded by the strategy and the retry budget, so first attempts are
    not starved. Within each kind, the order is arrival.

    A slot is handed straight to the next waiter, so a request that arrives
    while others wait never goes first. Works on every anyio backend.
    """

    __slots__ = ("_firsts", "_free", "_gone", "_laters")

    def __init__(self, limit: int) -> None:
        self._free = limit
        self._firsts: deque[_Waiter] = deque()
        self._laters: deque[_Waiter] = deque()
        # Waiters still queued that left before their turn (skipped when reached).
        self._gone = 0

    def take(self) -> bool:
        """Take a free slot if there is one, without waiting (the common case)."""
        if self._free:  # a free slot means that nobody waits: slots are handed on
            self._free -= 1
            return True
        return False

    async def acquire(self, timeout: float | None) -> float:  # noqa: ASYNC109 - see below
        """Take a slot, waiting at most ``timeout`` seconds (the backend's own bound);
        returns the seconds waited.

        Raises :class:`~aio_client.DeadlineExceededError` (not sent) when the
        time runs out first. Cancelled while it waits, the attempt is marked as
        not sent (see :class:`~aio_client.AttemptInfo`).
        """
        if self.take():
            return 0.0
        began = anyio.current_time()
        attempt = _ATTEMPT.get()
        number = 1
        queued = None
        if attempt is not None:
            number = attempt.number
            # A hedged call holds its hedge delay while its attempt waits.
            deadline = attempt.deadline
            hedged = _HEDGED.get(id(deadline))
            if hedged is not None and hedged.call.deadline is deadline:
                queued = hedged.queued
        if queued is not None:
            queued(number, True)
        waiter = _Waiter()
        if number == 1:
            self._firsts.append(waiter)
        else:
            self._laters.append(waiter)
        event = waiter.event
        try:
            if timeout is None:
                await event.wait()
            else:
                with anyio.move_on_after(timeout):
                    await event.wait()
        except BaseException:
            self._leave(waiter)
            if attempt is not None:
                attempt._unsent = True
            raise
        if not event.is_set():
            self._forget(waiter)
            raise DeadlineExceededError(
                "timed out waiting for a connection: not sent", may_have_reached_server=False
            )
        if queued is not None:
            try:
                queued(number, False)
            except BaseException:
                self.release()
                raise
        return anyio.current_time() - began

    async def admit(self, request: Request, timeout: float | None) -> Request:  # noqa: ASYNC109
        """:meth:`acquire` a slot for ``request``, which goes out as returned: its
        ``X-Request-Timeout`` says what is left after the wait (see :func:`restamped`)."""
        waited = await self.acquire(timeout)
        try:
            return restamped(request, waited)
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        """Give a slot back: to the next waiter, or to the free ones."""
        for queue in (self._laters, self._firsts):
            while queue:
                waiter = queue.popleft()
                if not waiter.gone:
                    waiter.event.set()
                    return
                self._gone -= 1
        self._free += 1

    def _leave(self, waiter: _Waiter) -> None:
        if waiter.event.is_set():  # handed a slot just as it gave up: pass it on
            self.release()
        else:
            self._forget(waiter)

    def _forget(self, waiter: _Waiter) -> None:
        """Mark a waiter that left; drop the left ones once they are most of the queue.

        Requests with short deadlines behind a pool held for long would
        otherwise pile up until a slot is given back. Dropping them in bulk
        keeps leaving O(1): 200 calls cancelled at once do not scan the queue
        200 times.
        """
        waiter.gone = True
        gone = self._gone = self._gone + 1
        if gone > 16 and 2 * gone > len(self._firsts) + len(self._laters):
            self._firsts = deque(kept for kept in self._firsts if not kept.gone)
            self._laters = deque(kept for kept in self._laters if not kept.gone)
            self._gone = 0
