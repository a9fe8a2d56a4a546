"""Transports: aiohttp, httpx, httpx2 and in-memory.

The aiohttp, httpx and httpx2 adapters import their library only when first
used, so ``import aio_client`` works with none of them installed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._size_limit import response_size_limit
from ._base import BodyStream, StreamingTransport, Transport, backend_timeout
from ._memory import MemoryTransport

if TYPE_CHECKING:
    from ._aiohttp import AiohttpTransport
    from ._httpx import HttpxTransport
    from ._httpx2 import Httpx2Transport

__all__ = [
    "AiohttpTransport",
    "BodyStream",
    "Httpx2Transport",
    "HttpxTransport",
    "MemoryTransport",
    "StreamingTransport",
    "Transport",
    "backend_timeout",
    "response_size_limit",
]


def __getattr__(name: str) -> Any:
    if name == "AiohttpTransport":
        from ._aiohttp import AiohttpTransport

        return AiohttpTransport
    if name == "HttpxTransport":
        from ._httpx import HttpxTransport

        return HttpxTransport
    if name == "Httpx2Transport":
        from ._httpx2 import Httpx2Transport

        return Httpx2Transport
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
