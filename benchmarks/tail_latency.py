"""Tail latency with and without hedging, against a seeded heavy-tailed loopback server.

Usage: python benchmarks/tail_latency.py [--quick] [--json PATH] [--plot PATH.png]
    [--concurrency N] [--cpu-hog] [--check]

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
counted client-side as physical sends per call beyond one. Targets, for
``hedged_adaptive``: p50 at most 1.2 times single's, p99 at most a fifth of
single's, at most 10% extra load, and p99 no worse than aio-request's parallel
strategy; ``--check`` exits 1 when one is missed.

``--cpu-hog`` runs the whole measurement next to a separate process that keeps
about one core busy, as on a busy host: the client's own CPU cost and its
timers' lateness then show in the tail.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Final

import aio_request
import aiohttp
import anyio
import yarl
from overhead import _ratio, _verdict, loopback_server

import aio_client as ac
from aio_client.transports import AiohttpTransport

SERVER_OPTIONS = (
    "--latency", "lognormal", "--latency-ms", "2", "--latency-sigma", "0.25",
    "--tail-fraction", "0.03", "--tail-ms", "100", "--tail-ms-max", "300", "--seed", "2013",
)  # fmt: skip
VARIANTS = ("single", "sequential", "hedged_fixed", "hedged_adaptive", "aio_request_parallel")
# hedged_adaptive against single and aio-request's parallel strategy, at most.
P50_VS_SINGLE_TARGET: Final = 1.2
P99_VS_SINGLE_TARGET: Final = 0.2
P99_VS_AIO_REQUEST_TARGET: Final = 1.0
EXTRA_LOAD_PCT_TARGET: Final = 10.0
# The CPU hog spins for _HOG_SPIN_S, then sleeps for _HOG_REST_S: about 95% of
# one core. A busy neighbour, not a runaway loop: the short rests make it yield
# to the scheduler regularly, so on a shared 2-core host (client, server and
# hog runnable at once) it steals time from the client and the server without
# pinning a core outright and starving everyone else on the machine.
_HOG_SPIN_S: Final = 0.010
_HOG_REST_S: Final = 0.0005
_HOG_START_TIMEOUT: Final = 30.0  # seconds the hog may take to start


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


def _spin(parent_pid: int, started: Any, cpu_seconds: Any) -> None:
    """The CPU hog's body: busy slices with tiny rests until it is terminated."""
    # Ctrl-C in the terminal reaches the whole process group; the parent stops
    # the hog itself, in its cleanup.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    clock = time.perf_counter
    cpu_start = time.process_time()  # after start-up, which imported this module
    started.set()
    while os.getppid() == parent_pid:  # and never outlive a parent killed outright
        until = clock() + _HOG_SPIN_S
        while clock() < until:
            pass
        cpu_seconds.value = time.process_time() - cpu_start
        time.sleep(_HOG_REST_S)


@contextlib.contextmanager
def cpu_hog() -> Iterator[Callable[[], float]]:
    """Keep about one core busy in a separate process until the block exits.

    Yields a function returning the share of one core the hog has used so far.
    """
    context = multiprocessing.get_context("spawn")
    started = context.Event()
    cpu_seconds = context.Value("d", 0.0, lock=False)
    hog = context.Process(
        target=_spin, args=(os.getpid(), started, cpu_seconds), name="cpu-hog", daemon=True
    )
    hog.start()
    try:
        if not started.wait(_HOG_START_TIMEOUT):
            raise RuntimeError(f"CPU hog: not started within {_HOG_START_TIMEOUT:.0f} s")
        since = time.perf_counter()

        def core_share() -> float:
            used: float = cpu_seconds.value
            return used / max(time.perf_counter() - since, 1e-9)

        yield core_share
    finally:
        hog.terminate()
        hog.join(5)
        if hog.is_alive():
            hog.kill()
            hog.join()
        hog.close()


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


def check_targets(report: dict[str, Any]) -> tuple[dict[str, float], dict[str, Any]]:
    """``ratios`` and ``targets`` of hedged_adaptive against single and aio-request."""
    adaptive, single = report["hedged_adaptive"], report["single"]
    peer = report["aio_request_parallel"]
    ratios = {
        "hedged_adaptive_p50_vs_single": _ratio(adaptive["p50_ms"], single["p50_ms"]),
        "hedged_adaptive_p99_vs_single": _ratio(adaptive["p99_ms"], single["p99_ms"]),
        "hedged_adaptive_p99_vs_aio_request_parallel": _ratio(adaptive["p99_ms"], peer["p99_ms"]),
    }
    targets = {
        "p50_vs_single_at_most": P50_VS_SINGLE_TARGET,
        "p99_vs_single_at_most": P99_VS_SINGLE_TARGET,
        "extra_load_pct_at_most": EXTRA_LOAD_PCT_TARGET,
        "p99_vs_aio_request_parallel_at_most": P99_VS_AIO_REQUEST_TARGET,
        "p50_vs_single_met": ratios["hedged_adaptive_p50_vs_single"] <= P50_VS_SINGLE_TARGET,
        "p99_vs_single_met": ratios["hedged_adaptive_p99_vs_single"] <= P99_VS_SINGLE_TARGET,
        "extra_load_met": adaptive["extra_load_pct"] <= EXTRA_LOAD_PCT_TARGET,
        "p99_vs_aio_request_parallel_met": adaptive["p99_ms"] <= peer["p99_ms"],
    }
    return ratios, targets


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
    adaptive, peer = report["hedged_adaptive"], report["aio_request_parallel"]
    ratios, targets = report["ratios"], report["targets"]
    lines += [
        f"hedged_adaptive p50 / single p50 = {ratios['hedged_adaptive_p50_vs_single']:.3f} "
        f"(target <= {P50_VS_SINGLE_TARGET}: {_verdict(targets['p50_vs_single_met'])})",
        f"hedged_adaptive p99 / single p99 = {ratios['hedged_adaptive_p99_vs_single']:.3f} "
        f"(target <= {P99_VS_SINGLE_TARGET}: {_verdict(targets['p99_vs_single_met'])}); "
        f"extra load {adaptive['extra_load_pct']:.1f}% "
        f"(target <= {EXTRA_LOAD_PCT_TARGET:.0f}%: {_verdict(targets['extra_load_met'])})",
        f"hedged_adaptive p99 vs aio_request_parallel p99: {adaptive['p99_ms']:.1f} vs "
        f"{peer['p99_ms']:.1f} ms, ratio "
        f"{ratios['hedged_adaptive_p99_vs_aio_request_parallel']:.3f} (target <= "
        f"{P99_VS_AIO_REQUEST_TARGET}: {_verdict(targets['p99_vs_aio_request_parallel_met'])}; "
        f"aio-request sent {peer['extra_load_pct']:.1f}% extra)",
    ]
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
    parser.add_argument(
        "--cpu-hog",
        action="store_true",
        help="keep about one core busy in a separate process during the run, as on a busy host",
    )
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    calls, rounds = (1000, 2) if args.quick else (6000, 6)
    start = time.perf_counter()
    hog_share: float | None = None
    try:
        with contextlib.ExitStack() as stack:
            # The hog starts first and stops last: busy for the whole measurement.
            core_share = stack.enter_context(cpu_hog()) if args.cpu_hog else None
            port = stack.enter_context(loopback_server(use_uvloop=False, extra=SERVER_OPTIONS))
            report = anyio.run(measure, port, calls, args.concurrency, rounds)
            if core_share is not None:
                hog_share = core_share()
    except KeyboardInterrupt:  # the server and the hog are stopped by now
        print("interrupted", file=sys.stderr)
        return 130
    latencies = report.pop("_latencies")
    report["cpu_hog"] = args.cpu_hog
    report["ratios"], report["targets"] = check_targets(report)
    print(
        f"tail latency benchmark ({'quick' if args.quick else 'full'} run, "
        f"{time.perf_counter() - start:.1f} s, {calls} calls per variant, "
        f"{args.concurrency} in flight"
        + (f", CPU hog busy {100 * hog_share:.0f}% of a core)" if hog_share is not None else ")")
    )
    print(table(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    if args.plot:
        plot(latencies, args.plot)
        print(f"plot written to {args.plot}")
    missed = not all(met for name, met in report["targets"].items() if name.endswith("_met"))
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    sys.exit(main())
