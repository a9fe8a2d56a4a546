"""The server half: deadline, priority and cancellation for incoming requests.

- ASGI (Starlette, FastAPI): :class:`DeadlineMiddleware`; FastAPI helpers
  :data:`CancelTokenDep`, :func:`get_cancel_token`, :func:`fastapi_max_timeout`.
- aiohttp: :func:`aiohttp_middleware`; per-route cap with :func:`max_timeout`.
- Sanic: ``aio_client.server.sanic.setup(app, ...)``.
- Load shedding by priority: :class:`PriorityLoadShedder`; who may raise a
  request's priority: ``trust_priority=`` :func:`trusted_peers`.
- Every adapter takes the options of :class:`ServerOptions`.
- Streams: ``stream_timeout`` bounds a started response; Server-Sent Events
  with heartbeats, stopped by the request's cancellation: :func:`sse_stream`.
- WebSocket connections get a token of their own (``websocket_timeout``):
  under :class:`DeadlineMiddleware`, and under :func:`aiohttp_middleware`
  with its ``on_response_prepare`` wired.
- Guards on one route: :func:`guarded` (a decorator for any framework's
  handler) or :func:`guard_dependency` (FastAPI).
- Our errors escaping a handler (a route's own policy refusing, an outgoing
  call's deadline or failure) are answered, not crashed on:
  :func:`status_of_refusal` is the table; ``error_status=`` overrides it.

All share one core. The aiohttp and FastAPI helpers import their framework
only when first used, so ``import aio_client.server`` needs neither.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_names as _lazy_names
from ._asgi import DeadlineMiddleware
from ._core import ServerOutcome, ServerOutcomeKind
from ._guards import ClientInfo
from ._options import ServerOptions, TrustedPeers, trusted_peers
from ._outcomes import ServerStats, status_of_refusal
from ._route_guards import guard_dependency, guarded
from ._route_limits import max_timeout
from ._shedding import PriorityLoadShedder
from ._sse import sse_stream

if TYPE_CHECKING:
    from ._aiohttp import AiohttpDeadlineMiddleware, aiohttp_middleware
    from ._fastapi import CancelTokenDep, fastapi_max_timeout, get_cancel_token

__all__ = [
    "AiohttpDeadlineMiddleware",
    "CancelTokenDep",
    "ClientInfo",
    "DeadlineMiddleware",
    "PriorityLoadShedder",
    "ServerOptions",
    "ServerOutcome",
    "ServerOutcomeKind",
    "ServerStats",
    "TrustedPeers",
    "aiohttp_middleware",
    "fastapi_max_timeout",
    "get_cancel_token",
    "guard_dependency",
    "guarded",
    "max_timeout",
    "sse_stream",
    "status_of_refusal",
    "trusted_peers",
]

_LAZY = {
    "AiohttpDeadlineMiddleware": ("._aiohttp", "AiohttpDeadlineMiddleware"),
    "aiohttp_middleware": ("._aiohttp", "aiohttp_middleware"),
    "CancelTokenDep": ("._fastapi", "CancelTokenDep"),
    "fastapi_max_timeout": ("._fastapi", "fastapi_max_timeout"),
    "get_cancel_token": ("._fastapi", "get_cancel_token"),
}


__getattr__ = _lazy_names(__name__, _LAZY)
