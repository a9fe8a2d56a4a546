"""Each backend's exceptions map to one aio_client error (respx / aioresponses mocks)."""

from __future__ import annotations

import re
import ssl
from collections.abc import Callable
from types import SimpleNamespace
from typing import TYPE_CHECKING, cast

import aiohttp
import httpx
import pytest
import respx
from aioresponses import aioresponses
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

import aio_client as ac
from aio_client.transports import AiohttpTransport, HttpxTransport

if TYPE_CHECKING:
    from aiohttp.client_reqrep import ConnectionKey

URL_TEXT = "http://svc.test/items/1"
REQUEST = ac.Request(method="GET", url=URL_TEXT)
ANY_URL = re.compile(r".*")


def _case(
    make: Callable[[], Exception],
    expected: type[ac.AioClientError],
    reached: bool,
    *,
    newer: str = "",
) -> object:
    """A parameter named after the backend exception it raises.

    ``newer`` names an aiohttp class younger than our aiohttp floor: on an
    aiohttp without it, the case is skipped.
    """
    if newer and not hasattr(aiohttp, newer):
        skip = pytest.mark.skip(reason=f"aiohttp {aiohttp.__version__} has no {newer}")
        return pytest.param(make, expected, reached, id=newer, marks=skip)
    return pytest.param(make, expected, reached, id=type(make()).__name__)


# --- httpx -------------------------------------------------------------------------


HTTPX_CASES = [
    _case(lambda: httpx.ConnectError("refused"), ac.ConnectError, False),
    _case(lambda: httpx.ProxyError("proxy said no"), ac.ConnectError, False),
    _case(lambda: httpx.ConnectTimeout("connect"), ac.DeadlineExceededError, False),
    _case(lambda: httpx.PoolTimeout("pool"), ac.DeadlineExceededError, False),
    _case(lambda: httpx.ReadTimeout("read"), ac.DeadlineExceededError, True),
    _case(lambda: httpx.WriteTimeout("write"), ac.DeadlineExceededError, True),
    _case(lambda: httpx.RemoteProtocolError("disconnected"), ac.NetworkError, True),
    _case(lambda: httpx.ReadError("reset"), ac.NetworkError, True),
    _case(lambda: httpx.WriteError("broken pipe"), ac.NetworkError, True),
    _case(lambda: httpx.CloseError("close"), ac.NetworkError, True),
    _case(lambda: httpx.DecodingError("bad gzip"), ac.ProtocolError, True),
    _case(lambda: httpx.LocalProtocolError("bad header"), ac.InvalidRequestError, False),
    _case(lambda: httpx.UnsupportedProtocol("ftp"), ac.InvalidRequestError, False),
    _case(lambda: httpx.InvalidURL("bad url"), ac.InvalidRequestError, False),
    _case(lambda: httpx.TooManyRedirects("loop"), ac.TransportError, True),
]


async def _httpx_raises(raised: Exception) -> ac.AioClientError:
    transport = HttpxTransport()
    try:
        with respx.mock(assert_all_called=True) as mock:
            mock.route().mock(side_effect=raised)
            with pytest.raises(ac.AioClientError) as caught:
                await transport.send(REQUEST)
    finally:
        await transport.aclose()
    return caught.value


@pytest.mark.parametrize(("make", "expected", "reached"), HTTPX_CASES)
async def test_httpx_exception_maps_to_our_error(
    make: Callable[[], Exception], expected: type[ac.AioClientError], reached: bool
) -> None:
    """Each httpx exception becomes exactly the expected error, saying whether it was sent."""
    raised = make()
    error = await _httpx_raises(raised)
    assert type(error) is expected
    assert error.may_have_reached_server is reached
    assert error.__cause__ is raised


def _all_subclasses(root: type[Exception]) -> list[type[Exception]]:
    found: list[type[Exception]] = []
    for sub in root.__subclasses__():
        found += [sub, *_all_subclasses(sub)]
    return found


def _build_httpx_error(cls: type[Exception]) -> Exception:
    if cls is httpx.HTTPStatusError:
        request = httpx.Request("GET", URL_TEXT)
        return httpx.HTTPStatusError(
            "500", request=request, response=httpx.Response(500, request=request)
        )
    return cls("boom")


@pytest.mark.parametrize(
    "cls",
    sorted({*_all_subclasses(httpx.HTTPError), httpx.HTTPError, httpx.InvalidURL}, key=repr),
    ids=lambda cls: cls.__name__,
)
async def test_no_httpx_exception_escapes(cls: type[Exception]) -> None:
    """Every httpx error class, listed or not, reaches the caller as an aio_client error."""
    error = await _httpx_raises(_build_httpx_error(cls))
    assert not isinstance(error, (httpx.HTTPError, httpx.InvalidURL))
    assert isinstance(error.__cause__, cls)


# --- aiohttp -----------------------------------------------------------------------

# What aiohttp's connector errors read their host, port and ssl from: a stand-in, as
# ConnectionKey's fields differ between the aiohttp versions the suite runs on.
KEY = cast("ConnectionKey", SimpleNamespace(host="svc.test", port=80, ssl=True, is_ssl=False))
REQUEST_INFO = aiohttp.RequestInfo(
    URL(URL_TEXT), "GET", CIMultiDictProxy(CIMultiDict()), URL(URL_TEXT)
)
REFUSED = ConnectionRefusedError(111, "Connection refused")

AIOHTTP_CASES = [
    _case(lambda: aiohttp.ClientConnectorError(KEY, REFUSED), ac.ConnectError, False),
    _case(
        lambda: aiohttp.ClientConnectorDNSError(KEY, OSError(-2, "Name or service not known")),
        ac.ConnectError,
        False,
    ),
    _case(lambda: aiohttp.ClientProxyConnectionError(KEY, REFUSED), ac.ConnectError, False),
    _case(
        lambda: aiohttp.ClientConnectorSSLError(KEY, ssl.SSLError(1, "handshake failed")),
        ac.ConnectError,
        False,
    ),
    _case(
        lambda: aiohttp.ClientConnectorCertificateError(
            KEY,
            ssl.SSLCertVerificationError(1, "certificate verify failed"),
        ),
        ac.ConnectError,
        False,
    ),
    _case(
        lambda: aiohttp.ServerFingerprintMismatch(b"a" * 32, b"b" * 32, "svc.test", 443),
        ac.ConnectError,
        False,
    ),
    _case(
        lambda: aiohttp.ClientHttpProxyError(REQUEST_INFO, (), status=407, message="auth"),
        ac.ConnectError,
        False,
    ),
    _case(lambda: aiohttp.ConnectionTimeoutError("connect"), ac.DeadlineExceededError, False),
    _case(lambda: aiohttp.ServerTimeoutError("read"), ac.DeadlineExceededError, True),
    _case(lambda: aiohttp.SocketTimeoutError("sock_read"), ac.DeadlineExceededError, True),
    _case(lambda: TimeoutError(), ac.DeadlineExceededError, True),  # aiohttp total timeout
    _case(lambda: aiohttp.ServerDisconnectedError(), ac.NetworkError, True),
    _case(lambda: aiohttp.ClientOSError(104, "Connection reset by peer"), ac.NetworkError, True),
    _case(lambda: aiohttp.ClientConnectionResetError("closing"), ac.NetworkError, True),
    _case(lambda: aiohttp.ClientConnectionError("Connection closed"), ac.NetworkError, True),
    _case(lambda: aiohttp.ClientPayloadError("not completed"), ac.NetworkError, True),
    _case(
        lambda: aiohttp.ClientResponseError(REQUEST_INFO, (), status=400, message="bad line"),
        ac.ProtocolError,
        True,
    ),
    _case(lambda: aiohttp.InvalidURL("http://[bad"), ac.InvalidRequestError, False),
    _case(lambda: aiohttp.InvalidUrlClientError("http://[bad"), ac.InvalidRequestError, False),
    _case(lambda: aiohttp.NonHttpUrlClientError("ftp://svc"), ac.InvalidRequestError, False),
    _case(
        lambda: aiohttp.UploadAbortedError("aborted"),
        ac.TransportError,
        True,
        newer="UploadAbortedError",  # aiohttp 3.14.4
    ),
    _case(lambda: aiohttp.ClientError("anything else"), ac.TransportError, True),
]


async def _aiohttp_raises(raised: Exception) -> ac.AioClientError:
    transport = AiohttpTransport()
    try:
        with aioresponses() as mock:
            mock.get(ANY_URL, exception=raised)
            with pytest.raises(ac.AioClientError) as caught:
                await transport.send(REQUEST)
    finally:
        await transport.aclose()
    return caught.value


@pytest.mark.parametrize(("make", "expected", "reached"), AIOHTTP_CASES)
async def test_aiohttp_exception_maps_to_our_error(
    make: Callable[[], Exception], expected: type[ac.AioClientError], reached: bool
) -> None:
    """Each aiohttp exception becomes exactly the expected error, saying whether it was sent."""
    raised = make()
    error = await _aiohttp_raises(raised)
    assert type(error) is expected
    assert error.may_have_reached_server is reached
    assert error.__cause__ is raised


class _NovelClientError(aiohttp.ClientError):
    """An aiohttp error class this adapter has never heard of."""


class _NovelConnectionError(aiohttp.ClientConnectionError):
    """A future connection-level aiohttp error."""


@pytest.mark.parametrize(
    ("raised", "expected"),
    [(_NovelClientError(), ac.TransportError), (_NovelConnectionError(), ac.NetworkError)],
    ids=["ClientError", "ClientConnectionError"],
)
async def test_unknown_aiohttp_errors_fall_back_by_family(
    raised: Exception, expected: type[ac.AioClientError]
) -> None:
    """A new aiohttp error class still maps, by its nearest known base class."""
    error = await _aiohttp_raises(raised)
    assert type(error) is expected
    assert not isinstance(error, aiohttp.ClientError)


# --- through the client ------------------------------------------------------------


async def test_client_reports_mapped_errors_with_history() -> None:
    """Through Client, the caller sees our error and each attempt names our class."""
    strategy = ac.sequential_strategy(attempts=2, delays=ac.constant_delays(0.0))
    async with ac.Client(AiohttpTransport(), "http://svc.test", strategy=strategy) as client:
        with aioresponses() as mock:
            mock.get(ANY_URL, exception=aiohttp.ServerDisconnectedError(), repeat=True)
            with pytest.raises(ac.NetworkError) as caught:
                await client.request(ac.get("items/1"))
    assert [record.error for record in caught.value.attempts] == ["NetworkError"] * 2
    async with ac.Client(HttpxTransport(), "http://svc.test", strategy=strategy) as client:
        with respx.mock() as router:
            router.route().mock(side_effect=httpx.ReadError("reset"))
            with pytest.raises(ac.NetworkError) as caught:
                await client.request(ac.get("items/1"))
    assert [record.error for record in caught.value.attempts] == ["NetworkError"] * 2
