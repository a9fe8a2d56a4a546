"""The httpx2 transport; the only module that imports httpx2."""

from __future__ import annotations

from typing import final

import httpx2

from ._httpx_core import HttpxFamilyTransport

__all__ = ["Httpx2Transport"]


@final
class Httpx2Transport(HttpxFamilyTransport):
    """Sends requests with an ``httpx2.AsyncClient``: httpx's maintained fork.

    httpx2 (over httpcore2) has httpx's API, and this transport behaves as
    :class:`~aio_client.transports.HttpxTransport` does in every respect:
    pass a client to share its pool (it stays yours to close) or let the
    transport make one with at most ``limit`` connections; redirects are not
    followed; each exchange runs in a task of its own so that a cancellation
    reaches httpcore2 as an anyio scope's; at most the pool's connections are
    let in at a time, the other requests waiting their turn in the transport
    (hedges and retries first);
    HTTP/2 is refused (:class:`~aio_client.ConfigError`: httpcore2 drops a
    cancelled HTTP/2 stream as httpcore does); bodies stop at the call's
    ``max_response_size``, gzip and deflate decoded in bounded pieces.
    Install it with ``pip install -e '.[httpx2]'`` from the source tree (the
    registry name ``aio-client`` is another project's).
    """

    __slots__ = ()

    def __init__(self, client: httpx2.AsyncClient | None = None, *, limit: int = 100) -> None:
        super().__init__(client, limit, httpx2)
