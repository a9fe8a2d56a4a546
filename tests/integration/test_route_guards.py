"""Guards on one route (@guarded, guard_dependency) on FastAPI, aiohttp and Sanic servers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import anyio
import pytest
from aiohttp import web
from fastapi import Depends, FastAPI, HTTPException
from sanic import Request as SanicRequest
from sanic import response as sanic_response

from aio_client import Bulkhead, CircuitBreaker, CircuitState, RateLimiter
from aio_client.server import DeadlineMiddleware, aiohttp_middleware, guard_dependency, guarded

from .servers import sanic_app, serve_aiohttp, serve_sanic, serve_uvicorn

FRAMEWORKS = ["fastapi", "aiohttp", "sanic"]
Body = Callable[[], Awaitable[str]]


@asynccontextmanager
async def serve(
    framework: str, routes: dict[str, tuple[Body, list[Any]]], **options: Any
) -> AsyncIterator[str]:
    """GET ``/<name>`` runs ``body`` behind ``@guarded(*guards)``, on ``framework``."""
    if framework == "fastapi":
        app = FastAPI()
        app.add_middleware(DeadlineMiddleware, **options)
        for name, (body, guards) in routes.items():

            @guarded(*guards)
            async def endpoint(body: Body = body) -> str:
                return await body()

            app.add_api_route(f"/{name}", endpoint, methods=["GET"])
        async with serve_uvicorn(app) as url:
            yield url
        return
    if framework == "aiohttp":
        web_app = web.Application(middlewares=[aiohttp_middleware(**options)])
        for name, (body, guards) in routes.items():

            @guarded(*guards)
            async def handle(request: web.Request, body: Body = body) -> web.Response:
                return web.Response(text=await body())

            web_app.router.add_get(f"/{name}", handle)
        async with serve_aiohttp(web_app) as url:
            yield url
        return
    sanic, _ = sanic_app(**options)
    for name, (body, guards) in routes.items():

        @guarded(*guards)
        async def sanic_handle(
            request: SanicRequest, body: Body = body
        ) -> sanic_response.HTTPResponse:
            return sanic_response.text(await body())

        sanic.add_route(sanic_handle, f"/{name}", name=name)
    async with serve_sanic(sanic) as url:
        yield url


async def fetch(session: aiohttp.ClientSession, url: str, **headers: str) -> tuple[int, str | None]:
    async with session.get(url, headers=headers) as resp:
        await resp.read()
        return resp.status, resp.headers.get("Retry-After")


async def quick() -> str:
    return "ok"


async def slow() -> str:
    await anyio.sleep(0.3)
    return "ok"


@pytest.mark.parametrize("framework", FRAMEWORKS)
async def test_a_routes_guards_answer_like_the_app_wide_ones(framework: str) -> None:
    """A route's rate limiter answers 429 + Retry-After, its bulkhead 503; the other
    routes are untouched; app-wide guards run first."""
    app_limiter = RateLimiter((100, 60.0))
    routes: dict[str, tuple[Body, list[Any]]] = {
        "limited": (quick, [RateLimiter((1, 60.0))]),
        "crowded": (slow, [Bulkhead(1)]),
        "free": (quick, []),
    }
    async with (
        serve(framework, routes, guards=[app_limiter]) as url,
        aiohttp.ClientSession() as session,
    ):
        assert await fetch(session, f"{url}/limited") == (200, None)
        status, retry_after = await fetch(session, f"{url}/limited")
        assert status == 429
        assert retry_after is not None
        assert float(retry_after) > 0
        async with anyio.create_task_group() as group:
            group.start_soon(fetch, session, f"{url}/crowded")
            await anyio.sleep(0.1)
            assert (await fetch(session, f"{url}/crowded"))[0] == 503
        assert (await fetch(session, f"{url}/crowded"))[0] == 200  # the permit came back
        assert [(await fetch(session, f"{url}/free"))[0] for _ in range(3)] == [200] * 3
    # The app-wide limiter saw every request, the refused ones included.
    assert app_limiter.available() < 100 - 6  # 8 requests, under 2 tokens refilled since


@pytest.mark.parametrize("framework", FRAMEWORKS)
async def test_permits_come_back_when_the_deadline_cuts_the_handler(framework: str) -> None:
    """A bulkhead permit held by a handler cut at its deadline is given back."""
    bulkhead = Bulkhead(1)

    async def hang() -> str:
        await anyio.sleep(5.0)
        return "late"  # pragma: no cover

    async with (
        serve(framework, {"hang": (hang, [bulkhead]), "ok": (quick, [bulkhead])}) as url,
        aiohttp.ClientSession() as session,
    ):
        assert (await fetch(session, f"{url}/hang", **{"X-Request-Timeout": "0.1"}))[0] == 504
        assert (await fetch(session, f"{url}/ok"))[0] == 200


async def test_the_dependency_form_and_the_openapi_schema() -> None:
    """guard_dependency() refuses like @guarded; a @guarded endpoint's OpenAPI schema and
    parameters are the undecorated endpoint's."""

    async def items(limit: int = 10, q: str | None = None) -> dict[str, Any]:
        return {"limit": limit, "q": q}

    plain, decorated = FastAPI(), FastAPI()
    plain.get("/items")(items)
    decorated.get("/items")(guarded(RateLimiter((5, 1.0)))(items))
    assert decorated.openapi()["paths"] == plain.openapi()["paths"]

    app = FastAPI()
    app.add_middleware(DeadlineMiddleware)

    @app.get("/dep", dependencies=[Depends(guard_dependency(RateLimiter((1, 60.0))))])
    async def dep(limit: int = 1) -> dict[str, int]:
        return {"limit": limit}

    async with serve_uvicorn(app) as url, aiohttp.ClientSession() as session:
        async with session.get(f"{url}/dep?limit=3") as resp:
            assert (resp.status, await resp.json()) == (200, {"limit": 3})
        assert (await fetch(session, f"{url}/dep"))[0] == 429


def test_guarded_needs_an_async_handler() -> None:
    """@guarded on a plain function is a ConfigError."""
    import aio_client as ac

    def sync_handler() -> str:
        return "x"

    with pytest.raises(ac.ConfigError, match="async def"):
        guarded(RateLimiter((1, 1.0)))(sync_handler)  # type: ignore[arg-type]


@pytest.mark.parametrize("framework", FRAMEWORKS)
async def test_a_routes_retry_reruns_the_body_within_the_requests_budget(framework: str) -> None:
    """@retry on a route's body re-runs it after a retryable failure, and never past the
    request's deadline: a body that keeps failing stops retrying when the budget cannot
    hold another try, and the request ends with its last error (the framework's 500)."""
    import aio_client as ac

    tries = {"flaky": 0, "broken": 0}

    @ac.retry(on=ConnectionError, attempts=3, delays=ac.constant_delays(0.01))
    async def flaky() -> str:
        tries["flaky"] += 1
        if tries["flaky"] < 3:
            raise ConnectionError("the store blinked")
        return "ok"

    @ac.retry(on=ConnectionError, attempts=100, delays=ac.constant_delays(0.05))
    async def broken() -> str:
        tries["broken"] += 1
        raise ConnectionError("the store is down")

    routes: dict[str, tuple[Body, list[Any]]] = {"flaky": (flaky, []), "broken": (broken, [])}
    async with serve(framework, routes) as url, aiohttp.ClientSession() as session:
        assert (await fetch(session, f"{url}/flaky"))[0] == 200
        status, _ = await fetch(session, f"{url}/broken", **{"X-Request-Timeout": "0.3"})
    assert tries["flaky"] == 3
    assert status == 500
    assert tries["broken"] <= 8  # stopped by the 0.3 s budget, not by the 100 attempts


async def test_a_route_marked_low_is_shed_first_whatever_the_header_says() -> None:
    """A route's own priority decides its shedding, above the caller's header: with one
    slow LOW export running, a second export is shed (even one sent as high) while a
    route marked HIGH still answers; the handler's outgoing calls carry the route's mark."""
    from aio_client import Priority, current_priority
    from aio_client.server import PriorityLoadShedder, trusted_peers

    shedder = PriorityLoadShedder(max_in_flight=2, normal_share=0.5, low_share=0.5)
    seen: list[Priority | None] = []
    release = anyio.Event()

    @guarded(load_shedder=shedder, priority="low")
    async def export(request: web.Request) -> web.Response:
        seen.append(current_priority())
        await release.wait()
        return web.Response(text="exported")

    @guarded(load_shedder=shedder, priority=Priority.HIGH)
    async def checkout(request: web.Request) -> web.Response:
        seen.append(current_priority())
        return web.Response(text="paid")

    app = web.Application(
        middlewares=[aiohttp_middleware(trust_priority=trusted_peers("127.0.0.1"))]
    )
    app.router.add_get("/export", export)
    app.router.add_get("/checkout", checkout)
    async with (
        serve_aiohttp(app) as url,
        aiohttp.ClientSession() as session,
        anyio.create_task_group() as group,
    ):
        group.start_soon(fetch, session, f"{url}/export")
        await anyio.sleep(0.1)
        shed = await fetch(session, f"{url}/export", **{"X-Request-Priority": "high"})
        paid = await fetch(session, f"{url}/checkout")
        release.set()
    assert shed[0] == 503
    assert shed[1] is not None
    assert paid[0] == 200
    assert seen == [Priority.LOW, Priority.HIGH]
    assert shedder.in_flight == 0
    assert shedder.shed[Priority.LOW] == 1


@pytest.mark.parametrize("framework", FRAMEWORKS)
async def test_permits_come_back_on_errors_and_hang_ups(framework: str) -> None:
    """A route's bulkhead permit is given back when the handler raises and when the
    client hangs up mid-request; a route refusal is counted by the server metrics."""
    from prometheus_client import CollectorRegistry

    from aio_client.metrics import PrometheusMetrics

    bulkhead = Bulkhead(1)
    registry = CollectorRegistry()
    metrics = PrometheusMetrics(registry)

    async def boom() -> str:
        raise RuntimeError("the handler failed")

    async def hang() -> str:
        await anyio.sleep(5.0)
        return "late"  # pragma: no cover

    routes: dict[str, tuple[Body, list[Any]]] = {
        "boom": (boom, [bulkhead]),
        "hang": (hang, [bulkhead]),
        "ok": (quick, [bulkhead]),
        "limited": (quick, [RateLimiter((1, 60.0))]),
    }
    async with (
        serve(framework, routes, observer=metrics.server_observer) as url,
        aiohttp.ClientSession() as session,
    ):
        assert (await fetch(session, f"{url}/boom"))[0] == 500
        assert (await fetch(session, f"{url}/ok"))[0] == 200
        with anyio.move_on_after(0.2):  # the client gives up mid-request
            await fetch(session, f"{url}/hang")
        for _ in range(50):  # the server notices the hang-up and cancels the handler
            if bulkhead.available == 1:
                break
            await anyio.sleep(0.02)
        assert (await fetch(session, f"{url}/ok"))[0] == 200
        await fetch(session, f"{url}/limited")
        assert (await fetch(session, f"{url}/limited"))[0] == 429
    refused = registry.get_sample_value(
        "aio_client_server_guard_refused_total",
        {"method": "GET", "route": "/limited", "priority": "normal", "reason": "rate_limited"},
    )
    assert refused == 1.0


@pytest.mark.parametrize("framework", FRAMEWORKS)
async def test_a_routes_own_refusals_are_no_failures_for_the_app_wide_breaker(
    framework: str,
) -> None:
    """A route's full bulkhead answers 503, but nothing failed: the app-wide breaker stays
    closed and the other routes keep answering."""
    breaker = CircuitBreaker(failure_threshold=2)
    routes: dict[str, tuple[Body, list[Any]]] = {
        "crowded": (slow, [Bulkhead(1)]),
        "free": (quick, []),
    }
    async with (
        serve(framework, routes, guards=[breaker]) as url,
        aiohttp.ClientSession() as session,
    ):
        statuses: list[int] = []

        async def one() -> None:
            statuses.append((await fetch(session, f"{url}/crowded"))[0])

        async with anyio.create_task_group() as group:
            for _ in range(4):
                group.start_soon(one)
        assert sorted(statuses) == [200, 503, 503, 503]
        assert breaker.state is CircuitState.CLOSED
        assert (await fetch(session, f"{url}/free"))[0] == 200


async def test_a_raised_4xx_is_an_answer_not_a_route_breaker_failure() -> None:
    """``HTTPException(404)`` raised by a handler is an answer given on purpose: neither
    ``@guarded`` nor ``guard_dependency`` counts it against the route's breaker."""
    decorated = CircuitBreaker(failure_threshold=2)
    depended = CircuitBreaker(failure_threshold=2)
    app = FastAPI()
    app.add_middleware(DeadlineMiddleware)

    @app.get("/decorated")
    @guarded(decorated)
    async def missing() -> str:
        raise HTTPException(404, "no such item")

    @app.get("/depended", dependencies=[Depends(guard_dependency(depended))])
    async def missing_too() -> str:
        raise HTTPException(404, "no such item")

    async with serve_uvicorn(app) as url, aiohttp.ClientSession() as session:
        for path in ("decorated", "depended"):
            assert [(await fetch(session, f"{url}/{path}"))[0] for _ in range(4)] == [404] * 4
    assert decorated.state is CircuitState.CLOSED
    assert depended.state is CircuitState.CLOSED


async def test_a_cancelled_request_is_neither_success_nor_failure_for_guard_dependency() -> None:
    """A half-open breaker's probe cut by its deadline does not close the breaker."""
    breaker = CircuitBreaker(failure_threshold=1, break_duration=0.1)
    app = FastAPI()
    app.add_middleware(DeadlineMiddleware)
    failing = [True]

    @app.get("/work", dependencies=[Depends(guard_dependency(breaker))])
    async def work() -> str:
        if failing[0]:
            raise RuntimeError("upstream broken")
        await anyio.sleep(1.0)
        return "late"  # pragma: no cover

    async with serve_uvicorn(app) as url, aiohttp.ClientSession() as session:
        assert (await fetch(session, f"{url}/work"))[0] == 500
        assert breaker.state is CircuitState.OPEN
        failing[0] = False
        await anyio.sleep(0.15)
        assert (await fetch(session, f"{url}/work", **{"X-Request-Timeout": "0.1"}))[0] == 504
        assert breaker.state.value == "half_open"
