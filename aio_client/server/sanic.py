"""Sanic integration over the shared core: ``aio_client.server.sanic.setup(app, ...)``.

Sanic has no middleware that wraps the handler call, so :func:`setup` wraps
each HTTP route's handler when the server starts (``before_server_start``),
after every route is registered. A WebSocket route's handler gets a
:class:`~aio_client.CancelToken` per connection (see ``_websocket.py``): the
client hanging up, shutdown and ``websocket_timeout`` cancel it, and the
connection is closed with 1001 after the last two.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from collections.abc import Callable
from typing import Any, Final, Unpack, final

import anyio
from sanic import Request, Sanic
from sanic.exceptions import SanicException
from sanic.response import HTTPResponse

from .._cancel import CancelReason, CancelToken
from .._deadline import current_priority, reset_ambient, set_ambient
from .._errors import DeadlineExceededError
from ._core import ServerCore
from ._options import ServerOptions
from ._outcomes import Rejection, ServerStats
from ._route_limits import route_max_timeout
from ._websocket import GOING_AWAY, close_code, close_text

__all__ = ["SanicDeadline", "setup"]

_WRAPPED: Final = "__aio_client_wrapped__"
# Where _note_arrival keeps the loop time a request's head arrived (request.ctx).
_ARRIVED: Final = "_aio_client_arrived"
_log: Final = logging.getLogger("aio_client.server")
# Seconds a close frame for a cancelled WebSocket connection may take to go out.
_CLOSE_WITHIN: Final = 1.0


def setup(app: Sanic[Any, Any], **options: Unpack[ServerOptions]) -> SanicDeadline:
    """Enforce deadlines and priorities on every HTTP route of ``app``.

    Options: ``aio_client.server.ServerOptions``.
    Handlers decorated with ``aio_client.server.max_timeout`` get a per-route
    cap. On ``before_server_stop`` requests in flight are cancelled with
    ``SHUTDOWN`` (503). A client hang-up reaches the handler as Sanic's own
    cancellation; the token fires ``CLIENT_DISCONNECTED`` (recorded as 499).
    The client's address (keyed limiters, ``trust_priority``) is
    ``request.ip`` (the peer) unless ``forwarded_header`` names a header to trust.
    """
    integration = SanicDeadline(ServerCore(**options))
    app.register_listener(integration._wrap_routes, "before_server_start")
    app.register_listener(integration._on_stop, "before_server_stop")
    # Sanic reads a request's whole body before its handler runs: the budget
    # runs from the head's arrival, noted here.
    app.add_signal(_note_arrival, "http.lifecycle.request")
    return integration


async def _note_arrival(request: Request) -> None:
    setattr(request.ctx, _ARRIVED, asyncio.get_running_loop().time())


@final
class SanicDeadline:
    """What :func:`setup` returns: the core's counters and a shutdown switch."""

    __slots__ = ("core",)

    def __init__(self, core: ServerCore) -> None:
        #: The shared core (its options and counters).
        self.core = core

    @property
    def stats(self) -> ServerStats:
        """Running counts: requests, 504s, 499s, 503s, malformed headers..."""
        return self.core.stats

    def shutdown(self, message: str = "the server is shutting down") -> int:
        """Cancel the requests in flight with ``SHUTDOWN`` (503) and refuse new ones."""
        return self.core.shutdown(message)

    async def _on_stop(self, app: Sanic[Any, Any]) -> None:
        self.core.shutdown()

    async def _wrap_routes(self, app: Sanic[Any, Any]) -> None:
        for route in app.router.routes:
            handler = route.handler
            if getattr(handler, _WRAPPED, False):
                continue
            if getattr(handler, "is_websocket", False):
                wrapped = self._wrap_websocket(handler)
                if wrapped is not None:
                    route.handler = wrapped
                continue
            route.handler = self._wrap(handler)

    def _wrap_websocket(self, route_handler: Any) -> Any | None:
        # Sanic registers a WebSocket route as partial(app._websocket_handler,
        # handler, subprotocols=...): the app's own handler goes in its place.
        if not isinstance(route_handler, functools.partial) or not route_handler.args:
            _log.warning("a WebSocket route of an unknown shape is served without a token")
            return None
        handler = route_handler.args[0]
        core = self.core

        @functools.wraps(handler)
        async def connection_handler(request: Request, ws: Any, *args: Any, **kwargs: Any) -> Any:
            token = core.open_connection()
            if token is None:  # shutting down: no new connections
                await _close_websocket(ws, GOING_AWAY, close_text(CancelReason.SHUTDOWN))
                return None
            lost = getattr(ws, "connection_lost_waiter", None)
            if lost is not None:
                # A hang-up reaches the handler as the token's cancellation, even
                # while it only sends or waits on something else.
                lost.add_done_callback(lambda _: _connection_lost(ws, token))
            # Calls made by the handler inherit the connection's time limit (if any).
            ambient = set_ambient(token.deadline, current_priority())
            try:
                with token.scope():
                    return await handler(request, ws, *args, **kwargs)
            finally:
                reset_ambient(ambient)
                core.close_connection(token)
                reason = token.reason
                if reason is not None and reason is not CancelReason.CLIENT_DISCONNECTED:
                    await _close_websocket(ws, close_code(reason), close_text(reason))
                token._finish()

        setattr(connection_handler, _WRAPPED, True)
        wrapped = functools.partial(
            route_handler.func,
            connection_handler,
            *route_handler.args[1:],
            **route_handler.keywords,
        )
        wrapped.__name__ = route_handler.__name__  # type: ignore[attr-defined]
        wrapped.is_websocket = True  # type: ignore[attr-defined]
        setattr(wrapped, _WRAPPED, True)
        return wrapped

    def _wrap(self, handler: Callable[..., Any]) -> Callable[..., Any]:
        core = self.core
        view = getattr(handler, "view_class", None)

        @functools.wraps(handler)
        async def deadline_handler(request: Request, *args: Any, **kwargs: Any) -> Any:
            limit = route_max_timeout(handler)
            if limit is None and view is not None:
                limit = route_max_timeout(getattr(view, request.method.lower(), None))
            headers = request.headers
            # The exchange calls the handler and is the route resolver: no
            # closures kept per request.
            exchange = _Exchange(
                request, handler, args, kwargs, None if core.stream_timeout is None else core
            )
            decision = core.admit(
                headers.items()
                if core.wants_all_headers
                else [
                    (name, value)
                    for name in core.header_names
                    if name in headers
                    for value in headers.getall(name)
                ],
                route_max=limit,
                method=request.method,
                scheme=request.scheme,
                route=exchange if core.observer is not None else None,
                peer=(request.ip or None) if core.wants_peer else None,
                arrived_at=getattr(request.ctx, _ARRIVED, None),
            )
            if isinstance(decision, Rejection):
                return _response(decision)
            exchange._token = decision.token
            decision.token._watch_peer(exchange)
            result = await core.run(decision, exchange)
            if not isinstance(result, Rejection):
                return result
            if result.deliverable:
                return _response(result)
            if not result.started:
                return HTTPResponse(status=result.status)  # the client is gone
            # The body had started: break the connection so the client cannot
            # take the truncated body for a whole one (Sanic would end it cleanly).
            transport = request.transport
            if transport is not None:
                transport.close()
            raise DeadlineExceededError("the request ended while its response was streaming")

        setattr(deadline_handler, _WRAPPED, True)
        return deadline_handler


@final
class _Exchange:
    """One request as the core sees it."""

    __slots__ = ("_args", "_core", "_handler", "_kwargs", "_request", "_token")

    def __init__(
        self,
        request: Request,
        handler: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        core: ServerCore | None,
    ) -> None:
        self._request = request
        self._handler = handler
        self._args = args
        self._kwargs = kwargs
        # The request's token, set once it is admitted.
        self._token: CancelToken
        # Set while the core's stream policy waits to hear that the response started.
        self._core = core

    def gone(self) -> bool:
        """Whether the client's connection is lost (the token's probe, every 20 ms).

        Also notices that the response has started, for the stream policy.
        """
        core = self._core
        if core is not None and self._request.responded:
            self._core = None
            core.response_started(self._token)
        return self.lost()

    async def call(self) -> Any:
        """Call the handler (a plain function's value is taken as it is)."""
        result = self._handler(self._request, *self._args, **self._kwargs)
        if inspect.isawaitable(result):
            result = await result
        return result

    def route_template(self) -> str | None:
        """The template of the request's route (Sanic routes before calling the handler)."""
        template = self._request.uri_template
        return template if isinstance(template, str) else None

    #: The exchange is the request's route resolver (no closure kept per request).
    __call__ = route_template

    def lost(self) -> bool:
        """Whether the client's connection is lost (or closing: Sanic may cancel the
        handler of a connection it closes before it marks the connection lost)."""
        request = self._request
        conn_info = request.conn_info
        if conn_info is not None and conn_info.lost:
            return True
        transport = request.transport
        return transport is not None and transport.is_closing()

    @property
    def started(self) -> bool:
        """Whether the handler has responded."""
        return bool(self._request.responded)

    @property
    def disconnected(self) -> bool:
        """Whether the client's connection is lost."""
        return self.lost()

    def status_of(self, response: Any, /) -> int:
        """The status of the handler's response."""
        return int(getattr(response, "status", 200))

    def status_of_error(self, exc: Exception, /) -> int | None:
        """``raise NotFound()`` is an answer, not a failure."""
        return exc.status_code if isinstance(exc, SanicException) else None


def _connection_lost(ws: Any, token: CancelToken) -> None:
    # A connection the server closed first (the handler's own ws.close()) ended
    # on purpose: its token does not say the client hung up. A client's close
    # frame, or a connection that just dropped, is a hang-up.
    if getattr(getattr(ws, "ws_proto", None), "close_rcvd_then_sent", None) is False:
        return
    token.cancel(CancelReason.CLIENT_DISCONNECTED, "the client closed the connection")


async def _close_websocket(ws: Any, code: int, text: str) -> None:
    with anyio.move_on_after(_CLOSE_WITHIN, shield=True):
        try:
            await ws.close(code, text)
        except Exception:  # the client went away meanwhile: nothing to close
            _log.debug("could not close the WebSocket connection", exc_info=True)


def _response(rejection: Rejection) -> HTTPResponse:
    return HTTPResponse(
        body=rejection.body,
        status=rejection.status,
        headers=dict(rejection.headers),
        content_type=dict(rejection.headers).get("content-type"),
    )
