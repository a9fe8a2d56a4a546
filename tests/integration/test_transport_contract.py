"""The transport contract: aiohttp and httpx behave the same against real servers."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from urllib.parse import unquote

import aiohttp
import anyio
import httpx
import httpx2
import pytest

import aio_client as ac
from aio_client import Strategy
from aio_client.transports import AiohttpTransport, Httpx2Transport, HttpxTransport, Transport

from .servers import (
    LARGE_BODY,
    AppServer,
    answer_garbage,
    answer_ok_keep_alive,
    app_server,
    close_without_answer,
    never_answer,
    raw_server,
    refused_url,
    reset_after_request,
)

BACKENDS = ["aiohttp", "httpx", "httpx2"]
FAST_RETRIES = ac.sequential_strategy(attempts=3, delays=ac.constant_delays(0.0))
ONCE = ac.single_attempt_strategy()


def _make_transport(backend: str) -> Transport:
    if backend == "aiohttp":
        return AiohttpTransport()
    return HttpxTransport() if backend == "httpx" else Httpx2Transport()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Which HTTP library the transport under test wraps."""
    name: str = request.param
    return name


@pytest.fixture
async def transport(backend: str, anyio_backend: str) -> AsyncIterator[Transport]:
    """A fresh transport owning its pool, closed after the test."""
    made = _make_transport(backend)
    try:
        yield made
    finally:
        await made.aclose()


@pytest.fixture
async def app(anyio_backend: str) -> AsyncIterator[AppServer]:
    """The well-behaved aiohttp app on an ephemeral port."""
    async with app_server() as server:
        yield server


def _client(transport: Transport, url: str, strategy: Strategy | None = None) -> ac.Client:
    # The fixture closes the transport; a client adds nothing else to close.
    return ac.Client(transport, url, strategy=strategy)


def _echo(response: ac.Response) -> dict[str, object]:
    body = response.json()
    assert isinstance(body, dict)
    return body


def _echoed_headers(echo: dict[str, object]) -> dict[str, list[str]]:
    pairs = echo["headers"]
    assert isinstance(pairs, list)
    out: dict[str, list[str]] = {}
    for name, value in pairs:
        out.setdefault(name, []).append(value)
    return out


# --- statuses, headers, bodies ------------------------------------------------------


@pytest.mark.parametrize("status", [200, 204, 404, 500])
async def test_status_is_returned_not_raised(
    transport: Transport, app: AppServer, status: int
) -> None:
    """Any status, error statuses included, comes back as a Response."""
    client = _client(transport, app.url, strategy=ONCE)
    response = await client.request(ac.get("status/{code}", path_params={"code": status}))
    assert response.status == status
    assert response.content == (b"" if status == 204 else f"status {status}".encode())
    assert response.url == f"{app.url}/status/{status}"


async def test_response_headers_are_case_insensitive_and_keep_repeats(
    transport: Transport, app: AppServer
) -> None:
    """Header lookups ignore case; repeated headers all survive, in order."""
    response = await _client(transport, app.url).request(ac.get("headers"))
    assert response.headers["x-mixed-case"] == response.headers["X-MIXED-CASE"] == "Value"
    assert response.headers.get_list("X-Repeated") == ["one", "two"]
    cookies = response.headers.get_list("set-cookie")
    assert [cookie.split(";")[0] for cookie in cookies] == ["a=1", "b=2"]


async def test_large_body_arrives_intact(transport: Transport, app: AppServer) -> None:
    """A 1 MiB body is read whole, byte for byte."""
    response = await _client(transport, app.url).request(ac.get("large"))
    assert len(response.content) == len(LARGE_BODY) == 1024 * 1024
    assert response.content == LARGE_BODY


async def test_text_and_json_bodies_decode(transport: Transport, app: AppServer) -> None:
    """text uses the declared charset; json() parses UTF-8 JSON."""
    client = _client(transport, app.url)
    text = await client.request(ac.get("text"))
    assert text.text == "héllo wörld"
    document = await client.request(ac.get("json"))
    assert document.json() == {"hello": "world", "numbers": [1, 2, 3], "text": "héllo ✓"}


async def test_head_has_no_body(transport: Transport, app: AppServer) -> None:
    """A HEAD response carries the headers and no body."""
    response = await _client(transport, app.url).request(ac.head("large"))
    assert response.status == 200
    assert response.content == b""
    assert response.headers["content-length"] == str(len(LARGE_BODY))


# --- what arrives at the server -------------------------------------------------------


async def test_request_body_and_headers_arrive_intact(transport: Transport, app: AppServer) -> None:
    """Every byte value of a body, the method and custom headers reach the server."""
    body = bytes(range(256)) * 4
    response = await _client(transport, app.url).request(
        ac.put("echo", content=body, headers={"X-Custom": "Yes", "X-Twice": "1"})
    )
    echo = _echo(response)
    assert echo["method"] == "PUT"
    assert str(echo["body"]).encode("latin-1") == body
    headers = _echoed_headers(echo)
    assert headers["x-custom"] == ["Yes"]
    assert headers["content-length"] == [str(len(body))]


async def _five_bytes() -> AsyncIterator[bytes]:
    yield b"12"
    yield b"345"


async def test_a_streamed_body_with_its_content_length_is_sent_with_it(
    transport: Transport, app: AppServer
) -> None:
    """A streamed body whose length the caller gives goes out with it, not chunked."""
    response = await _client(transport, app.url).request(
        ac.put("echo", content=_five_bytes, headers={"Content-Length": "5"})
    )
    echo = _echo(response)
    assert echo["body"] == "12345"
    headers = _echoed_headers(echo)
    assert headers["content-length"] == ["5"]
    assert "transfer-encoding" not in headers


@pytest.mark.parametrize(
    ("declared", "fragment"),
    [("4", "1 byte longer than its Content-Length"), ("6", "ended 1 byte short")],
)
async def test_a_streamed_body_that_breaks_its_content_length_is_refused_once(
    transport: Transport, app: AppServer, declared: str, fragment: str
) -> None:
    """A body longer or shorter than its Content-Length: a typed error, no retry."""
    client = _client(transport, app.url, FAST_RETRIES)
    with pytest.raises(ac.InvalidRequestError, match=fragment) as caught:
        await client.put("echo", content=_five_bytes, headers={"Content-Length": declared})
    assert len(caught.value.attempts) == 1


async def test_a_failing_body_is_the_callers_error_on_every_transport(
    transport: Transport, app: AppServer
) -> None:
    """A body that raises, or yields text, fails the call with that, not with a retried
    connection error (aiohttp sends bodies from a task of its own and reports both as one)."""

    async def raising() -> AsyncIterator[bytes]:
        yield b"first"
        raise LookupError("the caller's own failure")

    async def text() -> AsyncIterator[object]:
        yield b"first"
        yield "not bytes"

    client = _client(transport, app.url, FAST_RETRIES)
    with pytest.raises(LookupError, match="the caller's own failure"):
        await client.put("echo", content=raising)
    with pytest.raises(ac.InvalidRequestError, match="must yield bytes") as caught:
        await client.put("echo", content=text)  # type: ignore[arg-type]
    assert len(caught.value.attempts) == 1


async def test_repeated_request_headers_arrive_in_order(
    transport: Transport, app: AppServer
) -> None:
    """A header given twice is sent twice, in order."""
    request = ac.get("echo", headers=[("X-Many", "first"), ("x-many", "second")])
    echo = _echo(await _client(transport, app.url).request(request))
    assert _echoed_headers(echo)["x-many"] == ["first", "second"]


async def test_json_body_arrives_intact(transport: Transport, app: AppServer) -> None:
    """json= is serialised once, sent as UTF-8 with its content type."""
    document: dict[str, str | float | list[str] | None] = {
        "name": "Zoë",
        "tags": ["a", "b"],
        "n": 1.5,
        "none": None,
    }
    echo = _echo(await _client(transport, app.url).request(ac.post("echo", json=document)))
    assert json.loads(str(echo["body"]).encode("latin-1")) == document
    assert _echoed_headers(echo)["content-type"] == ["application/json"]


async def test_query_arrives_as_given(transport: Transport, app: AppServer) -> None:
    """Reserved characters, repeats, booleans and non-ASCII survive the query string."""
    query: dict[str, str | bool | list[str]] = {
        "q": "a b&c=d/e?f#g+h",
        "multi": ["1", "2"],
        "flag": True,
        "empty": "",
        "u": "é",
    }
    echo = _echo(await _client(transport, app.url).request(ac.get("echo", query=query)))
    assert echo["query_pairs"] == [
        ["q", "a b&c=d/e?f#g+h"],
        ["multi", "1"],
        ["multi", "2"],
        ["flag", "true"],
        ["empty", ""],
        ["u", "é"],
    ]


async def test_path_param_arrives_as_one_segment(transport: Transport, app: AppServer) -> None:
    """A slash, space or question mark in a path param stays inside its one segment."""
    request = ac.get("echo/{id}/tail", path_params={"id": "a/b c?d"})
    echo = _echo(await _client(transport, app.url).request(request))
    assert echo["path"] == "/echo/a%2Fb%20c%3Fd/tail"
    assert echo["query"] == ""
    segments = [unquote(part) for part in str(echo["path"]).split("/")]
    assert segments == ["", "echo", "a/b c?d", "tail"]


@pytest.mark.parametrize("value", ["../status/500", "./..", "..."])
async def test_dot_segments_cannot_traverse(
    transport: Transport, app: AppServer, value: str
) -> None:
    """A path param holding dots and slashes arrives as one escaped segment, never collapsed.

    (A param that is exactly '.' or '..' is refused when built: tests/security.)
    """
    request = ac.get("echo/{id}", path_params={"id": value})
    response = await _client(transport, app.url).request(request)
    assert response.status == 200  # still the echo route, not "/" or /status/500
    path = str(_echo(response)["path"])
    assert path.startswith("/echo/")
    assert path.count("/") == 2
    assert unquote(path.removeprefix("/echo/")) == value


# --- failures --------------------------------------------------------------------------


async def test_connection_refused_is_connect_error(transport: Transport) -> None:
    """Refused connections raise ConnectError, never sent, with every attempt recorded."""
    with refused_url() as url:
        client = _client(transport, url, strategy=FAST_RETRIES)
        with pytest.raises(ac.ConnectError) as caught:
            await client.request(ac.get("x"))
    error = caught.value
    assert isinstance(error, ConnectionError)
    assert error.may_have_reached_server is False
    assert [record.number for record in error.attempts] == [1, 2, 3]
    assert [record.kind for record in error.attempts] == [
        ac.AttemptKind.FIRST,
        ac.AttemptKind.RETRY,
        ac.AttemptKind.RETRY,
    ]
    assert {record.error for record in error.attempts} == {"ConnectError"}
    assert not any(record.may_have_reached_server for record in error.attempts)
    assert {record.url for record in error.attempts} == {f"{url}/x"}


async def test_reset_is_network_error_and_retried(transport: Transport) -> None:
    """A reset after the request was read is a NetworkError the default strategy retries."""
    async with raw_server(reset_after_request) as server:
        client = _client(transport, server.url)  # sequential_strategy(): 3 attempts
        with pytest.raises(ac.NetworkError) as caught:
            await client.request(ac.get("x"))
        # One connection per attempt: no hidden re-send inside the transport.
        assert server.accepted == 3
    error = caught.value
    assert error.may_have_reached_server is True
    assert [
        (record.number, record.error, record.may_have_reached_server) for record in error.attempts
    ] == [
        (1, "NetworkError", True),
        (2, "NetworkError", True),
        (3, "NetworkError", True),
    ]


async def test_reset_with_single_attempt_raises_at_once(transport: Transport) -> None:
    """With single_attempt_strategy a reset raises after exactly one request."""
    async with raw_server(reset_after_request) as server:
        with pytest.raises(ac.NetworkError) as caught:
            await _client(transport, server.url, strategy=ONCE).request(ac.get("x"))
        assert server.accepted == 1
    assert len(caught.value.attempts) == 1


async def test_close_without_answer_is_network_error(transport: Transport) -> None:
    """A server that closes without a byte of answer gives a NetworkError (maybe sent)."""
    async with raw_server(close_without_answer) as server:
        with pytest.raises(ac.NetworkError) as caught:
            await _client(transport, server.url, strategy=ONCE).request(ac.get("x"))
        assert server.accepted == 1
    assert caught.value.may_have_reached_server is True


async def test_garbage_answer_is_transport_error(transport: Transport) -> None:
    """Bytes that are not HTTP give a TransportError after sending, not a ConnectError."""
    async with raw_server(answer_garbage) as server:
        with pytest.raises(ac.TransportError) as caught:
            await _client(transport, server.url, strategy=ONCE).request(ac.get("x"))
    assert isinstance(caught.value, (ac.NetworkError, ac.ProtocolError))
    assert caught.value.may_have_reached_server is True


async def _against_silence(
    transport: Transport, strategy: Strategy, budget: float
) -> tuple[float, ac.DeadlineExceededError, int]:
    """Call a server that never answers; how long it took, the error, connections made."""
    async with raw_server(never_answer) as server:
        client = _client(transport, server.url, strategy=strategy)
        start = time.perf_counter()
        with pytest.raises(ac.DeadlineExceededError) as caught:
            await client.request(ac.get("x"), timeout=budget)
        elapsed = time.perf_counter() - start
        assert await server.settle(0, within=1.0) == 0
        return elapsed, caught.value, server.accepted


async def test_no_answer_times_out_on_time(transport: Transport) -> None:
    """A server that never answers: DeadlineExceededError at the call's timeout, not later."""
    elapsed, error, _ = await _against_silence(transport, FAST_RETRIES, 0.2)
    assert 0.2 <= elapsed < 0.4
    assert error.may_have_reached_server is True
    assert len(error.attempts) == 1  # no time was left for a retry


async def test_a_hung_attempt_gives_up_its_share_and_the_next_one_goes_out(
    transport: Transport,
) -> None:
    """With the budget split between attempts, the client cuts each hung attempt at its
    share (no backend timer needed) and the retry still goes out within the deadline."""
    split = ac.sequential_strategy(
        attempts=2,
        delays=ac.constant_delays(0.0),
        attempt_timeout=ac.split_deadline_between_attempts,
    )
    elapsed, error, accepted = await _against_silence(transport, split, 0.4)
    assert 0.4 <= elapsed < 0.6
    assert accepted == 2
    assert [record.number for record in error.attempts] == [1, 2]
    assert 0.19 <= error.attempts[0].duration < 0.3


async def test_transport_bounds_itself_by_the_ambient_deadline(
    transport: Transport, app: AppServer
) -> None:
    """send() alone (no client, no cancel scope) stops at the ambient deadline."""
    request = ac.Request(method="GET", url=f"{app.url}/hang")
    start = time.perf_counter()
    with ac.ambient(timeout=0.2), pytest.raises(ac.DeadlineExceededError) as caught:
        await transport.send(request)
    elapsed = time.perf_counter() - start
    assert 0.2 <= elapsed < 0.4
    assert caught.value.may_have_reached_server is True


async def test_a_nearer_deadline_set_inside_the_attempt_is_the_transports_to_enforce(
    transport: Transport, app: AppServer
) -> None:
    """The client enforces each attempt's deadline; a nearer one an attempt stage sets
    with ambient() (which cancels nothing) is enforced by the transport itself."""

    async def tighten(request: ac.Request, call_next: ac.Handler) -> ac.Response:
        with ac.ambient(timeout=0.2):
            return await call_next(request)

    client = ac.Client(transport, app.url, strategy=ONCE, attempt_stages=[tighten])
    start = time.perf_counter()
    with pytest.raises(ac.DeadlineExceededError):
        await client.request(ac.get("hang"), timeout=5.0)
    assert 0.2 <= time.perf_counter() - start < 0.4


async def test_slow_answer_within_the_budget_arrives(transport: Transport, app: AppServer) -> None:
    """An answer that takes a while but beats the deadline is returned, timed."""
    client = _client(transport, app.url, strategy=ONCE)
    response = await client.request(ac.get("slow", query={"seconds": 0.05}), timeout=2.0)
    assert (response.status, response.text) == (200, "slow")
    assert 0.05 <= response.elapsed < 1.0


async def test_expired_deadline_is_not_sent(transport: Transport) -> None:
    """send() with no budget left raises at once and never connects."""
    async with raw_server(answer_ok_keep_alive) as server:
        request = ac.Request(method="GET", url=f"{server.url}/x")
        past = ac.Deadline(time.monotonic() - 1.0)
        with ac.ambient(deadline=past), pytest.raises(ac.DeadlineExceededError) as caught:
            await transport.send(request)
        assert server.accepted == 0
    assert caught.value.may_have_reached_server is False


async def test_cancellation_closes_the_connection(transport: Transport) -> None:
    """Cancelling the caller mid-request closes its connection at once."""
    async with raw_server(never_answer) as server:
        client = _client(transport, server.url, strategy=ONCE)
        finished = False

        async def call() -> None:
            nonlocal finished
            await client.request(ac.get("x"))
            finished = True

        async with anyio.create_task_group() as group:
            group.start_soon(call)
            assert await server.settle(1, within=2.0) == 1  # the request is in flight
            group.cancel_scope.cancel()
        assert not finished
        assert await server.settle(0, within=0.5) == 0


# --- pool ownership --------------------------------------------------------------------


@asynccontextmanager
async def _borrowed_pool(
    backend: str, *, own_limit: float = 30.0
) -> AsyncIterator[tuple[Callable[[], Transport], Callable[[], bool]]]:
    """A pool the test owns, timing out after ``own_limit`` s: a transport factory, "closed?"."""
    if backend == "aiohttp":
        limits = aiohttp.ClientTimeout(total=own_limit)
        async with aiohttp.ClientSession(timeout=limits) as session:
            yield (lambda: AiohttpTransport(session)), (lambda: session.closed)
    elif backend == "httpx":
        async with httpx.AsyncClient(timeout=own_limit) as client:
            yield (lambda: HttpxTransport(client)), (lambda: client.is_closed)
    else:
        async with httpx2.AsyncClient(timeout=own_limit) as client2:
            yield (lambda: Httpx2Transport(client2)), (lambda: client2.is_closed)


async def _drip_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answer with a huge Content-Length and drip the body until the client leaves."""
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000000\r\n\r\n")
    try:
        while True:
            writer.write(b"z" * 512)
            await writer.drain()
            await asyncio.sleep(0.005)
    except ConnectionError:
        return


@pytest.mark.parametrize("server", ["no head", "body dripping"])
async def test_closing_the_client_ends_its_calls_in_flight_with_a_typed_error(
    transport: Transport, server: str
) -> None:
    """aclose() with calls in flight: they end soon with a TransportError, and nothing more
    is sent for them (a retry does not reopen a pool behind the closed client)."""
    async with raw_server(never_answer if server == "no head" else _drip_body) as raw:
        client = ac.Client(transport, raw.url, timeout=5.0, max_response_size=None)
        call = asyncio.ensure_future(client.get("x"))
        await anyio.sleep(0.2)
        closed = time.perf_counter()
        await client.aclose()
        with pytest.raises(ac.TransportError):
            await call
        assert time.perf_counter() - closed < 1.0
        assert raw.accepted == 1


async def test_closing_the_client_ends_a_stream_being_read_with_network_error(
    transport: Transport,
) -> None:
    """A stream read by another task when the client closes ends at once, typed."""
    async with raw_server(_drip_body) as raw:
        client = ac.Client(transport, raw.url, timeout=5.0, max_response_size=None)
        reading = anyio.Event()

        async def read() -> None:
            async with client.stream(ac.get("x")) as response:
                async for _ in response.aiter_bytes():
                    reading.set()

        task = asyncio.ensure_future(read())
        with anyio.fail_after(2):
            await reading.wait()
        closed = time.perf_counter()
        await client.aclose()
        with pytest.raises(ac.NetworkError):
            await task
        assert time.perf_counter() - closed < 0.5


async def test_owned_pool_is_closed_by_aclose(backend: str, anyio_backend: str) -> None:
    """A transport that made its own pool closes it, and its connections, on aclose()."""
    async with raw_server(answer_ok_keep_alive) as server:
        transport = _make_transport(backend)
        response = await _client(transport, server.url).request(ac.get("x"))
        assert response.content == b"ok"
        assert await server.settle(1, within=1.0) == 1  # kept alive in the pool
        await transport.aclose()
        assert await server.settle(0, within=1.0) == 0


async def test_borrowed_pool_survives_aclose(backend: str, anyio_backend: str) -> None:
    """A transport given a session/client leaves it, and its connections, open on aclose()."""
    async with raw_server(answer_ok_keep_alive) as server:
        async with _borrowed_pool(backend) as (make_transport, is_closed):
            client = _client(make_transport(), server.url)
            await client.request(ac.get("x"))
            await client.aclose()
            assert not is_closed()
            # The same pooled connection still serves the next request.
            again = _client(make_transport(), server.url)
            assert (await again.request(ac.get("x"))).content == b"ok"
            await again.aclose()
            assert server.accepted == 1
        assert is_closed()
        assert await server.settle(0, within=1.0) == 0


async def test_borrowed_pool_keeps_its_own_shorter_timeout(
    backend: str, anyio_backend: str
) -> None:
    """A session/client timeout shorter than the call's budget still applies."""
    async with (
        raw_server(never_answer) as server,
        _borrowed_pool(backend, own_limit=0.1) as (make_transport, _),
    ):
        client = _client(make_transport(), server.url, strategy=ONCE)
        start = time.perf_counter()
        with pytest.raises(ac.DeadlineExceededError):
            await client.request(ac.get("x"), timeout=5.0)
        elapsed = time.perf_counter() - start
    assert 0.1 <= elapsed < 0.3
