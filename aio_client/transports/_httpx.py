"""The httpx transport; the only module that imports httpx."""

from __future__ import annotations

from typing import final

import httpx

from ._httpx_core import HttpxFamilyTransport

__all__ = ["HttpxTransport"]


@final
class HttpxTransport(HttpxFamilyTransport):
    """Sends requests with an ``httpx.AsyncClient``.

    Pass a client to share its pool (it stays yours to close), or let the
    transport make one with at most ``limit`` connections (closed by
    :meth:`aclose`). Redirects are not followed.

    The transport makes its client when it is built, not on first use: httpx
    loads the CA bundle then (tens of milliseconds of blocked event loop),
    which must not come out of the first call's budget.

    Inside a client, the client cancels each attempt at its deadline, so httpx
    arms no timer of its own for it; called on its own under an ambient
    deadline, each phase of a request (pool wait, connect, write, read) is
    bounded by the remaining budget. The client's own phase limits apply either way.

    Cancellation is made safe for httpcore's pool: on asyncio each exchange
    runs in a task of its own that the caller's cancellation reaches through
    an anyio cancel scope (a native cancellation would cut through the
    shielded cleanup that gives a connection back), and a pool slot that
    httpcore 1.0 loses when a request is cancelled just after a new
    connection was assigned to it is given back.

    At most as many requests as the pool has connections are let into httpx
    at a time; the others wait their turn in the transport for as long as
    their deadline allows: waiting hedges and retries first, then first
    attempts, each in order of arrival (a hedge's call is late, and the
    connection it needs may be held by the call's own stalled first attempt).
    httpcore's own queue, with more requests than connections, hands
    connections round in a way that can leave every waiting request stuck
    until it times out.

    HTTP/2 is refused (:class:`~aio_client.ConfigError`): httpcore drops a
    cancelled HTTP/2 stream without resetting it (no RST_STREAM) and without
    giving back its flow-control credit, so after enough cancelled attempts
    (deadlines, lost hedges) the connection stalls for good. Use HTTP/1.1.

    Bodies are read up to the call's ``max_response_size`` (decoded bytes): a
    larger ``Content-Length`` is refused before reading, a body growing past
    the limit is stopped, and the connection is closed either way.
    """

    __slots__ = ()

    def __init__(self, client: httpx.AsyncClient | None = None, *, limit: int = 100) -> None:
        super().__init__(client, limit, httpx)
