"""Tail latency with and without hedging, against a seeded heavy-tailed loopback server.

Usage: python benchmarks/tail_latency.py [--quick] [--json PATH] [--plot PATH.png]

The server (``_loopback_server.py``, its own process) answers 97% of requests
after a lognormal delay around 2 ms and 3% after a delay uniform in 100-300 ms,
drawn independently per request from a fixed seed. The same number of calls
at the same concurrency goes through each variant, in interleaved rounds:

- ``single``: one attempt;
- ``sequential``: aio_client's default sequential strategy (3 attempts);
- ``hedged_fixed``: ``parallel_strategy(3, 0.01)``;
- ``hedged_adaptive``: ``parallel_strategy(3, adaptive_delays(0.95, ...))``;
- ``aio_request_parallel``: aio-request 0.2.9's ``parallel_strategy()`` with its
  default delays.

Reported per variant: p50, p90, p99, p99.9 (ms) and extra requests sent (%),
counted client-side as physical sends per call beyond one.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import aio_request
import aiohttp
import anyio
import yarl
from overhead import loopback_server

import aio_client as ac
from aio_client.transports import AiohttpTransport

SERVER_OPTIONS = (
    "--latency", "lognormal", "--latency-ms", "2", "--latency-sigma", "0.25",
    "--tail-fraction", "0.03", "--tail-ms", "100", "--tail-ms-max", "300", "--seed", "2013",
)  # fmt: skip
VARIANTS = ("single", "sequential", "hedged_fixed", "hedged_adaptive", "aio_request_parallel")


class Counting:
    """An attempt stage counting physical sends."""

    def __init__(self) -> None:
        self.sent = 0

    async def __call__(self, request: ac.Request, call_next: ac.Handler) -> ac.Response:
        self.sent += 1
        return await call_next(request)


class CountingAioRequestTransport(aio_request.AioHttpTransport):  # type: ignore[misc]
    """aio-request's aiohttp transport, counting physical sends."""

    sent = 0

    async def send(self, endpoint: yarl.URL, request: Any, timeout: float) -> Any:  # noqa: ASYNC109 - aio-request's signature
        type(self).sent += 1
        return await super().send(endpoint, request, timeout)


def percentile(ordered: list[float], p: float) -> float:
    """Nearest-rank percentile of sorted samples."""
    return ordered[min(len(ordered) - 1, max(0, round(p * len(ordered)) - 1))]


async def run_calls(
    call: Callable[[], Awaitable[None]], calls: int, concurrency: int
) -> list[float]:
    """``calls`` calls at ``concurrency`` in flight; latencies in ms."""
    latencies: list[float] = []
    left = calls

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            start = time.perf_counter()
            await call()
            latencies.append((time.perf_counter() - start) * 1000.0)

    async with anyio.create_task_group() as tg:
        for _ in range(concurrency):
            tg.start_soon(worker)
    return latencies


async def measure(port: int, calls: int, concurrency: int, rounds: int) -> dict[str, Any]:
    """Every variant, interleaved over ``rounds``; returns latencies and send counts."""
    url = f"http://127.0.0.1:{port}"
    counting = Counting()
    budget = ac.RetryBudget()  # the default budget: hedges draw from it
    strategies: dict[str, ac.Strategy] = {
        "single": ac.single_attempt_strategy(),
        "sequential": ac.sequential_strategy(),
        "hedged_fixed": ac.parallel_strategy(3, 0.01),
        "hedged_adaptive": ac.parallel_strategy(
            3, ac.adaptive_delays(0.95, min_delay=0.003, max_delay=0.1, min_samples=50)
        ),
    }
    latencies: dict[str, list[float]] = {name: [] for name in VARIANTS}
    sent = dict.fromkeys(VARIANTS, 0)
    done = dict.fromkeys(VARIANTS, 0)
    async with (
        ac.Client(
            AiohttpTransport(limit=200), url, timeout=5.0, budget=budget, attempt_stages=[counting]
        ) as client,
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=200)) as session,
    ):
        peer = aio_request.setup(transport=CountingAioRequestTransport(session), endpoint=url)
        peer_strategy = aio_request.parallel_strategy()
        per_round = max(1, calls // rounds)
        for round_no in range(rounds):
            order = VARIANTS[round_no % len(VARIANTS) :] + VARIANTS[: round_no % len(VARIANTS)]
            for name in order:
                if name == "aio_request_parallel":
                    before = CountingAioRequestTransport.sent

                    async def call() -> None:
                        async with peer.request(
                            aio_request.get("ping"),
                            deadline=aio_request.Deadline.from_timeout(5.0),
                            strategy=peer_strategy,
                        ) as resp:
                            assert resp.status == 200

                    latencies[name] += await run_calls(call, per_round, concurrency)
                    sent[name] += CountingAioRequestTransport.sent - before
                else:
                    strategy = strategies[name]
                    before = counting.sent

                    async def call(strategy: ac.Strategy = strategy) -> None:
                        resp = await client.request(ac.get("ping"), strategy=strategy)
                        assert resp.status == 200

                    latencies[name] += await run_calls(call, per_round, concurrency)
                    sent[name] += counting.sent - before
                done[name] += per_round
                print(f"... round {round_no + 1}/{rounds}: {name}", file=sys.stderr)
    report: dict[str, Any] = {}
    for name in VARIANTS:
        ordered = sorted(latencies[name])
        report[name] = {
            "calls": len(ordered),
            "p50_ms": round(percentile(ordered, 0.50), 2),
            "p90_ms": round(percentile(ordered, 0.90), 2),
            "p99_ms": round(percentile(ordered, 0.99), 2),
            "p999_ms": round(percentile(ordered, 0.999), 2),
            "extra_load_pct": round(100.0 * (sent[name] - done[name]) / max(done[name], 1), 2),
        }
    report["_latencies"] = latencies
    return report


def table(report: dict[str, Any]) -> str:
    """A readable table with the targets checked."""
    lines = [
        f"{'variant':<22}{'calls':>7}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}"
        f"{'p99.9 ms':>10}{'extra load':>12}"
    ]
    for name in VARIANTS:
        r = report[name]
        lines.append(
            f"{name:<22}{r['calls']:>7}{r['p50_ms']:>9.1f}{r['p90_ms']:>9.1f}{r['p99_ms']:>9.1f}"
            f"{r['p999_ms']:>10.1f}{r['extra_load_pct']:>11.1f}%"
        )
    adaptive, single = report["hedged_adaptive"], report["single"]
    peer = report["aio_request_parallel"]
    ratio = adaptive["p99_ms"] / single["p99_ms"]
    lines.append(
        f"hedged_adaptive p99 / single p99 = {ratio:.3f} (target <= 0.2: "
        f"{'met' if ratio <= 0.2 else 'MISSED'}); extra load {adaptive['extra_load_pct']:.1f}% "
        f"(target <= 10%: {'met' if adaptive['extra_load_pct'] <= 10 else 'MISSED'})"
    )
    better = adaptive["p99_ms"] < peer["p99_ms"]
    lines.append(
        f"hedged_adaptive p99 vs aio_request_parallel p99: {adaptive['p99_ms']:.1f} vs "
        f"{peer['p99_ms']:.1f} ms ({'better' if better else 'NOT better'}; aio-request sent "
        f"{peer['extra_load_pct']:.1f}% extra)"
    )
    return "\n".join(lines)


def plot(latencies: dict[str, list[float]], path: Path) -> None:
    """Latency CDF per variant, log-scale x axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 4.5))
    for name in VARIANTS:
        ordered = sorted(latencies[name])
        fractions = [(i + 1) / len(ordered) for i in range(len(ordered))]
        axes.plot(ordered, fractions, label=name, linewidth=1.4)
    axes.set_xscale("log")
    axes.set_xlabel("latency (ms, log scale)")
    axes.set_ylabel("fraction of calls")
    axes.set_ylim(0.9, 1.0005)
    axes.set_title("Tail latency: 3% of requests take 100-300 ms (upper 10% shown)")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, run the benchmark, print and save the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls, for a smoke run")
    parser.add_argument("--json", type=Path, help="write the results as JSON here")
    parser.add_argument("--plot", type=Path, help="write a latency CDF (PNG) here")
    parser.add_argument("--concurrency", type=int, default=16, help="calls in flight (16)")
    args = parser.parse_args(argv)
    calls, rounds = (1000, 2) if args.quick else (6000, 6)
    start = time.perf_counter()
    with loopback_server(use_uvloop=False, extra=SERVER_OPTIONS) as port:
        report = anyio.run(measure, port, calls, args.concurrency, rounds)
    latencies = report.pop("_latencies")
    print(
        f"tail latency benchmark ({'quick' if args.quick else 'full'} run, "
        f"{time.perf_counter() - start:.1f} s, {calls} calls per variant, "
        f"{args.concurrency} in flight)"
    )
    print(table(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    if args.plot:
        plot(latencies, args.plot)
        print(f"plot written to {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
