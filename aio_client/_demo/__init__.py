"""``python -m aio_client demo``: what the library does, measured live on 127.0.0.1.

A flaky, slow-tailed upstream (aiohttp) and a middle service (Starlette behind
``DeadlineMiddleware``) that calls it through aio_client run in this process
on ephemeral ports; a driver client puts load on the middle service, phase by
phase. Every number printed comes from those requests.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from .._events import Observer
from ..metrics._prometheus import PrometheusMetrics
from ._fan_out_phase import fan_out_phase
from ._output import ProgressBar, render_html, render_table
from ._phases import PHASES, Phase, PhaseResult
from ._services import Services, running_services

__all__ = ["run_demo", "serve_metrics"]


async def run_demo(
    duration: float = 40.0,
    seed: int = 7,
    report: Path | None = None,
    metrics_port: int | None = None,
) -> list[PhaseResult]:
    """Run every phase within about ``duration`` seconds; print tables; write ``report``.

    With ``metrics_port``, the middle service's Prometheus metrics (its calls to the
    upstream and its own requests) are served at ``http://127.0.0.1:PORT/metrics``
    while the demo runs (0 picks a free port).
    """
    started = time.perf_counter()
    print(
        "aio_client demo: strategies, circuit breaking, deadline propagation, load shedding, "
        "fan-out"
    )
    print(f"running {len(_PHASES)} phases in about {duration:.0f} s on 127.0.0.1 (ephemeral ports)")
    async with contextlib.AsyncExitStack() as stack:
        observers: tuple[Observer, ...] = ()
        server_observer: PrometheusMetrics | None = None
        if metrics_port is not None:
            server_observer = PrometheusMetrics(CollectorRegistry())
            observers = (server_observer,)
            url = await stack.enter_async_context(serve_metrics(server_observer, metrics_port))
            print(f"Prometheus metrics: {url}")
        print()
        services = await stack.enter_async_context(
            running_services(
                seed,
                observers,
                server_observer.server_observer if server_observer is not None else None,
            )
        )
        results = await _run_phases(services, duration)
    print()
    for result in results:
        print(render_table(result))
        print()
    elapsed = time.perf_counter() - started
    if report is not None:
        await anyio.Path(report).write_text(render_html(results, elapsed), encoding="utf-8")
        print(f"report written to {report}")
    print(f"done in {elapsed:.1f} s")
    return results


#: The phases in the order they run; the fan-out phase lives in its own module.
_PHASES: tuple[Phase, ...] = (*PHASES, ("fan-out", 0.1, fan_out_phase))


async def _run_phases(services: Services, duration: float) -> list[PhaseResult]:
    results: list[PhaseResult] = []
    bar = ProgressBar()
    for index, (name, share, phase) in enumerate(_PHASES, start=1):
        bar.start(f"phase {index}/{len(_PHASES)} {name}")
        try:
            results.append(await phase(services, duration * share, bar))
        finally:
            bar.finish()
    return results


@contextlib.asynccontextmanager
async def serve_metrics(metrics: PrometheusMetrics, port: int) -> AsyncIterator[str]:
    """Serve ``metrics`` at ``http://127.0.0.1:port/metrics`` until the block ends."""

    async def exposition(request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    app = web.Application()
    app.router.add_get("/metrics", exposition)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", port)
        await site.start()
        bound = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        yield f"http://127.0.0.1:{bound}/metrics"
    finally:
        await runner.cleanup()
