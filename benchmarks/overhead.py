"""What aio_client costs per request, side by side with raw clients and aio-request.

Usage::

    python benchmarks/overhead.py [--quick] [--json PATH] [--check] [--profile]
        [--concurrency N]

Three measurements in one run; within each, the variants are interleaved
round-robin (the order rotates every round) and medians are reported, so a
neighbour's load drifting during the run hits every variant alike:

1. in-process pipeline overhead (µs/request): aio_client's default pipeline
   over ``MemoryTransport`` vs aio-request 0.2.9's default pipeline over a fake
   in-memory transport vs calling the handler directly; and both libraries'
   hedged (parallel) strategies, 2 attempts 0.05 s apart, where attempt 1
   answers at once so no hedge goes out;
2. loopback throughput (requests/s) against ``_loopback_server.py`` in its own
   process: raw aiohttp and httpx vs aio_client over each vs aio-request;
3. the sniffio finding: raw httpx throughput with sniffio installed vs not
   installed (httpcore imports it on every request), each in a subprocess.

``--check`` exits with 1 when a target is missed (aio_client at most a quarter
of aio-request in process; hedged aio_client at most 1.5 times sequential
aio_client and at most a fifth of aio-request's parallel strategy in process;
at least 90 % of the raw transport over loopback).
See ``benchmarks/README.md``.
"""

# Only the standard library is imported at module level: the same file runs the
# sniffio subprocess workers, which must hide sniffio before anything (anyio,
# httpcore) gets the chance to import it.
from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import importlib
import importlib.util
import json
import os
import platform
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any, Final, final

_HERE: Final = Path(__file__).resolve().parent
_SERVER_SCRIPT: Final = _HERE / "_loopback_server.py"
_EXPECTED_BODY: Final = b"pong"
_FAKE_ENDPOINT: Final = "http://bench.invalid"
_CALL_TIMEOUT: Final = 20.0  # seconds; both libraries' default call budget
_INPROCESS_TARGET: Final = 0.25  # aio_client / aio-request, at most
_HEDGED_VS_SEQUENTIAL_TARGET: Final = 1.5  # hedged / default aio_client, at most
_HEDGED_VS_PEER_TARGET: Final = 0.2  # hedged aio_client / aio-request parallel, at most
# The hedged variants' configuration: 2 attempts, the hedge 0.05 s after the first.
_HEDGE_ATTEMPTS: Final = 2
_HEDGE_DELAY: Final = 0.05  # seconds
_LOOPBACK_TARGET: Final = 0.90  # aio_client / raw transport, at least
_SLICE_TIMEOUT: Final = 300.0  # seconds one slice may take before the run is abandoned
_STARTUP_TIMEOUT: Final = 30.0  # seconds a subprocess may take to say it is ready
# How the sniffio workers make it unavailable (see _hide_sniffio).
_SNIFFIO_MODES: Final = ("present", "absent", "blocked")


@final
@dataclass(frozen=True, slots=True)
class Settings:
    """Sizes of one run."""

    quick: bool
    inprocess_rounds: int
    inprocess_calls: int
    loopback_rounds: int
    #: Requests per round of each aiohttp-based variant.
    loopback_requests: int
    #: Requests per round of each httpx-based variant: httpx is several times
    #: slower with many requests in flight (its pool re-queues them), so it gets
    #: fewer to keep the run short; rates are per second either way.
    httpx_requests: int
    concurrency: int = 32
    connection_limit: int = 100

    @classmethod
    def for_run(cls, *, quick: bool, concurrency: int = 32) -> Settings:
        """Quick: a smoke run well under a minute; full: a few minutes on 2 cores."""
        if quick:
            return cls(
                quick=True,
                inprocess_rounds=5,
                inprocess_calls=2_000,
                loopback_rounds=3,
                loopback_requests=600,
                httpx_requests=150,
                concurrency=concurrency,
            )
        return cls(
            quick=False,
            inprocess_rounds=15,
            inprocess_calls=5_000,
            loopback_rounds=8,
            loopback_requests=3_000,
            httpx_requests=600,
            concurrency=concurrency,
        )

    def requests_for(self, variant: str) -> int:
        """Requests per round of ``variant``."""
        return self.httpx_requests if "httpx" in variant else self.loopback_requests


@final
@dataclass(slots=True)
class Series:
    """Per-round samples of one variant."""

    values: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else float("nan")

    @property
    def low(self) -> float:
        return min(self.values) if self.values else float("nan")

    @property
    def high(self) -> float:
        return max(self.values) if self.values else float("nan")


class RunInterruptedError(Exception):
    """Ctrl-C: the run stops after the slice in progress and cleans up normally."""


@final
class _InterruptFlag:
    # A first Ctrl-C only sets this, so the run unwinds as an ordinary
    # exception (sessions closed, children stopped) instead of cancelling tasks
    # midway through their cleanup; a second one interrupts at once.
    __slots__ = ("raised",)

    def __init__(self) -> None:
        self.raised = False

    def install(self) -> None:
        signal.signal(signal.SIGINT, self._on_sigint)

    def _on_sigint(self, signum: int, frame: object) -> None:
        self.raised = True
        signal.signal(signal.SIGINT, signal.default_int_handler)

    def check(self) -> None:
        if self.raised:
            raise RunInterruptedError


_INTERRUPT: Final = _InterruptFlag()


def _rotated(items: Sequence[str], by: int) -> list[str]:
    shift = by % len(items)
    return [*items[shift:], *items[:shift]]


# --- 1. in-process pipeline overhead -----------------------------------------


def in_memory_aio_request(endpoint: str, *, strategy: Any = None) -> Any:
    """An aio-request client (default setup) whose transport answers a prebuilt 200 at once.

    ``strategy``, when given, replaces aio-request's default strategy for safe
    methods (GET among them); the rest of the setup stays the default.
    """
    import aio_request
    import multidict
    import yarl

    class FakeTransport(aio_request.Transport):  # type: ignore[misc]
        """aio-request's transport seam, answering a prebuilt 200 at once."""

        __slots__ = ("_response",)

        def __init__(self, response: aio_request.ClosableResponse) -> None:
            self._response = response

        async def send(
            self,
            endpoint: yarl.URL,
            request: aio_request.Request,
            timeout: float,  # noqa: ASYNC109 - aio-request's Transport signature
        ) -> aio_request.ClosableResponse:
            return self._response

    response = aio_request.EmptyResponse(
        status=200, headers=multidict.CIMultiDictProxy(multidict.CIMultiDict())
    )
    transport = FakeTransport(response)
    if strategy is None:
        return aio_request.setup(transport=transport, endpoint=endpoint)
    return aio_request.setup(transport=transport, endpoint=endpoint, safe_method_strategy=strategy)


async def measure_inprocess(settings: Settings) -> dict[str, Series]:
    """µs per request of each in-process variant, one sample per round."""
    import aio_request
    import aio_request.client
    import aio_request.pipeline

    import aio_client
    from aio_client.transports import MemoryTransport

    prebuilt = aio_client.Response(200)

    async def handler(request: aio_client.Request, /) -> aio_client.Response:
        return prebuilt

    client = aio_client.Client(MemoryTransport(handler), _FAKE_ENDPOINT)
    hedged_client = aio_client.Client(
        MemoryTransport(handler),
        _FAKE_ENDPOINT,
        strategy=aio_client.parallel_strategy(attempts=_HEDGE_ATTEMPTS, delays=_HEDGE_DELAY),
    )
    request = aio_client.get("ping")

    ar_client = in_memory_aio_request(_FAKE_ENDPOINT + "/")
    # The same configuration: aio-request starts attempt k after delays(k)
    # seconds from the call's start; with 2 attempts that is one hedge at 0.05 s,
    # as in aio_client (which counts from the previous attempt's start).
    ar_parallel_client = in_memory_aio_request(
        _FAKE_ENDPOINT + "/",
        strategy=aio_request.parallel_strategy(
            attempts_count=_HEDGE_ATTEMPTS,
            delays_provider=aio_request.constant_delays(delay=_HEDGE_DELAY),
        ),
    )
    ar_request = aio_request.get("ping")
    deadline_from_timeout = aio_request.Deadline.from_timeout

    async def bare(n: int) -> None:
        for _ in range(n):
            response = await handler(request)
        _expect_status(response.status)

    async def ours(n: int) -> None:
        send = client.request
        for _ in range(n):
            response = await send(request)
        _expect_status(response.status)

    async def ours_hedged(n: int) -> None:
        send = hedged_client.request
        for _ in range(n):
            response = await send(request)
        _expect_status(response.status)

    async def theirs(n: int) -> None:
        send = ar_client.request
        for _ in range(n):
            async with send(ar_request, deadline=deadline_from_timeout(_CALL_TIMEOUT)) as resp:
                status = resp.status
        _expect_status(status)

    async def theirs_parallel(n: int) -> None:
        send = ar_parallel_client.request
        for _ in range(n):
            async with send(ar_request, deadline=deadline_from_timeout(_CALL_TIMEOUT)) as resp:
                status = resp.status
        _expect_status(status)

    async def theirs_without_metrics(n: int) -> None:
        # aio-request records a Prometheus histogram per call and per attempt
        # whenever prometheus_client is importable; aio_client's default
        # pipeline has no metrics, so this variant shows what the rest costs.
        with _aio_request_metrics_off(aio_request.client, aio_request.pipeline):
            await theirs(n)

    variants: dict[str, Callable[[int], Awaitable[None]]] = {
        "bare_handler": bare,
        "aio_client": ours,
        "aio_request": theirs,
        "aio_request_no_metrics": theirs_without_metrics,
        "aio_client_hedged": ours_hedged,
        "aio_request_parallel": theirs_parallel,
    }
    for run in variants.values():  # warm up caches, and check each one works
        await run(200)
    results = {name: Series() for name in variants}
    names = list(variants)
    calls = settings.inprocess_calls
    for round_no in range(settings.inprocess_rounds):
        for name in _rotated(names, round_no):
            _INTERRUPT.check()
            gc.collect()
            start = time.perf_counter_ns()
            await variants[name](calls)
            elapsed = time.perf_counter_ns() - start
            results[name].values.append(elapsed / calls / 1000.0)
    await client.aclose()
    await hedged_client.aclose()
    return results


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


def _expect_status(status: int, body: bytes | None = None) -> None:
    if status != 200 or (body is not None and body != _EXPECTED_BODY):
        raise RuntimeError(f"unexpected response: {status} {body!r}")


def profile_inprocess(calls: int) -> str:
    """cProfile of aio_client's in-process path (top functions by own time)."""
    import cProfile
    import io
    import pstats

    import aio_client
    from aio_client.transports import MemoryTransport

    prebuilt = aio_client.Response(200)

    async def handler(request: aio_client.Request, /) -> aio_client.Response:
        return prebuilt

    async def run() -> None:
        async with aio_client.Client(MemoryTransport(handler), _FAKE_ENDPOINT) as client:
            request = aio_client.get("ping")
            for _ in range(200):
                await client.request(request)
            profiler = cProfile.Profile()
            profiler.enable()
            for _ in range(calls):
                await client.request(request)
            profiler.disable()
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out)
        stats.sort_stats("tottime").print_stats(25)
        text.append(out.getvalue())

    text: list[str] = []
    asyncio.run(run())
    return text[0]


# --- shared loopback machinery ------------------------------------------------


@final
@dataclass(frozen=True, slots=True)
class Sample:
    """One slice of requests: wall and client-CPU seconds."""

    requests: int
    seconds: float
    cpu_seconds: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    @property
    def cpu_us_per_request(self) -> float:
        return self.cpu_seconds / self.requests * 1e6


async def drive(send: Callable[[], Awaitable[None]], requests: int, concurrency: int) -> Sample:
    """Send ``requests`` requests with ``concurrency`` of them in flight at any time."""
    left = requests

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await send()

    gc.collect()
    cpu_start = time.process_time()
    start = time.perf_counter()
    async with asyncio.timeout(_SLICE_TIMEOUT), asyncio.TaskGroup() as group:
        for _ in range(min(concurrency, requests)):
            group.create_task(worker())
    return Sample(requests, time.perf_counter() - start, time.process_time() - cpu_start)


def _child_command(*args: str) -> list[str]:
    # Children inherit this run's -W options, so `python -W error` covers them too.
    return [sys.executable, *(f"-W{option}" for option in sys.warnoptions), *args]


def _spawn(command: list[str]) -> subprocess.Popen[str]:
    # A session of its own: a Ctrl-C in the terminal reaches only this process,
    # which then stops its children in order by closing their stdin.
    return subprocess.Popen(
        command,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _readline(proc: subprocess.Popen[str], timeout: float, what: str) -> str:
    stream = proc.stdout
    assert stream is not None
    # One command gets exactly one line back, so the text buffer is empty here
    # and waiting on the descriptor is accurate.
    ready, _, _ = select.select([stream], [], [], timeout)
    if not ready:
        raise RuntimeError(f"{what}: no answer within {timeout:.0f} s")
    line = stream.readline()
    if not line:
        raise RuntimeError(f"{what}: exited with code {proc.wait(5)} (see its stderr above)")
    return line


def _stop(proc: subprocess.Popen[str]) -> None:
    """End a child we started: close its stdin (it exits), then escalate."""
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
    if proc.stdout is not None:
        proc.stdout.close()


@contextlib.contextmanager
def loopback_server(*, use_uvloop: bool, extra: Sequence[str] = ()) -> Iterator[int]:
    """Run ``_loopback_server.py`` in its own process; yield its port; always stop it.

    ``extra`` passes further options (the latency model) to the server.
    """
    command = _child_command(str(_SERVER_SCRIPT), "--port", "0", *extra)
    if use_uvloop:
        command.append("--uvloop")
    proc = _spawn(command)
    try:
        line = _readline(proc, _STARTUP_TIMEOUT, "loopback server")
        yield int(line)
    finally:
        _stop(proc)


# --- 3. the sniffio workers -----------------------------------------------------


@final
class SniffioWorker:
    """A subprocess sending raw httpx requests, with sniffio installed or not.

    Commands go as JSON lines on its stdin; each gets one JSON line back.
    """

    __slots__ = ("_proc", "mode", "ready")

    def __init__(self, mode: str, url: str, settings: Settings) -> None:
        self.mode = mode
        command = _child_command(
            str(Path(__file__).resolve()),
            "--httpx-worker",
            mode,
            "--url",
            url,
            "--concurrency",
            str(settings.concurrency),
            "--limit",
            str(settings.connection_limit),
        )
        self._proc = _spawn(command)
        try:
            self.ready: dict[str, Any] = json.loads(
                _readline(self._proc, _STARTUP_TIMEOUT, self._name)
            )
            if "error" in self.ready:
                raise RuntimeError(f"{self._name}: {self.ready['error']}")
        except BaseException:
            _stop(self._proc)
            raise

    @property
    def _name(self) -> str:
        return f"httpx worker ({self.mode})"

    def ask(self, command: dict[str, Any]) -> dict[str, Any]:
        """Send one command and wait for its answer (blocking on purpose: this
        process must stay idle while the worker measures)."""
        stdin = self._proc.stdin
        assert stdin is not None
        stdin.write(json.dumps(command) + "\n")
        stdin.flush()
        answer: dict[str, Any] = json.loads(_readline(self._proc, _SLICE_TIMEOUT, self._name))
        if "error" in answer:
            raise RuntimeError(f"{self._name}: {answer['error']}")
        return answer

    def run(self, requests: int, concurrency: int) -> Sample:
        answer = self.ask({"cmd": "run", "n": requests, "concurrency": concurrency})
        return Sample(requests, answer["seconds"], answer["cpu_seconds"])

    def close(self) -> None:
        _stop(self._proc)


def _hide_sniffio(mode: str, farm: Path) -> None:
    """Make this process see sniffio as installed or not, before anything imports it.

    Every mode swaps the site-packages entry of ``sys.path`` for ``farm``, a
    directory of symlinks to its entries, so the three modes differ in one
    thing only. ``absent`` leaves sniffio's entries out: each ``import sniffio``
    then runs the full, failing search of ``sys.path``, exactly as when it is not
    installed. ``blocked`` keeps them but sets ``sys.modules["sniffio"] = None``:
    the import fails at once, which is much cheaper than a real miss and so
    understates the cost (it is measured to show that).
    """
    if "sniffio" in sys.modules:
        raise RuntimeError("sniffio was imported before it could be hidden")
    spec = importlib.util.find_spec("sniffio")
    if spec is None or spec.origin is None:
        raise RuntimeError("sniffio is not installed, so there is nothing to compare")
    site = Path(spec.origin).parent.parent
    for entry in site.iterdir():
        if mode == "absent" and (entry.name == "sniffio" or entry.name.startswith("sniffio-")):
            continue
        (farm / entry.name).symlink_to(entry)
    sys.path[:] = [str(farm) if Path(item) == site else item for item in sys.path]
    sys.path_importer_cache.clear()
    importlib.invalidate_caches()
    if mode == "blocked":
        sys.modules["sniffio"] = None  # type: ignore[assignment]


def _worker_main(mode: str, url: str, concurrency: int, limit: int) -> int:
    with tempfile.TemporaryDirectory(prefix="sniffio-farm-") as farm:
        _hide_sniffio(mode, Path(farm))
        return asyncio.run(_worker_loop(url, concurrency, limit))


async def _worker_loop(url: str, concurrency: int, limit: int) -> int:
    import httpcore._synchronization
    import httpx

    try:
        importlib.import_module("sniffio")
    except ImportError:
        sniffio_importable = False
    else:
        sniffio_importable = True
    limits = httpx.Limits(max_connections=limit, max_keepalive_connections=limit)
    async with httpx.AsyncClient(limits=limits) as client:

        async def send() -> None:
            response = await client.get(url)
            _expect_status(response.status_code, response.content)

        await drive(send, 200, concurrency)  # open the connections
        _reply({"sniffio_importable": sniffio_importable, "httpx": version("httpx")})
        while True:
            # A blocking read on purpose: nothing else may run here meanwhile.
            line = sys.stdin.readline()
            if not line:
                return 0
            command = json.loads(line)
            try:
                if command["cmd"] == "run":
                    sample = await drive(
                        send, int(command["n"]), int(command.get("concurrency", concurrency))
                    )
                    _reply({"seconds": sample.seconds, "cpu_seconds": sample.cpu_seconds})
                elif command["cmd"] == "probe":
                    found = await _probe(
                        send, int(command["n"]), concurrency, httpcore._synchronization
                    )
                    _reply(found)
                else:
                    _reply({"error": f"unknown command {command['cmd']!r}"})
            except Exception as exc:  # reported to the parent, which stops the run
                _reply({"error": _describe(exc)})


async def _probe(
    send: Callable[[], Awaitable[None]], n: int, concurrency: int, sync_module: Any
) -> dict[str, Any]:
    """How often httpcore looks sniffio up per request, and what one lookup costs."""
    lookup = sync_module.current_async_library
    counts = {"lookups": 0, "imports": 0}
    counting_imports = True

    def counting() -> str:
        counts["lookups"] += 1
        result: str = lookup()
        return result

    def audit(event: str, args: tuple[Any, ...]) -> None:
        # "import" is audited only when the module is not (usably) in
        # sys.modules, that is for every attempt that goes looking for it.
        if counting_imports and event == "import" and args[0] == "sniffio":
            counts["imports"] += 1

    # Audit hooks cannot be removed; the probe is the last thing a worker does.
    sys.addaudithook(audit)
    found: dict[str, Any] = {}
    sync_module.current_async_library = counting
    try:
        for label, in_flight in (("sequential", 1), ("concurrent", concurrency)):
            counts.update(lookups=0, imports=0)
            await drive(send, n, in_flight)
            found[label] = {
                "lookups_per_request": counts["lookups"] / n,
                "failed_imports_per_request": counts["imports"] / n,
            }
    finally:
        sync_module.current_async_library = lookup
        counting_imports = False
    repeats = 2_000
    start = time.perf_counter_ns()
    for _ in range(repeats):
        lookup()
    found["lookup_us"] = (time.perf_counter_ns() - start) / repeats / 1000.0
    return found


def _reply(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


# --- 2. loopback throughput -------------------------------------------------------

#: Loopback variants in this process, in table order.
LOOPBACK_VARIANTS: Final = (
    "raw_aiohttp",
    "aio_client_aiohttp",
    "raw_httpx",
    "aio_client_httpx",
    "aio_request_aiohttp",
)


@final
@dataclass(slots=True)
class LoopbackResults:
    """Per-round throughput and client CPU of every loopback variant."""

    rps: dict[str, Series]
    cpu_us: dict[str, Series]
    #: Per sniffio mode: what its worker said when ready, and its probe.
    workers: dict[str, dict[str, Any]]


async def measure_loopback(
    port: int, settings: Settings, sniffio_modes: Sequence[str]
) -> LoopbackResults:
    """Throughput of each client against the server on ``port``, interleaved."""
    import aio_request
    import aiohttp
    import httpx

    import aio_client
    from aio_client.transports import AiohttpTransport, HttpxTransport

    base = f"http://127.0.0.1:{port}"
    url = f"{base}/ping"
    limit = settings.connection_limit
    request = aio_client.get("ping")
    ar_request = aio_request.get("ping")
    deadline_from_timeout = aio_request.Deadline.from_timeout

    async with contextlib.AsyncExitStack() as stack:
        # The same connection limit everywhere: aio_client's transports get it as
        # `limit`, the raw clients and aio-request's session as their pool size.
        raw_session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=limit))
        stack.push_async_callback(raw_session.close)
        ours_aiohttp = aio_client.Client(AiohttpTransport(limit=limit), base)
        stack.push_async_callback(ours_aiohttp.aclose)
        raw_httpx_client = httpx.AsyncClient(
            limits=httpx.Limits(max_connections=limit, max_keepalive_connections=limit)
        )
        stack.push_async_callback(raw_httpx_client.aclose)
        ours_httpx = aio_client.Client(HttpxTransport(limit=limit), base)
        stack.push_async_callback(ours_httpx.aclose)
        ar_session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=limit))
        stack.push_async_callback(ar_session.close)
        theirs = aio_request.setup(
            transport=aio_request.AioHttpTransport(ar_session), endpoint=base + "/"
        )

        async def raw_aiohttp() -> None:
            async with raw_session.get(url) as resp:
                body = await resp.read()
            _expect_status(resp.status, body)

        async def aio_client_aiohttp() -> None:
            response = await ours_aiohttp.request(request)
            _expect_status(response.status, response.content)

        async def raw_httpx() -> None:
            response = await raw_httpx_client.get(url)
            _expect_status(response.status_code, response.content)

        async def aio_client_httpx() -> None:
            response = await ours_httpx.request(request)
            _expect_status(response.status, response.content)

        async def aio_request_aiohttp() -> None:
            deadline = deadline_from_timeout(_CALL_TIMEOUT)
            async with theirs.request(ar_request, deadline=deadline) as resp:
                body = await resp.read()
            _expect_status(resp.status, body)

        senders: dict[str, Callable[[], Awaitable[None]]] = {
            "raw_aiohttp": raw_aiohttp,
            "aio_client_aiohttp": aio_client_aiohttp,
            "raw_httpx": raw_httpx,
            "aio_client_httpx": aio_client_httpx,
            "aio_request_aiohttp": aio_request_aiohttp,
        }
        slices: dict[str, Callable[[int], Awaitable[Sample]]] = {}
        for name, send in senders.items():
            slices[name] = _local_slice(send, settings.concurrency)
        workers: dict[str, SniffioWorker] = {}
        for mode in sniffio_modes:
            worker = SniffioWorker(mode, url, settings)
            stack.callback(worker.close)
            workers[mode] = worker
            slices[f"httpx_sniffio_{mode}"] = _worker_slice(worker, settings.concurrency)
            if settings.concurrency != 1:
                # One at a time too: httpcore's pool churn at high concurrency
                # dwarfs the lookups, so this shows their cost more plainly.
                slices[f"httpx_sniffio_{mode}_sequential"] = _worker_slice(worker, 1)

        for name in senders:  # open the connections; workers did so on start
            await slices[name](min(200, settings.requests_for(name)))
        rps = {name: Series() for name in slices}
        cpu = {name: Series() for name in slices}
        for round_no in range(settings.loopback_rounds):
            _progress(f"loopback round {round_no + 1}/{settings.loopback_rounds}")
            for name in _rotated(list(slices), round_no):
                _INTERRUPT.check()
                sample = await slices[name](settings.requests_for(name))
                rps[name].values.append(sample.rps)
                cpu[name].values.append(sample.cpu_us_per_request)
        info = {
            mode: {**worker.ready, **worker.ask({"cmd": "probe", "n": 200})}
            for mode, worker in workers.items()
        }
    return LoopbackResults(rps, cpu, info)


def _local_slice(
    send: Callable[[], Awaitable[None]], concurrency: int
) -> Callable[[int], Awaitable[Sample]]:
    async def run(requests: int) -> Sample:
        return await drive(send, requests, concurrency)

    return run


def _worker_slice(worker: SniffioWorker, concurrency: int) -> Callable[[int], Awaitable[Sample]]:
    async def run(requests: int) -> Sample:
        # Blocks this loop until the worker is done: nothing here may compete
        # with the worker for the CPU while it measures.
        return worker.run(requests, concurrency)

    return run


def _progress(message: str) -> None:
    print(f"... {message}", file=sys.stderr, flush=True)


# --- report -----------------------------------------------------------------------

_INPROCESS_LABELS: Final = {
    "bare_handler": "bare handler (no client)",
    "aio_client": "aio_client, default pipeline",
    "aio_request": "aio-request 0.2.9, default",
    "aio_request_no_metrics": "aio-request, Prometheus off",
    "aio_client_hedged": "aio_client, hedged (2 attempts)",
    "aio_request_parallel": "aio-request, parallel (2 attempts)",
}
_LOOPBACK_LABELS: Final = {
    "raw_aiohttp": "raw aiohttp ClientSession",
    "aio_client_aiohttp": "aio_client over aiohttp",
    "raw_httpx": "raw httpx AsyncClient",
    "aio_client_httpx": "aio_client over httpx",
    "aio_request_aiohttp": "aio-request over aiohttp",
}
_SNIFFIO_LABELS: Final = {
    "present": "sniffio installed",
    "absent": "sniffio not installed",
    "blocked": "sys.modules['sniffio'] = None",
}


def _versions() -> dict[str, str]:
    found: dict[str, str] = {"python": platform.python_version()}
    for dist in (
        "aio-client-resilient",
        "aiohttp",
        "httpx",
        "httpcore",
        "aio-request",
        "anyio",
        "sniffio",
    ):
        try:
            found[dist] = version(dist)
        except Exception:
            found[dist] = "not installed"
    return found


def _ratio(a: float, b: float) -> float:
    return round(a / b, 4) if b else float("nan")


def _sniffio_report(loopback: LoopbackResults) -> dict[str, Any]:
    if "present" not in loopback.workers or "absent" not in loopback.workers:
        return {}
    rps = loopback.rps
    cpu = loopback.cpu_us

    def at(suffix: str) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for mode in loopback.workers:
            name = f"httpx_sniffio_{mode}{suffix}"
            if name in rps:
                found[f"{mode}_rps"] = round(rps[name].median, 1)
                found[f"{mode}_rps_range"] = [round(rps[name].low, 1), round(rps[name].high, 1)]
                found[f"{mode}_cpu_us_per_request"] = round(cpu[name].median, 1)
        if "present_rps" in found:
            found["without_vs_with"] = _ratio(found["absent_rps"], found["present_rps"])
        return found

    concurrent = at("")
    present = loopback.workers["present"]
    absent = loopback.workers["absent"]
    report: dict[str, Any] = {
        "with_sniffio_rps": concurrent["present_rps"],
        "without_sniffio_rps": concurrent["absent_rps"],
        "without_vs_with": concurrent["without_vs_with"],
        "concurrent": concurrent,
        "lookups_per_request": {
            label: round(present[label]["lookups_per_request"], 2)
            for label in ("sequential", "concurrent")
        },
        "failed_imports_per_request": {
            label: round(absent[label]["failed_imports_per_request"], 2)
            for label in ("sequential", "concurrent")
        },
        "lookup_us": {mode: round(info["lookup_us"], 3) for mode, info in loopback.workers.items()},
        "importable": {mode: info["sniffio_importable"] for mode, info in loopback.workers.items()},
    }
    sequential = at("_sequential")
    if sequential:
        report["sequential"] = sequential
    return report


def build_report(
    settings: Settings,
    inprocess: dict[str, Series],
    loopback: LoopbackResults,
    server_loop: str,
    seconds: float,
) -> dict[str, Any]:
    """The JSON document (also what the table is printed from)."""
    medians = {name: round(series.median, 3) for name, series in inprocess.items()}
    rps = {name: round(loopback.rps[name].median, 1) for name in LOOPBACK_VARIANTS}
    ratios = {
        "aio_client_aiohttp_vs_raw": _ratio(rps["aio_client_aiohttp"], rps["raw_aiohttp"]),
        "aio_client_httpx_vs_raw": _ratio(rps["aio_client_httpx"], rps["raw_httpx"]),
        "aio_client_inprocess_vs_aio_request": _ratio(
            medians["aio_client"], medians["aio_request"]
        ),
        "aio_client_inprocess_vs_aio_request_no_metrics": _ratio(
            medians["aio_client"], medians["aio_request_no_metrics"]
        ),
        "aio_request_aiohttp_vs_raw": _ratio(rps["aio_request_aiohttp"], rps["raw_aiohttp"]),
        "aio_client_hedged_vs_aio_client": _ratio(
            medians["aio_client_hedged"], medians["aio_client"]
        ),
        "aio_client_hedged_vs_aio_request_parallel": _ratio(
            medians["aio_client_hedged"], medians["aio_request_parallel"]
        ),
    }
    targets = {
        "inprocess_vs_aio_request_at_most": _INPROCESS_TARGET,
        "loopback_vs_raw_at_least": _LOOPBACK_TARGET,
        "inprocess_met": ratios["aio_client_inprocess_vs_aio_request"] <= _INPROCESS_TARGET,
        "aiohttp_met": ratios["aio_client_aiohttp_vs_raw"] >= _LOOPBACK_TARGET,
        "httpx_met": ratios["aio_client_httpx_vs_raw"] >= _LOOPBACK_TARGET,
        "hedged_vs_aio_client_at_most": _HEDGED_VS_SEQUENTIAL_TARGET,
        "hedged_vs_aio_request_parallel_at_most": _HEDGED_VS_PEER_TARGET,
        "hedged_vs_aio_client_met": ratios["aio_client_hedged_vs_aio_client"]
        <= _HEDGED_VS_SEQUENTIAL_TARGET,
        "hedged_vs_aio_request_parallel_met": ratios["aio_client_hedged_vs_aio_request_parallel"]
        <= _HEDGED_VS_PEER_TARGET,
    }
    return {
        "meta": {
            "mode": "quick" if settings.quick else "full",
            "seconds": round(seconds, 1),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "versions": _versions(),
            "server_loop": server_loop,
            "inprocess_rounds": settings.inprocess_rounds,
            "inprocess_calls_per_round": settings.inprocess_calls,
            "loopback_rounds": settings.loopback_rounds,
            "loopback_requests_per_round": settings.loopback_requests,
            "httpx_requests_per_round": settings.httpx_requests,
            "concurrency": settings.concurrency,
            "connection_limit": settings.connection_limit,
            "hedge_attempts": _HEDGE_ATTEMPTS,
            "hedge_delay_s": _HEDGE_DELAY,
        },
        "inprocess_us_per_request": medians,
        "inprocess_us_per_request_range": {
            name: [round(series.low, 3), round(series.high, 3)]
            for name, series in inprocess.items()
        },
        "loopback_rps": rps,
        "loopback_rps_range": {
            name: [round(loopback.rps[name].low, 1), round(loopback.rps[name].high, 1)]
            for name in LOOPBACK_VARIANTS
        },
        "loopback_client_cpu_us_per_request": {
            name: round(loopback.cpu_us[name].median, 1) for name in LOOPBACK_VARIANTS
        },
        "sniffio": _sniffio_report(loopback),
        "ratios": ratios,
        "targets": targets,
    }


def format_table(report: dict[str, Any]) -> str:
    """The report as a readable table."""
    meta = report["meta"]
    versions = meta["versions"]
    ratios = report["ratios"]
    targets = report["targets"]
    lines = [
        f"aio_client overhead benchmark ({meta['mode']} run, {meta['seconds']} s, "
        f"{meta['cpus']} CPUs, Python {versions['python']})",
        "versions: " + ", ".join(f"{k} {v}" for k, v in versions.items() if k != "python"),
        "",
        f"1. In-process overhead, µs/request (median of {meta['inprocess_rounds']} rounds "
        f"x {meta['inprocess_calls_per_round']} sequential calls)",
        f"   {'variant':<36}{'median':>9}{'min':>9}{'max':>9}",
    ]
    inprocess = report["inprocess_us_per_request"]
    spread = report["inprocess_us_per_request_range"]
    for name, label in _INPROCESS_LABELS.items():
        low, high = spread[name]
        lines.append(f"   {label:<36}{inprocess[name]:>9.2f}{low:>9.2f}{high:>9.2f}")
    lines += [
        f"   aio_client / aio-request: {ratios['aio_client_inprocess_vs_aio_request']:.3f} "
        f"(target <= {_INPROCESS_TARGET}: {_verdict(targets['inprocess_met'])}); "
        "with aio-request's Prometheus off: "
        f"{ratios['aio_client_inprocess_vs_aio_request_no_metrics']:.3f}",
        f"   hedged (parallel_strategy, {meta['hedge_attempts']} attempts, hedge after "
        f"{meta['hedge_delay_s']} s; attempt 1 answers at once, so no hedge goes out):",
        f"   hedged / default aio_client:       {ratios['aio_client_hedged_vs_aio_client']:.3f} "
        f"(target <= {_HEDGED_VS_SEQUENTIAL_TARGET}: "
        f"{_verdict(targets['hedged_vs_aio_client_met'])})",
        "   hedged / aio-request parallel:     "
        f"{ratios['aio_client_hedged_vs_aio_request_parallel']:.3f} "
        f"(target <= {_HEDGED_VS_PEER_TARGET}: "
        f"{_verdict(targets['hedged_vs_aio_request_parallel_met'])})",
        "",
        f"2. Loopback throughput, requests/s (median of {meta['loopback_rounds']} rounds; "
        f"{meta['concurrency']} in flight; {meta['loopback_requests_per_round']} requests "
        f"per round on aiohttp, {meta['httpx_requests_per_round']} on httpx; "
        f"connection limit {meta['connection_limit']}; server on {meta['server_loop']})",
        f"   {'variant':<36}{'median':>9}{'min':>9}{'max':>9}{'CPU µs/req':>12}",
    ]
    rps = report["loopback_rps"]
    rps_spread = report["loopback_rps_range"]
    cpu = report["loopback_client_cpu_us_per_request"]
    for name in LOOPBACK_VARIANTS:
        low, high = rps_spread[name]
        lines.append(
            f"   {_LOOPBACK_LABELS[name]:<36}{rps[name]:>9.0f}{low:>9.0f}{high:>9.0f}"
            f"{cpu[name]:>12.1f}"
        )
    lines += [
        f"   aio_client/aiohttp vs raw aiohttp: {ratios['aio_client_aiohttp_vs_raw']:.3f} "
        f"(target >= {_LOOPBACK_TARGET}: {_verdict(targets['aiohttp_met'])})",
        f"   aio_client/httpx vs raw httpx:     {ratios['aio_client_httpx_vs_raw']:.3f} "
        f"(target >= {_LOOPBACK_TARGET}: {_verdict(targets['httpx_met'])})",
        f"   aio-request vs raw aiohttp:        {ratios['aio_request_aiohttp_vs_raw']:.3f}",
        "   (CPU µs/req: this process's CPU time per request; it moves with batching, so",
        "   compare it within a run only)",
        "",
    ]
    sniffio = report["sniffio"]
    if not sniffio:
        lines.append("3. sniffio: skipped (sniffio is not installed here)")
        return "\n".join(lines)
    lines.append("3. sniffio: raw httpx, one subprocess per setting, in the same rounds")
    sections = [(f"{meta['concurrency']} in flight", sniffio["concurrent"])]
    if "sequential" in sniffio:
        sections.append(("1 in flight", sniffio["sequential"]))
    for title, numbers in sections:
        lines.append(f"   {title + ':':<36}{'median':>9}{'min':>9}{'max':>9}{'CPU µs/req':>12}")
        for mode, label in _SNIFFIO_LABELS.items():
            if f"{mode}_rps" not in numbers:
                continue
            low, high = numbers[f"{mode}_rps_range"]
            lines.append(
                f"   {label:<36}{numbers[f'{mode}_rps']:>9.0f}{low:>9.0f}{high:>9.0f}"
                f"{numbers[f'{mode}_cpu_us_per_request']:>12.1f}"
            )
        lines.append(f"   without / with sniffio: {numbers['without_vs_with']:.3f}")
    lookup = sniffio["lookup_us"]
    lookups = sniffio["lookups_per_request"]
    failed = sniffio["failed_imports_per_request"]
    lines += [
        f"   httpcore looks sniffio up {lookups['sequential']:.1f} times per request one at a "
        f"time, {lookups['concurrent']:.1f} with {meta['concurrency']} in flight;",
        f"   without sniffio those are {failed['sequential']:.1f} and "
        f"{failed['concurrent']:.1f} failed imports per request.",
        f"   One lookup: {lookup['present']:.2f} µs installed, {lookup['absent']:.2f} µs "
        "not installed"
        + (f", {lookup['blocked']:.2f} µs blocked in sys.modules" if "blocked" in lookup else ""),
    ]
    return "\n".join(lines)


def _verdict(met: bool) -> str:
    return "met" if met else "MISSED"


# --- entry point --------------------------------------------------------------------


def _uvloop_available() -> bool:
    return importlib.util.find_spec("uvloop") is not None


def run(settings: Settings) -> dict[str, Any]:
    """Run the three measurements and return the report."""
    started = time.perf_counter()
    _progress(f"in-process: {settings.inprocess_rounds} rounds x {settings.inprocess_calls} calls")
    inprocess = asyncio.run(measure_inprocess(settings))
    modes = _SNIFFIO_MODES if importlib.util.find_spec("sniffio") is not None else ()
    # uvloop, when installed, keeps the server from being what limits throughput,
    # so the clients' differences show.
    use_uvloop = _uvloop_available()
    with loopback_server(use_uvloop=use_uvloop) as port:
        loopback = asyncio.run(measure_loopback(port, settings, modes))
    return build_report(
        settings,
        inprocess,
        loopback,
        "uvloop" if use_uvloop else "asyncio",
        time.perf_counter() - started,
    )


def _describe(exc: BaseException) -> str:
    # A failed slice raises a group of identical errors, one per worker task.
    count = 1
    while isinstance(exc, BaseExceptionGroup):
        count = len(exc.exceptions)
        exc = exc.exceptions[0]
    return f"{exc!r}" + (f" (and {count - 1} more)" if count > 1 else "")


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="aio_client's per-request overhead vs raw clients and aio-request."
    )
    parser.add_argument("--quick", action="store_true", help="smoke run, well under a minute")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the report here")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument(
        "--profile", action="store_true", help="also print a cProfile of aio_client in process"
    )
    # The sniffio subprocess workers re-enter this file with these.
    parser.add_argument("--httpx-worker", choices=_SNIFFIO_MODES, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument(
        "--concurrency", type=int, default=32, help="loopback requests in flight (32)"
    )
    parser.add_argument("--limit", type=int, default=100, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    args = _parse_args(argv)
    if args.httpx_worker:
        try:
            return _worker_main(args.httpx_worker, args.url, args.concurrency, args.limit)
        except Exception as exc:  # the parent shows it and stops the run
            _reply({"error": _describe(exc)})
            return 1
    if args.concurrency < 1:
        print("error: --concurrency must be >= 1", file=sys.stderr)
        return 2
    settings = Settings.for_run(quick=args.quick, concurrency=args.concurrency)
    _INTERRUPT.install()
    try:
        report = run(settings)
    except RunInterruptedError:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        print(f"benchmark failed: {_describe(exc)}", file=sys.stderr)
        return 1
    print(format_table(report))
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    if args.profile:
        print()
        print(profile_inprocess(20_000 if not args.quick else 5_000))
    targets = report["targets"]
    missed = not all(
        targets[name]
        for name in (
            "inprocess_met",
            "hedged_vs_aio_client_met",
            "hedged_vs_aio_request_parallel_met",
            "aiohttp_met",
            "httpx_met",
        )
    )
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    sys.exit(main())
