"""The aiohttp transport; the only module that imports aiohttp's client."""

from __future__ import annotations

from typing import Final, final

import aiohttp
from yarl import URL

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

    A session the transport makes sends each request exactly once: aiohttp's
    own silent re-send of an idempotent request after a broken connection is
    turned off, because retrying is the strategy's job (counted, budgeted and
    recorded). A session you pass keeps its own settings.
    """

    __slots__ = ("_limit", "_owns", "_session")

    def __init__(self, session: aiohttp.ClientSession | None = None, *, limit: int = 100) -> None:
        if session is not None and not isinstance(session, aiohttp.ClientSession):
            raise ConfigError(f"session must be an aiohttp.ClientSession; got {session!r}")
        self._session = session
        self._owns = session is None
        self._limit = positive_int(limit, "limit")

    def _get_session(self) -> aiohttp.ClientSession:
        session = self._session
        if session is None:
            session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._limit),
                timeout=_NO_TIMEOUT,
            )
            # aiohttp re-sends an idempotent request once when the connection
            # breaks before the response (RFC 9112 section 9.3.1). Hidden retries
            # would double the load on a failing server behind the retry budget's
            # back and carry a repeated X-Request-Attempt; aiohttp's test client
            # turns it off the same way, as there is no public switch.
            if hasattr(session, "_retry_connection"):
                session._retry_connection = False
            self._session = session
        return session

    async def send(self, request: Request, /) -> Response:
        """Send ``request`` and read the whole body."""
        session = self._get_session()
        client_timeout = session.timeout
        timeout = backend_timeout()
        if timeout is not None and (client_timeout.total is None or client_timeout.total > timeout):
            client_timeout = _capped(client_timeout, timeout)
        try:
            async with session.request(
                request.method,
                URL(request.url, encoded=True),
                headers=request.headers.multi_items(),
                data=request.content or None,
                timeout=client_timeout,
                allow_redirects=False,
            ) as resp:
                body = await resp.read()
                status = resp.status
                headers = resp.headers
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _mapped(exc) from exc
        return Response._received(status, Headers._received(headers.items()), body, request.url)

    async def aclose(self) -> None:
        """Close the session if this transport made it."""
        if self._owns and self._session is not None:
            session, self._session = self._session, None
            await session.close()


def _capped(limits: aiohttp.ClientTimeout, budget: float) -> aiohttp.ClientTimeout:
    # The attempt's budget becomes the total; the session's other limits stay.
    return aiohttp.ClientTimeout(
        total=budget,
        connect=limits.connect,
        sock_read=limits.sock_read,
        sock_connect=limits.sock_connect,
        ceil_threshold=limits.ceil_threshold,
    )


def _mapped(exc: aiohttp.ClientError | TimeoutError) -> AioClientError:
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
