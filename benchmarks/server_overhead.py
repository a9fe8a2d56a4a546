"""What the server middleware costs a service, side by side with the bare app.

Usage::

    python benchmarks/server_overhead.py [--quick] [--json PATH] [--check]
        [--concurrency N] [--seconds S] [--rounds R] [--gc-freeze]

Each variant of ``_server_apps.py`` runs in a process of its own on
127.0.0.1 (uvloop when installed):

- FastAPI under uvicorn: ``asgi_bare``, ``asgi_passthrough`` (a pure ASGI
  middleware that does nothing), ``asgi_deadline`` (``DeadlineMiddleware``),
  ``asgi_deadline_prometheus`` (with ``PrometheusMetrics.server_observer``);
- aiohttp.web: ``aiohttp_bare``, ``aiohttp_passthrough`` (an ``@web.middleware``
  that only awaits the handler: what any middleware costs in aiohttp),
  ``aiohttp_deadline`` (``aiohttp_middleware()``), ``aiohttp_aio_request``
  (aio-request 0.2.9's ``aiohttp_middleware_factory()``);
- ``asgi_minimal`` and ``aiohttp_minimal``, a reference: the least a deadline
  middleware does on each server (the budget header into a context variable,
  one loop timer, a 504), nothing else.

One load generator (this process, a minimal HTTP/1.1 client on keep-alive
connections, far cheaper than the servers) keeps ``--concurrency`` requests in
flight (32) against one server at a time, for ``--seconds`` per slice.
Every request carries ``X-Request-Timeout: 5`` (as a propagating client
sends), every response is checked (200, ``pong``). Variants are interleaved
round-robin (the order rotates each round) and medians reported, with the
server process's CPU time per request and its garbage collections over the
whole run (young and full ones, and the seconds they took). ``server_rps_ratio``
is each variant's median requests/s over its bare app's.

``--gc-freeze``: each server calls ``gc.freeze()`` once ready, so the
collector's full passes no longer walk the framework's start-up objects (with
many requests in flight a server may collect all the time: the GC column
shows how often, and for how long).

Targets: ``asgi_deadline`` and ``aiohttp_deadline`` at least 0.85x their bare
app, ``asgi_deadline_prometheus`` at least 0.8x, and ``aiohttp_deadline``
ahead of ``aiohttp_aio_request``. ``--check`` exits 1 when one is missed;
otherwise the exit code is 0 whenever the run completes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import select
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Final, cast, final

_HERE: Final = Path(__file__).resolve().parent
_SERVER_SCRIPT: Final = _HERE / "_server_apps.py"
sys.path.insert(0, str(_HERE))

from _server_apps import AIOHTTP_VARIANTS, ASGI_VARIANTS, VARIANTS  # noqa: E402

_STARTUP_TIMEOUT: Final = 30.0  # seconds a server may take to print its port
_REQUEST: Final = b"GET /ping HTTP/1.1\r\nHost: bench\r\nX-Request-Timeout: 5\r\n\r\n"
_BARE: Final = {
    **dict.fromkeys(ASGI_VARIANTS, "asgi_bare"),
    **dict.fromkeys(AIOHTTP_VARIANTS, "aiohttp_bare"),
}
_RATIOS: Final = {
    "asgi_passthrough": "asgi_passthrough",
    "asgi_deadline": "asgi_deadline",
    "asgi_deadline_prometheus": "asgi_deadline_prometheus",
    "aiohttp_passthrough": "aiohttp_passthrough",
    "aiohttp_deadline": "aiohttp_deadline",
    "aiohttp_aio_request": "aiohttp_aio_request",
    "asgi_minimal": "asgi_minimal",
    "aiohttp_minimal": "aiohttp_minimal",
}
_TARGETS: Final = {
    "asgi_deadline": 0.85,
    "asgi_deadline_prometheus": 0.8,
    "aiohttp_deadline": 0.85,
}
_CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")


@final
@dataclass(frozen=True, slots=True)
class Settings:
    """Sizes of one run."""

    quick: bool
    rounds: int
    seconds: float
    concurrency: int
    gc_freeze: bool = False


@final
@dataclass(slots=True)
class Series:
    """Per-round samples of one variant."""

    rps: list[float] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)
    #: The server's garbage collections over the whole run (see _server_apps.py).
    collections: object = None


# --- the load generator ------------------------------------------------------------


@final
class _Connection(asyncio.Protocol):
    """One keep-alive connection sending one request at a time."""

    __slots__ = ("_buffer", "_transport", "_waiter", "lost")

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[None] | None = None
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(ConnectionError("the server closed the connection"))

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        buffer = self._buffer
        head_end = buffer.find(b"\r\n\r\n")
        if head_end < 0:
            return
        head = bytes(buffer[:head_end]).lower()
        length_at = head.find(b"\r\ncontent-length:")
        if length_at < 0:
            waiter.set_exception(RuntimeError(f"no Content-Length in {head!r}"))
            return
        line_end = head.find(b"\r\n", length_at + 2)
        length = int(head[length_at + 17 : line_end if line_end > 0 else None])
        total = head_end + 4 + length
        if len(buffer) < total:
            return
        if not head.startswith(b"http/1.1 200 ") or buffer[head_end + 4 : total] != b"pong":
            waiter.set_exception(RuntimeError(f"unexpected response {bytes(buffer[:total])!r}"))
            return
        del buffer[:total]
        waiter.set_result(None)

    async def request(self) -> None:
        assert self._transport is not None
        if self.lost:
            raise ConnectionError("the server closed the connection")
        self._waiter = asyncio.get_running_loop().create_future()
        self._transport.write(_REQUEST)
        await self._waiter

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


async def _connect(port: int, count: int) -> list[_Connection]:
    loop = asyncio.get_running_loop()
    connections = []
    for _ in range(count):
        _, protocol = await loop.create_connection(_Connection, "127.0.0.1", port)
        connections.append(protocol)
    return connections


async def _slice(connections: list[_Connection], seconds: float) -> tuple[int, float]:
    """Requests completed and wall seconds, keeping every connection busy for ``seconds``."""
    loop = asyncio.get_running_loop()
    done = 0
    end = loop.time() + seconds

    async def worker(connection: _Connection) -> None:
        nonlocal done
        while loop.time() < end:
            await connection.request()
            done += 1

    started = time.perf_counter()
    async with asyncio.timeout(seconds + 30), asyncio.TaskGroup() as group:
        for connection in connections:
            group.create_task(worker(connection))
    return done, time.perf_counter() - started


# --- the servers ------------------------------------------------------------------


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    # utime and stime: the 14th and 15th fields, the 12th and 13th after the name.
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def _spawn(variant: str, *, gc_freeze: bool = False) -> subprocess.Popen[str]:
    command = [sys.executable, *(f"-W{o}" for o in sys.warnoptions), str(_SERVER_SCRIPT), variant]
    if gc_freeze:
        command.append("--gc-freeze")
    # A session of its own: a Ctrl-C reaches this process only, which stops
    # the servers in order by closing their stdin.
    return subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True
    )


def _port(proc: subprocess.Popen[str], variant: str) -> int:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], _STARTUP_TIMEOUT)
    line = proc.stdout.readline() if ready else ""
    if not line:
        raise RuntimeError(f"server {variant} did not start (see its stderr above)")
    return int(line)


def _stop(proc: subprocess.Popen[str]) -> dict[str, object] | None:
    """Stop a server; its garbage collection report (see _server_apps.py), if it gave one."""
    if proc.stdin is not None:
        with contextlib.suppress(OSError):
            proc.stdin.close()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    found: dict[str, object] | None = None
    if proc.stdout is not None:
        for line in proc.stdout.read().splitlines():
            if line.startswith("gc "):
                found = json.loads(line[3:])
        proc.stdout.close()
    return found


@contextlib.contextmanager
def _servers(
    variants: Sequence[str], collections: dict[str, object], *, gc_freeze: bool = False
) -> Iterator[dict[str, tuple[int, int]]]:
    """Start one process per variant; yield ``{variant: (pid, port)}``; always stop them.

    Each server's garbage collection report lands in ``collections`` once it stopped.
    """
    procs: dict[str, subprocess.Popen[str]] = {}
    try:
        for variant in variants:
            procs[variant] = _spawn(variant, gc_freeze=gc_freeze)
        yield {variant: (proc.pid, _port(proc, variant)) for variant, proc in procs.items()}
    finally:
        for variant, proc in procs.items():
            collections[variant] = _stop(proc)


# --- the run ----------------------------------------------------------------------


async def measure(settings: Settings, variants: Sequence[str]) -> dict[str, Series]:
    """Interleaved rounds over every variant; per-round requests/s and server CPU."""
    series = {variant: Series() for variant in variants}
    collections: dict[str, object] = {}
    try:
        await _rounds(settings, variants, series, collections)
    finally:
        for variant, found in collections.items():
            series[variant].collections = found
    return series


async def _rounds(
    settings: Settings,
    variants: Sequence[str],
    series: dict[str, Series],
    collections: dict[str, object],
) -> None:
    with _servers(variants, collections, gc_freeze=settings.gc_freeze) as running:
        pools = {
            variant: await _connect(port, settings.concurrency)
            for variant, (_, port) in running.items()
        }
        try:
            for variant in variants:  # warm-up: imports, caches, first connections
                await _slice(pools[variant], min(0.5, settings.seconds))
            for round_no in range(settings.rounds):
                shift = round_no % len(variants)
                for variant in [*variants[shift:], *variants[:shift]]:
                    pid = running[variant][0]
                    cpu = _cpu_seconds(pid)
                    done, seconds = await _slice(pools[variant], settings.seconds)
                    cpu = _cpu_seconds(pid) - cpu
                    series[variant].rps.append(done / seconds)
                    series[variant].cpu_us.append(cpu / done * 1e6)
                print(
                    f"round {round_no + 1}/{settings.rounds}: "
                    + ", ".join(f"{v} {series[v].rps[-1]:,.0f}" for v in variants),
                    file=sys.stderr,
                )
        finally:
            for pool in pools.values():
                for connection in pool:
                    connection.close()


def report(settings: Settings, series: dict[str, Series]) -> dict[str, object]:
    """Medians, ratios to each bare app, and the targets."""
    rps = {v: statistics.median(s.rps) for v, s in series.items()}
    cpu = {v: statistics.median(s.cpu_us) for v, s in series.items()}
    ratios = {
        name: rps[variant] / rps[_BARE[variant]]
        for name, variant in _RATIOS.items()
        if variant in rps and _BARE[variant] in rps
    }
    # The same ratio taken within each round (the two slices ran a few seconds
    # apart), then the median: less sensitive to the machine's load drifting.
    per_round = {
        name: statistics.median(
            a / b for a, b in zip(series[variant].rps, series[_BARE[variant]].rps, strict=True)
        )
        for name, variant in _RATIOS.items()
        if variant in rps and _BARE[variant] in rps
    }
    targets: dict[str, object] = {}
    for name, bound in _TARGETS.items():
        if name in ratios:
            targets[f"{name}_at_least"] = bound
            targets[f"{name}_met"] = ratios[name] >= bound
    if "aiohttp_deadline" in ratios and "aiohttp_aio_request" in ratios:
        targets["aiohttp_deadline_ahead_of_aio_request_met"] = (
            ratios["aiohttp_deadline"] > ratios["aiohttp_aio_request"]
        )
    return {
        "settings": {
            "quick": settings.quick,
            "rounds": settings.rounds,
            "seconds_per_slice": settings.seconds,
            "concurrency": settings.concurrency,
            "gc_freeze": settings.gc_freeze,
        },
        "environment": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            **{
                name: _version(name)
                for name in ("uvicorn", "fastapi", "starlette", "aiohttp", "uvloop", "aio-request")
            },
        },
        "server_rps": rps,
        "server_rps_range": {v: [min(s.rps), max(s.rps)] for v, s in series.items()},
        "server_cpu_us_per_request": cpu,
        "server_rps_ratio": ratios,
        "server_rps_ratio_per_round": per_round,
        "server_gc": {v: s.collections for v, s in series.items()},
        "server_cpu_ratio": {
            name: cpu[variant] / cpu[_BARE[variant]]
            for name, variant in _RATIOS.items()
            if variant in cpu and _BARE[variant] in cpu
        },
        "targets": targets,
    }


def _version(name: str) -> str | None:
    try:
        return version(name)
    except Exception:
        return None


def _print(result: dict[str, object]) -> None:
    rps: dict[str, float] = result["server_rps"]  # type: ignore[assignment]
    cpu: dict[str, float] = result["server_cpu_us_per_request"]  # type: ignore[assignment]
    ranges: dict[str, list[float]] = result["server_rps_range"]  # type: ignore[assignment]
    ratios: dict[str, float] = result["server_rps_ratio"]  # type: ignore[assignment]
    per_round: dict[str, float] = result["server_rps_ratio_per_round"]  # type: ignore[assignment]
    collected: dict[str, dict[str, object] | None] = result["server_gc"]  # type: ignore[assignment]
    columns = ("req/s", "min", "max", "ratio", "/round")
    print(
        f"{'variant':<26}"
        + "".join(f"{c:>9}" for c in columns)
        + f"{'CPU µs/req':>12}{'GCs young/full, s':>20}"
    )
    for variant, value in rps.items():
        low, high = ranges[variant]
        ratio = f"{ratios[variant]:.2f}" if variant in ratios else "1"
        round_ratio = f"{per_round[variant]:.2f}" if variant in per_round else ""
        gc_seen = collected.get(variant)
        if gc_seen:
            counts: list[int] = gc_seen["collections"]  # type: ignore[assignment]
            gc_text = f"{counts[0]}/{counts[2]}, {gc_seen['seconds']:.2f}"
        else:
            gc_text = "-"
        print(
            f"{variant:<26}{value:>9,.0f}{low:>9,.0f}{high:>9,.0f}{ratio:>9}{round_ratio:>9}"
            f"{cpu[variant]:>12.1f}{gc_text:>20}"
        )
    print("targets:", json.dumps(result["targets"]))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run of about 30 s")
    parser.add_argument("--json", type=Path, help="also write the report here")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight (32)")
    parser.add_argument("--seconds", type=float, help="seconds per slice (quick 0.6, full 1.5)")
    parser.add_argument("--rounds", type=int, help="rounds (quick 3, full 9)")
    parser.add_argument(
        "--gc-freeze",
        action="store_true",
        help="servers call gc.freeze() once ready (as the README suggests for services)",
    )
    parser.add_argument(
        "--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS), help="a subset"
    )
    args = parser.parse_args(argv)
    if args.concurrency < 1:
        parser.error("--concurrency must be >= 1")
    settings = Settings(
        quick=args.quick,
        rounds=args.rounds or (3 if args.quick else 9),
        seconds=args.seconds or (0.6 if args.quick else 1.5),
        concurrency=args.concurrency,
        gc_freeze=args.gc_freeze,
    )
    if settings.rounds < 1 or settings.seconds <= 0:
        parser.error("--rounds and --seconds must be positive")
    try:
        import uvloop
    except ImportError:
        series = asyncio.run(measure(settings, args.variants))
    else:
        series = uvloop.run(measure(settings, args.variants))
    result = report(settings, series)
    _print(result)
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    missed = [name for name, met in result["targets"].items() if name.endswith("_met") and not met]  # type: ignore[attr-defined]
    if args.check and missed:
        print("missed:", ", ".join(missed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
