"""Downloading a large body as it arrives: client.stream() against the raw libraries.

Usage::

    python benchmarks/streaming.py [--quick] [--mib N] [--rounds N] [--json PATH]

A server process on 127.0.0.1 sends ``--mib`` MiB (100 by default) in 64 KiB
chunks with a ``Content-Length``. Each download runs in a fresh child process,
which imports every library first (so each variant starts from the same
memory), downloads the body once, throws each chunk away, and reports its
throughput and its peak RSS (``ru_maxrss``). Variants run round-robin, the
order rotating each round; the report holds medians:

- ``raw_aiohttp``: ``session.get(...)`` then ``resp.content.iter_chunked(64 KiB)``;
- ``aio_client_aiohttp``: ``client.stream(...)`` over ``AiohttpTransport``, ``aiter_bytes()``;
- ``raw_httpx``: ``client.stream("GET", ...)`` then ``aiter_bytes()``;
- ``aio_client_httpx``: ``client.stream(...)`` over ``HttpxTransport``, ``aiter_bytes()``.

JSON: ``{"stream_mib_per_s": {...}, "peak_rss_mib": {...}, "ratios": {...}, "meta": {...}}``.
Targets: each aio_client variant at least 0.9 times its raw library's throughput,
and a peak RSS at most 1.2 times the raw library's.
"""

# Only the standard library at module level: the children import what they use.
from __future__ import annotations

import argparse
import asyncio
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

_VARIANTS: Final = ("raw_aiohttp", "aio_client_aiohttp", "raw_httpx", "aio_client_httpx")
_RAW: Final = {"aio_client_aiohttp": "raw_aiohttp", "aio_client_httpx": "raw_httpx"}
_CHUNK: Final = 64 * 1024
_MiB: Final = 1024 * 1024


# --- the server ---------------------------------------------------------------------


async def _serve() -> None:
    from aiohttp import web

    chunk = bytes(_CHUNK)

    async def download(request: web.Request) -> web.StreamResponse:
        size = int(request.query["mib"]) * _MiB
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        response.content_length = size
        await response.prepare(request)
        for _ in range(size // _CHUNK):
            await response.write(chunk)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/download", download)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print(runner.addresses[0][1], flush=True)
    # Ends when the parent closes stdin (or dies).
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await runner.cleanup()


# --- the children -------------------------------------------------------------------


async def _download(variant: str, url: str) -> int:
    import aiohttp
    import httpx

    import aio_client
    from aio_client.transports import AiohttpTransport, HttpxTransport

    total = 0
    if variant == "raw_aiohttp":
        async with aiohttp.ClientSession() as session, session.get(url) as resp:
            async for chunk in resp.content.iter_chunked(_CHUNK):
                total += len(chunk)
    elif variant == "raw_httpx":
        async with httpx.AsyncClient(timeout=None) as client, client.stream("GET", url) as resp:
            async for chunk in resp.aiter_bytes():
                total += len(chunk)
    else:
        transport = AiohttpTransport() if variant == "aio_client_aiohttp" else HttpxTransport()
        base, _, path = url.rpartition("/")
        async with aio_client.Client(transport, base, timeout=600.0) as ours:
            request = aio_client.get(path.partition("?")[0], query={"mib": url.rpartition("=")[2]})
            async with ours.stream(request) as response:
                async for chunk in response.aiter_bytes():
                    total += len(chunk)
    return total


def _child(variant: str, url: str, mib: int) -> None:
    # Every library is imported first, so each variant starts from the same memory.
    import aiohttp  # noqa: F401
    import httpx  # noqa: F401

    import aio_client  # noqa: F401

    started = time.perf_counter()
    total = asyncio.run(_download(variant, url))
    elapsed = time.perf_counter() - started
    if total != mib * _MiB:
        raise SystemExit(f"{variant}: got {total} bytes, expected {mib * _MiB}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    print(json.dumps({"mib_per_s": mib / elapsed, "peak_rss_mib": peak / _MiB}))


# --- the parent ---------------------------------------------------------------------


def _run_child(variant: str, url: str, mib: int) -> dict[str, float]:
    command = [sys.executable, str(Path(__file__).resolve()), "--child", variant, "--url", url]
    command += ["--mib", str(mib)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{variant} failed:\n{done.stderr[-2000:]}")
    result: dict[str, float] = json.loads(done.stdout)
    return result


def _measure(mib: int, rounds: int) -> dict[str, Any]:
    server = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--serve"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        url = f"http://127.0.0.1:{port}/download?mib={mib}"
        samples: dict[str, list[dict[str, float]]] = {name: [] for name in _VARIANTS}
        for number in range(rounds):
            shift = number % len(_VARIANTS)
            for variant in _VARIANTS[shift:] + _VARIANTS[:shift]:
                samples[variant].append(_run_child(variant, url, mib))
    finally:
        if server.stdin is not None:
            server.stdin.close()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    speed = {n: statistics.median(s["mib_per_s"] for s in samples[n]) for n in _VARIANTS}
    rss = {n: statistics.median(s["peak_rss_mib"] for s in samples[n]) for n in _VARIANTS}
    ratios: dict[str, float] = {}
    targets: dict[str, bool] = {}
    for ours, raw in _RAW.items():
        ratios[f"{ours}_speed_vs_raw"] = speed[ours] / speed[raw]
        ratios[f"{ours}_peak_rss_vs_raw"] = rss[ours] / rss[raw]
        targets[f"{ours}_speed_vs_raw >= 0.9"] = ratios[f"{ours}_speed_vs_raw"] >= 0.9
        targets[f"{ours}_peak_rss_vs_raw <= 1.2"] = ratios[f"{ours}_peak_rss_vs_raw"] <= 1.2
    return {
        "benchmark": "streaming",
        "meta": {
            "python": platform.python_version(),
            "machine": platform.machine(),
            "mib": mib,
            "rounds": rounds,
        },
        "stream_mib_per_s": {name: round(value, 1) for name, value in speed.items()},
        "peak_rss_mib": {name: round(value, 1) for name, value in rss.items()},
        "ratios": {name: round(value, 3) for name, value in ratios.items()},
        "targets_met": targets,
    }


def _print(report: dict[str, Any]) -> None:
    meta = report["meta"]
    print(f"streaming {meta['mib']} MiB, median of {meta['rounds']} round(s)")
    print(f"   {'variant':22s} {'MiB/s':>10s} {'peak RSS MiB':>14s}")
    for name in _VARIANTS:
        speed = report["stream_mib_per_s"][name]
        rss = report["peak_rss_mib"][name]
        print(f"   {name:22s} {speed:>10.1f} {rss:>14.1f}")
    for name, value in report["ratios"].items():
        print(f"   {name:40s} {value:>8.3f}")
    for name, ok in report["targets_met"].items():
        print(f"   target: {name}: {'met' if ok else 'MISSED'}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="one round")
    parser.add_argument("--mib", type=int, default=100, help="MiB per download")
    parser.add_argument("--rounds", type=int, default=5, help="downloads per variant")
    parser.add_argument("--json", type=Path, help="also write the report here")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        asyncio.run(_serve())
        return 0
    if args.child:
        _child(args.child, args.url, args.mib)
        return 0
    if args.mib < 1 or args.rounds < 1:
        parser.error("--mib and --rounds must be >= 1")
    report = _measure(args.mib, 1 if args.quick else args.rounds)
    _print(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
