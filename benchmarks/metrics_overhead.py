"""What metrics and tracing add to a call, side by side with aio-request's metrics.

Usage::

    python benchmarks/metrics_overhead.py [--quick] [--json PATH] [--check]

In-process, sequential calls over ``MemoryTransport`` (a handler returning a
prebuilt 200), one event loop, no sockets. Variants:

- ``none``: ``Client`` with no observer (the floor);
- ``prometheus``: ``observers=[PrometheusMetrics(CollectorRegistry())]``;
- ``otel_sdk``: ``observers=[OpenTelemetryInstrumentation(...)]`` over the
  OpenTelemetry SDK: a ``TracerProvider`` with a ``BatchSpanProcessor``
  feeding an exporter that drops spans, and a ``MeterProvider`` with an
  ``InMemoryMetricReader`` (collected only at the end);
- ``otel_api``: the same instrumentation with the API's no-op providers (the
  OpenTelemetry API installed, no SDK configured): our own code's cost;
- ``aio_request`` / ``aio_request_no_metrics``: aio-request 0.2.9's default
  pipeline over a fake in-memory transport, with its built-in Prometheus
  histograms, and with them switched off for the slice.

Variants are interleaved round-robin (the order rotates every round) and
medians reported; overheads are differences from ``none`` (ours) and from
``aio_request_no_metrics`` (aio-request's metrics). Target: each of ours adds
at most 10 µs per call; ``--check`` exits 1 when one does not.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any, Final, final

_ENDPOINT: Final = "http://bench.invalid"
_TARGET_US: Final = 10.0  # µs per call each of our sinks may add, at most
_CALL_TIMEOUT: Final = 20.0  # seconds; both libraries' default call budget


@final
@dataclass(frozen=True, slots=True)
class Settings:
    """Sizes of one run."""

    quick: bool
    rounds: int
    calls: int

    @classmethod
    def for_run(cls, *, quick: bool) -> Settings:
        """Quick: a smoke run of a few seconds; full: under a minute on 2 cores."""
        if quick:
            return cls(quick=True, rounds=5, calls=2_000)
        return cls(quick=False, rounds=15, calls=5_000)


@final
@dataclass(slots=True)
class Series:
    """Per-round samples (µs per call) of one variant."""

    values: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.values)


def _rotated(items: Sequence[str], by: int) -> list[str]:
    shift = by % len(items)
    return [*items[shift:], *items[:shift]]


@contextlib.contextmanager
def _aio_request_metrics_off(*modules: Any) -> Iterator[None]:
    def noop(**_: object) -> None:
        return None

    saved = [module.capture_metrics for module in modules]
    for module in modules:
        module.capture_metrics = noop
    try:
        yield
    finally:
        for module, original in zip(modules, saved, strict=True):
            module.capture_metrics = original


async def measure(settings: Settings) -> tuple[dict[str, Series], dict[str, Any]]:
    """µs per call of every variant, one sample per round; and what ran."""
    import aio_request
    import aio_request.client
    import aio_request.pipeline
    from opentelemetry.metrics import NoOpMeterProvider
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )
    from opentelemetry.trace import NoOpTracerProvider
    from overhead import in_memory_aio_request
    from prometheus_client import CollectorRegistry

    import aio_client
    from aio_client.metrics import OpenTelemetryInstrumentation, PrometheusMetrics
    from aio_client.transports import MemoryTransport

    class DropSpans(SpanExporter):
        """An exporter that drops what it is given (the export cost is not ours)."""

        def __init__(self) -> None:
            self.exported = 0

        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            self.exported += len(spans)
            return SpanExportResult.SUCCESS

    prebuilt = aio_client.Response(200)

    async def handler(request: aio_client.Request, /) -> aio_client.Response:
        return prebuilt

    exporter = DropSpans()
    tracer_provider = TracerProvider(shutdown_on_exit=False)
    tracer_provider.add_span_processor(BatchSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)

    def client(*observers: Any) -> aio_client.Client:
        return aio_client.Client(MemoryTransport(handler), _ENDPOINT, observers=observers)

    clients = {
        "none": client(),
        "prometheus": client(PrometheusMetrics(CollectorRegistry())),
        "otel_sdk": client(OpenTelemetryInstrumentation(meter_provider, tracer_provider)),
        "otel_api": client(OpenTelemetryInstrumentation(NoOpMeterProvider(), NoOpTracerProvider())),
    }
    request = aio_client.get("items/{id}", path_params={"id": 1})

    ar_client = in_memory_aio_request(_ENDPOINT + "/")
    ar_request = aio_request.get("items/1")
    deadline_from_timeout = aio_request.Deadline.from_timeout

    def ours(name: str) -> Callable[[int], Awaitable[None]]:
        send = clients[name].request

        async def run(n: int) -> None:
            for _ in range(n):
                response = await send(request)
            if response.status != 200:
                raise RuntimeError(f"unexpected status {response.status}")

        return run

    async def theirs(n: int) -> None:
        send = ar_client.request
        for _ in range(n):
            async with send(ar_request, deadline=deadline_from_timeout(_CALL_TIMEOUT)) as resp:
                status = resp.status
        if status != 200:
            raise RuntimeError(f"unexpected status {status}")

    async def theirs_without_metrics(n: int) -> None:
        with _aio_request_metrics_off(aio_request.client, aio_request.pipeline):
            await theirs(n)

    variants: dict[str, Callable[[int], Awaitable[None]]] = {
        **{name: ours(name) for name in clients},
        "aio_request": theirs,
        "aio_request_no_metrics": theirs_without_metrics,
    }
    for run in variants.values():  # warm caches and label children; check each works
        await run(500)
    results = {name: Series() for name in variants}
    names = list(variants)
    for round_no in range(settings.rounds):
        for name in _rotated(names, round_no):
            gc.collect()
            start = time.perf_counter_ns()
            await variants[name](settings.calls)
            elapsed = time.perf_counter_ns() - start
            results[name].values.append(elapsed / settings.calls / 1000.0)
    for each in clients.values():
        await each.aclose()
    tracer_provider.force_flush()
    data = reader.get_metrics_data()
    points = sum(
        len(metric.data.data_points)
        for resource in (data.resource_metrics if data else ())
        for scope in resource.scope_metrics
        for metric in scope.metrics
    )
    tracer_provider.shutdown()
    meter_provider.shutdown()
    checks = {"otel_spans_exported": exporter.exported, "otel_metric_points": points}
    return results, checks


def report(
    settings: Settings, results: dict[str, Series], checks: dict[str, Any]
) -> dict[str, Any]:
    """The JSON report: medians, ranges, overheads, ratios, targets."""
    us = {name: round(series.median, 2) for name, series in results.items()}
    floor = results["none"].median
    their_metrics = results["aio_request"].median - results["aio_request_no_metrics"].median
    overhead = {
        "prometheus": round(results["prometheus"].median - floor, 2),
        "otel_sdk": round(results["otel_sdk"].median - floor, 2),
        "otel_api": round(results["otel_api"].median - floor, 2),
        "aio_request_metrics": round(their_metrics, 2),
    }
    ratios = {
        f"{name}_vs_aio_request_metrics": round(overhead[name] / their_metrics, 2)
        if their_metrics > 0
        else None
        for name in ("prometheus", "otel_sdk", "otel_api")
    }
    return {
        "benchmark": "metrics_overhead",
        "settings": {"quick": settings.quick, "rounds": settings.rounds, "calls": settings.calls},
        "us_per_call": us,
        "us_per_call_range": {
            name: [round(min(s.values), 2), round(max(s.values), 2)] for name, s in results.items()
        },
        "overhead_us_per_call": overhead,
        "ratios": ratios,
        "targets": {
            "max_overhead_us": _TARGET_US,
            "prometheus_met": overhead["prometheus"] <= _TARGET_US,
            "otel_sdk_met": overhead["otel_sdk"] <= _TARGET_US,
            "otel_api_met": overhead["otel_api"] <= _TARGET_US,
        },
        "checks": checks,
        "versions": {
            "python": platform.python_version(),
            **{
                name: version(name)
                for name in (
                    "prometheus-client",
                    "opentelemetry-api",
                    "opentelemetry-sdk",
                    "aio-request",
                )
            },
        },
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
    }


def render(result: dict[str, Any]) -> str:
    """A plain-text table of ``result``."""
    lines = ["in-process µs per call (median of rounds; min-max)"]
    for name, median in result["us_per_call"].items():
        low, high = result["us_per_call_range"][name]
        lines.append(f"  {name:<24} {median:8.2f}   ({low:.2f}-{high:.2f})")
    lines.append("added per call (µs)")
    for name, added in result["overhead_us_per_call"].items():
        lines.append(f"  {name:<24} {added:8.2f}")
    lines.append("ratio to aio-request's metrics overhead")
    for name, ratio in result["ratios"].items():
        lines.append(f"  {name:<40} {ratio}")
    targets = result["targets"]
    lines.append(
        f"target <= {targets['max_overhead_us']:g} µs: prometheus "
        f"{'met' if targets['prometheus_met'] else 'MISSED'}, otel_sdk "
        f"{'met' if targets['otel_sdk_met'] else 'MISSED'}, otel_api "
        f"{'met' if targets['otel_api_met'] else 'MISSED'}"
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; print a table; optionally write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few seconds")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the report here")
    parser.add_argument(
        "--check", action="store_true", help="exit 1 when one of our sinks misses the target"
    )
    args = parser.parse_args(argv)
    settings = Settings.for_run(quick=args.quick)
    results, checks = asyncio.run(measure(settings))
    result = report(settings, results, checks)
    print(render(result))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    targets = result["targets"]
    if args.check and not (targets["prometheus_met"] and targets["otel_sdk_met"]):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
