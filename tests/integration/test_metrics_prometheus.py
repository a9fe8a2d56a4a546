"""PrometheusMetrics over real sockets: client calls, server requests, /metrics over HTTP."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiohttp
import anyio
import pytest
from aiohttp import web
from fastapi import FastAPI
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, make_asgi_app
from prometheus_client.parser import text_string_to_metric_families

import aio_client as ac
from aio_client.metrics import PrometheusMetrics
from aio_client.server import (
    DeadlineMiddleware,
    PriorityLoadShedder,
    aiohttp_middleware,
    trusted_peers,
)
from aio_client.transports import AiohttpTransport, HttpxTransport
from tests.integration.servers import serve_aiohttp, serve_uvicorn

from .servers import app_server

Transport = Callable[[], Any]
TRANSPORTS: dict[str, Transport] = {"aiohttp": AiohttpTransport, "httpx": HttpxTransport}
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(session: aiohttp.ClientSession, url: str, **headers: str) -> Samples:
    """GET ``url`` and parse the Prometheus text exposition into samples."""
    async with session.get(url, headers=headers) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = await resp.text()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def sample(samples: Samples, name: str, **labels: str) -> float | None:
    """One sample's value, or ``None``."""
    return samples.get((name, frozenset(labels.items())))


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    """A sample's value in ``registry``, 0.0 when absent."""
    found = registry.get_sample_value(name, labels)
    return 0.0 if found is None else found


@pytest.mark.parametrize("transport", sorted(TRANSPORTS))
async def test_client_series_after_real_calls(transport: str) -> None:
    """Calls, retries, statuses and durations over a real socket land in the right series."""
    registry = CollectorRegistry()
    async with (
        app_server() as server,
        ac.Client(
            TRANSPORTS[transport](),
            server.url,
            strategy=ac.sequential_strategy(3, ac.constant_delays(0.0)),
            observers=[PrometheusMetrics(registry)],
        ) as client,
    ):
        assert (await client.request(ac.get("record", query={"fail": 1}))).status == 200
        for code in (200, 200, 200, 404):
            await client.request(ac.get("status/{code}", path_params={"code": code}))
    labels = {"endpoint": server.url, "method": "GET"}
    record = {**labels, "route": "record"}
    assert value(registry, "aio_client_requests_total", **record, status="2xx") == 1
    assert value(registry, "aio_client_attempts_total", **record, kind="first", status="5xx") == 1
    assert value(registry, "aio_client_attempts_total", **record, kind="retry", status="2xx") == 1
    status = {**labels, "route": "status/{code}"}
    assert value(registry, "aio_client_requests_total", **status, status="2xx") == 3
    assert value(registry, "aio_client_requests_total", **status, status="4xx") == 1
    count = value(registry, "aio_client_request_duration_seconds_count", **status, status="2xx")
    total = value(registry, "aio_client_request_duration_seconds_sum", **status, status="2xx")
    assert count == 3
    assert 0 < total < 3.0
    retry_count = value(
        registry, "aio_client_attempt_duration_seconds_count", **record, kind="retry", status="2xx"
    )
    assert retry_count == 1


async def test_hedge_over_real_sockets_counts_winner_and_cancelled_loser() -> None:
    """The first attempt hangs, the hedge answers: won hedge, cancelled first attempt."""
    registry = CollectorRegistry()
    released = anyio.Event()

    async def work(request: web.Request) -> web.Response:
        if request.headers.get("X-Request-Attempt") == "1":
            with anyio.move_on_after(5):
                await released.wait()
        return web.Response(text="done")

    app = web.Application()
    app.router.add_get("/work/{id}", work)
    async with (
        serve_aiohttp(app) as url,
        ac.Client(
            AiohttpTransport(),
            url,
            strategy=ac.parallel_strategy(2, 0.05),
            observers=[PrometheusMetrics(registry)],
        ) as client,
    ):
        response = await client.request(ac.get("work/{id}", path_params={"id": 1}))
        released.set()
    assert response.attempt == 2
    labels = {"endpoint": url, "method": "GET", "route": "work/{id}"}
    assert value(registry, "aio_client_hedges_total", **labels, result="won") == 1
    assert (
        value(registry, "aio_client_attempts_total", **labels, kind="first", status="hedge_lost")
        == 1
    )
    assert value(registry, "aio_client_attempts_total", **labels, kind="hedge", status="2xx") == 1


async def test_fastapi_server_series_scraped_from_its_own_metrics_endpoint() -> None:
    """Templates, deadlines, shedding, disconnects, bad headers and in-flight, over HTTP."""
    registry = CollectorRegistry()
    metrics = PrometheusMetrics(registry)
    app = FastAPI()
    app.add_middleware(
        DeadlineMiddleware,
        observer=metrics.server_observer,
        load_shedder=PriorityLoadShedder(max_in_flight=2),
        trust_priority=trusted_peers("127.0.0.1"),
    )
    app.mount("/metrics", make_asgi_app(registry=registry))
    entered = anyio.Event()

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        return {"id": item_id}

    @app.get("/hang")
    async def hang() -> str:
        entered.set()
        await anyio.sleep(10)
        return "never"  # pragma: no cover

    async with serve_uvicorn(app) as url, aiohttp.ClientSession() as session:
        for i in range(3):
            async with session.get(f"{url}/items/{i}?token=secret") as resp:
                assert resp.status == 200
        async with session.get(f"{url}/items/9", headers={"X-Request-Timeout": "banana"}) as resp:
            assert resp.status == 200
        async with session.get(f"{url}/items/9", headers={"X-Request-Timeout": "0"}) as resp:
            assert resp.status == 504
        async with session.get(f"{url}/nowhere/{42}") as resp:
            assert resp.status == 404
        async with anyio.create_task_group() as tg:
            tg.start_soon(_get, session, f"{url}/hang")
            with anyio.fail_after(2):
                await entered.wait()
            async with session.get(f"{url}/items/1") as resp:
                assert resp.status == 503  # NORMAL may use 1 of the 2 slots: shed
            during = await scrape(session, f"{url}/metrics/", **{"X-Request-Priority": "high"})
            tg.cancel_scope.cancel()  # the client hangs up on /hang: 499
        disconnected = {"method": "GET", "route": "/hang", "priority": "normal"}
        prefix = "aio_client_server"
        with anyio.fail_after(2):
            while not value(registry, f"{prefix}_client_disconnected_total", **disconnected):  # noqa: ASYNC110
                await anyio.sleep(0.01)  # the server counts the hang-up in its own time
        after = await scrape(session, f"{url}/metrics/")
    assert sample(during, "aio_client_server_in_flight_requests") == 2  # /hang and the scrape
    assert sample(after, "aio_client_server_in_flight_requests") == 1  # the scrape itself
    items = {"method": "GET", "route": "/items/{item_id}", "priority": "normal"}
    assert sample(after, "aio_client_server_requests_total", **items, status="2xx") == 4
    assert sample(after, "aio_client_server_requests_total", **items, status="5xx") == 2
    assert sample(after, "aio_client_server_deadline_exceeded_total", **items, phase="arrival") == 1
    assert sample(after, "aio_client_server_shed_total", **items) == 1
    assert (
        sample(
            after, "aio_client_server_invalid_headers_total", method="GET", route="/items/{item_id}"
        )
        == 1
    )
    unmatched = {"method": "GET", "route": "<unmatched>", "priority": "normal", "status": "4xx"}
    assert sample(after, "aio_client_server_requests_total", **unmatched) == 1
    assert sample(after, "aio_client_server_client_disconnected_total", **disconnected) == 1
    assert sample(after, "aio_client_server_requests_total", **disconnected, status="4xx") == 1
    routes = {dict(labels).get("route") for (_, labels) in after}
    assert not any(route and ("token" in route or route == "/items/1") for route in routes)


async def test_deadline_while_handling_on_aiohttp_scraped_from_aiohttp() -> None:
    """The aiohttp middleware labels by resource template; /metrics served by aiohttp."""
    registry = CollectorRegistry()
    metrics = PrometheusMetrics(registry)

    async def item(request: web.Request) -> web.Response:
        if request.match_info["id"] == "slow":
            await anyio.sleep(10)
        if request.match_info["id"] == "gone":
            raise web.HTTPNotFound()
        return web.Response(text="ok")

    async def exposition(request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    app = web.Application(
        middlewares=[
            aiohttp_middleware(
                observer=metrics.server_observer, trust_priority=trusted_peers("127.0.0.1")
            )
        ]
    )
    app.router.add_get("/items/{id}", item)
    app.router.add_get("/metrics", exposition)
    async with serve_aiohttp(app) as url, aiohttp.ClientSession() as session:
        for path, headers in [
            ("/items/1", {}),
            ("/items/2", {"X-Request-Priority": "low"}),
            ("/items/gone", {}),
            ("/items/slow", {"X-Request-Timeout": "0.05"}),
            ("/missing?q=1", {}),
        ]:
            async with session.get(url + path, headers=headers) as resp:
                await resp.read()
        samples = await scrape(session, f"{url}/metrics")
    requests = "aio_client_server_requests_total"
    normal = {"method": "GET", "route": "/items/{id}", "priority": "normal"}
    assert sample(samples, requests, **normal, status="2xx") == 1
    assert sample(samples, requests, **{**normal, "priority": "low"}, status="2xx") == 1
    assert sample(samples, requests, **normal, status="4xx") == 1  # raise HTTPNotFound
    assert sample(samples, requests, **normal, status="5xx") == 1  # the deadline: 504
    deadline = "aio_client_server_deadline_exceeded_total"
    assert sample(samples, deadline, **normal, phase="handling") == 1
    missing = {"method": "GET", "route": "<unmatched>", "priority": "normal", "status": "4xx"}
    assert sample(samples, requests, **missing) == 1
    histogram = "aio_client_server_request_duration_seconds"
    assert sample(samples, f"{histogram}_count", **normal, status="5xx") == 1
    # It ran until its 50 ms deadline: past the 25 ms bucket, within the 100 ms one.
    assert sample(samples, f"{histogram}_bucket", **normal, status="5xx", le="0.025") == 0
    assert sample(samples, f"{histogram}_bucket", **normal, status="5xx", le="0.1") == 1


async def _get(session: aiohttp.ClientSession, url: str) -> None:
    async with session.get(url) as resp:
        await resp.read()  # pragma: no cover - cancelled by the test


async def test_sanic_routes_are_labelled_by_their_template() -> None:
    """The Sanic integration reports the route template and the status of raised HTTP errors."""
    from sanic import Request, response
    from sanic.exceptions import NotFound

    from .servers import sanic_app, serve_sanic

    registry = CollectorRegistry()
    metrics = PrometheusMetrics(registry)
    app, _ = sanic_app(observer=metrics.server_observer)

    async def item(request: Request, item_id: int) -> response.HTTPResponse:
        if item_id == 404:
            raise NotFound("no such item")
        return response.text("ok")

    app.add_route(item, "/items/<item_id:int>")
    async with serve_sanic(app) as url, aiohttp.ClientSession() as session:
        for item_id in (1, 2, 404):
            async with session.get(f"{url}/items/{item_id}") as resp:
                await resp.read()
    labels = {"method": "GET", "route": "/items/<item_id:int>", "priority": "normal"}
    assert value(registry, "aio_client_server_requests_total", **labels, status="2xx") == 2
    assert value(registry, "aio_client_server_requests_total", **labels, status="4xx") == 1


@pytest.mark.parametrize("transport", sorted(TRANSPORTS))
async def test_a_call_cut_by_a_propagated_deadline_reads_deadline_exceeded(
    transport: str,
) -> None:
    """A handler behind the middleware calls a hanging upstream with the inherited budget:
    however the cancellation arrives (the client's timer or the request's own scope), the
    call and its attempt are counted as deadline_exceeded, never as cancelled."""
    registry = CollectorRegistry()
    metrics = PrometheusMetrics(registry)
    async with app_server() as upstream:
        outgoing = ac.Client(
            TRANSPORTS[transport](),
            upstream.url,
            strategy=ac.single_attempt_strategy(),
            observers=[metrics],
        )

        async def handler(request: web.Request) -> web.Response:
            await outgoing.get("hang")
            return web.Response(text="unreachable")  # pragma: no cover - the upstream hangs

        app = web.Application(middlewares=[aiohttp_middleware()])
        app.router.add_get("/work", handler)
        async with serve_aiohttp(app) as url, aiohttp.ClientSession() as session:
            for _ in range(3):
                async with session.get(f"{url}/work", headers={"X-Request-Timeout": "0.2"}) as resp:
                    assert resp.status == 504
        await outgoing.aclose()
    common = {"endpoint": upstream.url.replace("http://", "http://"), "method": "GET"}
    calls = {
        status: value(registry, "aio_client_requests_total", **common, route="hang", status=status)
        for status in ("deadline_exceeded", "cancelled")
    }
    attempts = {
        status: value(
            registry,
            "aio_client_attempts_total",
            **common,
            route="hang",
            kind="first",
            status=status,
        )
        for status in ("deadline_exceeded", "cancelled")
    }
    assert calls == {"deadline_exceeded": 3.0, "cancelled": 0.0}
    assert attempts == {"deadline_exceeded": 3.0, "cancelled": 0.0}


async def test_a_caller_giving_up_reads_cancelled() -> None:
    """A caller that cancels its own call before any deadline is counted as cancelled."""
    registry = CollectorRegistry()
    async with (
        app_server() as upstream,
        ac.Client(
            AiohttpTransport(),
            upstream.url,
            strategy=ac.single_attempt_strategy(),
            observers=[PrometheusMetrics(registry)],
        ) as client,
    ):
        with anyio.move_on_after(0.1):
            await client.get("hang", timeout=5.0)
    labels = {"endpoint": upstream.url, "method": "GET", "route": "hang"}
    assert value(registry, "aio_client_requests_total", **labels, status="cancelled") == 1.0
    assert value(registry, "aio_client_requests_total", **labels, status="deadline_exceeded") == 0.0


async def test_guard_refusals_are_counted() -> None:
    """A request a rate-limit guard refuses (429) is counted in server_guard_refused."""
    registry = CollectorRegistry()
    metrics = PrometheusMetrics(registry)
    limiter = ac.RateLimiter((1, 60.0))

    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application(
        middlewares=[aiohttp_middleware(guards=[limiter], observer=metrics.server_observer)]
    )
    app.router.add_get("/items", ok)
    async with serve_aiohttp(app) as url, aiohttp.ClientSession() as session:
        statuses = []
        for _ in range(2):
            async with session.get(f"{url}/items") as resp:
                statuses.append(resp.status)
    assert statuses == [200, 429]
    labels = {"method": "GET", "route": "/items", "priority": "normal"}
    refused = "aio_client_server_guard_refused_total"
    assert value(registry, refused, **labels, reason="rate_limited") == 1.0
