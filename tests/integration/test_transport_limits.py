"""Size limits and connection hygiene of both transports, against real servers."""

from __future__ import annotations

import asyncio
import time
import tracemalloc
import zlib
from collections.abc import AsyncIterator
from typing import Final

import anyio
import httpx
import httpx2
import pytest
from aiohttp import web

import aio_client as ac
from aio_client.transports import AiohttpTransport, Httpx2Transport, HttpxTransport, Transport

from .servers import (
    advertise_huge_body,
    answer_once_then_close,
    app_server,
    raw_server,
    serve_aiohttp,
    settle,
)

BACKENDS = ["aiohttp", "httpx", "httpx2"]
#: The httpx family: httpx, and its maintained fork httpx2 (same API, same transport core).
HTTPX_FAMILY: Final = {"httpx": (httpx, HttpxTransport), "httpx2": (httpx2, Httpx2Transport)}
ONCE = ac.single_attempt_strategy()
MiB: Final = 1024 * 1024
#: Decoded size of the gzip bomb: 64 MiB of zeros in about 64 KiB on the wire.
BOMB_SIZE: Final = 64 * MiB


def _gzip_bomb() -> list[bytes]:
    packer = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    block = bytes(MiB)
    parts = [packer.compress(block) for _ in range(BOMB_SIZE // MiB)]
    parts.append(packer.flush())
    return [part for part in parts if part]


class StreamingApp:
    """An aiohttp app with a gzip bomb and an endless body, recording disconnects."""

    def __init__(self) -> None:
        self.bomb = _gzip_bomb()
        #: How many /endless streams ended because the client went away.
        self.disconnects = 0

    async def bomb_route(self, request: web.Request) -> web.StreamResponse:
        """A small gzip body (no Content-Length) that inflates to :data:`BOMB_SIZE`."""
        response = web.StreamResponse(
            headers={"Content-Encoding": "gzip", "Content-Type": "application/octet-stream"}
        )
        response.enable_chunked_encoding()
        await response.prepare(request)
        for part in self.bomb:
            await response.write(part)
        await response.write_eof()
        return response

    async def endless(self, request: web.Request) -> web.StreamResponse:
        """A chunked body that never ends: 64 KiB every few milliseconds."""
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        chunk = bytes(64 * 1024)
        try:
            while True:
                await response.write(chunk)
                await asyncio.sleep(0.002)
        except (ConnectionError, asyncio.CancelledError):
            self.disconnects += 1
            raise

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/bomb", self.bomb_route)
        app.router.add_get("/endless", self.endless)
        return app


def _make_transport(backend: str) -> Transport:
    return AiohttpTransport() if backend == "aiohttp" else HTTPX_FAMILY[backend][1]()


@pytest.fixture(params=BACKENDS)
async def transport(request: pytest.FixtureRequest, anyio_backend: str) -> AsyncIterator[Transport]:
    """A fresh transport of each backend, owning its pool, closed after the test."""
    made = _make_transport(request.param)
    try:
        yield made
    finally:
        await made.aclose()


@pytest.fixture
async def streaming(anyio_backend: str) -> AsyncIterator[tuple[StreamingApp, str]]:
    """The streaming app on an ephemeral port, with its URL."""
    app = StreamingApp()
    async with serve_aiohttp(app.app(), handler_cancellation=True) as url:
        yield app, url


# --- the response size limit -----------------------------------------------------------


async def test_huge_content_length_is_refused_before_reading(transport: Transport) -> None:
    """1 GiB announced by Content-Length: ResponseTooLargeError at once, connection closed."""
    async with raw_server(advertise_huge_body) as server:
        client = ac.Client(transport, server.url, strategy=ONCE)
        started = time.perf_counter()
        with pytest.raises(ac.ResponseTooLargeError) as caught:
            await client.get("huge", timeout=5.0)
        assert time.perf_counter() - started < 1.0
        assert caught.value.limit == 64 * MiB  # the default
        assert caught.value.may_have_reached_server is True
        assert "Content-Length 1073741824" in str(caught.value)
        assert len(caught.value.attempts) == 1
        assert await server.settle(0, within=2.0) == 0


async def test_gzip_bomb_is_stopped_at_the_limit(
    transport: Transport, streaming: tuple[StreamingApp, str]
) -> None:
    """A 64 MiB gzip bomb under a 1 MiB limit: stopped, little more than the limit in memory."""
    _, url = streaming
    client = ac.Client(transport, url, strategy=ONCE, max_response_size=MiB)
    tracemalloc.start()
    try:
        with pytest.raises(ac.ResponseTooLargeError):
            await client.get("bomb", timeout=10.0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # The limit, one decoded chunk above it, and the bomb's 64 KiB on the wire.
    assert peak < 8 * MiB, f"peak {peak / MiB:.1f} MiB"


async def test_gzip_body_within_the_limit_arrives_decoded(
    transport: Transport, streaming: tuple[StreamingApp, str]
) -> None:
    """The same gzip body under a limit above its decoded size arrives whole and decoded."""
    _, url = streaming
    client = ac.Client(transport, url, strategy=ONCE)
    response = await client.get("bomb", timeout=10.0, max_response_size=BOMB_SIZE)
    assert len(response.content) == BOMB_SIZE
    assert not response.content.strip(b"\0")


async def test_endless_body_stops_at_the_limit_and_the_server_sees_it(
    transport: Transport, streaming: tuple[StreamingApp, str]
) -> None:
    """An endless chunked body: ResponseTooLargeError at max_response_size; the server's
    stream ends with a disconnect."""
    app, url = streaming
    client = ac.Client(transport, url, strategy=ONCE, max_response_size=2 * MiB)
    with pytest.raises(ac.ResponseTooLargeError):
        await client.get("endless", timeout=10.0)
    assert await settle(lambda: app.disconnects == 1, within=2.0)


async def test_endless_body_without_a_limit_stops_at_the_deadline(
    transport: Transport, streaming: tuple[StreamingApp, str]
) -> None:
    """With no limit, an endless body ends at the call's deadline, and the connection closes."""
    app, url = streaming
    client = ac.Client(transport, url, strategy=ONCE, max_response_size=None)
    started = time.perf_counter()
    with pytest.raises(ac.DeadlineExceededError):
        await client.get("endless", timeout=0.3)
    assert time.perf_counter() - started < 1.5
    assert await settle(lambda: app.disconnects == 1, within=2.0)


async def test_the_per_call_limit_overrides_the_clients(transport: Transport) -> None:
    """A per-call max_response_size beats the client's, both ways."""
    async with app_server() as server:
        client = ac.Client(transport, server.url, strategy=ONCE, max_response_size=10)
        with pytest.raises(ac.ResponseTooLargeError):
            await client.get("large")
        response = await client.get("large", max_response_size=None)
        assert len(response.content) == MiB
        with pytest.raises(ac.ResponseTooLargeError):
            await ac.Client(transport, server.url).get("large", max_response_size=MiB - 1)


async def test_a_too_large_response_is_not_retried(transport: Transport) -> None:
    """The default classifier treats ResponseTooLargeError as final: one attempt only."""
    async with app_server() as server:
        client = ac.Client(transport, server.url, max_response_size=10)
        with pytest.raises(ac.ResponseTooLargeError) as caught:
            await client.get("large")
        assert len(caught.value.attempts) == 1


# --- stale keep-alive connections ------------------------------------------------------


async def test_a_server_closing_after_each_answer_costs_no_failed_call(
    transport: Transport,
) -> None:
    """A server that closes each connection right after answering (no Connection: close):
    100 GETs and 100 POSTs in a row all succeed with one attempt each, and the server
    saw each request exactly once."""
    served: list[str] = []
    async with raw_server(answer_once_then_close(served)) as server:
        client = ac.Client(transport, server.url, strategy=ONCE)
        for _ in range(100):
            got = await client.get("item", timeout=5.0)
            posted = await client.post("item", content=b"x" * 100, timeout=5.0)
            assert (got.status, got.attempt, posted.status, posted.attempt) == (200, 1, 200, 1)
        assert served.count("GET /item HTTP/1.1") == 100
        assert served.count("POST /item HTTP/1.1") == 100
        assert len(served) == 200


# --- httpx under concurrency and HTTP/2 ------------------------------------------------


@pytest.mark.parametrize("family", HTTPX_FAMILY)
async def test_httpx_serves_200_calls_in_flight(family: str, anyio_backend: str) -> None:
    """200 calls in flight over the transport's 100 connections: every one succeeds."""
    async with app_server() as server:
        make = HTTPX_FAMILY[family][1]
        async with ac.Client(make(), server.url, strategy=ONCE) as client:
            statuses: list[int] = []

            async def one() -> None:
                response = await client.get("slow", query={"seconds": 0.05}, timeout=10.0)
                statuses.append(response.status)

            async with anyio.create_task_group() as group:
                for _ in range(200):
                    group.start_soon(one)
        assert statuses == [200] * 200


@pytest.mark.parametrize("backend", BACKENDS)
async def test_queue_wait_is_bounded_by_the_ambient_deadline(
    backend: str, anyio_backend: str
) -> None:
    """On its own, the transport gives up waiting for a connection at the ambient deadline:
    DeadlineExceededError, not sent."""
    async with app_server() as server:
        transport: Transport = (
            AiohttpTransport(limit=1) if backend == "aiohttp" else HTTPX_FAMILY[backend][1](limit=1)
        )
        try:
            bound = ac.Request("GET", f"{server.url}/slow?seconds=1.0")
            async with anyio.create_task_group() as group:
                group.start_soon(transport.send, bound)
                await anyio.sleep(0.05)
                with ac.ambient(timeout=0.1), pytest.raises(ac.DeadlineExceededError) as caught:
                    await transport.send(bound)
                assert caught.value.may_have_reached_server is False
        finally:
            await transport.aclose()


@pytest.mark.parametrize("family", HTTPX_FAMILY)
async def test_httpx_refuses_an_http2_client(family: str, anyio_backend: str) -> None:
    """An http2-enabled client is refused with a ConfigError saying why."""
    lib, make = HTTPX_FAMILY[family]
    async with lib.AsyncClient(http2=True) as http2_client:
        with pytest.raises(ac.ConfigError, match="RST_STREAM"):
            make(http2_client)


@pytest.mark.parametrize("family", HTTPX_FAMILY)
async def test_httpx_borrowed_client_queues_at_its_own_pool_size(
    family: str, anyio_backend: str
) -> None:
    """A borrowed client's max_connections bounds what the transport lets into the library."""
    lib, make = HTTPX_FAMILY[family]
    async with app_server() as server:
        limits = lib.Limits(max_connections=2, max_keepalive_connections=2)
        async with lib.AsyncClient(limits=limits) as borrowed:
            client = ac.Client(make(borrowed), server.url, strategy=ONCE)

            async def one() -> None:
                await client.get("slow")

            started = time.perf_counter()
            async with anyio.create_task_group() as group:
                for _ in range(6):
                    group.start_soon(one)
            # Six 0.1 s answers two at a time: three rounds.
            assert time.perf_counter() - started >= 0.29


async def test_a_streamed_gzip_body_is_decoded_in_bounded_pieces(
    transport: Transport, streaming: tuple[StreamingApp, str]
) -> None:
    """client.stream() hands out a gzip body decoded, no piece above 64 KiB, and max_size
    stops the bomb."""
    _, url = streaming
    client = ac.Client(transport, url, strategy=ONCE)
    total = 0
    async with client.stream(ac.get("bomb"), timeout=20.0) as response:
        async for piece in response.aiter_bytes():
            assert len(piece) <= 64 * 1024
            total += len(piece)
    assert total == BOMB_SIZE

    async def read_bomb() -> None:
        async with client.stream(ac.get("bomb"), timeout=20.0, max_size=MiB) as response:
            await response.aread()

    with pytest.raises(ac.ResponseTooLargeError):
        await read_bomb()
