"""The httpx transport; the only module that imports httpx."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable
from typing import final

import anyio
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
from .._validation import positive_int
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

    Cancellation is made safe for httpcore's pool: on asyncio each exchange
    runs in a task of its own that the caller's cancellation reaches through
    an anyio cancel scope (a native cancellation would cut through the
    shielded cleanup that gives a connection back), and a pool slot that
    httpcore 1.0 loses when a request is cancelled just after a new
    connection was assigned to it is given back.
    """

    __slots__ = ("_client", "_limit", "_owns")

    def __init__(self, client: httpx.AsyncClient | None = None, *, limit: int = 100) -> None:
        if client is not None and not isinstance(client, httpx.AsyncClient):
            raise ConfigError(f"client must be an httpx.AsyncClient; got {client!r}")
        self._owns = client is None
        self._limit = positive_int(limit, "limit")
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
        exchange = _exchange(client, request, phases)
        loop = asyncio._get_running_loop()
        if loop is None:
            return await exchange  # trio: cancellation is scoped and shield-aware already
        # httpcore gives a connection back to its pool in cleanup shielded with
        # an anyio cancel scope. A native asyncio cancellation (a deadline, a
        # lost hedge, asyncio.timeout) cuts through such a shield, and a pool
        # slot is then lost for good. So the exchange runs in a task of its
        # own, and the caller's cancellation reaches it as an anyio scope's.
        scope = anyio.CancelScope()
        inner = loop.create_task(_within(scope, exchange))
        caught: BaseException | None = None
        while not inner.done():
            waiter = loop.create_future()
            inner.add_done_callback(functools.partial(_wake, waiter))
            try:
                await waiter
            except asyncio.CancelledError as exc:
                caught = exc
                scope.cancel()
        if caught is not None:
            if not inner.cancelled():
                inner.exception()  # retrieved: the caller's cancellation wins
            raise caught
        return inner.result()

    async def aclose(self) -> None:
        """Close the client if this transport made it."""
        if self._owns and self._client is not None:
            client, self._client = self._client, None
            await client.aclose()


async def _exchange(client: httpx.AsyncClient, request: Request, phases: httpx.Timeout) -> Response:
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
        _reclaim_orphans(client)
        raise _mapped(exc) from exc
    except BaseException:
        _reclaim_orphans(client)
        raise
    return Response._received(
        resp.status_code,
        Headers._trusted(tuple(resp.headers.multi_items())),
        resp.content,
        request.url,
    )


async def _within(scope: anyio.CancelScope, exchange: Awaitable[Response]) -> Response:
    with scope:
        return await exchange
    raise asyncio.CancelledError  # the scope was cancelled: the caller raises its own


def _wake(waiter: asyncio.Future[None], _: object) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _reclaim_orphans(client: httpx.AsyncClient) -> None:
    """Give back pool slots held by new connections whose request was cancelled.

    Such a connection never connects (its request is gone), is neither idle
    nor closed, and so is never reaped: marking its connect as failed makes
    it closed, and httpcore drops it on its next pass. Only the default
    transport's pool is looked at; anything unexpected is left alone.
    """
    pool = getattr(getattr(client, "_transport", None), "_pool", None)
    requests = getattr(pool, "_requests", None)
    if pool is None or requests is None:
        return
    owned = {id(getattr(waiting, "connection", None)) for waiting in requests}
    for connection in pool.connections:
        if (
            id(connection) not in owned
            and getattr(connection, "_connection", True) is None
            and getattr(connection, "_connect_failed", True) is False
        ):
            connection._connect_failed = True


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
