"""Policies as server guards on real uvicorn (ASGI) and aiohttp servers on 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import anyio
import pytest
from aiohttp import web

from aio_client import Bulkhead, CircuitBreaker, CircuitState, RateLimiter
from aio_client.server import DeadlineMiddleware, ServerStats, aiohttp_middleware
from aio_client.server._guards import Guard

from . import servers
from .servers import serve_aiohttp
from .test_server_asgi import Scope

pytestmark = pytest.mark.parametrize("framework", ["asgi", "aiohttp"])


class Clock:
    """A hand-moved monotonic clock (seconds) for the policies."""

    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


class Handlers:
    """``/ok`` answers 200, ``/fail`` 500, ``/slow`` hangs until cancelled."""

    def __init__(self) -> None:
        self.entered = 0
        self.runs = 0

    async def status(self, path: str) -> int:
        self.runs += 1
        if path == "/fail":
            return 500
        if path == "/slow":
            self.entered += 1
            await anyio.sleep(30)
        return 200


@asynccontextmanager
async def serve_uvicorn(app: Any) -> AsyncIterator[str]:
    """uvicorn with proxy_headers off: its default rewrites ``scope["client"]`` from
    X-Forwarded-For for peers in ``forwarded_allow_ips`` (127.0.0.1, i.e. these tests),
    which would hide whether the middleware itself trusts the header."""
    async with servers.serve_uvicorn(app, proxy_headers=False) as url:
        yield url


@asynccontextmanager
async def serve(
    framework: str, guards: Sequence[Guard], **options: Any
) -> AsyncIterator[tuple[str, Handlers, ServerStats]]:
    """A server with ``guards``; yields its URL, its handlers and the core's counters."""
    handlers = Handlers()
    if framework == "asgi":

        async def app(scope: Scope, receive: Any, send: Any) -> None:
            status = await handlers.status(scope["path"])
            await send({"type": "http.response.start", "status": status, "headers": []})
            await send({"type": "http.response.body", "body": b"done"})

        middleware = DeadlineMiddleware(app, guards=guards, **options)
        async with serve_uvicorn(middleware) as url:
            yield url, handlers, middleware.stats
        return

    async def handle(request: web.Request) -> web.Response:
        return web.Response(status=await handlers.status(request.path), text="done")

    guard = aiohttp_middleware(guards=guards, **options)
    web_app = web.Application(middlewares=[guard])
    web_app.router.add_get("/{name}", handle)
    async with serve_aiohttp(web_app) as url:
        yield url, handlers, guard.stats


async def get(
    session: aiohttp.ClientSession, url: str, **headers: str
) -> tuple[int, str | None, str | None]:
    """Status, Retry-After and X-Do-Not-Retry of one GET."""
    async with session.get(url, headers=headers) as response:
        await response.read()
        return (
            response.status,
            response.headers.get("Retry-After"),
            response.headers.get("X-Do-Not-Retry"),
        )


async def test_rate_limit_answers_429_with_an_accurate_retry_after(framework: str) -> None:
    """After N requests the peer gets 429 + the limiter's wait; a spoofed XFF changes nothing."""
    clock = Clock()
    limiter = RateLimiter((3, 60.0), key=lambda client: client, clock=clock)
    async with (
        serve(framework, [limiter]) as (url, handlers, stats),
        aiohttp.ClientSession() as session,
    ):
        for _ in range(3):
            assert await get(session, f"{url}/ok") == (200, None, None)
        assert await get(session, f"{url}/ok") == (429, "20", None)
        clock.now += 5.0  # a quarter token back: 15 s to the next
        spoofed = await get(session, f"{url}/ok", **{"X-Forwarded-For": "203.0.113.9"})
        assert spoofed == (429, "15", None)
    assert handlers.runs == 3
    assert stats.rate_limited == 2
    assert limiter.available("127.0.0.1") < 1.0
    assert limiter.available("203.0.113.9") == 3.0


async def test_a_trusted_forwarded_header_keys_each_client(framework: str) -> None:
    """With forwarded_header, clients behind one proxy are limited one by one."""
    limiter = RateLimiter((1, 60.0), key=lambda client: client, clock=Clock())
    async with (
        serve(framework, [limiter], forwarded_header="x-forwarded-for") as (url, _, _),
        aiohttp.ClientSession() as session,
    ):
        first = {"X-Forwarded-For": "203.0.113.1, 127.0.0.1"}
        assert (await get(session, f"{url}/ok", **first))[0] == 200
        assert (await get(session, f"{url}/ok", **{"X-Forwarded-For": "203.0.113.2"}))[0] == 200
        assert (await get(session, f"{url}/ok", **first))[0] == 429
        assert (await get(session, f"{url}/ok"))[0] == 200  # no header: the peer's own bucket


async def test_bulkhead_answers_503_when_full_and_hang_ups_give_permits_back(
    framework: str,
) -> None:
    """Concurrent slow requests fill the bulkhead (503 next); disconnects release permits."""
    bulkhead = Bulkhead(2)
    async with serve(framework, [bulkhead]) as (url, handlers, stats):
        port = int(url.rsplit(":", 1)[1])
        streams = []
        for _ in range(2):
            stream = await anyio.connect_tcp("127.0.0.1", port)
            await stream.send(b"GET /slow HTTP/1.1\r\nHost: test\r\n\r\n")
            streams.append(stream)
        with anyio.fail_after(2):
            while handlers.entered < 2:  # noqa: ASYNC110 - the handler count is the signal
                await anyio.sleep(0.005)
        async with aiohttp.ClientSession() as session:
            assert await get(session, f"{url}/ok") == (503, None, None)
            for stream in streams:
                await stream.aclose()
            with anyio.fail_after(2):
                while bulkhead.active:  # noqa: ASYNC110 - permits come back asynchronously
                    await anyio.sleep(0.005)
            assert bulkhead.available == 2
            assert [(await get(session, f"{url}/ok"))[0] for _ in range(2)] == [200, 200]
    assert stats.refused == 1
    assert stats.client_disconnected == 2


async def test_open_breaker_answers_503_with_retry_after_then_recovers(framework: str) -> None:
    """Handler 5xx opens the breaker: 503 + Retry-After, handler not run; a probe closes it."""
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=2, break_duration=10.0, clock=clock)
    async with (
        serve(framework, [breaker]) as (url, handlers, _),
        aiohttp.ClientSession() as session,
    ):
        assert [(await get(session, f"{url}/fail"))[0] for _ in range(2)] == [500, 500]
        assert await get(session, f"{url}/ok") == (503, "10", None)
        clock.now += 7.5
        assert await get(session, f"{url}/ok") == (503, "3", None)
        assert handlers.runs == 2
        clock.now += 2.5
        assert await get(session, f"{url}/ok") == (200, None, None)
        assert breaker.state is CircuitState.CLOSED
