"""The aiohttp transport; the only module that imports aiohttp's client."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import final

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
from ._base import attempt_timeout

__all__ = ["AiohttpTransport"]


@final
class AiohttpTransport:
    """Sends requests with an ``aiohttp.ClientSession``.

    Pass a session to share its connection pool (it stays yours to close), or
    let the transport make one on first use with at most ``limit``
    connections (closed by :meth:`aclose`). Redirects are not followed: a 3xx
    is returned as it came.
    """

    __slots__ = ("_limit", "_owns", "_session")

    def __init__(self, session: aiohttp.ClientSession | None = None, *, limit: int = 100) -> None:
        if session is not None and not isinstance(session, aiohttp.ClientSession):
            raise ConfigError(f"session must be an aiohttp.ClientSession; got {session!r}")
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ConfigError(f"limit must be an int >= 1; got {limit!r}")
        self._session = session
        self._owns = session is None
        self._limit = limit

    def _get_session(self) -> aiohttp.ClientSession:
        session = self._session
        if session is None:
            session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._limit),
                timeout=aiohttp.ClientTimeout(total=None),
            )
            self._session = session
        return session

    async def send(self, request: Request, /) -> Response:
        """Send ``request`` and read the whole body."""
        timeout = attempt_timeout()
        session = self._get_session()
        with _mapped_errors():
            async with session.request(
                request.method,
                URL(request.url, encoded=True),
                headers=request.headers.multi_items(),
                data=request.content or None,
                timeout=aiohttp.ClientTimeout(total=timeout),
                allow_redirects=False,
            ) as resp:
                body = await resp.read()
                return Response(
                    status=resp.status,
                    headers=Headers._trusted(
                        tuple((name.lower(), value) for name, value in resp.headers.items())
                    ),
                    content=body,
                    url=request.url,
                )

    async def aclose(self) -> None:
        """Close the session if this transport made it."""
        if self._owns and self._session is not None:
            session, self._session = self._session, None
            await session.close()


@contextmanager
def _mapped_errors() -> Iterator[None]:
    # Order matters: aiohttp's exception classes inherit from each other.
    try:
        yield
    except AioClientError:
        raise
    except aiohttp.ConnectionTimeoutError as exc:
        raise DeadlineExceededError(
            f"connect timed out: {exc}", may_have_reached_server=False
        ) from exc
    except aiohttp.ClientConnectorError as exc:
        raise ConnectError(f"cannot connect: {exc}") from exc
    except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
        raise DeadlineExceededError(f"timed out waiting for the server: {exc}") from exc
    except aiohttp.InvalidURL as exc:
        raise InvalidRequestError(f"invalid URL: {exc}") from exc
    except (
        aiohttp.ServerDisconnectedError,
        aiohttp.ClientPayloadError,
        aiohttp.ClientOSError,
    ) as exc:
        raise NetworkError(f"connection lost: {exc!r}") from exc
    except aiohttp.ClientResponseError as exc:
        raise ProtocolError(f"malformed response: {exc}") from exc
    except aiohttp.ClientError as exc:
        raise TransportError(f"request failed: {exc!r}") from exc
