"""Per-call overhead of a closed circuit breaker around a trivial coroutine.

Usage: ``python benchmarks/policies.py [--quick] [--json PATH]``

Runs, in one process and one event loop, side by side: a bare call, our
``@circuit`` (consecutive-failure mode), our breaker in failure-ratio mode,
our aiocircuitbreaker drop-in (``aio_client.compat.aiocircuitbreaker``),
aiocircuitbreaker's ``@circuit``, aioresilience's ``CircuitBreaker`` and
purgatory's breaker. Each round times a batch of calls of every variant, in
an order rotated from round to round (interleaved, so drift in CPU speed hits
all of them alike); the result per variant is the median over rounds, in
microseconds per call. The peers are optional: a missing one is skipped.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aio_client import CircuitBreaker
from aio_client.compat import aiocircuitbreaker as compat
from aio_client.policies._circuit import circuit

Call = Callable[[], Awaitable[Any]]


async def trivial() -> int:
    """The guarded work: returns at once."""
    return 1


async def build_variants() -> dict[str, Call]:
    """Every breaker under test, each wrapping :func:`trivial`, ready to call."""
    variants: dict[str, Call] = {"bare": trivial}
    variants["aio_client"] = circuit(failure_threshold=5, recovery_timeout=30)(trivial)
    ratio = CircuitBreaker(failure_ratio=0.5, minimum_throughput=20, sampling_duration=10.0)
    variants["aio_client_ratio"] = ratio(trivial)
    variants["aio_client_compat"] = compat.circuit(failure_threshold=5, recovery_timeout=30)(
        trivial
    )
    try:
        import aiocircuitbreaker

        variants["aiocircuitbreaker"] = aiocircuitbreaker.circuit(
            failure_threshold=5, recovery_timeout=30
        )(trivial)
    except ImportError:  # pragma: no cover - optional peer
        print("aiocircuitbreaker not installed: skipped", file=sys.stderr)
    try:
        import aioresilience

        resilience = aioresilience.CircuitBreaker(name="bench")
        variants["aioresilience"] = aioresilience.with_circuit_breaker(resilience)(trivial)
    except ImportError:  # pragma: no cover - optional peer
        print("aioresilience not installed: skipped", file=sys.stderr)
    try:
        import purgatory

        factory = purgatory.AsyncCircuitBreakerFactory(default_threshold=5, default_ttl=30)
        await factory.initialize()
        variants["purgatory"] = factory("bench")(trivial)
    except ImportError:  # pragma: no cover - optional peer
        print("purgatory not installed: skipped", file=sys.stderr)
    return variants


async def time_batch(call: Call, calls: int) -> float:
    """Microseconds per call over ``calls`` sequential awaits."""
    start = time.perf_counter()
    for _ in range(calls):
        await call()
    return (time.perf_counter() - start) / calls * 1e6


async def run(rounds: int, calls: int) -> dict[str, float]:
    """Median microseconds per call of every variant."""
    variants = await build_variants()
    names = list(variants)
    for name in names:  # warm up caches, lazy imports and the breakers' first paths
        await time_batch(variants[name], max(calls // 10, 100))
    samples: dict[str, list[float]] = {name: [] for name in names}
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for index in range(rounds):
            shift = index % len(names)
            for name in names[shift:] + names[:shift]:
                samples[name].append(await time_batch(variants[name], calls))
            gc.collect()
    finally:
        if gc_was_enabled:
            gc.enable()
    return {name: round(statistics.median(values), 3) for name, values in samples.items()}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print a table, and optionally write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds (a smoke run)")
    parser.add_argument("--json", type=Path, help="write the results as JSON to this path")
    args = parser.parse_args(argv)
    rounds, calls = (5, 2_000) if args.quick else (31, 20_000)
    result = asyncio.run(run(rounds, calls))
    bare = result["bare"]
    print(f"closed breaker around a trivial coroutine: median of {rounds} rounds x {calls} calls")
    print(f"{'variant':<20}{'us/call':>10}{'over bare':>12}")
    for name, value in result.items():
        print(f"{name:<20}{value:>10.3f}{value - bare:>12.3f}")
    if args.json is not None:
        args.json.write_text(json.dumps({"circuit_breaker_us_per_call": result}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
