"""Streamed responses under the server middleware, on real uvicorn, aiohttp and Sanic servers.

Each server streams the same way its users do (Starlette's ``StreamingResponse``,
aiohttp's ``StreamResponse``, Sanic's ``request.respond()``); the producer
records the token's reason when it stops.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import aiohttp
import anyio
import pytest
from aiohttp import web
from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from sanic import Request

import aio_client as ac
from aio_client import ServerSentEvent
from aio_client._cancel import CancelReason, current_token
from aio_client.server import DeadlineMiddleware, aiohttp_middleware, sse_stream
from aio_client.server._core import ServerCore
from tests.integration.servers import sanic_app, serve_aiohttp, serve_sanic, serve_uvicorn

#: One server under the middleware streaming ``/stream``: its URL's context and its core.
Served = tuple[Callable[[], AbstractAsyncContextManager[str]], ServerCore]
#: The producer: given a write function, streams until cancelled.
Producer = Callable[[Callable[[bytes], Awaitable[None]]], Awaitable[None]]


def asgi_server(producer: Producer, **options: Any) -> Served:
    """FastAPI under uvicorn; the producer feeds a ``StreamingResponse``'s generator."""
    app = FastAPI()
    middleware = DeadlineMiddleware(app, **options)

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            sent: anyio.abc.ObjectSendStream[bytes]
            sent, received = anyio.create_memory_object_stream[bytes](1)

            async def produce() -> None:
                async with sent:
                    await producer(sent.send)

            async with anyio.create_task_group() as tasks, received:
                tasks.start_soon(produce)
                async for chunk in received:
                    yield chunk

        return StreamingResponse(chunks(), media_type="text/plain")

    return (lambda: serve_uvicorn(middleware)), middleware.core


def aiohttp_server(producer: Producer, **options: Any) -> Served:
    """aiohttp with ``aiohttp_middleware``; the producer writes a chunked ``StreamResponse``."""
    middleware = aiohttp_middleware(**options)
    app = web.Application(middlewares=[middleware])
    app.on_shutdown.append(middleware.on_shutdown)

    async def stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        await producer(response.write)
        await response.write_eof()
        return response

    app.router.add_get("/stream", stream)
    return (lambda: serve_aiohttp(app)), middleware.core


def sanic_server(producer: Producer, **options: Any) -> Served:
    """Sanic with ``setup``; the producer sends through ``request.respond()``."""
    app, integration = sanic_app(**options)

    async def stream(request: Request) -> None:
        streamed = await request.respond(content_type="text/plain")

        async def write(chunk: bytes) -> None:
            await streamed.send(chunk)

        await producer(write)
        await streamed.eof()

    app.add_route(stream, "/stream")
    return (lambda: serve_sanic(app)), integration.core


SERVERS = pytest.mark.parametrize(
    "make", [asgi_server, aiohttp_server, sanic_server], ids=["asgi", "aiohttp", "sanic"]
)


class Recorder:
    """A producer that sends ``first`` then a tick every 50 ms, and records why it stopped."""

    def __init__(self) -> None:
        self.first_sent = anyio.Event()
        self.stopped = anyio.Event()
        self.reasons: list[CancelReason | None] = []
        self.stopped_at = 0.0

    async def __call__(self, write: Callable[[bytes], Awaitable[None]]) -> None:
        token = current_token()
        try:
            await write(b"first\n")
            self.first_sent.set()
            while True:
                await anyio.sleep(0.05)
                await write(b"tick\n")
        finally:
            self.stopped_at = anyio.current_time()
            self.reasons.append(token.reason if token else None)
            self.stopped.set()


@SERVERS
async def test_client_disconnect_mid_stream_stops_the_producer_within_100ms(
    make: Callable[..., Served], caplog: pytest.LogCaptureFixture
) -> None:
    """A client leaving mid-stream fires CLIENT_DISCONNECTED and cancels the producer fast;
    nothing is logged as an error or a warning (a hang-up is no failure)."""
    caplog.set_level(logging.DEBUG)
    producer = Recorder()
    serve, core = make(producer)
    async with serve() as url:
        port = int(url.rsplit(":", 1)[1])
        client = await anyio.connect_tcp("127.0.0.1", port)
        await client.send(b"GET /stream HTTP/1.1\r\nHost: test\r\nX-Request-Timeout: 30\r\n\r\n")
        with anyio.fail_after(2):
            await producer.first_sent.wait()
            await client.receive()
        await client.aclose()
        closed_at = anyio.current_time()
        with anyio.fail_after(2):
            await producer.stopped.wait()
        reaction = producer.stopped_at - closed_at
        await anyio.sleep(0.02)  # let the cancellation leave the middleware
    assert reaction < 0.1
    assert producer.reasons == [CancelReason.CLIENT_DISCONNECTED]
    assert core.stats.client_disconnected == 1
    assert core.in_flight == 0
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert loud == [], [(r.name, r.getMessage()) for r in loud]


@SERVERS
async def test_by_default_the_deadline_bounds_the_whole_stream(
    make: Callable[..., Served],
) -> None:
    """Without stream_timeout a stream ends at the request's deadline, connection broken."""
    producer = Recorder()
    serve, core = make(producer)
    async with (
        serve() as url,
        aiohttp.ClientSession() as session,
        session.get(f"{url}/stream", headers={"X-Request-Timeout": "0.3"}) as resp,
    ):
        started = anyio.current_time()
        assert resp.status == 200
        assert await resp.content.readline() == b"first\n"
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()
        lasted = anyio.current_time() - started
    assert lasted < 0.6
    assert producer.reasons == [CancelReason.DEADLINE]
    assert core.stats.deadline_exceeded == 1


@SERVERS
async def test_stream_timeout_replaces_the_deadline_once_the_response_starts(
    make: Callable[..., Served],
) -> None:
    """With stream_timeout a started stream outlives the request's deadline, up to its own bound."""
    producer = Recorder()
    serve, core = make(producer, stream_timeout=0.8)
    async with (
        serve() as url,
        aiohttp.ClientSession() as session,
        session.get(f"{url}/stream", headers={"X-Request-Timeout": "0.2"}) as resp,
    ):
        started = anyio.current_time()
        assert resp.status == 200
        assert await resp.content.readline() == b"first\n"
        lines: list[bytes] = []
        with pytest.raises(aiohttp.ClientPayloadError):
            await _collect(resp, lines)
        lasted = anyio.current_time() - started
    # Far past the 0.2 s deadline, cut near 0.8 s after the start, never cleanly ended.
    assert 0.6 < lasted < 1.5
    assert lines.count(b"tick\n") >= 8
    assert producer.reasons == [CancelReason.DEADLINE]
    assert core.stats.deadline_exceeded == 1


@SERVERS
async def test_before_the_response_starts_the_deadline_still_applies(
    make: Callable[..., Served],
) -> None:
    """stream_timeout does not lengthen the wait for a response that has not started: 504."""
    entered = anyio.Event()

    async def never_starts(write: Callable[[bytes], Awaitable[None]]) -> None:
        entered.set()
        await anyio.sleep(10)

    served: Served
    if make is asgi_server:
        app = FastAPI()
        middleware = DeadlineMiddleware(app, stream_timeout=5.0)

        @app.get("/stream")
        async def slow() -> str:
            await never_starts(_unused_write)
            return "never"  # pragma: no cover

        served = (lambda: serve_uvicorn(middleware)), middleware.core
    elif make is aiohttp_server:
        wrapped = aiohttp_middleware(stream_timeout=5.0)
        web_app = web.Application(middlewares=[wrapped])

        async def slow_aiohttp(request: web.Request) -> web.Response:
            await never_starts(_unused_write)
            return web.Response(text="never")  # pragma: no cover

        web_app.router.add_get("/stream", slow_aiohttp)
        served = (lambda: serve_aiohttp(web_app)), wrapped.core
    else:
        sanic, integration = sanic_app(stream_timeout=5.0)

        async def slow_sanic(request: Request) -> None:
            await never_starts(_unused_write)

        sanic.add_route(slow_sanic, "/stream")
        served = (lambda: serve_sanic(sanic)), integration.core
    serve, core = served
    async with (
        serve() as url,
        aiohttp.ClientSession() as session,
        session.get(f"{url}/stream", headers={"X-Request-Timeout": "0.2"}) as resp,
    ):
        status, do_not_retry = resp.status, resp.headers.get("X-Do-Not-Retry")
    assert entered.is_set()
    assert (status, do_not_retry) == (504, "1")
    assert core.stats.deadline_exceeded == 1


async def _collect(resp: aiohttp.ClientResponse, lines: list[bytes]) -> None:
    async for line in resp.content:
        lines.append(line)


async def _unused_write(chunk: bytes) -> None:  # pragma: no cover - never called
    raise AssertionError("the response never starts")


@SERVERS
async def test_shutdown_mid_stream_stops_the_producer_and_breaks_the_stream(
    make: Callable[..., Served],
) -> None:
    """Shutting the server down cancels a running stream with SHUTDOWN; no clean end is sent."""
    producer = Recorder()
    serve, core = make(producer, stream_timeout=30.0)
    async with (
        serve() as url,
        aiohttp.ClientSession() as session,
        session.get(f"{url}/stream") as resp,
    ):
        assert await resp.content.readline() == b"first\n"
        assert core.shutdown() == 1
        with anyio.fail_after(1):
            await producer.stopped.wait()
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()
    assert producer.reasons == [CancelReason.SHUTDOWN]
    assert core.stats.shutdown == 1
    assert core.in_flight == 0


@pytest.mark.parametrize("value", [0, -1.0, float("nan"), "5", True])
def test_a_bad_stream_timeout_is_a_config_error_naming_it(value: object) -> None:
    """stream_timeout takes seconds > 0 or None; anything else says so at construction."""
    with pytest.raises(ac.ConfigError, match="stream_timeout"):
        aiohttp_middleware(stream_timeout=value)  # type: ignore[arg-type]


@SERVERS
async def test_sse_stream_heartbeats_reach_the_client_and_a_hang_up_stops_the_source(
    make: Callable[..., Served],
) -> None:
    """sse_stream over a real server: events and heartbeats arrive; a hang-up stops the source."""
    source_stopped = anyio.Event()
    reasons: list[CancelReason | None] = []
    stopped_at: list[float] = []

    async def events() -> AsyncIterator[ServerSentEvent | str]:
        token = current_token()
        try:
            yield ServerSentEvent(event="hello", data="one\ntwo", id="1", retry=None)
            await anyio.sleep(3600)
            yield "never"  # pragma: no cover
        finally:
            stopped_at.append(anyio.current_time())
            reasons.append(token.reason if token else None)
            source_stopped.set()

    async def producer(write: Callable[[bytes], Awaitable[None]]) -> None:
        async for chunk in sse_stream(events(), heartbeat=0.05):
            await write(chunk)

    serve, core = make(producer, stream_timeout=60.0)
    async with serve() as url:
        port = int(url.rsplit(":", 1)[1])
        client = await anyio.connect_tcp("127.0.0.1", port)
        await client.send(b"GET /stream HTTP/1.1\r\nHost: test\r\nX-Request-Timeout: 0.1\r\n\r\n")
        received = b""
        with anyio.fail_after(2):
            while received.count(b": heartbeat\n\n") < 3:
                received += await client.receive()
        await client.aclose()
        closed_at = anyio.current_time()
        with anyio.fail_after(2):
            await source_stopped.wait()
        await anyio.sleep(0.02)  # let the cancellation leave the middleware
    assert b"event: hello\nid: 1\ndata: one\ndata: two\n\n" in received
    assert stopped_at[0] - closed_at < 0.1
    # Heartbeats kept it going well past the request's 0.1 s deadline (stream_timeout).
    assert reasons == [CancelReason.CLIENT_DISCONNECTED]
    assert core.stats.client_disconnected == 1
    assert core.in_flight == 0
