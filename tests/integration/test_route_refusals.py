"""Policy refusals and outgoing-call failures escaping a handler are answered, not crashed on.

One table, three frameworks (FastAPI under uvicorn, aiohttp, Sanic), real sockets:
a route's own ``@RateLimiter``, ``@Timeout``, ``@CircuitBreaker`` and ``@Bulkhead``
answer 429/504/503 like the app-wide guards; an outgoing call's deadline is the
request's own (504), its failure a bad gateway (502); the app may override.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import anyio
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

import aio_client as ac
from aio_client import Bulkhead, CircuitBreaker, RateLimiter, Timeout
from aio_client.metrics import PrometheusMetrics
from aio_client.transports import AiohttpTransport

from .servers import refused_url, serve_aiohttp
from .test_route_guards import serve as serve_routes

FRAMEWORKS = ["fastapi", "aiohttp", "sanic"]
Work = Callable[[], Awaitable[str]]


def _routes(upstream: str) -> dict[str, Work]:
    """Each route's work: a policy-guarded function, or an outgoing call."""
    limiter = RateLimiter((1, 60.0))
    breaker = CircuitBreaker(failure_threshold=1, break_duration=60.0)
    bulkhead = Bulkhead(1)
    client = ac.Client(AiohttpTransport(), upstream, strategy=ac.single_attempt_strategy())
    guarded_client = ac.Client(
        AiohttpTransport(),
        upstream,
        strategy=ac.single_attempt_strategy(),
        circuit_breaker=CircuitBreaker(failure_threshold=1, break_duration=60.0),
    )

    @limiter
    async def limited() -> str:
        return "ok"

    @Timeout(0.05)
    async def slow() -> str:
        await anyio.sleep(1.0)
        return "late"

    @breaker
    async def broken() -> str:
        raise RuntimeError("the dependency failed")

    @bulkhead
    async def crowded() -> str:
        await anyio.sleep(0.3)
        return "ok"

    async def upstream_down() -> str:
        await client.get("x")
        return "unreachable"

    async def upstream_open() -> str:
        await guarded_client.get("x")
        return "unreachable"

    async def upstream_slow() -> str:
        await client.get("x", timeout=0.05)
        return "unreachable"

    async def own_bug() -> str:
        raise ValueError("a bug in the handler")

    return {
        "limited": limited,
        "slow": slow,
        "broken": broken,
        "crowded": crowded,
        "upstream_down": upstream_down,
        "upstream_open": upstream_open,
        "upstream_slow": upstream_slow,
        "own_bug": own_bug,
    }


@asynccontextmanager
async def serve(framework: str, works: dict[str, Work], **options: Any) -> AsyncIterator[str]:
    """``works`` as GET routes ``/<name>`` behind the framework's adapter."""
    async with serve_routes(
        framework, {name: (work, []) for name, work in works.items()}, **options
    ) as url:
        yield url


async def fetch(session: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, str], str]:
    async with session.get(url) as resp:
        return resp.status, {k.lower(): v for k, v in resp.headers.items()}, await resp.text()


@pytest.mark.parametrize("framework", FRAMEWORKS)
async def test_refusals_and_upstream_failures_map_to_statuses(
    framework: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The table: 429 + Retry-After, 504 + X-Do-Not-Retry, 503, 502 (503 + Retry-After for an
    upstream whose breaker is open); a bug stays a 500;
    no traceback is logged for the mapped ones; the server metrics count them."""
    registry = CollectorRegistry()
    metrics = PrometheusMetrics(registry)
    with refused_url() as upstream:
        works = _routes(upstream)
        async with (
            serve(framework, works, observer=metrics.server_observer) as url,
            aiohttp.ClientSession() as session,
        ):
            first = await fetch(session, f"{url}/limited")
            limited = await fetch(session, f"{url}/limited")
            slow = await fetch(session, f"{url}/slow")
            await fetch(session, f"{url}/broken")  # the failure that opens the breaker
            broken = await fetch(session, f"{url}/broken")
            async with anyio.create_task_group() as group:
                group.start_soon(fetch, session, f"{url}/crowded")
                await anyio.sleep(0.1)
                crowded = await fetch(session, f"{url}/crowded")
            down = await fetch(session, f"{url}/upstream_down")
            await fetch(session, f"{url}/upstream_open")  # fails, and opens the breaker
            upstream_open = await fetch(session, f"{url}/upstream_open")
            upstream_slow = await fetch(session, f"{url}/upstream_slow")
            tracebacks = [r for r in caplog.records if r.exc_info and r.levelno >= 40]
            bug = await fetch(session, f"{url}/own_bug")
    assert first[0] == 200
    assert limited[0] == 429
    assert float(limited[1]["retry-after"]) > 0
    assert (slow[0], slow[1].get("x-do-not-retry")) == (504, "1")
    assert broken[0] == 503
    assert float(broken[1]["retry-after"]) > 0
    assert crowded[0] == 503
    assert down[0] == 502
    assert "bad gateway" in down[2]
    assert upstream_open[0] == 503
    assert float(upstream_open[1]["retry-after"]) > 0
    assert upstream_slow[0] in (502, 504)  # refused at once (502) or timed out (504)
    assert bug[0] == 500
    assert [r.getMessage() for r in tracebacks if "dependency failed" not in str(r.exc_info)] == []
    refused = "aio_client_server_guard_refused_total"
    labels = {"method": "GET", "priority": "normal"}
    assert (
        registry.get_sample_value(
            refused, {**labels, "route": "/limited", "reason": "rate_limited"}
        )
        == 1.0
    )


async def test_an_outgoing_calls_deadline_is_the_requests_own_504() -> None:
    """A handler whose upstream call runs out of the request's budget answers 504."""

    async def hang(request: web.Request) -> web.Response:
        await anyio.sleep(5.0)
        return web.Response(text="late")  # pragma: no cover

    upstream_app = web.Application()
    upstream_app.router.add_get("/hang", hang)
    async with serve_aiohttp(upstream_app) as upstream:
        client = ac.Client(AiohttpTransport(), upstream, strategy=ac.single_attempt_strategy())

        async def work() -> str:
            await client.get("hang", timeout=0.1)
            return "unreachable"

        async with (
            serve("aiohttp", {"call": work}) as url,
            aiohttp.ClientSession() as session,
        ):
            status, headers, _ = await fetch(session, f"{url}/call")
        await client.aclose()
    assert (status, headers.get("x-do-not-retry")) == (504, "1")


@pytest.mark.parametrize("framework", FRAMEWORKS)
async def test_the_app_may_override_the_mapping(framework: str) -> None:
    """error_status= is asked first: here a rate limit answers 503 and a bug 418."""

    def mine(exc: Exception) -> int | None:
        if isinstance(exc, ac.RateLimitedError):
            return 503
        if isinstance(exc, ValueError):
            return 418
        return None

    with refused_url() as upstream:
        works = _routes(upstream)
        async with (
            serve(framework, works, error_status=mine) as url,
            aiohttp.ClientSession() as session,
        ):
            await fetch(session, f"{url}/limited")
            limited = await fetch(session, f"{url}/limited")
            bug = await fetch(session, f"{url}/own_bug")
            slow = await fetch(session, f"{url}/slow")
    assert (limited[0], bug[0], slow[0]) == (503, 418, 504)
