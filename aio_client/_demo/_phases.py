"""The demo's four phases. Each drives real requests and returns what it measured."""

from __future__ import annotations

import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import anyio

from .. import _models
from .._client import Client
from .._errors import AioClientError, DeadlineExceededError
from .._priority import Priority
from ..strategies._single import single_attempt_strategy
from ..transports import AiohttpTransport
from ._services import STRATEGIES, Services

__all__ = ["PHASES", "Phase", "PhaseResult", "Progress"]

#: Called with the fraction (0..1) of the current step done and a label.
Progress = Callable[[float, str], None]


@dataclass
class PhaseResult:
    """A phase's table and notes, from measurements only."""

    title: str
    columns: tuple[str, ...]
    rows: list[tuple[str, ...]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: Latency samples (ms) per series, for the percentile plot in the HTML report.
    latencies: dict[str, list[float]] = field(default_factory=dict)


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


def _driver(url: str, **options: object) -> Client:
    return Client(
        AiohttpTransport(limit=256),
        url,
        timeout=5.0,
        strategy=single_attempt_strategy(),
        **options,  # type: ignore[arg-type]
    )


async def _load(
    seconds: float,
    concurrency: int,
    one: Callable[[int], Awaitable[None]],
    progress: Progress,
    label: str,
) -> None:
    """Run ``one`` in ``concurrency`` loops until ``seconds`` have passed."""
    start = anyio.current_time()
    end = start + seconds

    async def loop(worker: int) -> None:
        while anyio.current_time() < end:
            await one(worker)

    async def tick() -> None:
        while anyio.current_time() < end:
            progress(min(1.0, (anyio.current_time() - start) / seconds), label)
            await anyio.sleep(0.1)

    async with anyio.create_task_group() as tg:
        tg.start_soon(tick)
        for worker in range(concurrency):
            tg.start_soon(loop, worker)
    progress(1.0, label)


async def _load_at_rate(
    seconds: float,
    rate: float,
    one: Callable[[int], Awaitable[None]],
    progress: Progress,
    label: str,
) -> None:
    """Start ``one`` ``rate`` times a second for ``seconds``, whether earlier calls ended or not.

    A fixed arrival rate (an open loop) keeps the measured latency honest: a slow call does
    not hold back the calls after it, and the process is never driven flat out, where
    latency would measure the CPU each call costs rather than the calls themselves.
    """
    start = anyio.current_time()
    interval = 1.0 / rate

    async def call(n: int) -> None:
        await one(n)

    async with anyio.create_task_group() as tg:
        n = 0
        while (due := start + n * interval) < start + seconds:
            await anyio.sleep_until(due)
            tg.start_soon(call, n)
            n += 1
            if n % 10 == 0:
                progress(min(1.0, n * interval / seconds), label)
    progress(1.0, label)


#: Calls per second in phase 1: well under what one process serving all three parts can do,
#: so latencies are the services' and the strategies', not CPU queueing.
STRATEGY_RATE = 150.0


async def strategies_phase(services: Services, seconds: float, progress: Progress) -> PhaseResult:
    """Single attempt vs sequential retries vs hedged requests against a slow-tailed upstream."""
    result = PhaseResult(
        "1. strategies: latency, errors and extra load",
        ("strategy", "calls", "p50 ms", "p90 ms", "p99 ms", "max ms", "errors", "extra load"),
    )
    share = seconds / len(STRATEGIES)
    measured: dict[str, _Measured] = {}
    async with _driver(services.middle_url) as driver:
        for name in STRATEGIES:
            latencies: list[float] = []
            errors = 0

            async def one(
                worker: int, name: str = name, latencies: list[float] = latencies
            ) -> None:
                nonlocal errors
                start = time.perf_counter()
                try:
                    resp = await driver.request(
                        _models.get("api", query={"strategy": name}), timeout=2.0
                    )
                    ok = resp.status == 200
                except AioClientError:
                    ok = False
                latencies.append((time.perf_counter() - start) * 1000.0)
                errors += not ok

            before = services.upstream.requests[name]
            await _load_at_rate(share, STRATEGY_RATE, one, progress, name)
            sent = services.upstream.requests[name] - before
            calls = len(latencies)
            result.latencies[name] = latencies
            measured[name] = _Measured(
                p50=_pct(latencies, 0.5),
                p99=_pct(latencies, 0.99),
                errors=100.0 * errors / max(calls, 1),
                extra=100.0 * (sent - calls) / max(calls, 1),
            )
            result.rows.append(
                (
                    name,
                    str(calls),
                    f"{_pct(latencies, 0.5):.1f}",
                    f"{_pct(latencies, 0.9):.1f}",
                    f"{_pct(latencies, 0.99):.1f}",
                    f"{max(latencies):.1f}",
                    f"{measured[name].errors:.1f}%",
                    f"{measured[name].extra:+.1f}%",
                )
            )
    result.notes.append(
        f"{STRATEGY_RATE:.0f} calls/s to the middle service, which calls the upstream with each "
        "strategy; upstream: ~4% of requests take 100-300 ms, ~1% answer 503"
    )
    result.notes.extend(_explain_strategies(measured))
    return result


@dataclass(frozen=True)
class _Measured:
    p50: float
    p99: float
    errors: float
    extra: float


def _explain_strategies(measured: dict[str, _Measured]) -> list[str]:
    """One line for each number a newcomer might read as a fault, from the measurements."""
    single = measured[STRATEGIES[0]]
    sequential = measured[STRATEGIES[1]]
    hedged = {name: m for name, m in measured.items() if name.startswith("hedged")}
    notes = []
    if any(m.extra > 0.0 for m in measured.values()):
        notes.append(
            "extra load = upstream requests beyond one per call: retries of 503s, and hedges, "
            "sent when the first request has not answered within the hedge delay (20 ms, or the "
            "p90 of recent answers); one retry budget caps them near 20% of calls"
        )
    if single.errors > 0.0:
        notes.append(
            "single attempt's errors are the upstream's 503s, passed on; the other strategies "
            "retry them"
        )
    if sequential.p99 > 0.5 * single.p99:
        notes.append(
            "sequential retries keep a high p99: a retry helps a failed answer, not a slow one, "
            "which it waits out; hedging races the slow one instead"
        )
    for name, m in hedged.items():
        if m.p50 > 1.25 * single.p50:
            notes.append(
                f"{name}: p50 above single's: this machine was too busy to serve the extra "
                "requests without slowing every call (all three services share one process here)"
            )
    return notes


async def outage_phase(services: Services, seconds: float, progress: Progress) -> PhaseResult:
    """The upstream fails for the middle third; the breaker opens, fails fast, and recovers."""
    result = PhaseResult(
        "2. upstream outage: the circuit breaker",
        ("window", "calls", "ok", "refused fast", "p50 ms", "upstream requests"),
    )
    windows: dict[str, list[tuple[float, int, bool]]] = {"before": [], "outage": [], "after": []}
    current = "before"
    async with _driver(services.middle_url) as driver:

        async def one(worker: int) -> None:
            start = time.perf_counter()
            try:
                resp = await driver.request(_models.get("guarded"), timeout=2.0)
                status, refused = resp.status, "x-demo-refused" in resp.headers
            except AioClientError:
                status, refused = 0, False
            windows[current].append(((time.perf_counter() - start) * 1000.0, status, refused))
            await anyio.sleep(0.01)

        third = seconds / 3
        counts: dict[str, int] = {}
        for window in ("before", "outage", "after"):
            current = window
            services.upstream.outage = window == "outage"
            before = services.upstream.requests["breaker"]
            if window == "outage":
                outage_start = anyio.current_time()
            if window == "after":
                recovered_from = anyio.current_time()
            await _load(third, 8, one, progress, window)
            counts[window] = services.upstream.requests["breaker"] - before
        services.upstream.outage = False
    for window, samples in windows.items():
        result.rows.append(
            (
                window,
                str(len(samples)),
                str(sum(1 for _, status, _ in samples if status == 200)),
                str(sum(1 for _, _, refused in samples if refused)),
                f"{statistics.median(s[0] for s in samples):.1f}" if samples else "-",
                str(counts[window]),
            )
        )
    opened = [t for t, state in services.breaker_events if state == "open" and t >= outage_start]
    closed = [
        t for t, state in services.breaker_events if state == "closed" and t >= recovered_from
    ]
    if opened:
        result.notes.append(
            f"breaker opened {1000 * (opened[0] - outage_start):.0f} ms into the outage"
        )
    if closed:
        result.notes.append(
            f"breaker closed again {1000 * (closed[0] - recovered_from):.0f} ms after recovery"
        )
    states = [state for _, state in services.breaker_events]
    result.notes.append("transitions: " + (" -> ".join(states) or "none"))
    refused = {window: sum(1 for *_, r in samples if r) for window, samples in windows.items()}
    if counts["outage"]:
        result.notes.append(
            f"the outage's {counts['outage']} upstream requests are the calls made before the "
            "breaker opened, then its probes (half_open) to see if the upstream is back"
        )
    if "half_open -> open" in " -> ".join(states):
        result.notes.append("half_open -> open: a probe failed, so the breaker opened again")
    if refused["after"]:
        result.notes.append(
            f"{refused['after']} calls were still refused after the upstream recovered: the "
            "breaker waits out its break and needs two good probes before it lets everyone in"
        )
    return result


async def deadline_phase(services: Services, seconds: float, progress: Progress) -> PhaseResult:
    """The caller gives 300 ms; the budget travels two hops and the work stops with it."""
    result = PhaseResult(
        "3. deadline propagation: caller -> middle -> upstream",
        (
            "call",
            "caller gave ms",
            "middle saw ms",
            "upstream saw ms",
            "upstream worked ms",
            "upstream stopped by",
            "caller got",
            "after ms",
        ),
    )
    calls = max(3, min(8, int(seconds / 0.4)))
    first_report = len(services.upstream.deadline_reports)
    first_budget = len(services.middle_budgets)
    async with _driver(services.middle_url) as driver:
        outcomes: list[tuple[str, float]] = []
        for n in range(calls):
            progress(n / calls, "300 ms budget, two hops")
            start = time.perf_counter()
            try:
                resp = await driver.request(_models.get("chain"), timeout=0.3)
                outcome = f"HTTP {resp.status}"
            except DeadlineExceededError:
                outcome = "DeadlineExceeded"
            outcomes.append((outcome, (time.perf_counter() - start) * 1000.0))
            await anyio.sleep(0.05)  # lets the upstream finish recording the cancellation
        progress(1.0, "300 ms budget, two hops")
    reports = services.upstream.deadline_reports[first_report:]
    budgets = services.middle_budgets[first_budget:]
    for n, (outcome, took) in enumerate(outcomes):
        report = reports[n] if n < len(reports) else None
        middle = budgets[n] if n < len(budgets) else None
        result.rows.append(
            (
                str(n + 1),
                "300",
                f"{1000 * middle:.0f}" if middle is not None else "-",
                f"{1000 * report.budget_received:.0f}"
                if report and report.budget_received is not None
                else "-",
                f"{1000 * report.worked_for:.0f}"
                if report and report.worked_for is not None
                else "-",
                (report.reason or "finished") if report else "-",
                outcome,
                f"{took:.0f}",
            )
        )
    result.notes.append("the upstream's work takes 2 s unless cancelled; nobody passed a timeout")
    if any(report.reason == "client_disconnected" for report in reports):
        result.notes.append(
            "client_disconnected: the middle service's budget ran out a moment before the "
            "upstream's own (the upstream starts counting when the request arrives); either way "
            "the work stopped"
        )
    return result


async def overload_phase(services: Services, seconds: float, progress: Progress) -> PhaseResult:
    """Three times the middle service's capacity: a quarter HIGH, the rest LOW priority."""
    result = PhaseResult(
        "4. overload: priority load shedding",
        ("priority", "calls", "ok", "shed (503)", "success", "p50 ms of ok"),
    )
    stats: dict[Priority, list[tuple[int, float]]] = {Priority.HIGH: [], Priority.LOW: []}
    async with _driver(services.middle_url) as driver:

        async def one(worker: int) -> None:
            # A quarter of the load is HIGH (less than the service's capacity), the rest LOW.
            priority = Priority.HIGH if worker % 4 == 0 else Priority.LOW
            start = time.perf_counter()
            try:
                resp = await driver.request(_models.get("heavy"), priority=priority, timeout=2.0)
                status = resp.status
            except AioClientError:
                status = 0
            stats[priority].append((status, (time.perf_counter() - start) * 1000.0))
            if status == 503:
                await anyio.sleep(0.005)

        await _load(
            seconds, 3 * services.shedder.max_in_flight, one, progress, "3x capacity, HIGH and LOW"
        )
    for priority, samples in stats.items():
        ok = [ms for status, ms in samples if status == 200]
        shed = sum(1 for status, _ in samples if status == 503)
        result.rows.append(
            (
                priority.value,
                str(len(samples)),
                str(len(ok)),
                str(shed),
                f"{100.0 * len(ok) / max(len(samples), 1):.1f}%",
                f"{statistics.median(ok):.1f}" if ok else "-",
            )
        )
    result.notes.append(
        f"middle service: at most {services.shedder.max_in_flight} requests in flight; "
        "LOW is refused once 70% are busy, HIGH only when full"
    )
    return result


#: A phase: its name, its share of the run's duration, and its function.
Phase = tuple[str, float, Callable[[Services, float, Progress], Awaitable[PhaseResult]]]
PHASES: tuple[Phase, ...] = (
    ("strategies", 0.35, strategies_phase),
    ("outage", 0.3, outage_phase),
    ("deadline", 0.05, deadline_phase),
    ("overload", 0.2, overload_phase),
)
