"""The httpx transport; the only module that imports httpx."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
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
from ._base import attempt_timeout

__all__ = ["HttpxTransport"]


@final
class HttpxTransport:
    """Sends requests with an ``httpx.AsyncClient``.

    Pass a client to share its pool (it stays yours to close), or let the
    transport make one on first use with at most ``limit`` connections
    (closed by :meth:`aclose`). Redirects are not followed.
    """

    __slots__ = ("_client", "_limit", "_owns")

    def __init__(self, client: httpx.AsyncClient | None = None, *, limit: int = 100) -> None:
        if client is not None and not isinstance(client, httpx.AsyncClient):
            raise ConfigError(f"client must be an httpx.AsyncClient; got {client!r}")
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ConfigError(f"limit must be an int >= 1; got {limit!r}")
        self._client = client
        self._owns = client is None
        self._limit = limit

    def _get_client(self) -> httpx.AsyncClient:
        client = self._client
        if client is None:
            client = httpx.AsyncClient(
                limits=httpx.Limits(
                    max_connections=self._limit, max_keepalive_connections=self._limit
                ),
                timeout=None,
            )
            self._client = client
        return client

    async def send(self, request: Request, /) -> Response:
        """Send ``request`` and read the whole body."""
        timeout = attempt_timeout()
        client = self._get_client()
        with _mapped_errors():
            resp = await client.request(
                request.method,
                request.url,
                headers=request.headers.multi_items(),
                content=request.content or None,
                timeout=httpx.Timeout(timeout),
                follow_redirects=False,
            )
        return Response(
            status=resp.status_code,
            headers=Headers._trusted(tuple(resp.headers.multi_items())),
            content=resp.content,
            url=request.url,
        )

    async def aclose(self) -> None:
        """Close the client if this transport made it."""
        if self._owns and self._client is not None:
            client, self._client = self._client, None
            await client.aclose()


@contextmanager
def _mapped_errors() -> Iterator[None]:
    try:
        yield
    except AioClientError:
        raise
    except (httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
        raise DeadlineExceededError(
            f"timed out before sending: {exc!r}", may_have_reached_server=False
        ) from exc
    except httpx.TimeoutException as exc:
        raise DeadlineExceededError(f"timed out waiting for the server: {exc!r}") from exc
    except httpx.ConnectError as exc:
        raise ConnectError(f"cannot connect: {exc}") from exc
    except httpx.RemoteProtocolError as exc:
        # Also what httpx raises when the server closes without answering.
        raise NetworkError(f"connection lost or malformed response: {exc}") from exc
    except (httpx.ReadError, httpx.WriteError, httpx.CloseError) as exc:
        raise NetworkError(f"connection lost: {exc!r}") from exc
    except (httpx.LocalProtocolError, httpx.DecodingError) as exc:
        raise ProtocolError(f"protocol error: {exc}") from exc
    except httpx.InvalidURL as exc:
        raise InvalidRequestError(f"invalid URL: {exc}") from exc
    except httpx.HTTPError as exc:
        raise TransportError(f"request failed: {exc!r}") from exc
