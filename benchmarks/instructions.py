"""Instructions per request, counted by valgrind: the overhead numbers without the noise.

Usage::

    python benchmarks/instructions.py [--quick] [--requests N] [--json PATH]
        [--metrics | --server | --served]

Timings on a shared two-core machine swing by tens of percent from one minute to
the next; the number of instructions a request costs does not. Each variant runs
in a child process under ``valgrind --tool=cachegrind --cache-sim=no`` twice:
once for a warm-up, once for the warm-up plus ``N`` requests. The difference,
divided by ``N``, is what one request costs in the client process (the server
runs outside valgrind and is not counted). Instructions are not time: cache
misses, which Python code above a large library suffers more of, make the
ratio of CPU times worse than this one. But the ranking and the size of each
layer read straight off these counts, and the same run gives the same numbers.

Variants (see ``overhead.py`` for the timed versions):

- in process, over no sockets: ``aio_client`` (default pipeline over
  ``MemoryTransport``) and ``aio_request`` (its default pipeline over a fake
  transport);
- over loopback, 32 requests in flight against ``_loopback_server.py``:
  ``raw_aiohttp`` (``ClientSession.get`` + ``read()``, the session's default
  timeout), ``raw_aiohttp_no_timer`` (the same with ``ClientTimeout(total=None)``),
  ``raw_aiohttp_propagation_headers`` (no timer, plus the three ``X-Request-*``
  headers aio_client sends), ``aio_client_aiohttp`` and ``aio_request_aiohttp``;
- ``--server``: the server middleware in process, each app called directly;
- ``--served``: the server side, as ``server_overhead.py`` times it: each server
  variant of ``_server_apps.py`` runs under valgrind and is driven over loopback
  from this process (2 requests in flight), so the count is the server
  process's own, HTTP parsing and writing included. Its ratios are the
  throughput ratios a server would reach if time went as instructions (the
  garbage collector's pauses and cache misses make the timed ones lower).

Needs valgrind on the PATH (``apt install valgrind``).
"""

# Only the standard library at module level: the children import what they use.
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import subprocess
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Final

_HERE: Final = Path(__file__).resolve().parent
_WARMUP: Final = 200
_CONCURRENCY: Final = 32
_INPROCESS: Final = ("aio_client", "aio_request")
# In process, what the metrics sinks add: ours over the no-op OpenTelemetry API and
# a fresh Prometheus registry, aio-request's with its metrics switched off.
_METRICS: Final = ("aio_client_prometheus", "aio_client_otel_api", "aio_request_no_metrics")
# In process, the server middleware over an app called directly (no HTTP server):
# each next to its bare app (see _server_apps.py).
_SERVER: Final = (
    "asgi_bare",
    "asgi_deadline",
    "asgi_deadline_prometheus",
    "aiohttp_bare",
    "aiohttp_passthrough",
    "aiohttp_deadline",
    "aiohttp_aio_request",
)
# Requests in flight against a served variant: two, so that valgrind's slowness
# (requests take 20-50 times longer) does not stretch them past the middleware's
# 20 ms and 40 ms looks at the client, which a real server's requests never reach:
# at 4 in flight on a busy host, aiohttp_middleware counted 240,000 instead of 208,000.
_SERVED_CONCURRENCY: Final = 2
_SERVED_WARMUP: Final = 400
# server_overhead.py's throughput targets, read as instruction ratios.
_SERVED_TARGETS: Final = {
    "asgi_deadline": 0.85,
    "asgi_deadline_prometheus": 0.8,
    "aiohttp_deadline": 0.85,
}
_LOOPBACK: Final = (
    "raw_aiohttp",
    "raw_aiohttp_no_timer",
    "raw_aiohttp_propagation_headers",
    "aio_client_aiohttp",
    "aio_request_aiohttp",
)
_TARGETS: Final = {
    "aio_client_inprocess_vs_aio_request": ("<=", 0.25),
    "aio_client_aiohttp_vs_raw": (">=", 0.90),
}
_REFS: Final = re.compile(r"I\s+refs:\s+([\d,]+)")
_PROPAGATION: Final = (
    ("x-request-timeout", "19.999"),
    ("x-request-priority", "normal"),
    ("x-request-attempt", "1"),
)


# --- the children -----------------------------------------------------------------


async def _child(variant: str, port: int, requests: int) -> None:
    sys.path.insert(0, str(_HERE))
    from overhead import drive, in_memory_aio_request

    if variant in _SERVER:
        send, close = _server_sender(variant)
    else:
        send, close = await _sender(variant, port, in_memory_aio_request)
    try:
        if variant in _INPROCESS or variant in _METRICS or variant in _SERVER:
            for _ in range(requests):  # one at a time: nothing to overlap in memory
                await send()
        else:
            await drive(send, requests, _CONCURRENCY)
    finally:
        await close()


async def _sender(
    variant: str, port: int, in_memory_aio_request: Callable[[str], Any]
) -> tuple[Callable[[], Awaitable[None]], Callable[[], Awaitable[None]]]:
    import aio_request
    import aiohttp

    import aio_client
    from aio_client.transports import AiohttpTransport, MemoryTransport

    base = f"http://127.0.0.1:{port}"
    url = f"{base}/ping"
    request = aio_client.get("ping")

    async def nothing() -> None:
        return None

    if variant.startswith("aio_client") and variant != "aio_client_aiohttp":
        prebuilt = aio_client.Response(200)

        async def handler(_: aio_client.Request, /) -> aio_client.Response:
            return prebuilt

        memory = aio_client.Client(
            MemoryTransport(handler), "http://bench.invalid", observers=_observers(variant)
        )

        async def in_memory() -> None:
            await memory.request(request)

        return in_memory, memory.aclose
    if variant in ("aio_request", "aio_request_no_metrics", "aio_request_aiohttp"):
        if variant != "aio_request_aiohttp":
            theirs = in_memory_aio_request("http://bench.invalid/")
            if variant == "aio_request_no_metrics":
                _aio_request_metrics_off()
            close = nothing
        else:
            session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100))
            theirs = aio_request.setup(
                transport=aio_request.AioHttpTransport(session), endpoint=base + "/"
            )
            close = session.close
        ar_request = aio_request.get("ping")
        deadline_from_timeout = aio_request.Deadline.from_timeout

        async def through_aio_request() -> None:
            async with theirs.request(ar_request, deadline=deadline_from_timeout(20.0)) as resp:
                await resp.read()

        return through_aio_request, close
    if variant == "aio_client_aiohttp":
        ours = aio_client.Client(AiohttpTransport(limit=100), base)

        async def through_aio_client() -> None:
            await ours.request(request)

        return through_aio_client, ours.aclose
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100))
    options: dict[str, Any] = {}
    if variant != "raw_aiohttp":
        options["timeout"] = aiohttp.ClientTimeout(total=None)
    if variant == "raw_aiohttp_propagation_headers":
        options["headers"] = _PROPAGATION

    async def raw() -> None:
        async with session.get(url, **options) as resp:
            await resp.read()

    return raw, session.close


class _OpenTransport:
    """A connection that stays open, for a request called in process."""

    def is_closing(self) -> bool:
        return False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


class _UnwrittenWriter:
    """A response writer that has not written anything yet."""

    output_size = 0


def _has_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def _server_sender(
    variant: str,
) -> tuple[Callable[[], Awaitable[None]], Callable[[], Awaitable[None]]]:
    """One request through a server variant's app, called directly (no sockets, no server)."""
    from _server_apps import aiohttp_app, asgi_app

    async def nothing() -> None:
        return None

    if variant.startswith("asgi"):
        app = asgi_app(variant)
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": "/ping",
            "raw_path": b"/ping",
            "query_string": b"",
            "root_path": "",
            "headers": [(b"host", b"bench"), (b"x-request-timeout", b"5")],
            "client": ("127.0.0.1", 40000),
            "server": ("127.0.0.1", 8000),
        }
        request_message = {"type": "http.request", "body": b"", "more_body": False}

        async def receive() -> dict[str, Any]:
            return request_message

        async def send(_: Any) -> None:
            return None

        async def through_asgi() -> None:
            await app(dict(scope), receive, send)

        return through_asgi, nothing
    from aiohttp.test_utils import make_mocked_request

    web_app = aiohttp_app(variant)
    web_app.freeze()
    # Plain stand-ins for the connection (the default mocks cost thousands of
    # instructions per look, and valgrind's slowness makes the middleware look
    # at the connection far more often than a real request would).
    mocked = make_mocked_request(
        "GET",
        "/ping",
        headers={"X-Request-Timeout": "5"},
        app=web_app,
        transport=_OpenTransport(),
        writer=_UnwrittenWriter(),
    )

    async def through_aiohttp() -> None:
        # What aiohttp's request handler calls for each request (routing,
        # middlewares, the handler), without its HTTP parser and writer.
        await web_app._handle(mocked.clone())

    return through_aiohttp, nothing


def _observers(variant: str) -> list[Any]:
    if variant == "aio_client_prometheus":
        from prometheus_client import CollectorRegistry

        from aio_client.metrics import PrometheusMetrics

        return [PrometheusMetrics(CollectorRegistry())]
    if variant == "aio_client_otel_api":
        from opentelemetry.metrics import NoOpMeterProvider
        from opentelemetry.trace import NoOpTracerProvider

        from aio_client.metrics import OpenTelemetryInstrumentation

        return [OpenTelemetryInstrumentation(NoOpMeterProvider(), NoOpTracerProvider())]
    return []


def _aio_request_metrics_off() -> None:
    import aio_request.client
    import aio_request.pipeline

    def noop(**_: object) -> None:
        return None

    aio_request.client.capture_metrics = noop  # type: ignore[attr-defined]
    aio_request.pipeline.capture_metrics = noop  # type: ignore[attr-defined]


# --- the parent ---------------------------------------------------------------------


# valgrind counting every instruction of the command that follows, and nothing else.
_VALGRIND: Final = (
    "valgrind",
    "--tool=cachegrind",
    "--cache-sim=no",
    "--cachegrind-out-file=/dev/null",
)


def _instructions(variant: str, port: int, requests: int) -> int:
    command = [
        *_VALGRIND,
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        variant,
        "--port",
        str(port),
        "--requests",
        str(requests),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=1800, check=False)
    found = _REFS.search(done.stderr)
    if done.returncode != 0 or found is None:
        raise RuntimeError(f"{variant}: valgrind run failed:\n{done.stderr[-2000:]}")
    return int(found.group(1).replace(",", ""))


def _per_request(variant: str, port: int, requests: int) -> float:
    base = _instructions(variant, port, _WARMUP)
    total = _instructions(variant, port, _WARMUP + requests)
    return (total - base) / requests


def _report(counts: dict[str, float], requests: int) -> dict[str, Any]:
    ratios = {"aio_client_inprocess_vs_aio_request": counts["aio_client"] / counts["aio_request"]}
    if "raw_aiohttp" in counts:
        # Throughput goes as the inverse of the cost per request.
        ratios["aio_client_aiohttp_vs_raw"] = counts["raw_aiohttp"] / counts["aio_client_aiohttp"]
        ratios["aio_request_aiohttp_vs_raw"] = counts["raw_aiohttp"] / counts["aio_request_aiohttp"]
    if "aio_request_no_metrics" in counts:
        theirs = counts["aio_request"] - counts["aio_request_no_metrics"]
        for sink in ("prometheus", "otel_api"):
            ours = counts[f"aio_client_{sink}"] - counts["aio_client"]
            ratios[f"{sink}_vs_aio_request_metrics"] = ours / theirs
    met = {}
    for name, (sense, bound) in _TARGETS.items():
        if name not in ratios:
            continue
        met[name] = ratios[name] <= bound if sense == "<=" else ratios[name] >= bound
    return {
        "benchmark": "instructions",
        "meta": {
            "python": platform.python_version(),
            "machine": platform.machine(),
            "requests_per_variant": requests,
            "concurrency": _CONCURRENCY,
        },
        "instructions_per_request": {name: round(value) for name, value in counts.items()},
        "ratios": {name: round(value, 3) for name, value in ratios.items()},
        "targets_met": met,
    }


def _served_instructions(variant: str, requests: int) -> int:
    """All the instructions of a served variant's process that answered ``requests``."""
    import select

    from server_overhead import _connect

    command = [*_VALGRIND, sys.executable, str(_HERE / "_server_apps.py"), variant]
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    proc = subprocess.Popen(
        command,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdin is not None
    assert proc.stdout is not None
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 600)
        line = proc.stdout.readline() if ready else ""
        if not line:
            raise RuntimeError(f"{variant}: the server did not start under valgrind")
        port = int(line)

        async def drive() -> None:
            connections = await _connect(port, _SERVED_CONCURRENCY)

            async def each(connection: Any, count: int) -> None:
                for _ in range(count):
                    await connection.request()

            share, extra = divmod(requests, _SERVED_CONCURRENCY)
            await asyncio.gather(*(each(c, share + (i < extra)) for i, c in enumerate(connections)))
            for connection in connections:
                connection.close()

        asyncio.run(drive())
    finally:
        proc.stdin.close()  # the server stops at the end of its stdin
        assert proc.stderr is not None
        err = proc.stderr.read()
        proc.wait(timeout=600)
    found = _REFS.search(err)
    if found is None:
        raise RuntimeError(f"{variant}: valgrind run failed:\n{err[-2000:]}")
    return int(found.group(1).replace(",", ""))


def _served_report(requests: int, json_path: Path | None) -> int:
    # Every server variant of server_overhead.py, each in its own process under
    # valgrind, driven from outside it: what a request costs a real server.
    from _server_apps import VARIANTS

    counts = {}
    for variant in VARIANTS:
        print(f"... {variant} (served)", file=sys.stderr)
        base = _served_instructions(variant, _SERVED_WARMUP)
        total = _served_instructions(variant, _SERVED_WARMUP + requests)
        counts[variant] = (total - base) / requests
    bare = {"asgi": counts["asgi_bare"], "aiohttp": counts["aiohttp_bare"]}
    ratios = {
        name: bare[name.split("_", 1)[0]] / value
        for name, value in counts.items()
        if not name.endswith("_bare")
    }
    met = {name: ratios[name] >= bound for name, bound in _SERVED_TARGETS.items()}
    met["aiohttp_deadline_ahead_of_aio_request"] = (
        ratios["aiohttp_deadline"] > ratios["aiohttp_aio_request"]
    )
    report = {
        "benchmark": "instructions_served",
        "meta": {
            "python": platform.python_version(),
            "machine": platform.machine(),
            "requests_per_variant": requests,
            "concurrency": _SERVED_CONCURRENCY,
        },
        "instructions_per_request": {name: round(value) for name, value in counts.items()},
        "added_over_bare": {
            name: round(value - bare[name.split("_", 1)[0]])
            for name, value in counts.items()
            if not name.endswith("_bare")
        },
        "bare_over_variant": {name: round(value, 3) for name, value in ratios.items()},
        "targets_met": met,
    }
    print(
        f"served over loopback, instructions per request of the server process "
        f"({requests} per variant, {_SERVED_CONCURRENCY} in flight)"
    )
    for name, value in counts.items():
        shown = "" if name not in ratios else f"  ({ratios[name]:.3f}x bare)"
        print(f"   {name:28s} {value:>10,.0f}{shown}")
    for name, ok in met.items():
        print(f"   target: {name}: {'met' if ok else 'MISSED'}")
    if json_path is not None:
        json_path.write_text(json.dumps(report, indent=2) + "\n")
    return 0


def _server_report(requests: int, json_path: Path | None) -> int:
    counts = {}
    for variant in _SERVER:
        print(f"... {variant}", file=sys.stderr)
        counts[variant] = _per_request(variant, 0, requests)
    bare = {"asgi": counts["asgi_bare"], "aiohttp": counts["aiohttp_bare"]}
    # Each variant's cost over its bare app's: the throughput ratio if the app
    # were all a server did (a real server's own work makes the ratios better).
    ratios = {
        name: bare[name.split("_", 1)[0]] / value
        for name, value in counts.items()
        if not name.endswith("_bare")
    }
    added = {
        name: round(value - bare[name.split("_", 1)[0]])
        for name, value in counts.items()
        if not name.endswith("_bare")
    }
    report = {
        "benchmark": "instructions_server",
        "meta": {
            "python": platform.python_version(),
            "machine": platform.machine(),
            "requests_per_variant": requests,
        },
        "instructions_per_request": {name: round(value) for name, value in counts.items()},
        "added_over_bare": added,
        "bare_over_variant": {name: round(value, 3) for name, value in ratios.items()},
    }
    print(f"server middleware in process, instructions per request ({requests} per variant)")
    for name, value in counts.items():
        extra = added.get(name)
        shown = "" if extra is None else f"  (+{extra:,}, {ratios[name]:.3f}x bare)"
        print(f"   {name:28s} {value:>10,.0f}{shown}")
    if json_path is not None:
        json_path.write_text(json.dumps(report, indent=2) + "\n")
    return 0


def _print(report: dict[str, Any]) -> None:
    counts = report["instructions_per_request"]
    print(
        f"instructions per request (valgrind cachegrind; {report['meta']['requests_per_variant']}"
        f" requests per variant, loopback at {_CONCURRENCY} in flight)"
    )
    rows: list[tuple[str, float]] = list(counts.items())
    raw, no_timer = counts["raw_aiohttp"], counts["raw_aiohttp_no_timer"]
    rows += [
        ("(aiohttp's own per-request timer)", raw - no_timer),
        (
            "(aiohttp sending the X-Request-* headers)",
            counts["raw_aiohttp_propagation_headers"] - no_timer,
        ),
        ("(aio_client over raw aiohttp)", counts["aio_client_aiohttp"] - raw),
    ]
    for name, value in rows:
        print(f"   {name:44s} {value:>10,.0f}")
    for name, ratio in report["ratios"].items():
        print(f"   {name:44s} {ratio:>10.3f}")
    for name, ok in report["targets_met"].items():
        sense, bound = _TARGETS[name]
        print(f"   target: {name} {sense} {bound}: {'met' if ok else 'MISSED'}")


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="300 requests per variant")
    parser.add_argument("--requests", type=int, default=2000, help="requests per variant")
    parser.add_argument("--json", type=Path, help="also write the report here")
    parser.add_argument(
        "--metrics",
        action="store_true",
        help="in process only, with the metrics sinks: what each adds per call",
    )
    parser.add_argument(
        "--server",
        action="store_true",
        help="in process only, the server middleware over its app called directly",
    )
    parser.add_argument(
        "--served",
        action="store_true",
        help="each server variant of server_overhead.py under valgrind, over loopback",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.requests < 1:
        parser.error("--requests must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    if args.child:
        child = _child(args.child, args.port, args.requests)
        if args.child in _SERVER and _has_uvloop():
            import uvloop  # the servers of server_overhead.py run on it too

            uvloop.run(child)
        else:
            asyncio.run(child)
        return 0
    if shutil.which("valgrind") is None:
        print("instructions.py needs valgrind on the PATH", file=sys.stderr)
        return 2
    sys.path.insert(0, str(_HERE))
    from overhead import _uvloop_available, loopback_server

    requests = 300 if args.quick else args.requests
    counts: dict[str, float] = {}
    if args.server:
        return _server_report(requests, args.json)
    if args.served:
        return _served_report(requests, args.json)
    for variant in _INPROCESS + _METRICS if args.metrics else _INPROCESS:
        print(f"... {variant}", file=sys.stderr)
        counts[variant] = _per_request(variant, 0, requests)
    if args.metrics:
        report = _report(counts, requests)
        for name, value in report["instructions_per_request"].items():
            print(f"   {name:44s} {value:>10,.0f}")
        for name, ratio in report["ratios"].items():
            print(f"   {name:44s} {ratio:>10.3f}")
        if args.json:
            args.json.write_text(json.dumps(report, indent=2) + "\n")
        return 0
    with loopback_server(use_uvloop=_uvloop_available()) as port:
        for variant in _LOOPBACK:
            print(f"... {variant}", file=sys.stderr)
            counts[variant] = _per_request(variant, port, requests)
    report = _report(counts, requests)
    _print(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")  # the same dict layouts in every child
    sys.exit(main())
