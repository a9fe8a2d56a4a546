"""Metrics sinks in memory: bounded labels, no secrets, values in virtual time."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NoOpTracerProvider
from prometheus_client import CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request as StarletteRequest
from starlette.responses import PlainTextResponse
from starlette.routing import Route

import aio_client as ac
from aio_client import CircuitBreaker
from aio_client._events import error_kind
from aio_client.metrics import OpenTelemetryInstrumentation, PrometheusMetrics
from aio_client.metrics._labels import (
    OTHER,
    BoundedValues,
    method_label,
    status_class,
)
from aio_client.server import DeadlineMiddleware, ServerOutcome
from aio_client.server._core import Admission, ServerCore, ServerOutcomeKind
from aio_client.transports import MemoryTransport

from .helpers import Script, StatusExchange, client_for

SECRET = "s3cr3t-value"
DASHBOARD = Path(__file__).resolve().parents[2] / "examples" / "grafana-dashboard.json"


def series(registry: CollectorRegistry, name: str) -> list[dict[str, str]]:
    """The label sets of every sample called ``name`` in ``registry``."""
    return [
        sample.labels
        for metric in registry.collect()
        for sample in metric.samples
        if sample.name == name
    ]


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    """A sample's value, 0.0 when it does not exist."""
    found = registry.get_sample_value(name, labels)
    return 0.0 if found is None else found


@pytest.fixture
def otel() -> Iterator[
    tuple[OpenTelemetryInstrumentation, InMemorySpanExporter, InMemoryMetricReader]
]:
    """OpenTelemetry with SDK providers writing to memory."""
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider(shutdown_on_exit=False)
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    yield OpenTelemetryInstrumentation(meter_provider, tracer_provider), spans, reader
    tracer_provider.shutdown()
    meter_provider.shutdown()


def reader_provider(reader: InMemoryMetricReader) -> MeterProvider:
    """A meter provider exporting to ``reader`` (shut down with the reader)."""
    return MeterProvider(metric_readers=[reader], shutdown_on_exit=False)


def otel_points(reader: InMemoryMetricReader) -> list[tuple[str, dict[str, object]]]:
    """(metric name, attributes) of every data point the reader holds."""
    data = reader.get_metrics_data()
    assert data is not None
    return [
        (metric.name, dict(point.attributes or {}))
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        for point in metric.data.data_points
    ]


def test_label_values_are_bounded_words() -> None:
    """Statuses read as classes, errors as short kinds, unknown methods as _OTHER."""
    assert [status_class(s) for s in (101, 200, 302, 404, 599, 600, 42)] == [
        "1xx",
        "2xx",
        "3xx",
        "4xx",
        "5xx",
        "other",
        "other",
    ]
    assert error_kind(ac.ConnectError("x")) == "connect_error"
    assert error_kind(ac.DeadlineExceededError("x")) == "deadline_exceeded"
    assert error_kind(ac.CircuitOpenError("x", retry_after=1.0)) == "circuit_open"
    assert error_kind(ac.NetworkError("x")) == "network_error"
    assert error_kind(asyncio.CancelledError()) == "cancelled"
    assert error_kind(ValueError("x")) == "error"
    assert method_label("GET") == "GET"
    assert method_label("BREW") == "_OTHER"


def test_bounded_values_fold_everything_past_the_limit() -> None:
    """The first N distinct values are kept for good; later ones read as <other>."""
    fold = BoundedValues(2)
    assert [fold(v) for v in ("a", "b", "c", "a", "d", "b")] == ["a", "b", OTHER, "a", OTHER, "b"]
    assert len(fold) == 2


# Thousands of calls: untraced, as tracing them doubles the unit run for no new coverage.
@pytest.mark.no_cover
async def test_ten_thousand_raw_paths_make_a_bounded_number_of_client_series() -> None:
    """Distinct raw paths fold past the route limit; path-param values never become labels."""
    registry = CollectorRegistry()
    metrics = PrometheusMetrics(registry, max_label_values=20)
    async with client_for(Script([ac.Response(200)]), observers=[metrics]) as client:
        for i in range(10_000):
            await client.request(ac.get(f"raw/{i}"))
            await client.request(ac.get("users/{id}", path_params={"id": i}, query={"q": i}))
    routes = {labels["route"] for labels in series(registry, "aio_client_requests_total")}
    assert "users/{id}" in routes
    assert OTHER in routes
    assert len(routes) <= 21
    assert not any(route.startswith("users/") and route != "users/{id}" for route in routes)
    assert (
        value(
            registry,
            "aio_client_requests_total",
            endpoint="http://svc:80",
            method="GET",
            route="users/{id}",
            status="2xx",
        )
        == 10_000
    )
    total = sum(1 for metric in registry.collect() for _ in metric.samples)
    assert total < 2_000


# Thousands of calls: untraced, as tracing them doubles the unit run for no new coverage.
@pytest.mark.no_cover
async def test_raw_paths_make_bounded_otel_attributes() -> None:
    """OpenTelemetry metric points stay bounded too; routes past the limit are left out."""
    reader = InMemoryMetricReader()
    instrumentation = OpenTelemetryInstrumentation(
        reader_provider(reader), NoOpTracerProvider(), max_label_values=20
    )
    async with client_for(Script([ac.Response(200)]), observers=[instrumentation]) as client:
        for i in range(2_000):
            await client.request(ac.get(f"raw/{i}"))
            await client.request(ac.get("users/{id}", path_params={"id": i}))
    points = otel_points(reader)
    templates = {attrs.get("url.template") for _, attrs in points}
    assert "users/{id}" in templates
    assert None in templates  # the ones past the limit are left out
    assert len(templates) <= 21
    assert len(points) <= 2 * 21 + 2


async def test_endpoints_past_the_limit_make_bounded_otel_attributes() -> None:
    """Service discovery handing out many endpoints (ports): past ``max_label_values`` they
    are ``<other>`` with no port, so the attribute sets stay bounded."""
    reader = InMemoryMetricReader()
    instrumentation = OpenTelemetryInstrumentation(
        reader_provider(reader), NoOpTracerProvider(), max_label_values=5
    )
    endpoints = [f"http://svc:{8000 + i}" for i in range(40)]
    script = Script([ac.Response(200)])
    async with ac.Client(
        MemoryTransport(script),
        lambda: endpoints,
        observers=[instrumentation],
    ) as client:
        for _ in range(40):
            await client.get("a")
    points = otel_points(reader)
    ports = {attrs.get("server.port") for _, attrs in points}
    assert len(ports) <= 6  # five endpoints, and none for <other>
    assert "<other>" in {attrs.get("server.address") for _, attrs in points}
    assert len(points) <= 2 * 6


# Thousands of calls: untraced, as tracing them doubles the unit run for no new coverage.
@pytest.mark.no_cover
async def test_ten_thousand_raw_paths_make_a_bounded_number_of_server_series() -> None:
    """The server labels by route template; unmatched paths share one value."""
    registry = CollectorRegistry()
    metrics = PrometheusMetrics(registry)

    async def item(request: StarletteRequest) -> PlainTextResponse:
        return PlainTextResponse("ok")

    async def not_found(request: StarletteRequest, exc: Exception) -> PlainTextResponse:
        return PlainTextResponse("not found", status_code=404)

    # Starlette before 0.47 answers a 404 with a sync handler in a worker thread, which this
    # virtual-time loop does not wait for (it jumps to the deadline); an async one runs inline.
    starlette = Starlette(routes=[Route("/items/{id}", item)], exception_handlers={404: not_found})
    app = DeadlineMiddleware(starlette, observer=metrics.server_observer)
    async with ac.Client(MemoryTransport(app), "http://svc") as client:
        for i in range(5_000):
            await client.request(ac.get("items/{id}", path_params={"id": i}, query={"q": i}))
            await client.request(ac.get(f"nowhere/{i}"))
    routes = {labels["route"] for labels in series(registry, "aio_client_server_requests_total")}
    assert routes == {"/items/{id}", "<unmatched>"}
    assert (
        value(
            registry,
            "aio_client_server_requests_total",
            method="GET",
            route="/items/{id}",
            status="2xx",
            priority="normal",
        )
        == 5_000
    )
    assert (
        value(
            registry,
            "aio_client_server_requests_total",
            method="GET",
            route="<unmatched>",
            status="4xx",
            priority="normal",
        )
        == 5_000
    )


async def test_no_credentials_or_query_reach_labels_or_attributes(
    otel: tuple[OpenTelemetryInstrumentation, InMemorySpanExporter, InMemoryMetricReader],
) -> None:
    """Authorization, Cookie and query values appear in no label, span or metric attribute."""
    instrumentation, spans, reader = otel
    registry = CollectorRegistry()
    script = Script([ac.Response(503), ac.Response(200)])
    async with ac.Client(
        MemoryTransport(script),
        "http://svc:8080",
        strategy=ac.sequential_strategy(2, ac.constant_delays(0.0)),
        observers=[PrometheusMetrics(registry), instrumentation],
    ) as client:
        await client.request(
            ac.get(
                "users/{id}",
                path_params={"id": 7},
                query={"token": SECRET},
                headers={"Authorization": f"Bearer {SECRET}", "Cookie": f"session={SECRET}"},
            )
        )
    assert SECRET not in generate_latest(registry).decode()
    finished = spans.get_finished_spans()
    assert len(finished) == 3
    for span in finished:
        assert SECRET not in repr(dict(span.attributes or {}))
        assert SECRET not in span.name
    assert SECRET not in repr(otel_points(reader))
    full = {span.attributes.get("url.full") for span in finished if span.attributes}
    assert full == {None, "http://svc:8080/users/7"}
    # The server still got the trace context, and the caller's own headers.
    assert all("traceparent" in r.headers for r in script.requests)
    assert script.requests[0].headers["authorization"] == f"Bearer {SECRET}"


async def test_unknown_methods_fold_into_one_label() -> None:
    """A made-up method is counted as _OTHER, never as itself."""
    registry = CollectorRegistry()
    async with client_for(
        Script([ac.Response(200)]), observers=[PrometheusMetrics(registry)]
    ) as client:
        await client.request(ac.request("BREW", "pot"))
    assert {labels["method"] for labels in series(registry, "aio_client_requests_total")} == {
        "_OTHER"
    }


async def test_hedge_results_and_durations_follow_virtual_time() -> None:
    """A hedge that wins is counted won; the cancelled first attempt; the call's bucket."""
    registry = CollectorRegistry()
    metrics = PrometheusMetrics(registry)
    script = Script([1.0, ac.Response(200)])
    async with client_for(
        script, strategy=ac.parallel_strategy(2, 0.2), observers=[metrics]
    ) as client:
        response = await client.request(ac.get("slow"))
    assert response.attempt == 2
    common = {"endpoint": "http://svc:80", "method": "GET", "route": "slow"}
    assert value(registry, "aio_client_hedges_total", **common, result="won") == 1
    assert value(registry, "aio_client_hedges_total", **common, result="lost") == 0
    assert (
        value(registry, "aio_client_attempts_total", **common, kind="first", status="hedge_lost")
        == 1
    )
    assert value(registry, "aio_client_attempts_total", **common, kind="hedge", status="2xx") == 1
    bucket = "aio_client_request_duration_seconds_bucket"
    labels = {**common, "status": "2xx"}
    assert value(registry, bucket, **labels, le="0.1") == 0
    assert value(registry, bucket, **labels, le="0.25") == 1
    duration = value(registry, "aio_client_request_duration_seconds_sum", **labels)
    assert duration == pytest.approx(0.2, abs=0.01)


async def test_a_hedge_that_loses_is_counted_lost() -> None:
    """When the first attempt answers first, the hedge in flight is cancelled and lost."""
    registry = CollectorRegistry()
    script = Script([0.3, 1.0])
    async with client_for(
        script, strategy=ac.parallel_strategy(2, 0.1), observers=[PrometheusMetrics(registry)]
    ) as client:
        response = await client.request(ac.get("slow"))
    assert response.attempt == 1
    common = {"endpoint": "http://svc:80", "method": "GET", "route": "slow"}
    assert value(registry, "aio_client_hedges_total", **common, result="lost") == 1
    assert (
        value(registry, "aio_client_attempts_total", **common, kind="hedge", status="hedge_lost")
        == 1
    )


async def test_budget_exhaustion_and_breaker_changes_are_counted() -> None:
    """Refused retries count by kind; a breaker opening sets its gauge and a transition."""
    registry = CollectorRegistry()
    metrics = PrometheusMetrics(registry)
    async with ac.Client(
        MemoryTransport(Script([ac.Response(500)])),
        "http://svc:9000",
        strategy=ac.sequential_strategy(3, ac.constant_delays(0.0)),
        budget=ac.RetryBudget(ratio=0.0, min_per_second=0.0),
        circuit_breaker=CircuitBreaker(failure_threshold=1, break_duration=5.0),
        observers=[metrics],
    ) as client:
        await client.request(ac.get("a"))
        with pytest.raises(ac.CircuitOpenError):
            await client.request(ac.get("a"))
    endpoint = "http://svc:9000"
    assert (
        value(
            registry,
            "aio_client_budget_exhausted_total",
            endpoint=endpoint,
            method="GET",
            route="a",
            kind="retry",
        )
        == 1
    )
    assert value(registry, "aio_client_breaker_state", endpoint=endpoint) == 2
    assert (
        value(
            registry,
            "aio_client_breaker_transitions_total",
            endpoint=endpoint,
            from_state="closed",
            to_state="open",
        )
        == 1
    )
    assert (
        value(
            registry,
            "aio_client_requests_total",
            endpoint=endpoint,
            method="GET",
            route="a",
            status="circuit_open",
        )
        == 1
    )


async def test_failed_calls_count_their_error_kind() -> None:
    """A call that ends in an error is counted under its error kind and endpoint."""
    registry = CollectorRegistry()
    async with client_for(
        Script([ac.ConnectError("refused")]),
        strategy=ac.single_attempt_strategy(),
        observers=[PrometheusMetrics(registry)],
    ) as client:
        with pytest.raises(ac.ConnectError):
            await client.request(ac.get("a"))
    labels = {"endpoint": "http://svc:80", "method": "GET", "route": "a"}
    assert value(registry, "aio_client_requests_total", **labels, status="connect_error") == 1
    assert (
        value(registry, "aio_client_attempts_total", **labels, kind="first", status="connect_error")
        == 1
    )


async def test_no_sdk_means_no_trace_headers() -> None:
    """With the API's no-op providers calls still work and carry no traceparent."""
    script = Script([ac.Response(200)])
    instrumentation = OpenTelemetryInstrumentation(NoOpMeterProvider(), NoOpTracerProvider())
    async with client_for(script, observers=[instrumentation]) as client:
        response = await client.request(ac.get("a"))
    assert response.status == 200
    assert "traceparent" not in script.requests[0].headers


def test_bad_settings_are_config_errors() -> None:
    """Each setting is checked at construction, naming the parameter."""
    registry = CollectorRegistry()
    with pytest.raises(ac.ConfigError, match="namespace"):
        PrometheusMetrics(registry, namespace="1-bad")
    with pytest.raises(ac.ConfigError, match="buckets"):
        PrometheusMetrics(registry, buckets=(1.0, 0.5))
    with pytest.raises(ac.ConfigError, match="max_label_values"):
        PrometheusMetrics(registry, max_label_values=0)
    with pytest.raises(ac.ConfigError, match="registry"):
        PrometheusMetrics(object())  # type: ignore[arg-type]
    with pytest.raises(ac.ConfigError, match="meter_provider"):
        OpenTelemetryInstrumentation(object())  # type: ignore[arg-type]
    PrometheusMetrics(registry)
    with pytest.raises(ac.ConfigError, match="one PrometheusMetrics per registry"):
        PrometheusMetrics(registry)
    PrometheusMetrics(registry, namespace="other")  # another namespace is fine


def test_nothing_registers_before_construction_and_none_means_global() -> None:
    """Importing registers nothing; registry=None registers in the global REGISTRY."""
    code = (
        "from prometheus_client import REGISTRY\n"
        "before = set(REGISTRY._names_to_collectors)\n"
        "import aio_client.metrics as m\n"
        "m.PrometheusMetrics, m.OpenTelemetryInstrumentation\n"
        "assert set(REGISTRY._names_to_collectors) == before\n"
        "m.PrometheusMetrics()\n"
        "added = set(REGISTRY._names_to_collectors) - before\n"
        "print('aio_client_requests_total' in added)\n"
        "print('aio_client_server_in_flight_requests' in added)\n"
    )
    out = subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "True"]


def test_metrics_package_imports_without_either_backend() -> None:
    """`import aio_client.metrics` works with neither prometheus_client nor opentelemetry."""
    code = (
        "import sys\n"
        "sys.modules['prometheus_client'] = None\n"
        "sys.modules['opentelemetry'] = None\n"
        "import aio_client, aio_client.metrics\n"
        "assert aio_client.metrics.Observer\n"
        "for name in ('PrometheusMetrics', 'OpenTelemetryInstrumentation'):\n"
        "    try:\n"
        "        getattr(aio_client.metrics, name)\n"
        "    except ImportError:\n"
        "        print('lazy')\n"
    )
    out = subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["lazy", "lazy"]


async def test_the_dashboard_queries_only_series_and_labels_that_exist() -> None:
    """Every metric and label the Grafana dashboard names is one PrometheusMetrics produces."""
    registry = CollectorRegistry()
    metrics = PrometheusMetrics(registry)
    async with client_for(
        Script([0.5, ac.Response(200)]), strategy=ac.parallel_strategy(2, 0.1), observers=[metrics]
    ) as client:
        await client.request(ac.get("a"))  # the hedge wins
    async with client_for(
        Script([ac.Response(500)]),
        strategy=ac.sequential_strategy(2, ac.constant_delays(0.0)),
        budget=ac.RetryBudget(ratio=0.0, min_per_second=0.0),
        circuit_breaker=CircuitBreaker(failure_threshold=1, break_duration=5.0),
        observers=[metrics],
    ) as client:
        await client.request(ac.get("a"))  # the retry is refused; the breaker opens
    server = metrics.server_observer
    for kind, handled in [
        (ServerOutcomeKind.DEADLINE, True),
        (ServerOutcomeKind.DISCONNECTED, True),
        (ServerOutcomeKind.SHED, False),
    ]:
        server(
            ServerOutcome(
                status=503,
                reason=None,
                budget=1.0,
                elapsed=0.01,
                priority=ac.Priority.LOW,
                handled=handled,
                outcome=kind,
                method="GET",
                route="/r",
                invalid_header=True,
            )
        )
    produced: dict[str, set[str]] = {}
    for metric in registry.collect():
        for sample in metric.samples:
            produced.setdefault(sample.name, set()).update(sample.labels)
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", ())]
    assert len(exprs) >= 12
    for expr in exprs:
        names = set(re.findall(r"aio_client_[a-z_]+", expr))
        assert names, expr
        assert names <= set(produced), expr
        known = set().union(*(produced[name] for name in names))
        used = {
            label.strip()
            for group in re.findall(r"by \(([^)]*)\)", expr)
            for label in group.split(",")
        } | set(re.findall(r"([a-z_]+)=~?\"", expr))
        assert used <= known, (expr, used - known)


async def test_server_outcomes_say_how_each_request_ended() -> None:
    """The core reports ok, error, HTTP errors raised on purpose, shutdown, and bad headers."""
    outcomes: list[ServerOutcome] = []
    started: list[float] = []

    class Observer:
        def __call__(self, outcome: ServerOutcome) -> None:
            outcomes.append(outcome)

        def request_started(self, admission: object) -> None:
            started.append(1.0)

    core = ServerCore(observer=Observer())

    async def run(handler: Any, exchange: StatusExchange | None = None) -> None:
        admission = core.admit(
            [("x-request-priority", "urgent")], method="POST", route=lambda: "/things/{id}"
        )
        assert isinstance(admission, Admission)
        await core.run(admission, exchange or StatusExchange(handler))

    async def fine() -> int:
        return 201

    async def broken() -> int:
        raise ValueError("bug")

    class NotFoundError(Exception):
        status = 404

    async def not_found() -> int:
        raise NotFoundError

    await run(fine)
    with pytest.raises(ValueError, match="bug"):
        await run(broken)
    with pytest.raises(NotFoundError):
        await run(not_found, StatusExchange(not_found, lambda exc: getattr(exc, "status", None)))
    core.shutdown()
    assert not isinstance(core.admit([], method="GET"), Admission)
    assert [(o.outcome, o.status, o.handled) for o in outcomes] == [
        (ServerOutcomeKind.OK, 201, True),
        (ServerOutcomeKind.ERROR, 500, True),
        (ServerOutcomeKind.OK, 404, True),
        (ServerOutcomeKind.SHUTDOWN, 503, False),
    ]
    assert [o.route for o in outcomes] == ["/things/{id}"] * 3 + ["<unmatched>"]
    assert [o.invalid_header for o in outcomes] == [True, True, True, False]
    assert {o.method for o in outcomes} == {"POST", "GET"}
    assert len(started) == 3  # every handled request, never a refused one
