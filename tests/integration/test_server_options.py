"""The one set of server options: priority trust, several observers, bad options."""

from __future__ import annotations

from typing import Any

import aiohttp
import anyio
import pytest
from aiohttp import web
from fastapi import FastAPI
from fastapi.responses import PlainTextResponse
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry

import aio_client as ac
from aio_client.metrics import OpenTelemetryInstrumentation, PrometheusMetrics
from aio_client.server import (
    ClientInfo,
    DeadlineMiddleware,
    PriorityLoadShedder,
    ServerOutcome,
    aiohttp_middleware,
    trusted_peers,
)
from aio_client.server.sanic import setup as sanic_setup
from aio_client.transports import MemoryTransport

from .servers import serve_aiohttp, serve_uvicorn


def _saturated_asgi(**options: Any) -> tuple[Any, anyio.Event, PriorityLoadShedder]:
    """An ASGI app behind a shedder whose NORMAL share is full while ``release`` is unset."""
    shedder = PriorityLoadShedder(max_in_flight=2, normal_share=0.5, low_share=0.5)
    release = anyio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["path"] == "/hold":
            await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    return DeadlineMiddleware(app, load_shedder=shedder, **options), release, shedder


async def _statuses_while_saturated(middleware: Any, release: anyio.Event, **headers: str) -> int:
    """The status of one request carrying ``headers`` while another holds the NORMAL share."""
    transport = MemoryTransport(middleware)
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(transport.send, ac.Request("GET", "http://svc/hold"))
        with anyio.fail_after(2):
            while middleware.core.load_shedder.in_flight == 0:  # noqa: ASYNC110 - its bookkeeping
                await anyio.sleep(0.001)
        response = await transport.send(ac.Request("GET", "http://svc/", ac.Headers(headers)))
        release.set()
    return response.status


async def test_untrusted_high_priority_is_shed_and_a_trusted_one_is_not() -> None:
    """X-Request-Priority: high from an untrusted peer gets the default (shed); trusted passes."""
    untrusted, release, _ = _saturated_asgi(trust_priority=trusted_peers("10.0.0.0/8"))
    assert (
        await _statuses_while_saturated(untrusted, release, **{"X-Request-Priority": "high"}) == 503
    )
    assert untrusted.stats.untrusted_priority == 1
    trusted, release, _ = _saturated_asgi(trust_priority=trusted_peers("127.0.0.0/8"))
    assert (
        await _statuses_while_saturated(trusted, release, **{"X-Request-Priority": "high"}) == 200
    )
    assert trusted.stats.untrusted_priority == 0


async def test_by_default_nobody_may_raise_a_priority() -> None:
    """Without trust_priority, an inbound high priority is ignored: the request is shed."""
    middleware, release, shedder = _saturated_asgi()
    status = await _statuses_while_saturated(middleware, release, **{"X-Request-Priority": "high"})
    assert status == 503
    assert shedder.shed[ac.Priority.NORMAL] == 1


async def test_anyone_may_lower_their_priority() -> None:
    """A low priority restricts only its sender, so it is honoured from an untrusted peer."""
    seen: list[ac.Priority | None] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(ac.current_priority())
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    middleware = DeadlineMiddleware(app)
    request = ac.Request("GET", "http://svc/", ac.Headers({"X-Request-Priority": "low"}))
    assert (await MemoryTransport(middleware).send(request)).status == 200
    assert seen == [ac.Priority.LOW]
    assert middleware.stats.untrusted_priority == 0


async def test_trust_reads_the_forwarded_address_when_that_header_is_trusted() -> None:
    """With forwarded_header, trusted_peers checks the client the proxy names, not the proxy."""
    seen: list[ac.Priority | None] = []
    app = FastAPI()
    app.add_middleware(
        DeadlineMiddleware,
        forwarded_header="x-forwarded-for",
        trust_priority=trusted_peers("10.1.0.0/16"),
    )

    @app.get("/who")
    async def who() -> PlainTextResponse:
        seen.append(ac.current_priority())
        return PlainTextResponse("ok")

    async with (
        serve_uvicorn(app, proxy_headers=False) as url,
        aiohttp.ClientSession() as session,
    ):
        for forwarded in ("10.1.2.3", "203.0.113.9"):
            headers = {"X-Request-Priority": "high", "X-Forwarded-For": forwarded}
            async with session.get(f"{url}/who", headers=headers) as resp:
                assert resp.status == 200
    assert seen == [ac.Priority.HIGH, ac.Priority.NORMAL]


async def test_a_trust_function_sees_the_headers_and_its_errors_mean_no() -> None:
    """A custom trust_priority gets the ClientInfo with headers; one that raises trusts nobody."""
    seen: list[ac.Priority | None] = []

    def mesh_identity(client: ClientInfo) -> bool:
        headers = dict(client.headers)
        if "x-explode" in headers:
            raise LookupError("broken trust function")
        return headers.get("x-mesh-identity") == "billing"

    async def handler(request: web.Request) -> web.Response:
        seen.append(ac.current_priority())
        return web.Response(text="ok")

    app = web.Application(middlewares=[aiohttp_middleware(trust_priority=mesh_identity)])
    app.router.add_get("/", handler)
    async with serve_aiohttp(app) as url, aiohttp.ClientSession() as session:
        for extra in (
            {"X-Mesh-Identity": "billing"},
            {"X-Mesh-Identity": "web"},
            {"X-Explode": "1"},
        ):
            headers = {"X-Request-Priority": "high", **extra}
            async with session.get(f"{url}/", headers=headers) as resp:
                assert resp.status == 200
    assert seen == [ac.Priority.HIGH, ac.Priority.NORMAL, ac.Priority.NORMAL]


def test_bad_options_are_config_errors_naming_them() -> None:
    """Unknown options, a non-callable trust and bad networks fail at construction."""
    with pytest.raises(ac.ConfigError, match=r"unknown server option.*'timeuot'"):
        DeadlineMiddleware(FastAPI(), timeuot=1.0)  # type: ignore[call-arg]
    with pytest.raises(ac.ConfigError, match="trust_priority"):
        aiohttp_middleware(trust_priority="10.0.0.0/8")  # type: ignore[arg-type]
    with pytest.raises(ac.ConfigError, match="networks"):
        trusted_peers("10.0.0.0/33")
    with pytest.raises(ac.ConfigError, match="networks"):
        trusted_peers()
    with pytest.raises(ac.ConfigError, match="observer"):
        DeadlineMiddleware(FastAPI(), observer=[print, "not callable"])  # type: ignore[list-item]


def test_every_adapter_takes_the_same_options() -> None:
    """DeadlineMiddleware, aiohttp_middleware and sanic.setup accept the one option set."""
    from sanic import Sanic

    options: dict[str, Any] = {
        "timeout": 3.0,
        "max_timeout": 9.0,
        "low_timeout": 0.01,
        "priority": "low",
        "trust_priority": trusted_peers("127.0.0.1"),
        "load_shedder": PriorityLoadShedder(max_in_flight=4),
        "observer": [print],
        "guards": (),
        "client_key": None,
        "forwarded_header": "x-forwarded-for",
        "stream_timeout": 300.0,
        "websocket_timeout": 3600.0,
    }
    cores = [
        DeadlineMiddleware(FastAPI(), **options).core,
        aiohttp_middleware(**options).core,
        sanic_setup(Sanic("options_test"), **options).core,
    ]
    for core in cores:
        assert (core.timeout, core.max_timeout, core.low_timeout) == (3.0, 9.0, 0.01)
        assert core.priority is ac.Priority.LOW
        assert core.trust_priority is options["trust_priority"]
        assert (core.stream_timeout, core.websocket_timeout) == (300.0, 3600.0)


async def test_prometheus_and_opentelemetry_observe_the_same_server() -> None:
    """observer=[prometheus, otel]: both record every request, in-flight gauges included."""
    registry = CollectorRegistry()
    prometheus = PrometheusMetrics(registry)
    reader = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    otel = OpenTelemetryInstrumentation(meters, TracerProvider(shutdown_on_exit=False))
    outcomes: list[ServerOutcome] = []

    def broken(outcome: ServerOutcome) -> None:
        raise RuntimeError("a broken observer must not stop the others")

    app = FastAPI()
    app.add_middleware(
        DeadlineMiddleware,
        observer=[prometheus.server_observer, broken, otel.server_observer, outcomes.append],
    )

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> PlainTextResponse:
        return PlainTextResponse("ok")

    async with serve_uvicorn(app) as url, aiohttp.ClientSession() as session:
        for item_id in (1, 2, 3):
            async with session.get(f"{url}/items/{item_id}") as resp:
                assert resp.status == 200
    labels = {"method": "GET", "route": "/items/{item_id}", "status": "2xx", "priority": "normal"}
    assert registry.get_sample_value("aio_client_server_requests_total", labels) == 3
    assert registry.get_sample_value("aio_client_server_in_flight_requests", {}) == 0
    data = reader.get_metrics_data()
    assert data is not None
    durations = [
        point
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == "http.server.request.duration"
        for point in metric.data.data_points
        if isinstance(point, HistogramDataPoint)
    ]
    assert sum(point.count for point in durations) == 3
    assert [o.route for o in outcomes] == ["/items/{item_id}"] * 3
    meters.shutdown()
