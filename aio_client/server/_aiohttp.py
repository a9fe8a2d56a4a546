"""aiohttp server middleware over the shared core."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Iterable, Mapping
from contextvars import ContextVar
from typing import ClassVar, Final, Unpack, final

import anyio
from aiohttp import web
from aiohttp.typedefs import Handler
from aiohttp.web_urldispatcher import AbstractRoute
from multidict import istr

from .._cancel import CancelReason, CancelToken, current_token
from .._deadline import current_priority, set_ambient
from ._core import RouteResolver, ServerCore
from ._options import ServerOptions
from ._outcomes import Rejection, ServerStats
from ._route_limits import route_max_timeout
from ._websocket import close_code, close_text

__all__ = ["AiohttpDeadlineMiddleware", "aiohttp_middleware"]

# Routes whose maximum is remembered (an app's routes are few; this bounds the
# memory should they not be).
_CAPS_LIMIT: Final = 1024
# Seconds a close frame for a cancelled WebSocket connection may take.
_CLOSE_WITHIN: Final = 1.0
_log: Final = logging.getLogger("aio_client.server")
_UPGRADE: Final = istr("upgrade")
# The WebSocket the connection's handler prepared (on_response_prepare fills it).
_sockets: ContextVar[list[web.WebSocketResponse] | None] = ContextVar(
    "aio_client_websockets", default=None
)


def aiohttp_middleware(**options: Unpack[ServerOptions]) -> AiohttpDeadlineMiddleware:
    """An aiohttp middleware enforcing deadlines and priorities (options: :class:`ServerOptions`).

    ::

        deadline = aiohttp_middleware(timeout=10.0)
        app = web.Application(middlewares=[deadline])
        app.on_shutdown.append(deadline.on_shutdown)  # in-flight requests get 503

    Decorate a handler with :func:`max_timeout` to cap its route's budget.
    The client's address (keyed limiters, ``trust_priority``) is
    ``request.remote`` (the peer, unless the app set up aiohttp's forwarded
    handling) unless ``forwarded_header`` names a header to trust.
    """
    return AiohttpDeadlineMiddleware(ServerCore(**options))


@final
class AiohttpDeadlineMiddleware:
    """What :func:`aiohttp_middleware` returns: a new-style aiohttp middleware.

    A client hang-up is noticed within about 20 ms (or at once with
    ``handler_cancellation=True``), fires the token with
    ``CLIENT_DISCONNECTED`` and cancels the handler (recorded as 499). When
    the deadline passes after the handler started streaming, the connection
    is broken rather than the body ended cleanly.

    WebSockets: with ``app.on_response_prepare.append(middleware.on_response_prepare)``,
    a handler that prepares a ``web.WebSocketResponse`` turns its request
    into a connection (see :meth:`on_response_prepare`): a dropped connection
    (seen within about 20 ms), shutdown or ``websocket_timeout`` cancels it
    (:func:`~aio_client.current_token` says why), and the last two close it
    with 1001. Until then (the handshake) it is a request: deadline, guards
    and load shedding apply, so ``Upgrade`` headers buy no way around them.
    """

    __middleware_version__: ClassVar[int] = 1
    __slots__ = ("_caps", "_names", "core")

    def __init__(self, core: ServerCore) -> None:
        #: The shared core (its options and counters).
        self.core = core
        # Each route's maximum (max_timeout), looked up once.
        self._caps: dict[AbstractRoute, float | None] = {}
        # The headers the core reads, as aiohttp's case-insensitive keys (looked
        # up without case folding); None: the core reads them all.
        self._names: tuple[istr, ...] | None = (
            None if core.wants_all_headers else tuple(istr(name) for name in core.header_names)
        )

    @property
    def stats(self) -> ServerStats:
        """Running counts: requests, 504s, 499s, 503s, malformed headers..."""
        return self.core.stats

    def shutdown(self, message: str = "the server is shutting down") -> int:
        """Cancel the requests in flight with ``SHUTDOWN`` (503) and refuse new ones."""
        return self.core.shutdown(message)

    async def on_shutdown(self, app: web.Application) -> None:
        """An ``app.on_shutdown`` handler: aiohttp runs it before waiting for handlers."""
        self.core.shutdown()

    async def on_response_prepare(self, request: web.Request, response: web.StreamResponse) -> None:
        """An ``app.on_response_prepare`` handler: WebSocket handlers become connections.

        When a handler prepares a ``web.WebSocketResponse`` the request turns
        into a connection: the request's deadline stops applying
        (``websocket_timeout`` does, when set), calls the handler makes from
        then on inherit that instead, and a connection cancelled by shutdown or
        ``websocket_timeout`` is closed with 1001 (going away). Without it, a
        WebSocket handler is a request like any other: the deadline cuts it.
        """
        sockets = _sockets.get()
        if sockets is None or sockets or not isinstance(response, web.WebSocketResponse):
            return
        token = current_token()
        if token is None:
            return
        sockets.append(response)
        deadline = self.core.connection_upgraded(token)
        # The handler goes on in this context: its calls inherit the connection's
        # deadline from here on (the middleware resets it when the request ends).
        set_ambient(deadline, current_priority())

    async def __call__(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        core = self.core
        headers = request.headers
        # A WebSocket handshake stays a request (deadline, guards) until the
        # handler prepares its WebSocketResponse (on_response_prepare).
        upgrade = headers.get(_UPGRADE)  # absent on nearly every request: one lookup
        sockets: list[web.WebSocketResponse] | None = (
            [] if upgrade is not None and _is_websocket(upgrade, headers) else None
        )
        # No closures: the exchange calls the handler and is the route resolver,
        # so a request holds as few objects as it can while it runs (each one
        # brings the next garbage collection nearer with many in flight).
        exchange = _Exchange(
            request, handler, None if core.stream_timeout is None else core, sockets
        )
        route: RouteResolver | None = None
        scheme = "http"
        if core.observer is not None:
            scheme = request.scheme
            route = exchange
        names = self._names
        pairs: Iterable[tuple[str, str]]
        if names is None:
            pairs = headers.items()
        else:
            # A loop, not a comprehension: no frame of its own on every request.
            pairs = []
            getall = headers.getall
            for name in names:
                for value in getall(name, ()):
                    pairs.append((name, value))
        try:  # the route's maximum, remembered per route
            route_max = self._caps[request.match_info.route]
        except KeyError:
            route_max = self._learn_route_max(request)
        decision = core.admit(
            pairs,
            route_max=route_max,
            method=request.method,
            scheme=scheme,
            route=route,
            peer=request.remote if core.wants_peer else None,
        )
        if isinstance(decision, Rejection):
            return _response(decision)
        exchange._token = decision.token
        # Looked at by the token when read, and every 20 ms while the handler runs.
        decision.token._watch_peer(exchange)
        if sockets is None:
            result = await core.run(decision, exchange)
        else:
            context = _sockets.set(sockets)
            try:
                result = await core.run(decision, exchange)
            finally:
                _sockets.reset(context)
            if isinstance(result, Rejection) and sockets:
                socket = sockets[0]
                reason = decision.token.reason
                if reason is not None and reason is not CancelReason.CLIENT_DISCONNECTED:
                    await _close(socket, reason)
                return socket
        if not isinstance(result, Rejection):
            return result
        if result.deliverable:
            return _response(result)
        if result.started:
            # The response had started: break the connection, so the client never
            # takes a truncated body for a whole one. aiohttp then finds it gone
            # and ends the request quietly (a handler error would be logged).
            transport = request.transport
            if transport is not None:  # None: the connection is gone already
                transport.close()
        return web.Response(status=result.status)  # the client is gone: for the access log

    def _learn_route_max(self, request: web.Request) -> float | None:
        # A route not remembered yet. Remembered unless it is a class-based view
        # (its maximum is per method) or no route matched (aiohttp makes a route
        # of its own for each 404 or 405).
        match_info = request.match_info
        limit = _route_max(request)
        handler = match_info.handler
        route = match_info.route
        if (
            route.resource is not None
            and not (isinstance(handler, type) and issubclass(handler, web.View))
            and len(self._caps) < _CAPS_LIMIT
        ):
            self._caps[route] = limit
        return limit


@final
class _Exchange:
    """One request as the core sees it."""

    __slots__ = ("_core", "_handler", "_request", "_sockets", "_token")

    def __init__(
        self,
        request: web.Request,
        handler: Handler,
        core: ServerCore | None,
        sockets: list[web.WebSocketResponse] | None,
    ) -> None:
        self._request = request
        self._handler = handler
        # The request's token, set once it is admitted.
        self._token: CancelToken
        # Set while the core's stream policy waits to hear that the response started.
        self._core = core
        # The WebSocket the handler prepared, if the request was a handshake.
        self._sockets = sockets

    def gone(self) -> bool:
        """Whether the client's connection is closed (the token's probe, every 20 ms).

        Also notices that the response has started, for the stream policy.
        """
        core = self._core
        if core is not None and self.started:
            self._core = None
            if not self._sockets:  # a WebSocket is bounded by websocket_timeout instead
                core.response_started(self._token)
        return _gone(self._request)

    def call(self) -> Awaitable[web.StreamResponse]:
        """Call the handler."""
        return self._handler(self._request)

    def route_template(self) -> str | None:
        """The template of the request's route (for the observer)."""
        return _route_template(self._request)

    #: The exchange is the request's route resolver (no partial kept per request).
    __call__ = route_template

    @property
    def started(self) -> bool:
        """Whether the response's first bytes were written."""
        writer = self._request.writer
        return writer is not None and writer.output_size > 0

    @property
    def disconnected(self) -> bool:
        """Whether the client's connection is closed."""
        return _gone(self._request)

    def status_of(self, response: web.StreamResponse, /) -> int:
        """The handler's response's status."""
        return response.status

    def status_of_error(self, exc: Exception, /) -> int | None:
        """``raise web.HTTPNotFound()`` is an answer, not a failure."""
        return exc.status if isinstance(exc, web.HTTPException) else None


def _is_websocket(upgrade: str, headers: Mapping[str, str]) -> bool:
    # aiohttp's own test for a WebSocket handshake (WebSocketResponse.can_prepare),
    # given the request's Upgrade header.
    return upgrade.lower() == "websocket" and "upgrade" in headers.get("Connection", "").lower()


async def _close(socket: web.WebSocketResponse, reason: CancelReason) -> None:
    with anyio.move_on_after(_CLOSE_WITHIN, shield=True):
        try:
            await socket.close(code=close_code(reason), message=close_text(reason).encode())
        except Exception:  # the client went away meanwhile: nothing to close
            _log.debug("could not close the WebSocket connection", exc_info=True)


def _gone(request: web.BaseRequest) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


def _route_template(request: web.Request) -> str | None:
    # The resource's canonical form is its template ("/users/{id}", sub-app
    # prefix included); an unmatched request (404/405) has no resource.
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else None


def _route_max(request: web.Request) -> float | None:
    handler = request.match_info.handler
    limit = route_max_timeout(handler)
    if limit is None and isinstance(handler, type) and issubclass(handler, web.View):
        limit = route_max_timeout(getattr(handler, request.method.lower(), None))
    return limit


def _response(rejection: Rejection) -> web.Response:
    return web.Response(status=rejection.status, body=rejection.body, headers=rejection.headers)
