"""``python -m aio_client demo``: what the strategies do against a flaky, slow-tailed service.

Everything runs on 127.0.0.1 with ephemeral ports and real sockets; every
number printed is measured here, now.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import anyio
from aiohttp import web

from . import _models
from ._client import Client
from ._errors import AioClientError
from .strategies import (
    RetryBudget,
    Strategy,
    adaptive_delays,
    constant_delays,
    parallel_strategy,
    sequential_strategy,
    single_attempt_strategy,
)
from .transports import AiohttpTransport

__all__ = ["run_demo"]


@dataclass
class _Upstream:
    """A service with a heavy latency tail and occasional 503s."""

    seed: int
    slow_share: float = 0.05
    error_share: float = 0.05
    requests: int = 0

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        roll = self._random.random()
        if roll < self.error_share:
            await anyio.sleep(0.002)
            return web.Response(status=503, text="overloaded")
        if roll < self.error_share + self.slow_share:
            await anyio.sleep(self._random.uniform(0.15, 0.3))
        else:
            await anyio.sleep(self._random.uniform(0.001, 0.004))
        return web.Response(text="ok")


@dataclass
class _Result:
    name: str
    latencies_ms: list[float]
    errors: int
    upstream_requests: int
    calls: int

    def row(self) -> tuple[str, ...]:
        ordered = sorted(self.latencies_ms) or [0.0]

        def pct(p: float) -> float:
            return ordered[min(len(ordered) - 1, int(p * len(ordered)))]

        extra = 100.0 * (self.upstream_requests - self.calls) / max(self.calls, 1)
        return (
            self.name,
            f"{statistics.median(ordered):.1f}",
            f"{pct(0.99):.1f}",
            f"{max(ordered):.1f}",
            f"{100.0 * self.errors / max(self.calls, 1):.1f}%",
            f"{extra:+.1f}%",
        )


async def _drive(
    url: str,
    upstream: _Upstream,
    name: str,
    strategy: Strategy,
    calls: int,
    concurrency: int,
    progress: Callable[[str], None],
) -> _Result:
    latencies: list[float] = []
    errors = 0
    before = upstream.requests
    limiter = anyio.Semaphore(concurrency)
    async with Client(
        AiohttpTransport(), url, timeout=2.0, strategy=strategy, budget=RetryBudget()
    ) as client:

        async def one() -> None:
            nonlocal errors
            async with limiter:
                start = time.perf_counter()
                try:
                    resp = await client.request(_models.get("work"))
                    if resp.status >= 500:
                        errors += 1
                except AioClientError:
                    errors += 1
                latencies.append((time.perf_counter() - start) * 1000.0)

        async with anyio.create_task_group() as tg:
            for _ in range(calls):
                tg.start_soon(one)
    progress(f"  {name:<22} done: {calls} calls")
    return _Result(name, latencies, errors, upstream.requests - before, calls)


async def run_demo(calls: int = 400, concurrency: int = 20, seed: int = 7) -> list[_Result]:
    """Run each strategy against a fresh local upstream and print a comparison table."""
    results: list[_Result] = []
    print("aio_client demo: single vs sequential retries vs hedged requests")
    print(f"upstream: 127.0.0.1, ~5% of requests take 150-300 ms, ~5% answer 503; {calls} calls")
    variants: list[tuple[str, Strategy]] = [
        ("single attempt", single_attempt_strategy()),
        ("sequential (3)", sequential_strategy(3, constant_delays(0.01))),
        (
            "hedged, adaptive p90",
            parallel_strategy(3, adaptive_delays(0.9, min_delay=0.005, max_delay=0.1)),
        ),
    ]
    for name, strategy in variants:
        upstream = _Upstream(seed)
        app = web.Application()
        app.router.add_get("/work", upstream.handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            results.append(
                await _drive(
                    f"http://127.0.0.1:{port}", upstream, name, strategy, calls, concurrency, print
                )
            )
        finally:
            await runner.cleanup()
    header = ("strategy", "p50 ms", "p99 ms", "max ms", "errors", "extra load")
    rows = [header] + [r.row() for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    print()
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    return results
