"""aiohttp server middleware over the shared core."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable, Sequence
from typing import ClassVar, Final, final

from aiohttp import web
from aiohttp.typedefs import Handler

from .._cancel import CancelReason, CancelToken
from .._errors import DeadlineExceededError
from .._priority import Priority
from ._core import (
    Rejection,
    RouteResolver,
    ServerCore,
    ServerOutcome,
    ServerStats,
    route_max_timeout,
)
from ._guards import ClientInfo, Guard
from ._shedding import PriorityLoadShedder

__all__ = ["AiohttpDeadlineMiddleware", "aiohttp_middleware"]

# aiohttp tells a handler nothing when its client hangs up (unless the server
# runs with handler_cancellation=True), so connections in use are checked
# this often, all with one timer.
_DISCONNECT_CHECK_INTERVAL: Final = 0.02


def aiohttp_middleware(
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
) -> AiohttpDeadlineMiddleware:
    """An aiohttp middleware enforcing deadlines and priorities (see :class:`ServerCore`).

    ::

        deadline = aiohttp_middleware(timeout=10.0)
        app = web.Application(middlewares=[deadline])
        app.on_shutdown.append(deadline.on_shutdown)  # in-flight requests get 503

    Decorate a handler with :func:`max_timeout` to cap its route's budget.
    ``guards`` (rate limiters, bulkheads, breakers) answer 429 / 503 before
    the handler runs; keyed limiters key on ``request.remote`` (the peer,
    unless the app set up aiohttp's forwarded handling) unless
    ``forwarded_header`` names a header to trust.
    """
    return AiohttpDeadlineMiddleware(
        ServerCore(
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
    )


@final
class AiohttpDeadlineMiddleware:
    """What :func:`aiohttp_middleware` returns: a new-style aiohttp middleware.

    A client hang-up is noticed within about 20 ms (or at once with
    ``handler_cancellation=True``), fires the token with
    ``CLIENT_DISCONNECTED`` and cancels the handler (recorded as 499). When
    the deadline passes after the handler started streaming, the connection
    is broken rather than the body ended cleanly.
    """

    __middleware_version__: ClassVar[int] = 1
    __slots__ = ("_watch", "core")

    def __init__(self, core: ServerCore) -> None:
        #: The shared core (its options and counters).
        self.core = core
        self._watch = _DisconnectWatch()

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

    async def __call__(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        route: RouteResolver | None = None
        if self.core.observer is not None:

            def route() -> str | None:
                return _route_template(request)

        decision = self.core.admit(
            request.headers.items(),
            route_max=_route_max(request),
            method=request.method,
            scheme=request.scheme,
            route=route,
            peer=request.remote,
        )
        if isinstance(decision, Rejection):
            return _response(decision)
        token = decision.token
        token._watch_peer(lambda: _gone(request))
        self._watch.add(token, request)
        try:
            result = await self.core.run(
                decision,
                lambda: handler(request),
                started=lambda: request.writer.output_size > 0,
                status_of=lambda response: response.status,
                disconnected=lambda: _gone(request),
                status_of_error=_http_exception_status,
            )
        finally:
            self._watch.discard(token)
        if not isinstance(result, Rejection):
            return result
        if result.deliverable:
            return _response(result)
        if result.started:
            # aiohttp breaks the connection when a handler times out after
            # writing, so the client never sees a clean end of a truncated body.
            raise DeadlineExceededError("the request ended while its response was streaming")
        return web.Response(status=result.status)  # the client is gone: for the access log


@final
class _DisconnectWatch:
    """One timer checking every watched request's connection."""

    __slots__ = ("_handle", "_watched")

    def __init__(self) -> None:
        self._watched: dict[CancelToken, web.BaseRequest] = {}
        self._handle: asyncio.TimerHandle | None = None

    def add(self, token: CancelToken, request: web.BaseRequest) -> None:
        self._watched[token] = request
        if self._handle is None:
            self._schedule()

    def discard(self, token: CancelToken) -> None:
        self._watched.pop(token, None)
        if not self._watched and self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _schedule(self) -> None:
        loop = asyncio.get_running_loop()
        self._handle = loop.call_later(_DISCONNECT_CHECK_INTERVAL, self._check)

    def _check(self) -> None:
        self._handle = None
        for token, request in list(self._watched.items()):
            if _gone(request):
                del self._watched[token]
                token.cancel(CancelReason.CLIENT_DISCONNECTED, "the client closed the connection")
        if self._watched:
            self._schedule()


def _gone(request: web.BaseRequest) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


def _route_template(request: web.Request) -> str | None:
    # The resource's canonical form is its template ("/users/{id}", sub-app
    # prefix included); an unmatched request (404/405) has no resource.
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else None


def _http_exception_status(exc: Exception) -> int | None:
    # ``raise web.HTTPNotFound()`` is an answer, not a failure.
    return exc.status if isinstance(exc, web.HTTPException) else None


def _route_max(request: web.Request) -> float | None:
    handler = request.match_info.handler
    limit = route_max_timeout(handler)
    if limit is None and isinstance(handler, type) and issubclass(handler, web.View):
        limit = route_max_timeout(getattr(handler, request.method.lower(), None))
    return limit


def _response(rejection: Rejection) -> web.Response:
    return web.Response(status=rejection.status, body=rejection.body, headers=rejection.headers)
