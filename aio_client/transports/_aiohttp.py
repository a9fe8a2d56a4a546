"""The aiohttp transport; the only module that imports aiohttp's client."""

from __future__ import annotations

import errno
import select
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Final, final

import aiohttp
from yarl import URL

from .._body import OpenBody, StreamBody
from .._call import _ATTEMPT
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
from .._size_limit import DEFAULT_MAX_RESPONSE_SIZE, BodyCounter, too_large
from .._validation import positive_int
from ._base import BodyStream, backend_timeout
from ._gate import PoolGate
from ._inflate import INFLATED, Inflater

__all__ = ["AiohttpTransport"]

_NO_TIMEOUT: Final = aiohttp.ClientTimeout(total=None)


@final
class AiohttpTransport:
    """Sends requests with an ``aiohttp.ClientSession``.

    Pass a session to share its connection pool (it stays yours to close), or
    let the transport make one on first use with at most ``limit``
    connections (closed by :meth:`aclose`). Redirects are not followed: a 3xx
    is returned as it came.

    Inside a client, the client cancels each attempt at its deadline, so no
    aiohttp timer is armed for it; called on its own under an ambient deadline,
    a request's total timeout is the remaining budget. The session's own
    limits (total, connect, socket read) apply either way.

    At most as many requests as the pool's total limit are let into aiohttp
    at a time; the others wait their turn in the transport for as long as
    their deadline allows: waiting hedges and retries first, then first
    attempts, each in order of arrival. A hedge's call is late, and the
    connection it needs may be held by the call's own stalled first attempt:
    in aiohttp's queue, newer first attempts would go before it.

    A session the transport makes sends each request exactly once: aiohttp's
    own silent re-send of an idempotent request after a broken connection is
    turned off, because retrying is the strategy's job (counted, budgeted and
    recorded). One case is different, because the request provably did not
    reach the server: a pooled connection that the server had already closed
    (an idle keep-alive timeout, a proxy dropping idle connections) fails
    before a byte of the response arrives. The transport then sends the
    request again, once, on a fresh connection, whatever its method; the call
    sees one attempt, as the server does. A session you pass keeps its own
    settings: the check of pooled connections before use and the re-send need
    a session the transport made.

    Bodies are read up to the call's ``max_response_size`` (decoded bytes): a
    larger ``Content-Length`` is refused before reading, a body growing past
    the limit is stopped, and the connection is closed either way.
    """

    __slots__ = ("_checks_reuse", "_gate", "_inflates", "_limit", "_owns", "_reading", "_session")

    def __init__(self, session: aiohttp.ClientSession | None = None, *, limit: int = 100) -> None:
        if session is not None and not isinstance(session, aiohttp.ClientSession):
            raise ConfigError(f"session must be an aiohttp.ClientSession; got {session!r}")
        self._session = session
        self._owns = session is None
        self._limit = positive_int(limit, "limit")
        # The pool's turns, taken before aiohttp's own queue (see PoolGate): with a
        # session of yours, its connector's total limit (none when it has none).
        if session is not None:
            pooled = getattr(session.connector, "limit", 0)
            limit = pooled if isinstance(pooled, int) and pooled >= 1 else 0
        self._gate = PoolGate(limit) if limit else None
        # Whether the session's connector reports reused connections, and whether
        # the session leaves gzip/deflate bodies to the transport (one it made).
        self._checks_reuse = False
        self._inflates = False
        # The responses whose bodies are being read: closing the session does not
        # wake their readers (aiohttp drops the body's stream), aclose() does.
        self._reading: set[aiohttp.ClientResponse] = set()

    def _get_session(self) -> aiohttp.ClientSession:
        session = self._session
        if session is None:
            session = aiohttp.ClientSession(
                connector=_CheckingConnector(limit=self._limit),
                timeout=_NO_TIMEOUT,
                # Older aiohttp releases inflate each read whole: 64 KiB of a
                # decompression bomb would become tens of MiB at once. The
                # transport inflates in bounded pieces instead, so it offers only
                # what it decodes (a request may still ask for more itself).
                auto_decompress=False,
                headers=_ACCEPT_ENCODING,
            )
            # aiohttp re-sends an idempotent request once when the connection
            # breaks before the response (RFC 9112 section 9.3.1). Hidden retries
            # would double the load on a failing server behind the retry budget's
            # back and carry a repeated X-Request-Attempt; aiohttp's test client
            # turns it off the same way, as there is no public switch.
            if hasattr(session, "_retry_connection"):
                session._retry_connection = False
            self._session = session
            self._checks_reuse = True
            self._inflates = True
        return session

    async def send(self, request: Request, /) -> Response:
        """Send ``request`` and read the whole body."""
        attempt = _ATTEMPT.get()  # response_size_limit(), inlined: every call passes here
        limit = DEFAULT_MAX_RESPONSE_SIZE if attempt is None else attempt.max_response_size
        # The session first: one closed while this request waits is not remade.
        session = self._get_session()
        gate = self._gate
        if gate is not None and not gate.take():
            request = await gate.admit(request, backend_timeout())
        try:
            resp = await self._start(request, session)
            reading = self._reading
            reading.add(resp)
            try:
                # The common case first: nothing to decode, and aiohttp stops at a
                # Content-Length within the limit.
                headers = resp.headers
                length = headers.get("Content-Length")
                if (
                    length is not None
                    and "Content-Encoding" not in headers
                    and (limit is None or (length.isdigit() and int(length) <= limit))
                ):
                    body = await resp.read()
                else:
                    body = await _read(resp, limit, self._inflates)
            except BaseException as exc:
                mapped = _read_failure(resp, exc)
                if mapped is None:
                    raise
                raise mapped from exc
            finally:
                reading.discard(resp)
            resp.release()
            await resp.wait_for_close()
            return Response._received(
                resp.status, Headers._received(resp.headers.items()), body, request.url
            )
        finally:
            if gate is not None:  # the pool's turn, taken above
                gate.release()

    async def open(self, request: Request, /) -> tuple[Response, BodyStream]:
        """Send ``request`` and return the response head and its body, unread."""
        session = self._get_session()
        gate = self._gate
        if gate is not None and not gate.take():
            request = await gate.admit(request, backend_timeout())
        try:
            resp = await self._start(request, session)
        except BaseException:
            if gate is not None:
                gate.release()
            raise
        head = Response._received(
            resp.status, Headers._received(resp.headers.items()), b"", request.url
        )
        self._reading.add(resp)
        body = _AiohttpBody(resp, _inflater(resp, self._inflates), self._reading, gate)
        if gate is not None:
            # The pool's turn goes back with the connection: aiohttp gives it back as
            # soon as the whole body has arrived (already, for a short one), which
            # may be long before the body is closed. A call keeps a retried
            # attempt's body open until the call ends, while its next attempt
            # needs a turn.
            connection = resp.connection
            if connection is None:
                body.give_turn_back()
            else:
                connection.add_callback(body.give_turn_back)
        return head, body

    async def _start(
        self, request: Request, session: aiohttp.ClientSession
    ) -> aiohttp.ClientResponse:
        """Send ``request`` and return the response once its head has arrived."""
        client_timeout = session.timeout
        timeout = backend_timeout()
        if timeout is not None and (client_timeout.total is None or client_timeout.total > timeout):
            client_timeout = _capped(client_timeout, timeout)
        url = URL(request.url, encoded=True)
        content = request.content
        fresh_only = False
        while True:
            data: bytes | OpenBody | None = None
            if content:
                data = content.open() if isinstance(content, StreamBody) else content
            # [fresh connection only, connection reused]: see _CheckingConnector.
            sent = [fresh_only, False] if self._checks_reuse else None
            token = _SENT.set(sent)
            try:
                return await session.request(
                    request.method,
                    url,
                    headers=request.headers.multi_items(),
                    data=data,
                    timeout=client_timeout,
                    allow_redirects=False,
                )
            except (aiohttp.ClientError, TimeoutError) as exc:
                failure = data.failure if data.__class__ is OpenBody else None
                if failure is not None:
                    # The body itself failed (aiohttp reports it as a lost
                    # connection): the caller's own exception, not a retryable one.
                    raise failure from None
                # Failed before the response head: a stale pooled connection is
                # the one case where the request provably did not get through.
                if (
                    sent is not None
                    and sent[_REUSED]
                    and not fresh_only
                    and (not isinstance(content, StreamBody) or content.repeatable)
                    and _closed_before_answering(exc)
                ):
                    fresh_only = True
                    continue
                raise _mapped(exc, bodyless=not content) from exc
            except RuntimeError as exc:
                if not session.closed:
                    raise
                # The session was closed under a call (the transport's, or the
                # caller's own session): nothing was sent.
                raise ConnectError(
                    "not sent: the transport's session is closed", may_have_reached_server=False
                ) from exc
            finally:
                _SENT.reset(token)

    async def aclose(self) -> None:
        """Close the session if this transport made it.

        Bodies still being read from it end with :class:`~aio_client.NetworkError`.
        The transport can be used again (with a new session).
        """
        if self._owns:
            for resp in self._reading:
                resp.content.set_exception(
                    aiohttp.ClientConnectionError("the transport was closed")
                )
            self._reading.clear()
            if self._session is not None:
                session, self._session = self._session, None
                await session.close()


# What an owned session offers: aiohttp's own default when it is exactly what the
# transport decodes (no per-request header merge then), else that.
_ACCEPT_ENCODING: Final = (
    None
    if aiohttp.ClientRequest.DEFAULT_HEADERS.get(aiohttp.hdrs.ACCEPT_ENCODING) == "gzip, deflate"
    else {"Accept-Encoding": "gzip, deflate"}
)
# What the connector tells the request being sent about its connection, in a
# list (the cheapest record: every request makes one): whether only a new
# connection will do (a re-send after a stale one), and whether the connection
# came from the pool.
_FRESH_ONLY: Final = 0
_REUSED: Final = 1
_SENT: ContextVar[list[bool] | None] = ContextVar("aio_client_aiohttp_sent", default=None)
# The attribute a connection's protocol carries once it carried a request: its
# socket's descriptor, for the staleness check when it is reused.
_FD: Final = "_aio_client_fd"


class _CheckingConnector(aiohttp.TCPConnector):
    """A connector that never hands out a pooled connection the server has closed.

    An idle connection has nothing to read; if it has (the server's FIN,
    usually), it is stale: it is closed and the next one is taken, as httpcore
    does. The request being sent hears whether its connection was reused,
    and may ask for a new one (closing pooled ones until one is made).
    """

    async def connect(
        self,
        req: aiohttp.ClientRequest,
        traces: list[aiohttp.tracing.Trace],
        timeout: aiohttp.ClientTimeout,  # noqa: ASYNC109 - aiohttp's signature
    ) -> aiohttp.connector.Connection:
        while True:
            conn = await super().connect(req, traces, timeout)
            protocol = conn.protocol
            fd = getattr(protocol, _FD, None)
            if fd is None:  # a new connection
                if protocol is not None:
                    setattr(protocol, _FD, _descriptor(conn.transport))
                return conn
            sent = _SENT.get()
            # An idle connection with bytes (or EOF) waiting cannot carry a request.
            try:
                stale = fd >= 0 and bool(select.select((fd,), (), (), 0)[0])
            except (OSError, ValueError):
                stale = True
            if not stale and (sent is None or not sent[_FRESH_ONLY]):
                if sent is not None:
                    sent[_REUSED] = True
                return conn
            conn.close()


def _descriptor(transport: object) -> int:
    """The connection's socket descriptor; -1 when there is none to look at."""
    get_extra_info = getattr(transport, "get_extra_info", None)
    sock = get_extra_info("socket") if get_extra_info is not None else None
    return sock.fileno() if sock is not None else -1


@final
class _AiohttpBody:
    """An aiohttp response's body, read piece by piece (see :class:`BodyStream`)."""

    __slots__ = ("_ended", "_gate", "_inflater", "_pieces", "_reading", "_resp")

    def __init__(
        self,
        resp: aiohttp.ClientResponse,
        inflater: Inflater | None,
        reading: set[aiohttp.ClientResponse],
        gate: PoolGate | None,
    ) -> None:
        self._resp = resp
        # The pool turn this body holds until its connection goes back (see open()) or
        # it is closed.
        self._gate = gate
        self._inflater = inflater
        self._pieces: Iterator[bytes] | None = None
        self._ended = False
        # The transport's responses being read (this one leaves it when closed).
        self._reading = reading

    async def receive(self) -> bytes:
        """The next piece of the decoded body; ``b""`` at its end."""
        resp = self._resp
        try:
            inflater = self._inflater
            if inflater is None:
                return await resp.content.readany()
            while True:
                if self._pieces is not None:
                    piece = next(self._pieces, None)
                    if piece is not None:
                        return piece
                    self._pieces = None
                if self._ended:
                    return b""
                raw = await resp.content.readany()
                if not raw:
                    self._ended = True
                    return inflater.flush()
                self._pieces = inflater.feed(raw)
        except BaseException as exc:  # also cancelled, or a malformed encoding
            mapped = _read_failure(resp, exc)
            if mapped is None:
                raise
            raise mapped from exc

    async def aclose(self) -> None:
        """Give the connection back (body read whole) or close it."""
        resp = self._resp
        self._reading.discard(resp)
        if resp.content.at_eof():
            resp.release()
        else:
            resp.close()
        self.give_turn_back()

    def give_turn_back(self) -> None:
        """Give the pool's turn back, once (see :class:`PoolGate`)."""
        gate, self._gate = self._gate, None
        if gate is not None:
            gate.release()


def _read_failure(resp: aiohttp.ClientResponse, exc: BaseException) -> BaseException | None:
    """A body read failed with ``exc``: close the connection, and return the error to
    raise in its place (``None``: ``exc`` itself, a cancellation or a decoding error)."""
    resp.close()
    if isinstance(exc, (aiohttp.ClientError, TimeoutError)):
        return _mapped(exc)
    if isinstance(exc, RuntimeError):  # the session was closed under the read
        return _closed_under(exc)
    return None


def _closed_under(exc: RuntimeError) -> NetworkError:
    """What aiohttp's ``RuntimeError("Connection closed.")`` during a read is."""
    return NetworkError(f"connection closed while the body was read: {exc}")


def _closed_before_answering(exc: BaseException) -> bool:
    """Whether the connection was found closed before any byte of the response.

    aiohttp reports a clean close with no response byte parsed as
    ``ServerDisconnectedError`` carrying its default message (a partial
    response would be carried instead); writing into a connection the peer
    already closed fails with a reset or a broken pipe.
    """
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return isinstance(exc.message, str)
    if isinstance(exc, aiohttp.ClientConnectionResetError):
        return True
    return isinstance(exc, aiohttp.ClientOSError) and exc.errno in (
        errno.ECONNRESET,
        errno.EPIPE,
    )


def _inflater(resp: aiohttp.ClientResponse, inflates: bool) -> Inflater | None:
    """The decoder of a gzip/deflate body the session left encoded, else ``None``."""
    if not inflates:
        return None
    coding = resp.headers.get("Content-Encoding")
    if coding is None:
        return None
    coding = coding.strip().lower()
    return Inflater(coding) if coding in INFLATED else None


async def _read(resp: aiohttp.ClientResponse, limit: int | None, inflates: bool) -> bytes:
    """The body, decoded, up to ``limit`` bytes; the connection is closed past it.

    ``inflates``: the session leaves gzip/deflate bodies encoded (the transport's
    own session does), so they are decoded here, in bounded pieces.
    """
    announced = resp.content_length
    if limit is not None and announced is not None and announced > limit:
        resp.close()
        raise too_large(limit, announced=announced)
    inflater = _inflater(resp, inflates)
    if inflater is None and (
        limit is None
        or (announced is not None and (inflates or "Content-Encoding" not in resp.headers))
    ):
        # No limit, or aiohttp stops at Content-Length and decodes nothing: the
        # body cannot grow past what was announced.
        return await resp.read()
    counter = BodyCounter(limit) if limit is not None else None
    chunks: list[bytes] = []
    try:
        async for chunk in resp.content.iter_any():
            pieces = inflater.feed(chunk) if inflater is not None else (chunk,)
            for piece in pieces:
                if counter is not None:
                    counter.add(len(piece))
                chunks.append(piece)
        if inflater is not None:
            tail = inflater.flush()
            if counter is not None:
                counter.add(len(tail))
            chunks.append(tail)
    except BaseException:
        chunks.clear()
        resp.close()
        raise
    return b"".join(chunks)


def _capped(limits: aiohttp.ClientTimeout, budget: float) -> aiohttp.ClientTimeout:
    # The attempt's budget becomes the total; the session's other limits stay.
    return aiohttp.ClientTimeout(
        total=budget,
        connect=limits.connect,
        sock_read=limits.sock_read,
        sock_connect=limits.sock_connect,
        ceil_threshold=limits.ceil_threshold,
    )


def _mapped(exc: aiohttp.ClientError | TimeoutError, *, bodyless: bool = False) -> AioClientError:
    # The one place aiohttp's exceptions become ours. Order matters: aiohttp's
    # classes inherit from each other (a connect timeout is a ServerTimeoutError,
    # a ClientConnectorError is a ClientOSError), most specific first.
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return DeadlineExceededError(f"connect timed out: {exc}", may_have_reached_server=False)
    if isinstance(
        exc,
        (
            aiohttp.ClientConnectorError,
            aiohttp.ServerFingerprintMismatch,
            aiohttp.ClientHttpProxyError,
        ),
    ):
        # Failed while connecting (TCP, TLS, proxy tunnel): the request was never sent.
        return ConnectError(f"cannot connect: {exc}")
    if (
        bodyless
        and isinstance(exc, aiohttp.ClientConnectionResetError)
        and "closing transport" in str(exc)
    ):
        # aiohttp refused to write the request (one write without a body) into a
        # connection it already saw closing: not a byte left.
        return NetworkError(
            f"not sent, the connection was already closed: {exc}", may_have_reached_server=False
        )
    if isinstance(exc, TimeoutError):  # ServerTimeoutError, SocketTimeoutError, total timeout
        return DeadlineExceededError(f"timed out waiting for the server: {exc!r}")
    if isinstance(exc, (aiohttp.InvalidURL, aiohttp.NonHttpUrlClientError)):
        return InvalidRequestError(f"invalid URL: {exc}")
    if isinstance(exc, (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError)):
        # Disconnected, reset, or the body cut short: after the request may have left.
        return NetworkError(f"connection lost: {exc!r}")
    if isinstance(exc, aiohttp.ClientResponseError):
        return ProtocolError(f"malformed response: {exc}")
    return TransportError(f"request failed: {exc!r}")
