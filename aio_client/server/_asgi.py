"""Pure ASGI deadline middleware (Starlette, FastAPI, any ASGI 3 app).

Not ``BaseHTTPMiddleware``: that runs the app in another task, so the
handler would not see the ambient deadline, priority and token set here.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable, Hashable, MutableMapping, Sequence
from typing import Any, Final, final

import anyio
import anyio.lowlevel

from .._cancel import CancelReason, CancelToken
from .._priority import Priority
from ._core import Rejection, RouteResolver, ServerCore, ServerOutcome, ServerStats
from ._guards import ClientInfo, Guard
from ._shedding import PriorityLoadShedder

__all__ = ["ASGIApp", "DeadlineMiddleware", "Message", "Receive", "Scope", "Send"]

#: An ASGI connection scope.
Scope = MutableMapping[str, Any]
#: An ASGI event.
Message = MutableMapping[str, Any]
#: The ASGI ``receive`` callable.
Receive = Callable[[], Awaitable[Message]]
#: The ASGI ``send`` callable.
Send = Callable[[Message], Awaitable[None]]
#: An ASGI 3 application.
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_DISCONNECT: Final[Message] = {"type": "http.disconnect"}


@final
class DeadlineMiddleware:
    """Deadline, priority and cancellation for every HTTP request of an ASGI app.

    ``app.add_middleware(DeadlineMiddleware, timeout=10.0)`` (Starlette,
    FastAPI) or ``DeadlineMiddleware(app, ...)``. Options are those of the
    shared core: ``timeout`` (budget without a header, 20 s), ``max_timeout``
    (ceiling), ``low_timeout`` (504 on arrival below it, 5 ms), ``priority``
    (default), ``load_shedder``, ``observer``, ``guards`` (rate limiters,
    bulkheads, circuit breakers: 429 / 503 before the handler runs),
    ``client_key`` and ``forwarded_header`` (client identity for keyed
    limiters: the peer address from ``scope["client"]`` unless a forwarding
    header is explicitly trusted; note that uvicorn itself rewrites
    ``scope["client"]`` from ``X-Forwarded-For`` for peers in its
    ``forwarded_allow_ips``, 127.0.0.1 by default).

    Per request: the budget from ``X-Request-Timeout`` / ``grpc-timeout`` /
    ``x-envoy-expected-rq-timeout-ms`` and the priority from
    ``X-Request-Priority`` become the ambient deadline and priority (so
    every ``aio_client`` call made by the handler inherits them) and the
    request's :class:`~aio_client.CancelToken` (:func:`~aio_client.current_token`).
    The app runs in the token's scope; a client disconnect is seen by
    relaying ``receive`` (one reader, at most one body chunk read ahead).

    Once the response is complete the token is marked finished: work after
    it (Starlette background tasks) is no longer bound by the deadline. A
    lifespan ``shutdown`` event, or :meth:`shutdown`, cancels requests in
    flight with ``SHUTDOWN`` (503). WebSocket connections pass through.
    """

    __slots__ = ("app", "core")

    def __init__(
        self,
        app: ASGIApp,
        *,
        timeout: float = 20.0,
        max_timeout: float | None = None,
        low_timeout: float = 0.005,
        priority: Priority | str = Priority.NORMAL,
        load_shedder: PriorityLoadShedder | None = None,
        observer: Callable[[ServerOutcome], object] | None = None,
        guards: Sequence[Guard] = (),
        client_key: Callable[[ClientInfo], Hashable] | None = None,
        forwarded_header: str | None = None,
    ) -> None:
        self.app = app
        #: The shared core (its options and counters).
        self.core = ServerCore(
            timeout=timeout,
            max_timeout=max_timeout,
            low_timeout=low_timeout,
            priority=priority,
            load_shedder=load_shedder,
            observer=observer,
            guards=guards,
            client_key=client_key,
            forwarded_header=forwarded_header,
        )

    @property
    def stats(self) -> ServerStats:
        """Running counts: requests, 504s, 499s, 503s, malformed headers..."""
        return self.core.stats

    def shutdown(self, message: str = "the server is shutting down") -> int:
        """Cancel the requests in flight with ``SHUTDOWN`` (503) and refuse new ones."""
        return self.core.shutdown(message)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self.app(scope, self._lifespan_receive(receive), send)
        else:
            await self.app(scope, receive, send)

    def _lifespan_receive(self, receive: Receive) -> Receive:
        async def relay() -> Message:
            message = await receive()
            if message.get("type") == "lifespan.shutdown":
                self.core.shutdown()
            return message

        return relay

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [
            (bytes(name).decode("latin-1"), bytes(value).decode("latin-1"))
            for name, value in scope.get("headers", ())
        ]
        app = self.app
        route: RouteResolver | None = None
        if self.core.observer is not None:

            def route() -> str | None:
                return _route_template(scope, app)

        decision = self.core.admit(
            headers,
            method=scope.get("method", ""),
            scheme=scope.get("scheme", "http"),
            route=route,
            peer=_peer(scope),
        )
        if isinstance(decision, Rejection):
            await _send_rejection(send, decision)
            return
        exchange = _Exchange(receive, send, decision.token)
        try:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(exchange.pump)
                result = await self.core.run(
                    decision,
                    lambda: app(scope, exchange.receive, exchange.send),
                    started=lambda: exchange.started,
                    status_of=lambda _: exchange.status,
                    disconnected=lambda: exchange.disconnected,
                )
                tasks.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            # Only the app can fail (the pump keeps its errors for the app's
            # receive), so the group holds one exception: raise it as it was.
            inner = _single(group)
            raise inner from inner.__cause__
        if isinstance(result, Rejection) and result.deliverable:
            await _send_rejection(send, result)
        # Otherwise the client is gone, or the response had started: returning
        # without completing it makes the server break the connection.


@final
class _Exchange:
    """One request's relayed ``receive`` and observed ``send``.

    ``pump`` is the only reader of the server's ``receive``; the app reads
    through :meth:`receive`. While more body is coming the pump holds at most
    one chunk, so uploads keep their back-pressure; after the last chunk the
    next event can only be ``http.disconnect``, which fires the token unless
    the response is already complete.
    """

    __slots__ = (
        "_changed",
        "_pending",
        "_receive",
        "_send",
        "_token",
        "_trailers",
        "complete",
        "disconnected",
        "error",
        "started",
        "status",
    )

    def __init__(self, receive: Receive, send: Send, token: CancelToken) -> None:
        self._receive = receive
        self._send = send
        self._token = token
        self._pending: deque[Message] = deque()
        self._changed = anyio.Event()
        self._trailers = False
        self.started = False
        self.complete = False
        self.disconnected = False
        self.error: Exception | None = None
        self.status = 500

    def _wake(self) -> None:
        changed = self._changed
        self._changed = anyio.Event()
        changed.set()

    async def pump(self) -> None:
        body_done = False
        try:
            while True:
                message = await self._receive()
                if message.get("type") == "http.disconnect":
                    self.disconnected = True
                    if not self.complete:
                        self._token.cancel(
                            CancelReason.CLIENT_DISCONNECTED, "the client closed the connection"
                        )
                    self._wake()
                    return
                if body_done:
                    # ASGI allows only a disconnect after the last body chunk; drop
                    # anything else rather than queue it (and never spin).
                    await anyio.lowlevel.checkpoint()
                    continue
                self._pending.append(message)
                self._wake()
                if message.get("more_body", False):
                    while self._pending:
                        await self._changed.wait()
                else:
                    body_done = True
        except Exception as exc:  # handed to the app's next receive()
            self.error = exc
            self._wake()

    async def receive(self) -> Message:
        while not self._pending:
            if self.error is not None:
                raise self.error
            if self.disconnected:
                return dict(_DISCONNECT)
            await self._changed.wait()
        message = self._pending.popleft()
        self._wake()
        return message

    async def send(self, message: Message) -> None:
        kind = message.get("type")
        if kind == "http.response.start":
            self.started = True
            self.status = int(message.get("status", 500))
            self._trailers = bool(message.get("trailers", False))
        elif _ends_response(kind, message, trailers=self._trailers):
            self.complete = True
            self._token._finish()
        await self._send(message)


async def _send_rejection(send: Send, rejection: Rejection) -> None:
    body = rejection.body
    headers = [
        (name.encode("latin-1"), value.encode("latin-1")) for name, value in rejection.headers
    ]
    headers.append((b"content-length", str(len(body)).encode("latin-1")))
    await send({"type": "http.response.start", "status": rejection.status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


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
