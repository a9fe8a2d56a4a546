"""The scope a request's handler runs in on asyncio: one timer per loop, native cancellation.

``CancelToken.scope()`` opens an anyio cancel scope with the request's deadline
and arms a loop timer of the token's own: measured, about 15 µs of every
request (``benchmarks/server_overhead.py``), most of the middleware's cost
next to a trivial handler. On asyncio the server core opens a
:class:`RequestScope` instead. The deadline is an entry on the server's
:class:`~aio_client._timer.DeadlineTimer`, one per event loop (about 0.5 µs,
and no loop timer at all for a request that ends first), and when the token
fires, for any reason, the scope cancels the handler's task natively, the way
``asyncio.timeout`` does. When the handler ends the scope withdraws its
cancellations with ``Task.uncancel()`` and absorbs the ``CancelledError``
only when nobody else cancelled the task meanwhile; a cancellation from
outside (the server stopping the task) passes through untouched.

An adapter whose server does not say when a client hangs up sets the token's
probe (aiohttp without ``handler_cancellation`` looks at the connection; the
ASGI middleware starts its watcher from the second look): a request still
running :data:`_PEER_EVERY` seconds after its handler started has the probe
looked at then, and at that interval, on the same timer entry as its deadline.

The token holds the scope as its task scope: it calls :meth:`RequestScope.cancel`
when it fires and sets :attr:`RequestScope.deadline` when its deadline moves
(``tighten``) or its work completes (``math.inf``: work after the response,
such as background tasks, is no longer bound by the deadline).

Per request the scope keeps as few objects alive as it can (with many
requests in flight, each one's objects decide how often the garbage collector
runs): it sets no context variable (:func:`~aio_client.current_token` finds
the token through the ambient values the core sets), and it is itself its
timer entry's callback.

As with anyio's scopes, the cancellation is level-triggered: a handler that
loses it (an ``except`` that swallows it, a scope inside that takes it for
its own) is cancelled again, at once when the loss is visible (the task's
cancellation count dropped) and otherwise every :data:`_GRACE` seconds,
until it ends.
"""

from __future__ import annotations

import asyncio
import math
from contextvars import Token
from typing import TYPE_CHECKING, Any, Final, final

from .._cancel import CancelReason, CancelToken, _current
from .._timer import DeadlineTimer, Entry

if TYPE_CHECKING:
    from types import TracebackType

__all__ = ["RequestScope"]

# Seconds between looks at a cancelled handler that still runs, and between
# cancellations of one whose cancellation was not visibly lost.
_CHECK_EVERY: Final = 0.005
_GRACE: Final = 0.1
# Seconds between looks at the client's connection, for adapters whose server
# says nothing when a client hangs up but can tell when asked (the token's probe).
_PEER_EVERY: Final = 0.02
_INF: Final = math.inf


@final
class RequestScope:
    """``with RequestScope(token, timer, task):`` runs a handler under ``token`` on asyncio.

    Like ``token.scope()``: inside (under the ambient values the core sets,
    whose origin is the request's admission), :func:`~aio_client.current_token`
    is the token; the block ends early when the token fires or its deadline passes,
    and only that cancellation is absorbed. The scope opens when made (one
    call per request, not three); ``with`` only closes it. Not reentrant.
    """

    __slots__ = (
        "_at",
        "_baseline",
        "_cancels",
        "_check",
        "_context",
        "_entry",
        "_last",
        "_open",
        "_task",
        "_timer",
        "_token",
        "cancelled_caught",
    )

    def __init__(self, token: CancelToken, timer: DeadlineTimer, task: asyncio.Task[Any]) -> None:
        self._token = token
        self._timer = timer
        self._task = task
        self._cancels = 0
        self._entry: Entry | None = None
        self._check: Entry | None = None
        self._at = _INF
        #: Whether the block was ended by the token (set when the block exits).
        self.cancelled_caught = False
        if token._loop is None:
            token._bind_loop()
        self._baseline = task.cancelling()
        self._open = True
        # current_token() finds the request's token through the ambient values the
        # core sets (their origin, the admission); only a token scope open around
        # this one (a request served in process) must be hidden for the block.
        self._context: Token[CancelToken | None] | None = (
            None if _current.get() is None else _current.set(None)
        )
        if token._reason is None and not token._finished:
            deadline = token._deadline
            now = timer.loop.time()
            if deadline is None or deadline.at > now:
                # The token drives its task scope through cancel() and the
                # deadline attribute. One request, one scope.
                token._task_scope = self
                # One timer entry per request: at the deadline, or sooner when the
                # client's connection is to be looked at first.
                at = _INF if deadline is None else deadline.at
                self._at = at
                if token._probe is not None and now + _PEER_EVERY < at:
                    at = now + _PEER_EVERY
                if at != _INF:
                    self._entry = timer.call_at(at, self)
                return
            token._refresh()  # the deadline has passed: that fires the token
        if token._reason is not None:
            self.cancel()  # level-triggered: a fired token stops new work at once

    # -- what the token calls ------------------------------------------------------

    @property
    def deadline(self) -> float:
        """Loop time at which the token fires with ``DEADLINE`` (``inf``: none)."""
        return self._at

    @deadline.setter
    def deadline(self, at: float) -> None:
        self._at = at
        entry = self._entry
        if entry is not None:
            self._entry = None
            self._timer.finish(entry)
        if self._open and at != _INF:  # inf: the work completed, nothing to watch
            self._arm()

    def cancel(self) -> None:
        """The token fired: cancel the handler's task (soon, if it is the one running)."""
        if not self._open:
            return
        if asyncio.current_task(self._timer.loop) is self._task:
            # A task cannot be cancelled at a point of its own choosing: the
            # cancellation would hit its next await, wherever that is. Deliver it
            # from the loop instead, while the task waits inside the block.
            self._schedule_check(0.0)
        else:
            self._deliver()

    # -- the block -----------------------------------------------------------------

    def __enter__(self) -> RequestScope:
        if not self._open:
            raise RuntimeError("a request scope is not reentrant")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        if not self._open:
            return False
        self._open = False
        if self._context is not None:
            _current.reset(self._context)
        token = self._token
        if token._task_scope is self:
            token._task_scope = None
        entry = self._entry
        if entry is not None:
            self._entry = None
            self._timer.finish(entry)
        if self._check is not None:
            self._timer.finish(self._check)
            self._check = None
        if not self._cancels:
            return False
        # Withdraw this scope's cancellations; they were the only ones unless
        # somebody else cancelled the task too (then it stays cancelled).
        task = self._task
        for _ in range(self._cancels):
            if task.cancelling() <= self._baseline:
                break  # something inside withdrew one already
            task.uncancel()
        ours = task.cancelling() <= self._baseline
        if ours and exc_type is not None and issubclass(exc_type, asyncio.CancelledError):
            self.cancelled_caught = True
            return True
        return False

    # -- delivery --------------------------------------------------------------------

    def _arm(self) -> None:
        # One timer entry per request: at the deadline, or sooner when the
        # client's connection is to be looked at first.
        token = self._token
        if token._finished or token._reason is not None:
            return
        at = self._at
        if token._probe is not None:
            at = min(at, self._timer.loop.time() + _PEER_EVERY)
        if at != _INF:
            self._entry = self._timer.call_at(at, self)

    def __call__(self) -> None:
        """The timer entry's callback: the deadline, or a look at the client, is due.

        The scope itself is the callback (no bound method kept per request).
        """
        self._entry = None
        token = self._token
        if not self._open or token._finished or token._reason is not None:
            return
        if self._timer.loop.time() >= self._at:
            token.cancel(CancelReason.DEADLINE, "the deadline passed")
            return
        # The adapter's probe (token._watch_peer) says whether the client hung
        # up; a look at the token runs it, and fires the token if so.
        token._refresh()
        if token._reason is None and self._entry is None:  # the probe may have moved the deadline
            self._arm()

    def _deliver(self) -> None:
        self._cancels += 1
        self._last = self._timer.loop.time()
        self._task.cancel()
        self._schedule_check(_CHECK_EVERY)

    def _schedule_check(self, delay: float) -> None:
        if self._check is None:
            timer = self._timer
            self._check = timer.call_at(timer.loop.time() + delay, self._recheck)

    def _recheck(self) -> None:
        self._check = None
        if not self._open or self._task.done():
            return
        lost = self._task.cancelling() <= self._baseline + self._cancels - 1
        if not self._cancels or lost or self._timer.loop.time() - self._last >= _GRACE:
            self._deliver()
        else:
            self._schedule_check(_CHECK_EVERY)
