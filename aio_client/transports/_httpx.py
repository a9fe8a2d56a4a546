"""The httpx transport; the only module that imports httpx."""

from __future__ import annotations

from typing import final

import httpx

from .._errors import (
    AioClientError,
    ConfigError,
    ConnectError,
    DeadlineExceededError,
    InvalidRequestError,
    NetworkError,
    ProtocolError,
    TransportError,
)
from .._headers import Headers
from .._models import Request, Response
from ._base import backend_timeout

__all__ = ["HttpxTransport"]


@final
class HttpxTransport:
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
    """

    __slots__ = ("_client", "_limit", "_owns")

    def __init__(self, client: httpx.AsyncClient | None = None, *, limit: int = 100) -> None:
        if client is not None and not isinstance(client, httpx.AsyncClient):
            raise ConfigError(f"client must be an httpx.AsyncClient; got {client!r}")
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ConfigError(f"limit must be an int >= 1; got {limit!r}")
        self._owns = client is None
        self._limit = limit
        self._client: httpx.AsyncClient | None = (
            client if client is not None else self._new_client()
        )

    def _new_client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            limits=httpx.Limits(max_connections=self._limit, max_keepalive_connections=self._limit),
            timeout=None,
        )

    def _get_client(self) -> httpx.AsyncClient:
        client = self._client
        if client is None:  # used again after aclose(): start a fresh pool
            client = self._client = self._new_client()
        return client

    async def send(self, request: Request, /) -> Response:
        """Send ``request`` and read the whole body."""
        client = self._get_client()
        phases = client.timeout
        timeout = backend_timeout()
        if timeout is not None:
            phases = _capped(phases, timeout)
        try:
            resp = await client.request(
                request.method,
                request.url,
                headers=request.headers.multi_items(),
                content=request.content or None,
                timeout=phases,
                follow_redirects=False,
            )
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise _mapped(exc) from exc
        return Response._received(
            resp.status_code,
            Headers._trusted(tuple(resp.headers.multi_items())),
            resp.content,
            request.url,
        )

    async def aclose(self) -> None:
        """Close the client if this transport made it."""
        if self._owns and self._client is not None:
            client, self._client = self._client, None
            await client.aclose()


def _capped(limits: httpx.Timeout, budget: float) -> httpx.Timeout:
    return httpx.Timeout(
        connect=budget if limits.connect is None else min(limits.connect, budget),
        read=budget if limits.read is None else min(limits.read, budget),
        write=budget if limits.write is None else min(limits.write, budget),
        pool=budget if limits.pool is None else min(limits.pool, budget),
    )


def _mapped(exc: httpx.HTTPError | httpx.InvalidURL) -> AioClientError:
    # The one place httpx's exceptions become ours; most specific first.
    if isinstance(exc, (httpx.ConnectTimeout, httpx.PoolTimeout)):
        return DeadlineExceededError(
            f"timed out before sending: {exc!r}", may_have_reached_server=False
        )
    if isinstance(exc, httpx.TimeoutException):  # read or write timeout: maybe sent
        return DeadlineExceededError(f"timed out waiting for the server: {exc!r}")
    if isinstance(exc, (httpx.ConnectError, httpx.ProxyError)):
        # Failed while connecting (TCP, TLS, proxy tunnel): the request was never sent.
        return ConnectError(f"cannot connect: {exc}")
    if isinstance(
        exc, (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError, httpx.CloseError)
    ):
        # httpx raises RemoteProtocolError both for a server that closed without
        # answering and for bytes that are not HTTP; only its message tells them
        # apart, so both are reported as a lost connection (retryable either way).
        return NetworkError(f"connection lost or malformed response: {exc!r}")
    if isinstance(exc, httpx.DecodingError):
        return ProtocolError(f"malformed response body: {exc}")
    if isinstance(exc, (httpx.InvalidURL, httpx.UnsupportedProtocol, httpx.LocalProtocolError)):
        # Refused on our side before the request could be written.
        return InvalidRequestError(f"cannot send this request: {exc}")
    return TransportError(f"request failed: {exc!r}")
