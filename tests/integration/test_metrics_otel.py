"""OpenTelemetry over real sockets: call and attempt spans, trace context, server spans, metrics."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import anyio
import pytest
from aiohttp import web
from fastapi import FastAPI
from fastapi.responses import PlainTextResponse
from opentelemetry.propagate import extract
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode, Tracer

import aio_client as ac
from aio_client.metrics import OpenTelemetryInstrumentation
from aio_client.server import DeadlineMiddleware, aiohttp_middleware, trusted_peers
from aio_client.transports import AiohttpTransport, HttpxTransport

from .servers import serve_aiohttp, serve_uvicorn

TRANSPORTS: dict[str, Callable[[], Any]] = {"aiohttp": AiohttpTransport, "httpx": HttpxTransport}
Asgi = Callable[[Any, Any, Any], Awaitable[None]]


@dataclass
class Telemetry:
    """SDK providers writing to memory, and the instrumentation over them."""

    instrumentation: OpenTelemetryInstrumentation
    tracer: Tracer
    spans: InMemorySpanExporter
    reader: InMemoryMetricReader

    def finished(self, kind: SpanKind) -> list[ReadableSpan]:
        """Finished spans of ``kind``, in the order they ended."""
        return [span for span in self.spans.get_finished_spans() if span.kind is kind]

    def points(self, name: str) -> list[tuple[dict[str, Any], Any]]:
        """(attributes, data point) of every point of metric ``name``."""
        data = self.reader.get_metrics_data()
        assert data is not None
        return [
            (dict(point.attributes or {}), point)
            for resource in data.resource_metrics
            for scope in resource.scope_metrics
            for metric in scope.metrics
            if metric.name == name
            for point in metric.data.data_points
        ]


def attributes_of(span: ReadableSpan) -> dict[str, Any]:
    """A finished span's attributes as a dict (the SDK types them as possibly absent)."""
    return dict(span.attributes or {})


def parent_id(span: ReadableSpan) -> int:
    """The span id of ``span``'s parent, which it must have."""
    assert span.parent is not None
    return span.parent.span_id


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    """A fresh in-memory SDK per test (test dependency only)."""
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider(shutdown_on_exit=False)
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    yield Telemetry(
        OpenTelemetryInstrumentation(meter_provider, tracer_provider),
        tracer_provider.get_tracer("test-server"),
        spans,
        reader,
    )
    tracer_provider.shutdown()
    meter_provider.shutdown()


def server_spans(app: Asgi, tracer: Tracer) -> Asgi:
    """What an ASGI OpenTelemetry instrumentation does: a SERVER span from the traceparent."""

    async def traced(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        with tracer.start_as_current_span(
            f"{scope['method']} server", context=extract(carrier), kind=SpanKind.SERVER
        ):
            await app(scope, receive, send)

    return traced


def aiohttp_server_spans(tracer: Tracer) -> Any:
    """The same for aiohttp, as an outer middleware."""

    @web.middleware
    async def traced(request: web.Request, handler: Any) -> web.StreamResponse:
        with tracer.start_as_current_span(
            f"{request.method} server", context=extract(dict(request.headers)), kind=SpanKind.SERVER
        ):
            response: web.StreamResponse = await handler(request)
            return response

    return traced


@pytest.mark.parametrize("transport", sorted(TRANSPORTS))
async def test_spans_nest_and_trace_context_reaches_the_server(
    transport: str, telemetry: Telemetry
) -> None:
    """Call span → attempt spans (retry resend_count) → the server's span, with budget, priority."""
    otel = telemetry.instrumentation
    app = FastAPI()
    app.add_middleware(
        DeadlineMiddleware, observer=otel.server_observer, trust_priority=trusted_peers("127.0.0.1")
    )
    hits: list[int] = []

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> PlainTextResponse:
        hits.append(item_id)
        return PlainTextResponse("busy" if len(hits) == 1 else "ok", 503 if len(hits) == 1 else 200)

    async with (
        serve_uvicorn(server_spans(app, telemetry.tracer)) as url,
        ac.Client(
            TRANSPORTS[transport](),
            url,
            strategy=ac.sequential_strategy(2, ac.constant_delays(0.0)),
            observers=[otel],
        ) as client,
    ):
        request = ac.get(
            "items/{item_id}",
            path_params={"item_id": 7},
            query={"token": "hidden"},
            headers={"Authorization": "Bearer hidden"},
        )
        response = await client.request(request, timeout=5.0, priority="high")
    assert response.status == 200
    (call,) = telemetry.finished(SpanKind.INTERNAL)
    attempts = sorted(
        telemetry.finished(SpanKind.CLIENT),
        key=lambda s: attributes_of(s).get("http.request.resend_count", 0),
    )
    served = telemetry.finished(SpanKind.SERVER)
    assert call.name == "GET items/{item_id}"
    assert call.parent is None
    call_span_attributes = attributes_of(call)
    assert call_span_attributes["http.response.status_code"] == 200
    assert 4.0 < call_span_attributes["aio_client.request.timeout"] <= 5.0
    assert call_span_attributes["aio_client.request.priority"] == "high"
    assert [parent_id(a) for a in attempts] == [call.context.span_id] * 2
    assert {a.context.trace_id for a in (call, *attempts, *served)} == {call.context.trace_id}
    first, retry = (dict(a.attributes or {}) for a in attempts)
    port = int(url.rsplit(":", 1)[1])
    assert first["server.address"] == "127.0.0.1"
    assert first["server.port"] == port
    assert first["url.full"] == f"{url}/items/7"
    assert first["url.template"] == "items/{item_id}"
    assert (first["http.response.status_code"], first["aio_client.attempt.won"]) == (503, False)
    assert "http.request.resend_count" not in first
    assert attempts[0].status.status_code is StatusCode.ERROR
    assert (retry["aio_client.attempt.kind"], retry["http.request.resend_count"]) == ("retry", 1)
    assert (retry["http.response.status_code"], retry["aio_client.attempt.won"]) == (200, True)
    # Each attempt's traceparent arrived: the server's spans are the attempts' children.
    assert sorted(parent_id(s) for s in served) == sorted(a.context.span_id for a in attempts)
    for span in served:
        attributes = attributes_of(span)
        assert 0 < attributes["aio_client.request.timeout"] <= 5.0
        assert attributes["aio_client.request.priority"] == "high"
        assert attributes["aio_client.server.outcome"] == "ok"
    everything = repr([dict(s.attributes or {}) for s in telemetry.spans.get_finished_spans()])
    assert "hidden" not in everything
    client_points = {
        (a["aio_client.attempt.kind"], a["http.response.status_code"]): p.count
        for a, p in telemetry.points("http.client.request.duration")
    }
    assert client_points == {("first", 503): 1, ("retry", 200): 1}
    server_points = {
        (a["http.route"], a["http.response.status_code"], a["url.scheme"]): p.count
        for a, p in telemetry.points("http.server.request.duration")
    }
    assert server_points == {
        ("/items/{item_id}", 503, "http"): 1,
        ("/items/{item_id}", 200, "http"): 1,
    }
    ((call_attributes, call_point),) = telemetry.points("aio_client.client.call.duration")
    assert call_attributes["url.template"] == "items/{item_id}"
    assert call_point.count == 1
    assert [p.value for _, p in telemetry.points("http.server.active_requests")] == [0]


async def test_a_hedged_call_marks_the_losing_attempt(telemetry: Telemetry) -> None:
    """Two attempt spans: the first cancelled and lost, the hedge won; hedges counted."""
    released = anyio.Event()

    async def work(request: web.Request) -> web.Response:
        if request.headers.get("X-Request-Attempt") == "1":
            with anyio.move_on_after(5):
                await released.wait()
        return web.Response(text=request.headers.get("traceparent", ""))

    app = web.Application()
    app.router.add_get("/work", work)
    async with (
        serve_aiohttp(app) as url,
        ac.Client(
            AiohttpTransport(),
            url,
            strategy=ac.parallel_strategy(2, 0.05),
            observers=[telemetry.instrumentation],
        ) as client,
    ):
        response = await client.request(ac.get("work"))
        released.set()
    (call,) = telemetry.finished(SpanKind.INTERNAL)
    by_kind = {
        attributes_of(span)["aio_client.attempt.kind"]: span
        for span in telemetry.finished(SpanKind.CLIENT)
    }
    loser, winner = by_kind["first"], by_kind["hedge"]
    assert (
        dict(loser.attributes or {}).items()
        >= {
            "aio_client.attempt.kind": "first",
            "aio_client.attempt.won": False,
            "aio_client.attempt.cancelled": True,
        }.items()
    )
    assert loser.status.status_code is StatusCode.UNSET  # losing is not an error
    assert (
        dict(winner.attributes or {}).items()
        >= {
            "aio_client.attempt.kind": "hedge",
            "aio_client.attempt.won": True,
            "http.request.resend_count": 1,
            "http.response.status_code": 200,
        }.items()
    )
    assert parent_id(loser) == parent_id(winner) == call.context.span_id
    assert loser.end_time is not None
    assert call.end_time is not None
    assert loser.end_time <= call.end_time
    # The winning attempt carried its own span's context.
    assert response.text.split("-")[2] == format(winner.context.span_id, "016x")
    assert attributes_of(call)["aio_client.call.attempts"] == 2
    hedges = {
        a["aio_client.hedge.result"]: p.value
        for a, p in telemetry.points("aio_client.client.hedges")
    }
    assert hedges == {"won": 1}


async def test_aiohttp_server_records_deadline_on_its_span_and_counters(
    telemetry: Telemetry,
) -> None:
    """A request cut by its deadline: budget and outcome on the server span, counters, active."""
    otel = telemetry.instrumentation

    async def slow(request: web.Request) -> web.Response:
        await anyio.sleep(10)
        return web.Response(text="never")  # pragma: no cover

    app = web.Application(
        middlewares=[
            aiohttp_server_spans(telemetry.tracer),
            aiohttp_middleware(
                observer=otel.server_observer, trust_priority=trusted_peers("127.0.0.1")
            ),
        ]
    )
    app.router.add_get("/slow/{id}", slow)
    async with serve_aiohttp(app) as url, aiohttp.ClientSession() as session:
        headers = {"X-Request-Timeout": "0.05", "X-Request-Priority": "urgent!"}
        async with session.get(f"{url}/slow/1", headers=headers) as resp:
            assert resp.status == 504
    (span,) = telemetry.finished(SpanKind.SERVER)
    attributes = dict(span.attributes or {})
    assert attributes["aio_client.request.timeout"] == pytest.approx(0.05)
    assert attributes["aio_client.request.priority"] == "normal"
    assert attributes["aio_client.server.outcome"] == "deadline"
    assert attributes["aio_client.request.invalid_header"] is True
    ((deadline, point),) = telemetry.points("aio_client.server.deadline_exceeded")
    assert deadline == {
        "http.request.method": "GET",
        "http.route": "/slow/{id}",
        "aio_client.request.priority": "normal",
        "aio_client.deadline.phase": "handling",
    }
    assert point.value == 1
    ((duration, _),) = telemetry.points("http.server.request.duration")
    assert (duration["http.response.status_code"], duration["error.type"]) == (504, "deadline")
    assert [a for a, _ in telemetry.points("aio_client.server.invalid_headers")] == [
        {
            "http.request.method": "GET",
            "http.route": "/slow/{id}",
            "aio_client.request.priority": "normal",
        }
    ]
    assert [p.value for _, p in telemetry.points("http.server.active_requests")] == [0]
