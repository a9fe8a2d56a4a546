"""Cancellation tokens: why work stops, who is told, and the scopes that stop it.

A :class:`CancelToken` is the handle a server gives each request (and a
client each hedged attempt). It records the first :class:`CancelReason` it is
cancelled with, tells registered callbacks, cancels its child tokens, and
cancels every anyio cancel scope opened with :meth:`CancelToken.scope` — so
work under a fired token stops with the event loop's ordinary cancellation
(``asyncio.CancelledError`` / anyio's cancel exception), which code may
observe in ``finally`` blocks but must never swallow.

Concurrency: a token belongs to one event loop. Every method must be called
on that loop's thread, except :meth:`CancelToken.cancel_threadsafe` and the
read-only checks a synchronous handler running in a worker thread needs:
:attr:`CancelToken.cancelled`, :attr:`CancelToken.reason`,
:meth:`CancelToken.remaining` and :meth:`CancelToken.raise_if_cancelled`.
Such code cannot be cancelled from outside (a thread cannot be interrupted),
so it must look for itself, between steps.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import logging
import math
import threading
import weakref
from collections.abc import Callable
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING, Final, Protocol, final

import anyio

from ._deadline import (
    Deadline,
    _ambient,
    current_priority,
    nearest_deadline,
    reset_ambient,
    set_ambient,
)
from ._errors import ConfigError, TokenCancelledError
from ._validation import validate_timeout

if TYPE_CHECKING:
    from types import TracebackType

    from ._deadline import _Ambient

__all__ = [
    "CancelReason",
    "CancelRegistration",
    "CancelScopeHandle",
    "CancelToken",
    "ShieldHandle",
    "current_token",
]

_log: Final = logging.getLogger("aio_client")
_current: ContextVar[CancelToken | None] = ContextVar("aio_client_cancel_token", default=None)
_ids: Final = itertools.count(1)


class CancelReason(enum.StrEnum):
    """Why a token was cancelled; the first reason given wins."""

    #: The token's deadline passed.
    DEADLINE = "deadline"
    #: The peer that asked for the work closed its connection.
    CLIENT_DISCONNECTED = "client_disconnected"
    #: The process is shutting down.
    SHUTDOWN = "shutdown"
    #: Application code called :meth:`CancelToken.cancel`.
    EXPLICIT = "explicit"
    #: A parallel (hedged) attempt lost to another one (client side): the
    #: message of the ``CancelledError`` the losing attempt sees, on asyncio.
    HEDGE_LOST = "hedge_lost"


#: Seconds before its deadline within which a client hanging up is taken for the
#: deadline: the caller's deadline is the same budget, started one trip earlier.
HANG_UP_AT_DEADLINE: Final = 0.05


class _TaskScope(Protocol):
    """The server's scope around a request's task (``server/_request_scope.py``)."""

    #: Loop time the token's deadline moves to (``inf``: none, the work completed).
    deadline: float

    def cancel(self) -> None:
        """The token fired: cancel the task."""
        ...


class _Probe(Protocol):
    """What tells a token its client hung up (the server adapter's exchange)."""

    def gone(self) -> bool:
        """Whether the client's connection is closed (cheap, no I/O)."""
        ...


def current_token() -> CancelToken | None:
    """The token of the innermost :meth:`CancelToken.scope` around this code, or ``None``.

    Behind the server middleware this is the request's token; tasks started
    inside the scope inherit it.
    """
    token = _current.get()
    if token is None:
        # A served request's token travels with its ambient deadline (the
        # request's scope sets no context variable of its own; see _request_scope.py).
        origin = _ambient.get().origin
        if origin is not None:
            token = getattr(origin, "token", None)
    return token


@final
class CancelToken:
    """A cancellation signal with a reason, an optional deadline, callbacks and children.

    - ``CancelToken(timeout=..., deadline=...)``: ``timeout`` is relative
      seconds, ``deadline`` absolute; with both, the nearer one is kept.
    - :meth:`cancel` fires the token once; later calls change nothing.
    - A token whose deadline passes is cancelled with ``DEADLINE``: exactly
      at the deadline while a :meth:`scope` is open on asyncio, otherwise as
      soon as anything looks (:attr:`cancelled`, :meth:`wait`, scope exit).
    - A token whose work has completed (the server marks it so) is never
      cancelled afterwards: a normally finished request does not end cancelled.
    """

    __slots__ = (
        "__weakref__",
        "_callbacks",
        "_children",
        "_deadline",
        "_finished",
        "_id",
        "_loop",
        "_message",
        "_parent",
        "_probe",
        "_reason",
        "_scopes",
        "_task_scope",
        "_thread",
        "_timer",
    )

    def __init__(self, *, timeout: float | None = None, deadline: Deadline | None = None) -> None:
        if deadline is not None and not isinstance(deadline, Deadline):
            raise ConfigError(f"deadline must be a Deadline; got {deadline!r}")
        if timeout is not None:
            deadline = nearest_deadline(deadline, Deadline.from_timeout(validate_timeout(timeout)))
        self._id = next(_ids)
        self._deadline = deadline
        self._reason: CancelReason | None = None
        self._message: str | None = None
        self._finished = False
        # Insertion-ordered, keyed by registration number so removal is O(1);
        # made on first registration (most tokens, one per request, never have any).
        self._callbacks: dict[int, Callable[[], object]] | None = None
        # Made on first child: most tokens (one per request) never have any.
        self._children: weakref.WeakSet[CancelToken] | None = None
        self._parent: CancelToken | None = None
        self._probe: _Probe | None = None
        # Open token.scope() blocks, made on the first one.
        self._scopes: set[anyio.CancelScope] | None = None
        # The server's request scope (request_scope.py), when one runs the work.
        self._task_scope: _TaskScope | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = asyncio._get_running_loop()
        self._thread = threading.get_ident() if self._loop is not None else None

    # -- state -----------------------------------------------------------------

    @property
    def cancelled(self) -> bool:
        """Whether the token has fired (a passed deadline counts); safe from any thread."""
        return self._refresh() is not None

    @property
    def reason(self) -> CancelReason | None:
        """The reason the token fired with, or ``None`` while it has not; safe from any thread."""
        return self._refresh()

    def raise_if_cancelled(self) -> None:
        """Raise :class:`TokenCancelledError` if the token has fired; safe from any thread.

        For work the token cannot stop by itself: synchronous handlers (which
        servers run in worker threads), CPU-bound loops. Call it between
        steps, before each side effect; behind the server middleware the
        error is answered like the cancellation (504, 499 or 503).
        """
        reason = self._refresh()
        if reason is not None:
            raise TokenCancelledError(
                self._message or f"the work was cancelled ({reason.value})", reason=reason
            )

    @property
    def message(self) -> str | None:
        """The human-readable message given with the reason, if any."""
        return self._message

    @property
    def deadline(self) -> Deadline | None:
        """The token's deadline (the nearest of its own and its parents'), or ``None``."""
        return self._deadline

    def remaining(self) -> float:
        """Seconds until the deadline: ``inf`` without one, ``0.0`` once cancelled."""
        if self.cancelled:
            return 0.0
        if self._deadline is None:
            return math.inf
        return self._deadline.remaining()

    # -- firing ------------------------------------------------------------------

    def cancel(self, reason: CancelReason, message: str | None = None) -> bool:
        """Fire the token; returns whether this call did it.

        Cancels every open :meth:`scope`, wakes :meth:`wait`, cancels the
        children with the same reason, then runs the callbacks in
        registration order. A token already fired, or whose work completed,
        is left as it is.
        """
        if not isinstance(reason, CancelReason):
            raise ConfigError(f"reason must be a CancelReason; got {reason!r}")
        if self._reason is not None or self._finished:
            return False
        self._reason = reason
        self._message = message
        self._disarm()
        if self._task_scope is not None:
            self._task_scope.cancel()
        for scope in self._scopes or ():
            scope.cancel()
        children = list(self._children or ())
        self._children = None
        for child in children:
            child.cancel(reason, message)
        callbacks = self._callbacks
        self._callbacks = None
        self._probe = None
        if callbacks:
            for callback in list(callbacks.values()):
                _run_callback(callback)
        self._detach()
        return True

    def cancel_threadsafe(self, reason: CancelReason, message: str | None = None) -> None:
        """:meth:`cancel` from any thread; it takes effect on the token's event loop.

        The token learns its loop when made (or first used) inside one. Once
        that loop is closed nothing runs on it any more, so the state is set
        directly.
        """
        if not isinstance(reason, CancelReason):
            raise ConfigError(f"reason must be a CancelReason; got {reason!r}")
        loop = self._loop
        if loop is None or threading.get_ident() == self._thread:
            self.cancel(reason, message)
            return
        try:
            loop.call_soon_threadsafe(self.cancel, reason, message)
        except RuntimeError:  # the loop is closed: nothing else can race us
            self.cancel(reason, message)

    def on_cancel(self, callback: Callable[[], object]) -> CancelRegistration:
        """Run ``callback()`` when the token fires (at once if it already has).

        Use the returned registration as ``with token.on_cancel(cb): ...`` (or
        call :meth:`CancelRegistration.remove`) so a long-lived token does not
        keep callbacks of work that has ended. Callbacks run on the loop, must
        not block, and an exception they raise is logged, not propagated.
        """
        if not callable(callback):
            raise ConfigError(f"callback must be callable; got {callback!r}")
        if self.cancelled:
            _run_callback(callback)
            return CancelRegistration(None, 0)
        if self._finished:
            return CancelRegistration(None, 0)
        key = next(_ids)
        if self._callbacks is None:
            self._callbacks = {}
        self._callbacks[key] = callback
        return CancelRegistration(self, key)

    async def wait(self) -> CancelReason:
        """Wait until the token fires (or its deadline passes); return the reason.

        Waits forever on a token whose work completed normally.
        """
        while True:
            reason = self.reason
            if reason is not None:
                return reason
            # The token cancels its scopes when it fires: no event to keep in sync.
            with self.scope():
                await anyio.sleep_forever()

    # -- structure ---------------------------------------------------------------

    def child(
        self, *, timeout: float | None = None, deadline: Deadline | None = None
    ) -> CancelToken:
        """A token that fires when this one does, and may have a nearer deadline.

        The child's deadline is the nearest of this token's and the given
        ones: a child can shorten its parent's budget, never extend it.
        Cancelling the child leaves the parent alone.
        """
        child = CancelToken(timeout=timeout, deadline=deadline)
        child._deadline = nearest_deadline(child._deadline, self._deadline)
        child._loop, child._thread = self._loop, self._thread
        if self.cancelled:
            assert self._reason is not None
            child.cancel(self._reason, self._message)
        elif not self._finished:
            child._parent = self
            if self._children is None:
                self._children = weakref.WeakSet()
            self._children.add(child)
        return child

    def tighten(self, deadline: Deadline) -> None:
        """Move the deadline to ``deadline`` if that is nearer; a later one is ignored.

        The nearest deadline always wins, whatever order they are set in;
        open scopes and children follow.
        """
        if not isinstance(deadline, Deadline):
            raise ConfigError(f"deadline must be a Deadline; got {deadline!r}")
        if self._reason is not None or self._finished:
            return
        if self._deadline is not None and self._deadline <= deadline:
            return
        self._move_deadline(deadline)
        for child in list(self._children or ()):
            child.tighten(deadline)

    def scope(self) -> CancelScopeHandle:
        """A cancel scope tied to the token: ``with token.scope(): ...``.

        The block is cancelled when the token fires or its deadline passes,
        and inside it :func:`current_token` is this token. Like
        ``anyio.move_on_after``, the scope ends the block early and absorbs
        only the cancellation it caused (check :attr:`cancelled` or
        :attr:`CancelScopeHandle.cancelled_caught` afterwards); a cancellation
        coming from outside passes through untouched.
        """
        return CancelScopeHandle(self)

    def shield(self, timeout: float | None = None) -> ShieldHandle:
        """Shield cleanup from cancellation: ``with token.shield(timeout=2.0): ...``.

        Nothing outside (the token included) can cancel the block. With
        ``timeout`` (seconds) the block is still bounded by its own deadline,
        and calls made inside inherit that deadline instead of the fired
        one; without it they inherit none. Bound cleanup whenever you can.
        """
        if timeout is not None:
            timeout = validate_timeout(timeout)
        return ShieldHandle(timeout)

    # -- used by the server core ------------------------------------------------

    def _finish(self) -> None:
        """Mark the token's work as completed: it will never fire from now on."""
        if self._reason is not None or self._finished:
            return
        self._finished = True
        if self._timer is not None:
            self._disarm()
        # Work after the response (background tasks) is no longer bound by it.
        if self._task_scope is not None:
            self._task_scope.deadline = math.inf
        for scope in self._scopes or ():
            scope.deadline = math.inf
        self._callbacks = None
        self._children = None
        self._probe = None
        if self._parent is not None:
            self._detach()

    def _move_deadline(self, deadline: Deadline) -> None:
        """Set the deadline to ``deadline``, later or nearer: the server's stream policy.

        Unlike :meth:`tighten` this may extend the budget (a response that has
        started streaming is bounded by ``stream_timeout`` instead of the
        request's deadline). Open scopes follow; children keep their own.
        """
        if self._reason is not None or self._finished:
            return
        self._deadline = deadline
        if self._task_scope is not None:
            self._task_scope.deadline = deadline.at
        for scope in self._scopes or ():
            scope.deadline = deadline.at
        if self._timer is not None:
            self._disarm()
            self._arm()

    # -- internals ---------------------------------------------------------------

    def _refresh(self) -> CancelReason | None:
        # Level-triggered: a passed deadline or a peer known to be gone counts as
        # fired the moment anyone looks, even between timer or watcher ticks.
        reason = self._reason
        if reason is not None or self._finished:
            return reason
        loop = self._loop
        if loop is not None and threading.get_ident() != self._thread:
            # Another thread (a sync handler's worker) only looks: firing runs
            # scopes and callbacks, which belong to the loop's thread.
            deadline = self._deadline
            if deadline is not None and loop.time() >= deadline.at:
                self.cancel_threadsafe(CancelReason.DEADLINE, "the deadline passed")
                return CancelReason.DEADLINE
            return None
        if self._deadline is not None and self._deadline.expired:
            self.cancel(CancelReason.DEADLINE, "the deadline passed")
        elif self._probe is not None and self._probe.gone():
            self.cancel(self.hang_up_reason(), "the client closed the connection")
        return self._reason

    def hang_up_reason(self) -> CancelReason:
        """Why a client that hung up now did: ``DEADLINE`` when the token's deadline is
        (almost) due, since the client's own deadline, the same budget started a
        network trip earlier, cut its call; else ``CLIENT_DISCONNECTED``."""
        deadline = self._deadline
        if deadline is not None and deadline.remaining() <= HANG_UP_AT_DEADLINE:
            return CancelReason.DEADLINE
        return CancelReason.CLIENT_DISCONNECTED

    def _watch_peer(self, probe: _Probe) -> None:
        """Let ``probe.gone()`` report a closed client connection when the token is looked at."""
        self._probe = probe

    def _bind_loop(self) -> None:
        if self._loop is None:
            self._loop = asyncio._get_running_loop()
            if self._loop is not None:
                self._thread = threading.get_ident()

    def _arm(self) -> None:
        # A timer, not a task: it fires the token (reason, callbacks, children)
        # at the deadline itself, before the cancelled code resumes.
        if self._timer is not None or self._deadline is None:
            return
        loop = asyncio._get_running_loop()
        if loop is not None:
            self._timer = loop.call_at(self._deadline.at, self._on_deadline)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_deadline(self) -> None:
        self._timer = None
        if self._reason is None and not self._finished:
            self.cancel(CancelReason.DEADLINE, "the deadline passed")

    def _detach(self) -> None:
        parent = self._parent
        if parent is not None:
            if parent._children is not None:
                parent._children.discard(self)
            self._parent = None

    def _forget(self, key: int) -> None:
        if self._callbacks is not None:
            self._callbacks.pop(key, None)

    def __repr__(self) -> str:
        state = (
            f"cancelled={self._reason.value}"
            if self._reason is not None
            else ("finished" if self._finished else "active")
        )
        left = "none" if self._deadline is None else f"{self._deadline.remaining():.3f}s"
        return f"<CancelToken #{self._id} {state} deadline={left}>"


def _request_token(
    deadline: Deadline, loop: asyncio.AbstractEventLoop | None, thread: int | None
) -> CancelToken:
    """``CancelToken(deadline=deadline)`` made on ``loop`` (in ``thread``), without its checks.

    The server core's hot path: one token per request, whose deadline it built itself.
    """
    token = _new_token(CancelToken)
    token._id = next(_ids)
    token._deadline = deadline
    token._reason = None
    token._message = None
    token._finished = False
    token._callbacks = None
    token._children = None
    token._parent = None
    token._probe = None
    token._scopes = None
    token._task_scope = None
    token._timer = None
    token._loop = loop
    token._thread = thread
    return token


_new_token: Final = object.__new__


@final
class CancelRegistration:
    """A callback registered with :meth:`CancelToken.on_cancel`.

    Leaving ``with registration:`` or calling :meth:`remove` unregisters it;
    both are safe to repeat and after the token fired.
    """

    __slots__ = ("_key", "_token")

    def __init__(self, token: CancelToken | None, key: int) -> None:
        self._token = token
        self._key = key

    def remove(self) -> None:
        """Unregister the callback (it will not run if the token fires later)."""
        token = self._token
        if token is not None:
            self._token = None
            token._forget(self._key)

    def __enter__(self) -> CancelRegistration:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.remove()


@final
class CancelScopeHandle:
    """What :meth:`CancelToken.scope` returns; a synchronous context manager."""

    __slots__ = ("_context", "_scope", "_token")

    def __init__(self, token: CancelToken) -> None:
        self._token = token
        self._scope: anyio.CancelScope | None = None
        self._context: Token[CancelToken | None] | None = None

    @property
    def cancelled_caught(self) -> bool:
        """Whether the block was ended by the token (set when the block exits)."""
        return self._scope is not None and self._scope.cancelled_caught

    def __enter__(self) -> CancelScopeHandle:
        if self._scope is not None:
            raise RuntimeError("a token scope is not reentrant; call token.scope() again")
        token = self._token
        token._bind_loop()
        at = token._deadline.at if token._deadline is not None and not token._finished else math.inf
        scope = anyio.CancelScope(deadline=at)
        scope.__enter__()
        self._scope = scope
        if token.cancelled:
            scope.cancel()  # level-triggered: a fired token stops new work at once
        elif not token._finished:
            if token._scopes is None:
                token._scopes = set()
            token._scopes.add(scope)
            token._arm()
        self._context = _current.set(token)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        token = self._token
        scope = self._scope
        assert scope is not None
        assert self._context is not None
        _current.reset(self._context)
        scopes = token._scopes
        if scopes is not None:
            scopes.discard(scope)
        if not scopes:
            token._disarm()
        swallowed = bool(scope.__exit__(exc_type, exc, tb))
        if scope.cancelled_caught:
            # Where no timer runs (not asyncio), the scope's own deadline ended the
            # block: record why.
            token._refresh()
        return swallowed


@final
class ShieldHandle:
    """What :meth:`CancelToken.shield` returns; a synchronous context manager."""

    __slots__ = ("_ambient", "_scope", "_timeout")

    def __init__(self, timeout: float | None) -> None:
        self._timeout = timeout
        self._scope: anyio.CancelScope | None = None
        self._ambient: Token[_Ambient] | None = None

    def __enter__(self) -> anyio.CancelScope:
        if self._scope is not None:
            raise RuntimeError("a shield is not reentrant; call token.shield() again")
        deadline = None if self._timeout is None else Deadline.from_timeout(self._timeout)
        scope = anyio.CancelScope(
            shield=True, deadline=math.inf if deadline is None else deadline.at
        )
        scope.__enter__()
        self._scope = scope
        # Cleanup calls must not inherit the budget that has just run out.
        self._ambient = set_ambient(deadline, current_priority())
        return scope

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        assert self._scope is not None
        assert self._ambient is not None
        reset_ambient(self._ambient)
        return bool(self._scope.__exit__(exc_type, exc, tb))


def _run_callback(callback: Callable[[], object]) -> None:
    try:
        callback()
    except Exception:
        _log.exception("a cancel callback raised; the other callbacks still run")
