"""What the httpx and httpx2 transports share; imports neither library.

httpx2 is httpx's maintained fork, with the same API under another name (and
httpcore2 beneath it), so one implementation serves both: each transport
hands it the library module it wraps, and the exception map, the pool
housekeeping and the body handling read everything from there.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, TypeVar, final

import anyio

from .._body import StreamBody
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
from .._size_limit import BodyCounter, response_size_limit, too_large
from .._validation import positive_int
from ._base import BodyStream, backend_timeout
from ._gate import PoolGate
from ._inflate import INFLATED, Inflater

__all__ = ["HttpxFamilyTransport"]

_T = TypeVar("_T")


class HttpxFamilyTransport:
    """Sends requests with an ``AsyncClient`` of httpx or httpx2 (see the subclasses)."""

    __slots__ = ("_client", "_gate", "_lib", "_limit", "_owns")

    def __init__(self, client: Any, limit: int, lib: Any) -> None:
        # ``lib``: the httpx or httpx2 module; ``client`` its AsyncClient or None.
        self._lib = lib
        if client is not None and not isinstance(client, lib.AsyncClient):
            raise ConfigError(f"client must be an {lib.__name__}.AsyncClient; got {client!r}")
        limit = positive_int(limit, "limit")
        if client is not None:
            _refuse_http2(client)
            pooled = getattr(_pool(client), "_max_connections", None)
            limit = pooled if isinstance(pooled, int) and pooled >= 1 else 0
        self._owns = client is None
        self._limit = limit
        self._client: Any = client if client is not None else self._new_client()
        self._gate = PoolGate(limit) if limit else None

    def _new_client(self) -> Any:
        lib = self._lib
        return lib.AsyncClient(
            limits=lib.Limits(max_connections=self._limit, max_keepalive_connections=self._limit),
            timeout=None,
        )

    def _get_client(self) -> Any:
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
            phases = _capped(self._lib, phases, timeout)
        return await _guarded(_exchange(self._lib, client, request, phases, self._gate, timeout))

    async def open(self, request: Request, /) -> tuple[Response, BodyStream]:
        """Send ``request`` and return the response head and its body, unread."""
        client = self._get_client()
        phases = client.timeout
        timeout = backend_timeout()
        if timeout is not None:
            phases = _capped(self._lib, phases, timeout)
        return await _guarded(
            _open(self._lib, client, request, phases, self._gate, timeout), discard=_discard
        )

    async def aclose(self) -> None:
        """Close the client if this transport made it."""
        if self._owns and self._client is not None:
            client, self._client = self._client, None
            await client.aclose()


async def _guarded(
    exchange: Coroutine[Any, Any, _T],
    *,
    discard: Callable[[_T], Coroutine[Any, Any, None]] | None = None,
) -> _T:
    """Run ``exchange`` so that a cancellation reaches httpcore as an anyio scope's.

    httpcore gives a connection back to its pool in cleanup shielded with an
    anyio cancel scope. A native asyncio cancellation (a deadline, a lost
    hedge, asyncio.timeout) cuts through such a shield, and a pool slot is
    then lost for good. So the exchange runs in a task of its own, and the
    caller's cancellation reaches it as an anyio scope's. A result that comes
    too late for a cancelled caller is handed to ``discard``.
    """
    loop = asyncio._get_running_loop()
    if loop is None:
        return await exchange  # trio: cancellation is scoped and shield-aware already
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
        if not inner.cancelled() and inner.exception() is None and discard is not None:
            # Opened just as the caller gave up: close it, in the same guarded way.
            with contextlib.suppress(asyncio.CancelledError, AioClientError):
                await _guarded(discard(inner.result()))
        raise caught
    return inner.result()


async def _exchange(
    lib: Any,
    client: Any,
    request: Request,
    phases: Any,
    gate: PoolGate | None,
    timeout: float | None,  # noqa: ASYNC109 - the backend's own bound, see backend_timeout()
) -> Response:
    if gate is None:
        return await _exchange_admitted(lib, client, request, phases)
    if not gate.take():
        request = await gate.admit(request, timeout)
    try:
        return await _exchange_admitted(lib, client, request, phases)
    finally:
        gate.release()


async def _open(
    lib: Any,
    client: Any,
    request: Request,
    phases: Any,
    gate: PoolGate | None,
    timeout: float | None,  # noqa: ASYNC109 - the backend's own bound, see backend_timeout()
) -> tuple[Response, BodyStream]:
    if gate is not None and not gate.take():
        request = await gate.admit(request, timeout)
    try:
        try:
            sent = client.build_request(
                request.method,
                request.url,
                headers=request.headers.multi_items(),
                content=_content(request),
                timeout=phases,
            )
            resp = await client.send(sent, stream=True, follow_redirects=False)
        except BaseException as exc:
            raise _failure(lib, client, exc)  # noqa: B904 - _failure sets the cause
    except BaseException:
        if gate is not None:
            gate.release()
        raise
    head = Response._received(
        resp.status_code, Headers._trusted(tuple(resp.headers.multi_items())), b"", request.url
    )
    return head, _HttpxBody(lib, client, resp, gate)


async def _discard(opened: tuple[Response, BodyStream]) -> None:
    await opened[1].aclose()


@final
class _HttpxBody:
    """An httpx response's body, read piece by piece (see :class:`BodyStream`)."""

    __slots__ = ("_client", "_gate", "_lib", "_pieces", "_resp")

    def __init__(self, lib: Any, client: Any, resp: Any, gate: PoolGate | None) -> None:
        self._lib = lib
        self._client = client
        self._resp = resp
        self._gate = gate
        self._pieces = _decoded(resp)

    async def receive(self) -> bytes:
        """The next piece of the decoded body; ``b""`` at its end.

        Read in the caller's task, unlike the exchange and the close: a task
        per piece would cost more than the read itself, and a cancellation
        here arrives once (the client's deadline timer is not armed while a
        body is read), so httpcore's shielded cleanup runs undisturbed.
        """
        try:
            return await self._pieces.__anext__()
        except StopAsyncIteration:
            return b""
        except (self._lib.HTTPError, self._lib.InvalidURL) as exc:
            raise _mapped(self._lib, exc) from exc

    async def aclose(self) -> None:
        """Give the connection back (body read whole) or close it."""
        await _guarded(self._close())

    async def _close(self) -> None:
        gate, self._gate = self._gate, None
        try:
            await self._pieces.aclose()
            await self._resp.aclose()
        except self._lib.HTTPError:
            pass  # closing anyway: nothing the caller could do about it
        finally:
            _reclaim_orphans(self._client)
            if gate is not None:
                gate.release()


async def _decoded(resp: Any) -> AsyncGenerator[bytes]:
    """The decoded body in pieces of at most a read's size (see :class:`_Inflater`)."""
    encoding = resp.headers.get("content-encoding", "").strip().lower()
    if encoding in INFLATED:
        inflater = Inflater(encoding)
        async for raw in resp.aiter_raw():
            for piece in inflater.feed(raw):
                yield piece
        tail = inflater.flush()
        if tail:
            yield tail
    else:
        async for chunk in resp.aiter_bytes():
            if chunk:
                yield chunk


async def _exchange_admitted(lib: Any, client: Any, request: Request, phases: Any) -> Response:
    limit = response_size_limit()
    try:
        sent = client.build_request(
            request.method,
            request.url,
            headers=request.headers.multi_items(),
            content=_content(request),
            timeout=phases,
        )
        resp = await client.send(sent, stream=True, follow_redirects=False)
        try:
            body = await resp.aread() if limit is None else await _read(resp, limit)
        finally:
            await resp.aclose()
    except BaseException as exc:
        raise _failure(lib, client, exc)  # noqa: B904 - _failure sets the cause
    return Response._received(
        resp.status_code,
        Headers._trusted(tuple(resp.headers.multi_items())),
        body,
        request.url,
    )


async def _read(resp: Any, limit: int) -> bytes:
    """The body, read up to ``limit`` decoded bytes (the caller closes the response)."""
    headers = resp.headers
    length = headers.get("content-length")
    if length is not None and length.isdigit():
        announced = int(length)
        if announced > limit:
            raise too_large(limit, announced=announced)
        if "content-encoding" not in headers:
            # httpcore stops at Content-Length: this body cannot grow past it.
            whole: bytes = await resp.aread()
            return whole
    counter = BodyCounter(limit)
    chunks: list[bytes] = []
    encoding = headers.get("content-encoding", "").strip().lower()
    try:
        if encoding in INFLATED:
            # httpx inflates each raw chunk whole: 64 KiB of a decompression bomb
            # would become tens of MiB at once. Inflated here in bounded pieces.
            inflater = Inflater(encoding)
            async for raw in resp.aiter_raw():
                for piece in inflater.feed(raw):
                    counter.add(len(piece))
                    chunks.append(piece)
            tail = inflater.flush()
            counter.add(len(tail))
            chunks.append(tail)
        else:
            async for chunk in resp.aiter_bytes():
                counter.add(len(chunk))
                chunks.append(chunk)
    except BaseException:
        chunks.clear()
        raise
    return b"".join(chunks)


def _content(request: Request) -> bytes | AsyncIterator[bytes] | None:
    content = request.content
    if isinstance(content, StreamBody):
        return content.open()
    return content or None


def _pool(client: Any) -> Any:
    """The default transport's connection pool, or ``None`` when there is another."""
    return getattr(getattr(client, "_transport", None), "_pool", None)


def _refuse_http2(client: Any) -> None:
    if getattr(_pool(client), "_http2", False):
        raise ConfigError(
            "client must not enable HTTP/2 (http2=True): httpcore drops a cancelled "
            "HTTP/2 stream without RST_STREAM and without returning its flow-control "
            "credit, and deadlines and hedging cancel attempts all the time, so the "
            "connection would soon stall; use an HTTP/1.1 client"
        )


async def _within(scope: anyio.CancelScope, exchange: Awaitable[_T]) -> _T:
    with scope:
        return await exchange
    raise asyncio.CancelledError  # the scope was cancelled: the caller raises its own


def _wake(waiter: asyncio.Future[None], _: object) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _failure(lib: Any, client: Any, exc: BaseException) -> BaseException:
    """What a failed exchange raises instead of ``exc`` (``exc`` itself, or ours caused by it).

    httpx's errors become ours, and a client closed under the call a
    ``ConnectError``; anything else (cancellation included) goes on as it is.
    Connections the failure orphaned go back to the pool first.
    """
    error: AioClientError
    if isinstance(exc, (lib.HTTPError, lib.InvalidURL)):
        _reclaim_orphans(client)
        error = _mapped(lib, exc)
    elif isinstance(exc, RuntimeError):
        if not getattr(client, "is_closed", False):
            return exc
        error = _closed()
    else:
        _reclaim_orphans(client)
        return exc
    error.__cause__ = exc  # as ``raise error from exc``
    return error


def _reclaim_orphans(client: Any) -> None:
    """Give back pool slots held by new connections whose request was cancelled.

    Such a connection never connects (its request is gone), is neither idle
    nor closed, and so is never reaped: marking its connect as failed makes
    it closed, and httpcore drops it on its next pass. Only the default
    transport's pool is looked at; anything unexpected is left alone.
    """
    pool = _pool(client)
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


def _capped(lib: Any, limits: Any, budget: float) -> Any:
    return lib.Timeout(
        connect=budget if limits.connect is None else min(limits.connect, budget),
        read=budget if limits.read is None else min(limits.read, budget),
        write=budget if limits.write is None else min(limits.write, budget),
        pool=budget if limits.pool is None else min(limits.pool, budget),
    )


def _closed() -> ConnectError:
    """The error for a call on a client closed under it (httpx raises RuntimeError): nothing
    was sent."""
    return ConnectError("not sent: the transport's client is closed", may_have_reached_server=False)


def _mapped(lib: Any, exc: Exception) -> AioClientError:
    # The one place httpx's exceptions become ours; most specific first.
    if isinstance(exc, (lib.ConnectTimeout, lib.PoolTimeout)):
        return DeadlineExceededError(
            f"timed out before sending: {exc!r}", may_have_reached_server=False
        )
    if isinstance(exc, lib.TimeoutException):  # read or write timeout: maybe sent
        return DeadlineExceededError(f"timed out waiting for the server: {exc!r}")
    if isinstance(exc, (lib.ConnectError, lib.ProxyError)):
        # Failed while connecting (TCP, TLS, proxy tunnel): the request was never sent.
        return ConnectError(f"cannot connect: {exc}")
    if isinstance(exc, (lib.RemoteProtocolError, lib.ReadError, lib.WriteError, lib.CloseError)):
        # httpx raises RemoteProtocolError both for a server that closed without
        # answering and for bytes that are not HTTP; only its message tells them
        # apart, so both are reported as a lost connection (retryable either way).
        return NetworkError(f"connection lost or malformed response: {exc!r}")
    if isinstance(exc, lib.DecodingError):
        return ProtocolError(f"malformed response body: {exc}")
    if isinstance(exc, (lib.InvalidURL, lib.UnsupportedProtocol, lib.LocalProtocolError)):
        # Refused on our side before the request could be written.
        return InvalidRequestError(f"cannot send this request: {exc}")
    return TransportError(f"request failed: {exc!r}")
