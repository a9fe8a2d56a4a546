"""``python -m aio_client demo``: what the library does, measured live on 127.0.0.1.

A flaky, slow-tailed upstream (aiohttp) and a middle service (Starlette behind
``DeadlineMiddleware``) that calls it through aio_client run in this process
on ephemeral ports; a driver client puts load on the middle service, phase by
phase. Every number printed comes from those requests.
"""

from __future__ import annotations

import time
from pathlib import Path

import anyio

from ._output import ProgressBar, render_html, render_table
from ._phases import PHASES, PhaseResult
from ._services import running_services

__all__ = ["run_demo"]


async def run_demo(
    duration: float = 40.0, seed: int = 7, report: Path | None = None
) -> list[PhaseResult]:
    """Run every phase within about ``duration`` seconds; print tables; write ``report``."""
    started = time.perf_counter()
    results: list[PhaseResult] = []
    print("aio_client demo: strategies, circuit breaking, deadline propagation, load shedding")
    print(f"running four phases in about {duration:.0f} s on 127.0.0.1 (ephemeral ports)\n")
    bar = ProgressBar()
    async with running_services(seed) as services:
        for index, (name, share, phase) in enumerate(PHASES, start=1):
            bar.start(f"phase {index}/{len(PHASES)} {name}")
            try:
                results.append(await phase(services, duration * share, bar))
            finally:
                bar.finish()
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
