"""client.stream(...) over both transports, against real servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Final

import anyio
import pytest
from aiohttp import web

import aio_client as ac
from aio_client.transports import AiohttpTransport, Httpx2Transport, HttpxTransport, Transport

from .servers import app_server, serve_aiohttp, settle

BACKENDS = ["aiohttp", "httpx", "httpx2"]
MiB: Final = 1024 * 1024
#: What /events sends, one block every ``?every=`` seconds.
EVENT_BLOCKS: Final = (
    b": a comment, ignored\n\n",
    b"event: greeting\ndata: hello\ndata: world\nid: 1\n\n",
    b"data: second\r\nid: 2\r\nretry: 1500\r\n\r\n",
    b"data:  two spaces\rid\r\rdata: last\n\n",
)


class StreamServer:
    """An aiohttp app streaming slow events, endless bodies and big downloads."""

    def __init__(self) -> None:
        #: Streams whose client went away before they ended, by route.
        self.disconnects: dict[str, int] = {}
        #: Attempt numbers (X-Request-Attempt) /race served, in arrival order.
        self.attempts: list[str] = []

    def _gone(self, route: str) -> None:
        self.disconnects[route] = self.disconnects.get(route, 0) + 1

    async def events(self, request: web.Request) -> web.StreamResponse:
        """:data:`EVENT_BLOCKS`, then more ``data: tick`` blocks if ``?endless=1``."""
        every = float(request.query.get("every", "0.1"))
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        try:
            for block in EVENT_BLOCKS:
                await response.write(block)
                await asyncio.sleep(every)
            while request.query.get("endless"):
                await response.write(b"data: tick\n\n")
                await asyncio.sleep(every)
            if request.query.get("stall"):
                await asyncio.sleep(30)
        except (ConnectionError, asyncio.CancelledError):
            self._gone("events")
            raise
        await response.write_eof()
        return response

    async def download(self, request: web.Request) -> web.StreamResponse:
        """``?mib=`` MiB of body in 64 KiB chunks, with Content-Length."""
        size = int(request.query.get("mib", "1")) * MiB
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        response.content_length = size
        await response.prepare(request)
        chunk = bytes(64 * 1024)
        try:
            for _ in range(size // len(chunk)):
                await response.write(chunk)
        except (ConnectionError, asyncio.CancelledError):
            self._gone("download")
            raise
        await response.write_eof()
        return response

    async def race(self, request: web.Request) -> web.StreamResponse:
        """Attempt 1's head comes after 5 s, any other attempt's at once."""
        attempt = request.headers.get("X-Request-Attempt", "")
        self.attempts.append(attempt)
        try:
            if attempt == "1":
                await asyncio.sleep(5)
            response = web.StreamResponse(headers={"Content-Type": "text/plain"})
            await response.prepare(request)
            await response.write(f"attempt {attempt}".encode())
            await response.write_eof()
        except (ConnectionError, asyncio.CancelledError):
            self._gone(f"race-{attempt}")
            raise
        return response

    async def flaky(self, request: web.Request) -> web.Response:
        """503 to attempt 1, 200 to the others."""
        if request.headers.get("X-Request-Attempt") == "1":
            return web.Response(status=503, text="try again")
        return web.Response(text="fine")

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/events", self.events)
        app.router.add_get("/download", self.download)
        app.router.add_get("/race", self.race)
        app.router.add_get("/flaky", self.flaky)
        return app


@pytest.fixture(params=BACKENDS)
async def transport(request: pytest.FixtureRequest, anyio_backend: str) -> AsyncIterator[Transport]:
    """A fresh transport of each backend, owning its pool, closed after the test."""
    makers = {"aiohttp": AiohttpTransport, "httpx": HttpxTransport, "httpx2": Httpx2Transport}
    made: Transport = makers[request.param]()
    try:
        yield made
    finally:
        await made.aclose()


@pytest.fixture
async def server(anyio_backend: str) -> AsyncIterator[tuple[StreamServer, str]]:
    """The streaming app on an ephemeral port, with its URL."""
    app = StreamServer()
    async with serve_aiohttp(app.app(), handler_cancellation=True) as url:
        yield app, url


async def test_sse_events_arrive_as_they_are_sent(
    transport: Transport, server: tuple[StreamServer, str]
) -> None:
    """aiter_sse() yields each event when its block arrives, parsed to the standard."""
    _, url = server
    client = ac.Client(transport, url)
    arrivals: list[float] = []
    events: list[ac.ServerSentEvent] = []
    started = time.perf_counter()
    async with client.stream(ac.get("events", query={"every": 0.2}), timeout=10.0) as response:
        assert response.status == 200
        async for event in response.aiter_sse():
            arrivals.append(time.perf_counter() - started)
            events.append(event)
    assert events == [
        ac.ServerSentEvent("greeting", "hello\nworld", "1", None),
        ac.ServerSentEvent("message", "second", "2", 1500),
        ac.ServerSentEvent("message", " two spaces", "", 1500),  # "id" alone resets the id
        ac.ServerSentEvent("message", "last", "", 1500),
    ]
    # Each came when sent (0.2 s apart), not all at the end: the first came 0.4 s before
    # the last two, which the server sent together.
    assert arrivals[-1] - arrivals[0] > 0.3
    assert arrivals[-1] - arrivals[-2] < 0.1


async def test_cancellation_mid_stream_closes_the_connection(
    transport: Transport, server: tuple[StreamServer, str]
) -> None:
    """The caller cancelled while reading an endless stream: the server sees the disconnect."""
    app, url = server
    client = ac.Client(transport, url)
    seen = 0
    with anyio.move_on_after(0.5):
        async with client.stream(ac.get("events", query={"endless": 1, "every": 0.02})) as response:
            async for _ in response.aiter_sse():
                seen += 1
    assert seen > 3
    assert await settle(lambda: app.disconnects.get("events") == 1, within=2.0)


async def test_deadline_mid_stream_raises_and_closes_the_connection(
    transport: Transport, server: tuple[StreamServer, str]
) -> None:
    """The call's deadline passes while reading: DeadlineExceededError; the server sees it."""
    app, url = server
    client = ac.Client(transport, url)
    started = time.perf_counter()

    async def read_all() -> None:
        async with client.stream(
            ac.get("events", query={"endless": 1, "every": 0.02}), timeout=0.4
        ) as response:
            async for _ in response.aiter_bytes():
                pass

    with pytest.raises(ac.DeadlineExceededError, match="deadline"):
        await read_all()
    assert time.perf_counter() - started < 1.5
    assert await settle(lambda: app.disconnects.get("events") == 1, within=2.0)


async def test_idle_timeout_stops_a_stalled_stream(
    transport: Transport, server: tuple[StreamServer, str]
) -> None:
    """A stream that goes quiet for longer than idle_timeout raises DeadlineExceededError."""
    app, url = server
    client = ac.Client(transport, url)
    events: list[ac.ServerSentEvent] = []
    started = time.perf_counter()

    async def read_all() -> None:
        async with client.stream(
            ac.get("events", query={"stall": 1, "every": 0.01}), timeout=10.0, idle_timeout=0.3
        ) as response:
            async for event in response.aiter_sse():
                events.append(event)

    with pytest.raises(ac.DeadlineExceededError, match="idle_timeout"):
        await read_all()
    assert len(events) == 4
    assert time.perf_counter() - started < 2.0
    assert await settle(lambda: app.disconnects.get("events") == 1, within=2.0)


async def test_leaving_the_block_early_closes_the_connection(
    transport: Transport, server: tuple[StreamServer, str]
) -> None:
    """A break out of a 64 MiB download: the server's stream ends with a disconnect."""
    app, url = server
    client = ac.Client(transport, url)
    async with client.stream(ac.get("download", query={"mib": 64})) as response:
        async for _ in response.aiter_bytes():
            break
    assert await settle(lambda: app.disconnects.get("download") == 1, within=2.0)
    with pytest.raises(RuntimeError, match="closed"):
        await response.aread()


async def test_max_size_stops_a_stream(
    transport: Transport, server: tuple[StreamServer, str]
) -> None:
    """max_size refuses a larger Content-Length up front; without a limit it all arrives."""
    _, url = server
    client = ac.Client(transport, url, max_response_size=10)  # buffered calls only
    with pytest.raises(ac.ResponseTooLargeError, match="Content-Length"):
        async with client.stream(ac.get("download", query={"mib": 4}), max_size=MiB):
            pass
    async with client.stream(ac.get("download", query={"mib": 4})) as response:
        assert len(await response.aread()) == 4 * MiB


async def test_hedged_stream_slow_head_loses(
    transport: Transport, server: tuple[StreamServer, str]
) -> None:
    """A hedge's fast head wins; the slow first attempt is cancelled and its connection closed."""
    app, url = server
    client = ac.Client(transport, url)
    strategy = ac.parallel_strategy(attempts=2, delays=ac.constant_delays(0.1))
    async with client.stream(ac.get("race"), strategy=strategy, timeout=10.0) as response:
        assert response.attempt == 2
        assert await response.aread() == b"attempt 2"
    assert app.attempts == ["1", "2"]
    assert await settle(lambda: app.disconnects.get("race-1") == 1, within=2.0)


async def test_retry_happens_before_the_head_only(
    transport: Transport, server: tuple[StreamServer, str]
) -> None:
    """A 503 head is retried; the stream gets the second attempt's response."""
    _, url = server
    client = ac.Client(
        transport, url, strategy=ac.sequential_strategy(delays=ac.constant_delays(0.0))
    )
    async with client.stream(ac.get("flaky")) as response:
        assert (response.status, response.attempt) == (200, 2)
        assert await response.aread() == b"fine"


def _rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")  # pragma: no cover


async def test_256_mib_stream_keeps_memory_bounded(
    transport: Transport, server: tuple[StreamServer, str]
) -> None:
    """256 MiB streamed through client.stream: the process grows by far less than the body."""
    _, url = server
    client = ac.Client(transport, url)
    before = _rss()
    peak = before
    total = 0
    async with client.stream(ac.get("download", query={"mib": 256}), timeout=60.0) as response:
        async for chunk in response.aiter_bytes():
            total += len(chunk)
            if total % (8 * MiB) < len(chunk):
                peak = max(peak, _rss())
    assert total == 256 * MiB
    assert peak - before < 48 * MiB, f"grew by {(peak - before) / MiB:.0f} MiB"


async def _upload_pieces() -> AsyncIterator[bytes]:
    for number in range(16):
        yield bytes([number]) * (32 * 1024)


async def test_streamed_upload_arrives_intact(transport: Transport) -> None:
    """An async generator body (512 KiB in 16 pieces) and a sync one reach the server intact."""
    async with app_server() as app:
        client = ac.Client(transport, app.url)
        echoed = (await client.post("echo", content=_upload_pieces(), timeout=10.0)).json()
        assert isinstance(echoed, dict)
        body = str(echoed["body"]).encode("latin-1")
        assert body == b"".join(bytes([n]) * (32 * 1024) for n in range(16))
        echoed = (await client.put("echo", content=iter([b"sync ", b"pieces"]))).json()
        assert isinstance(echoed, dict)
        assert echoed["body"] == "sync pieces"


async def test_streamed_upload_from_a_function_is_retried(transport: Transport) -> None:
    """A body made by a function goes out again with the retry after a 503."""
    async with app_server() as app:
        client = ac.Client(
            transport, app.url, strategy=ac.sequential_strategy(delays=ac.constant_delays(0.0))
        )
        response = await client.put("record", query={"fail": 1}, content=_upload_pieces)
        assert (response.status, response.attempt) == (200, 2)
        assert [seen.attempt for seen in app.seen] == ["1", "2"]
