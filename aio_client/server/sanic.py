"""Sanic integration over the shared core: ``aio_client.server.sanic.setup(app, ...)``.

Sanic has no middleware that wraps the handler call, so :func:`setup` wraps
each HTTP route's handler when the server starts (``before_server_start``),
after every route is registered. WebSocket routes are left alone.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, Final, Unpack, final

from sanic import Request, Sanic
from sanic.exceptions import SanicException
from sanic.response import HTTPResponse

from .._cancel import CancelToken
from .._errors import DeadlineExceededError
from ._core import RouteResolver, ServerCore
from ._options import ServerOptions
from ._outcomes import Rejection, ServerStats
from ._route_limits import route_max_timeout

__all__ = ["SanicDeadline", "setup"]

_WRAPPED: Final = "__aio_client_wrapped__"


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
    return integration


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
            if getattr(handler, _WRAPPED, False) or hasattr(handler, "is_websocket"):
                continue
            route.handler = self._wrap(handler)

    def _wrap(self, handler: Callable[..., Any]) -> Callable[..., Any]:
        core = self.core
        view = getattr(handler, "view_class", None)

        @functools.wraps(handler)
        async def deadline_handler(request: Request, *args: Any, **kwargs: Any) -> Any:
            limit = route_max_timeout(handler)
            if limit is None and view is not None:
                limit = route_max_timeout(getattr(view, request.method.lower(), None))
            headers = request.headers
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
                route=_template_of(request) if core.observer is not None else None,
                peer=(request.ip or None) if core.wants_peer else None,
            )
            if isinstance(decision, Rejection):
                return _response(decision)
            exchange = _Exchange(
                request, decision.token, None if core.stream_timeout is None else core
            )
            decision.token._watch_peer(exchange.gone)

            async def call() -> Any:
                result = handler(request, *args, **kwargs)
                if inspect.isawaitable(result):
                    result = await result
                return result

            result = await core.run(decision, call, exchange)
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

    __slots__ = ("_core", "_request", "_token")

    def __init__(self, request: Request, token: CancelToken, core: ServerCore | None) -> None:
        self._request = request
        self._token = token
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

    def lost(self) -> bool:
        """Whether the client's connection is lost."""
        conn_info = self._request.conn_info
        return conn_info is not None and conn_info.lost

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


def _template_of(request: Request) -> RouteResolver:
    # Sanic routes before calling the handler: the template ("/users/<id:int>") is known.
    def template() -> str | None:
        return request.uri_template

    return template


def _response(rejection: Rejection) -> HTTPResponse:
    return HTTPResponse(
        body=rejection.body,
        status=rejection.status,
        headers=dict(rejection.headers),
        content_type=dict(rejection.headers).get("content-type"),
    )
