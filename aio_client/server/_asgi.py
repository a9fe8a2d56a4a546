"""Pure ASGI deadline middleware (Starlette, FastAPI, any ASGI 3 app).

Not ``BaseHTTPMiddleware``: that runs the app in another task, so the
handler would not see the ambient deadline, priority and token set here.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Final, Unpack, final

import anyio
import anyio.lowlevel

from .._asgi import ASGIApp, Message, Receive, Scope, Send
from .._cancel import CancelReason, CancelToken
from .._deadline import _Ambient, _ambient, current_priority, reset_ambient, set_ambient
from .._server_events import Admission
from ._core import ServerCore
from ._options import ServerOptions
from ._outcomes import OUTCOMES, Rejection, ServerStats, ending_of, rejection
from ._websocket import GOING_AWAY, SERVICE_RESTART, close_code, close_text

__all__ = ["ASGIApp", "DeadlineMiddleware", "Message", "Receive", "Scope", "Send"]

_log: Final = logging.getLogger("aio_client.server")
_DISCONNECT: Final[Message] = {"type": "http.disconnect"}
# Seconds a close frame for a cancelled WebSocket connection may take to go out.
_CLOSE_WITHIN: Final = 1.0
# Seconds after its arrival a request still running gets a watcher for client
# hang-ups (sooner ones end without one).
_WATCH_AFTER: Final = 0.04
# Body the watcher reads ahead of the app, at most (bytes, messages): a hang-up
# during an upload the app has not read yet is seen while the upload is in it.
_READ_AHEAD: Final = 64 * 1024
_READ_AHEAD_MESSAGES: Final = 16


@final
class DeadlineMiddleware:
    """Deadline, priority and cancellation for every HTTP request of an ASGI app.

    ``app.add_middleware(DeadlineMiddleware, timeout=10.0)`` (Starlette,
    FastAPI) or ``DeadlineMiddleware(app, ...)``, with the options of
    :class:`~aio_client.server.ServerOptions`. The client's address (for
    keyed limiters and ``trust_priority``) is ``scope["client"]``'s; note
    that uvicorn itself rewrites it from ``X-Forwarded-For`` for peers in its
    ``forwarded_allow_ips`` (127.0.0.1 by default).

    Per request: the budget from ``X-Request-Timeout`` / ``grpc-timeout`` /
    ``x-envoy-expected-rq-timeout-ms`` and the priority from
    ``X-Request-Priority`` become the ambient deadline and priority (so
    every ``aio_client`` call made by the handler inherits them) and the
    request's :class:`~aio_client.CancelToken` (:func:`~aio_client.current_token`).
    The app runs in the token's scope. A client disconnect is seen by
    wrapping ``receive``: the app's own reads see it, and a request still
    running after 40 ms gets a watcher that reads for it (one reader, at most
    64 KiB of body read ahead of the app); quicker requests cost no task.

    Once the response is complete the token is marked finished: work after
    it (Starlette background tasks) is no longer bound by the deadline. A
    lifespan ``shutdown`` event, or :meth:`shutdown`, cancels requests in
    flight with ``SHUTDOWN`` (503). A streamed response is bounded by the
    deadline, or by ``stream_timeout`` once it has started.

    Each WebSocket connection gets a token of its own (no deadline headers;
    ``websocket_timeout`` bounds it): a client hang-up, shutdown or the time
    limit cancels the app, and the connection is closed with 1001 (going
    away) after shutdown or the time limit.
    """

    __slots__ = ("_wanted", "app", "core")

    def __init__(self, app: ASGIApp, **options: Unpack[ServerOptions]) -> None:
        self.app = app
        #: The shared core (its options and counters).
        self.core = ServerCore(**options)
        core = self.core
        self._wanted: frozenset[bytes] | None = (
            None
            if core.wants_all_headers
            else frozenset(name.encode("latin-1") for name in core.header_names)
        )

    @property
    def stats(self) -> ServerStats:
        """Running counts: requests, 504s, 499s, 503s, malformed headers..."""
        return self.core.stats

    def shutdown(self, message: str = "the server is shutting down") -> int:
        """Cancel the requests in flight with ``SHUTDOWN`` (503) and refuse new ones."""
        return self.core.shutdown(message)

    def _lifespan_receive(self, receive: Receive) -> Receive:
        async def relay() -> Message:
            message = await receive()
            if message.get("type") == "lifespan.shutdown":
                self.core.shutdown()
            return message

        return relay

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                await self.app(scope, self._lifespan_receive(receive), send)
            elif scope["type"] == "websocket":
                await self._websocket(scope, receive, send)
            else:
                await self.app(scope, receive, send)
            return
        # The HTTP path is inline: a coroutine less per request. No closures: a
        # request holds as few objects as it can while it runs (fewer garbage
        # collections with many requests in flight).
        core = self.core
        exchange = _Exchange(
            self.app,
            scope,
            receive,
            send,
            None if core.stream_timeout is None else core.response_started,
        )
        decision = core.admit(
            _headers(scope.get("headers", ()), self._wanted),
            method=scope.get("method", ""),
            scheme=scope.get("scheme", "http"),
            # The exchange is the route resolver: no bound method kept per request
            # (each object a request keeps alive brings the next collection nearer).
            route=None if core.observer is None else exchange,
            peer=_peer(scope) if core.wants_peer else None,
        )
        if isinstance(decision, Rejection):
            await _send_rejection(send, decision)
            return
        token = exchange._token = decision.token
        loop = exchange._loop = token._loop  # None: not asyncio (trio)
        try:
            if loop is not None:
                # The request scope looks at the client every 20 ms (the token's
                # probe); from _WATCH_AFTER on, a look starts the watcher.
                exchange.watch_at = decision.arrived_at + _WATCH_AFTER
                token._watch_peer(exchange)
                result = await core.run(decision, exchange)
            else:
                result = await self._relayed(decision, exchange)
        except asyncio.CancelledError:
            # The server cancelled the request: uvicorn does once its graceful
            # shutdown runs out, and would answer 500 itself. The core has
            # recorded why (a shutdown, 503, unless the client is gone): answer
            # that before the cancellation goes on.
            if loop is not None and not exchange.started:
                answer = rejection(OUTCOMES[ending_of(token.reason)], gone=exchange.disconnected)
                if answer.deliverable:
                    await _send_last_words(send, answer)
            raise
        finally:
            if exchange._pump is not None:  # a request that outlived _WATCH_AFTER
                pump = exchange.close()
                if pump is not None:
                    await _reap(pump)
        if isinstance(result, Rejection) and result.deliverable:
            await _send_rejection(send, result)
        # Otherwise the client is gone, or the response had started: returning
        # without completing it makes the server break the connection.

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        # A connection, not a request: its own token (see _websocket.py), a relay
        # that reads for the app so a hang-up is seen while the app only sends.
        core = self.core
        token = core.open_connection()
        if token is None:  # shutting down: refuse the handshake
            if (await receive()).get("type") == "websocket.connect":
                await send({"type": "websocket.close", "code": GOING_AWAY})
            return
        connection = _Connection(receive, send, token)
        # Calls made by the app inherit the connection's time limit (if any).
        ambient = set_ambient(token.deadline, current_priority())
        try:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(connection.pump)
                with token.scope():
                    await self.app(scope, connection.receive, connection.send)
                tasks.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            # Only the app can fail (the pump keeps its errors for the app's receive).
            inner = _single(group)
            raise inner from inner.__cause__
        finally:
            reset_ambient(ambient)
            core.close_connection(token)
        reason = token.reason
        if reason is not None and connection.open:
            await connection.close(reason)
        token._finish()

    async def _relayed(self, decision: Admission, exchange: _Exchange) -> Rejection | None:
        # Not on asyncio (trio): the relay reads from the start, in a task group.
        try:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(exchange.pump)
                result = await self.core.run(decision, exchange)
                tasks.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            # Only the app can fail (the pump keeps its errors for the app's
            # receive), so the group holds one exception: raise it as it was.
            inner = _single(group)
            raise inner from inner.__cause__
        return result


def _headers(
    raw: Iterable[tuple[bytes, bytes]], wanted: frozenset[bytes] | None
) -> list[tuple[str, str]]:
    if wanted is not None:
        try:
            # Decode only the headers the core reads (names lower-cased: in-process
            # callers do not always follow the ASGI rule that they are). A loop,
            # not a comprehension: no frame of its own on every request.
            # A name is lower-cased only when it is not already (no new bytes per
            # header); str(value, ...) decodes any buffer without copying it first.
            kept: list[tuple[str, str]] = []
            for name, value in raw:
                if name in wanted or (not name.islower() and name.lower() in wanted):
                    kept.append((str(name, "latin-1"), str(value, "latin-1")))
            return kept
        except TypeError:  # a bytearray name: not hashable, take the long way
            pass
    return [(bytes(name).decode("latin-1"), bytes(value).decode("latin-1")) for name, value in raw]


async def _reap(pump: asyncio.Task[None]) -> None:
    # The pump only ever waits on the server's receive: cancelled, it ends at
    # its next step. Wait for that even if this task is being cancelled too.
    pump.cancel()
    cancelled: BaseException | None = None
    while not pump.done():
        try:
            await asyncio.wait((pump,))
        except asyncio.CancelledError as exc:
            cancelled = exc
    if cancelled is not None:
        raise cancelled


@final
class _Exchange:
    """One request's ``receive`` and ``send``, watched for the end of the response and a hang-up.

    The app reads the server's ``receive`` directly, and a disconnect it reads
    fires the token. A client can also hang up while the app is not reading
    (a trivial GET handler never reads): so a request still running
    :data:`_WATCH_AFTER` seconds after it arrived gets a relay task, ``pump``,
    which from then on is the only reader of the server's ``receive`` (the app
    reads through it). While more body is coming the pump reads ahead of the
    app, up to :data:`_READ_AHEAD` bytes or :data:`_READ_AHEAD_MESSAGES`
    messages: enough to see a hang-up during an upload the app has not read
    yet, little enough that uploads keep their back-pressure. After the last
    chunk the next event can only be ``http.disconnect``, which fires the token unless the
    response is already complete. Requests that end sooner, the common case,
    cost no task. The pump starts only while nobody is reading (a read in
    progress sees the disconnect itself), and is cancelled and awaited when
    the request ends.
    """

    __slots__ = (
        "_app",
        "_body_done",
        "_changed",
        "_held",
        "_loop",
        "_on_start",
        "_outer",
        "_pending",
        "_pump",
        "_readers",
        "_receive",
        "_relay",
        "_scope",
        "_send",
        "_token",
        "_trailers",
        "complete",
        "disconnected",
        "error",
        "started",
        "status",
        "watch_at",
    )

    def __init__(
        self,
        app: ASGIApp,
        scope: Scope,
        receive: Receive,
        send: Send,
        on_start: Callable[[CancelToken], None] | None = None,
    ) -> None:
        self._app = app
        self._scope = scope
        self._receive = receive
        # The core's stream policy, told when the response starts (stream_timeout set).
        self._on_start = on_start
        self._send = send
        # The ambient values outside the request (made before the core sets its own).
        self._outer: _Ambient = _ambient.get()
        # Set once the request is admitted: its token, and its asyncio loop (None
        # elsewhere: the relay reads from the start).
        self._token: CancelToken
        self._loop: asyncio.AbstractEventLoop | None = None
        # Made by the relay, which most requests never start.
        self._pending: deque[Message] | None = None
        self._held = 0  # body bytes in _pending
        self._changed: anyio.Event | None = None
        self._relay = False
        self._pump: asyncio.Task[None] | None = None
        #: Loop time from which a look at the client starts the watcher.
        self.watch_at = math.inf
        self._readers = 0
        self._body_done = False
        self._trailers = False
        self.started = False
        self.complete = False
        self.disconnected = False
        self.error: Exception | None = None
        self.status = 500

    # -- the watcher -------------------------------------------------------------------

    def gone(self) -> bool:
        """Whether the client hung up, as far as is known (the token's probe).

        A look after :attr:`watch_at` starts the watcher, unless the app is
        reading (a read in progress sees a disconnect itself; a later look
        tries again) or the response is complete.
        """
        loop = self._loop
        if (
            not self._relay
            and not self.complete
            and loop is not None
            and loop.time() >= self.watch_at
            and not self._readers
        ):
            self._relay = True
            self._pump = loop.create_task(self.pump())
        return self.disconnected

    def call(self) -> Awaitable[None]:
        """Call the app with this exchange's ``receive`` and ``send``."""
        return self._app(self._scope, self.receive, self.send)

    def route_template(self) -> str | None:
        """The template of the request's route (for the observer)."""
        return _route_template(self._scope, self._app)

    #: The exchange is the request's route resolver (no bound method kept per request).
    __call__ = route_template

    def close(self) -> asyncio.Task[None] | None:
        """The request has ended: the relay task to reap, if one runs."""
        pump, self._pump = self._pump, None
        return None if pump is None or pump.done() else pump

    # -- what the core asks (the Exchange protocol) --------------------------------------

    def status_of(self, value: None, /) -> int:
        """The status the app sent (500 if it sent none)."""
        return self.status

    def status_of_error(self, exc: Exception, /) -> int | None:
        """ASGI apps answer their own HTTP errors: an exception reaching here is a 500."""
        return None

    # -- receive -----------------------------------------------------------------------

    def _wake(self) -> None:
        changed = self._changed
        if changed is not None:
            self._changed = None
            changed.set()

    async def _wait(self) -> None:
        if self._changed is None:
            self._changed = anyio.Event()
        await self._changed.wait()

    def _hung_up(self) -> None:
        self.disconnected = True
        if not self.complete:
            token = self._token
            token.cancel(token.hang_up_reason(), "the client closed the connection")

    async def pump(self) -> None:
        """Read the server's ``receive`` for the app (see the class docstring)."""
        self._relay = True
        pending = self._pending = deque()
        try:
            while True:
                message = await self._receive()
                if message.get("type") == "http.disconnect":
                    self._hung_up()
                    self._wake()
                    return
                if self._body_done:
                    # ASGI allows only a disconnect after the last body chunk; drop
                    # anything else rather than queue it (and never spin).
                    await anyio.lowlevel.checkpoint()
                    continue
                pending.append(message)
                self._held += len(message.get("body", b""))
                self._wake()
                if message.get("more_body", False):
                    # Read on while what the app has not taken is small, so a
                    # hang-up during an upload the app has not started reading is
                    # still seen; beyond that, hold back (the upload's back-pressure).
                    while pending and (
                        self._held >= _READ_AHEAD or len(pending) >= _READ_AHEAD_MESSAGES
                    ):
                        await self._wait()
                else:
                    self._body_done = True
        except Exception as exc:  # handed to the app's next receive()
            self.error = exc
            self._wake()

    async def receive(self) -> Message:
        """The app's ``receive``."""
        if not self._relay:
            self._readers += 1
            try:
                message = await self._receive()
            finally:
                self._readers -= 1
            kind = message.get("type")
            if kind == "http.request":
                if not message.get("more_body", False):
                    self._body_done = True
            elif kind == "http.disconnect":
                self._hung_up()
            return message
        pending = self._pending
        while not pending:
            if self.error is not None:
                raise self.error
            if self.disconnected:
                return dict(_DISCONNECT)
            await self._wait()
            pending = self._pending
        message = pending.popleft()
        self._held -= len(message.get("body", b""))
        self._wake()
        return message

    # -- send --------------------------------------------------------------------------

    def send(self, message: Message) -> Awaitable[None]:
        """The app's ``send``: notes the status, and when the response is complete.

        Not a coroutine function: it returns the server's own ``send(message)``
        for the app to await (a coroutine frame less per message), except for
        the response's last message (see ``_send_last``).
        """
        kind = message.get("type")
        if kind == "http.response.body":
            if not message.get("more_body", False) and not self._trailers:
                self._completed()
                return self._send_last(message)
        elif kind == "http.response.start":
            reason = self._token._reason
            if reason is not None and reason is not CancelReason.CLIENT_DISCONNECTED:
                # The token fired first (the deadline, a shutdown) and the app,
                # having swallowed the cancellation, answers late: that answer
                # goes nowhere, the core answers for the token (504, 503).
                self._send = _discard
                return _discard(message)
            self.started = True
            self.status = int(message.get("status", 500))
            self._trailers = bool(message.get("trailers", False))
            if self._on_start is not None:
                self._on_start(self._token)
        elif _ends_response(kind, message, trailers=self._trailers):
            self._completed()
            return self._send_last(message)
        return self._send(message)

    async def _send_last(self, message: Message) -> None:
        # The response's last message goes to the server under the ambient values
        # from outside the request. A server may keep the context it is sent in:
        # uvicorn arms the connection's keep-alive timer there, until the
        # connection's next request. Kept, the request's values (its admission,
        # token and deadline) would outlive it, and objects freed a request late
        # made servers collect garbage all the time (measured: 793 young and 6
        # full collections in 6 s at 48 requests in flight; 8 and none without).
        token = _ambient.set(self._outer)
        try:
            await self._send(message)
        finally:
            _ambient.reset(token)

    def _completed(self) -> None:
        self.complete = True
        self._token._finish()


async def _discard(message: Message) -> None:
    """Where a late response's messages go (see ``_Exchange.send``)."""


async def _send_last_words(send: Send, answer: Rejection) -> None:
    # Sent while the request's cancellation is on its way out: a client that
    # left meanwhile is no reason to lose that cancellation.
    try:
        await _send_rejection(send, answer)
    except Exception:
        _log.debug("could not answer a request the server cancelled", exc_info=True)


async def _send_rejection(send: Send, rejection: Rejection) -> None:
    body = rejection.body
    headers = [
        (name.encode("latin-1"), value.encode("latin-1")) for name, value in rejection.headers
    ]
    headers.append((b"content-length", str(len(body)).encode("latin-1")))
    await send({"type": "http.response.start", "status": rejection.status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


@final
class _Connection:
    """One WebSocket connection's ``receive`` and ``send``, read ahead by a relay.

    The relay (:meth:`pump`) is the only reader of the server's ``receive``
    and holds at most :data:`_READ_AHEAD` bytes (:data:`_READ_AHEAD_MESSAGES`
    messages) the app has not taken, so a client sending faster than the app
    reads is held back, and a hang-up after a message the app has not read
    is still seen. Reading for the app means
    a hang-up is seen even while the app only sends or waits: the
    ``websocket.disconnect`` fires the token with ``CLIENT_DISCONNECTED``
    (unless the app had closed the connection itself), or with ``SHUTDOWN``
    when its code is 1012, the server's own close on its way down.
    """

    __slots__ = (
        "_changed",
        "_held",
        "_pending",
        "_receive",
        "_send",
        "_token",
        "closed",
        "ended",
        "error",
    )

    def __init__(self, receive: Receive, send: Send, token: CancelToken) -> None:
        self._receive = receive
        self._send = send
        self._token = token
        self._pending: deque[Message] = deque()
        self._held = 0  # bytes of the messages in _pending
        self._changed: anyio.Event | None = None
        #: Whether the app closed the connection (or refused the handshake).
        self.closed = False
        #: Whether the server reported the connection gone.
        self.ended = False
        self.error: Exception | None = None

    @property
    def open(self) -> bool:
        """Whether neither end has closed the connection."""
        return not (self.closed or self.ended)

    def _wake(self) -> None:
        changed = self._changed
        if changed is not None:
            self._changed = None
            changed.set()

    async def _wait(self) -> None:
        if self._changed is None:
            self._changed = anyio.Event()
        await self._changed.wait()

    async def pump(self) -> None:
        """Read the server's ``receive`` for the app (see the class docstring)."""
        try:
            while True:
                while self._pending and (
                    self._held >= _READ_AHEAD or len(self._pending) >= _READ_AHEAD_MESSAGES
                ):
                    await self._wait()
                message = await self._receive()
                self._pending.append(message)
                self._held += _ws_size(message)
                self._wake()
                if message.get("type") == "websocket.disconnect":
                    self.ended = True
                    if self.closed:
                        return
                    if message.get("code") == SERVICE_RESTART:
                        # The server closed it on its way down (uvicorn does, before
                        # the lifespan shutdown reaches the middleware).
                        self._token.cancel(CancelReason.SHUTDOWN, "the server is shutting down")
                    else:
                        self._token.cancel(
                            CancelReason.CLIENT_DISCONNECTED, "the client closed the connection"
                        )
                    return
        except Exception as exc:  # handed to the app's next receive()
            self.error = exc
            self._wake()

    async def receive(self) -> Message:
        """The app's ``receive``."""
        while not self._pending:
            if self.error is not None:
                raise self.error
            if self.ended:  # read again after the disconnect: it is still gone
                return {"type": "websocket.disconnect", "code": GOING_AWAY}
            await self._wait()
        message = self._pending.popleft()
        self._held -= _ws_size(message)
        self._wake()
        return message

    async def send(self, message: Message) -> None:
        """The app's ``send``: notes when the app closes the connection."""
        kind = message.get("type")
        if kind == "websocket.close" or (
            kind == "websocket.http.response.body" and not message.get("more_body", False)
        ):
            self.closed = True
            self._token._finish()  # the app ended it: nothing left to cancel
        await self._send(message)

    async def close(self, reason: CancelReason) -> None:
        """Close the connection the token ended, with the reason's close code."""
        self.closed = True
        with anyio.move_on_after(_CLOSE_WITHIN, shield=True):
            try:
                await self._send(
                    {
                        "type": "websocket.close",
                        "code": close_code(reason),
                        "reason": close_text(reason),
                    }
                )
            except Exception:  # the client went away meanwhile: nothing to close
                _log.debug("could not close the WebSocket connection", exc_info=True)


def _ws_size(message: Message) -> int:
    data = message.get("bytes") or message.get("text") or b""
    return len(data)


def _ends_response(kind: object, message: Message, *, trailers: bool) -> bool:
    if kind == "http.response.body":
        return not trailers and not message.get("more_body", False)
    if kind == "http.response.trailers":
        return not message.get("more_trailers", False)
    return kind == "http.response.pathsend"


def _route_template(scope: Scope, app: object) -> str | None:
    """The template of the route that served (or would serve) this request.

    Starlette's router (FastAPI's too, Starlette 1.7 and later) records the
    matched route in ``scope["route"]``; its ``path`` is the template. When it
    is missing (a request the middleware refused never reached the router; an
    older Starlette records nothing) the app's routes are matched here,
    without running anything; a request that matches nowhere has no template.
    """
    route = scope.get("route")
    if route is None:
        route = _match_route(scope, app)
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else None


def _match_route(scope: Scope, app: object) -> object:
    # Starlette sets scope["app"] before its middleware runs; a bare
    # DeadlineMiddleware(app) may wrap the Starlette app directly.
    for owner in (scope.get("app"), app):
        routes = getattr(owner, "routes", None)
        if not routes:
            continue
        partial = None
        for candidate in routes:
            match, _ = candidate.matches(scope)
            name = getattr(match, "name", "")
            if name == "FULL":
                return candidate
            if name == "PARTIAL" and partial is None:
                partial = candidate
        return partial
    return None


def _peer(scope: Scope) -> str | None:
    client = scope.get("client")
    if client:
        host = client[0]
        return host if isinstance(host, str) else None
    return None


def _single(group: BaseExceptionGroup[BaseException]) -> BaseException:
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc
