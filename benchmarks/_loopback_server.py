"""A tiny aiohttp server on the loopback interface, run as its own process by the benchmarks.

Usage::

    python benchmarks/_loopback_server.py --port 0 [--uvloop]
        [--latency {none,fixed,exponential,lognormal}] [--latency-ms MS]
        [--latency-sigma SIGMA] [--tail-fraction P --tail-ms MS [--tail-ms-max MS]] [--seed N]

- The first line on stdout is the bound port (so ``--port 0`` picks a free one);
  nothing else is printed on stdout.
- ``GET /ping`` answers ``200 pong`` (``text/plain``); any other path is a 404.
- Artificial latency is off by default. With ``--latency`` each ``/ping`` waits a
  delay drawn from a seeded distribution (``--latency-ms`` is the fixed value,
  the mean of ``exponential`` or the median of ``lognormal``); with
  ``--tail-fraction`` a share of requests waits ``--tail-ms`` instead (or a
  uniform draw up to ``--tail-ms-max``). The
  draws follow the order requests arrive in, so a run with the same seed and
  the same arrival order sees the same delays. ``?delay_ms=N`` overrides the
  delay of one request.
- It stops cleanly on SIGTERM, SIGINT, or when its stdin reaches end of file
  (the spawning process dies or closes the pipe), so it can never outlive a
  benchmark. Pass ``--ignore-stdin`` when starting it by hand with stdin
  redirected from ``/dev/null``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import math
import os
import random
import signal
import socket
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final, final

from aiohttp import web

_BODY: Final = b"pong"
_DISTRIBUTIONS: Final = ("none", "fixed", "exponential", "lognormal")
# Longest single delay honoured (seconds): a typo in a flag must not hang a benchmark.
_MAX_DELAY: Final = 60.0


@final
@dataclass(slots=True)
class LatencyModel:
    """Draws artificial per-request delays (seconds) from a seeded distribution.

    ``latency`` is ``none`` (no delay), ``fixed`` (always ``latency_ms``),
    ``exponential`` (mean ``latency_ms``) or ``lognormal`` (median
    ``latency_ms``, shape ``sigma``). A ``tail_fraction`` share of requests
    waits ``tail_ms`` instead of the drawn delay.
    """

    latency: str = "none"
    latency_ms: float = 0.0
    sigma: float = 0.5
    tail_fraction: float = 0.0
    tail_ms: float = 0.0
    tail_ms_max: float = 0.0
    seed: int = 0
    _rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.latency not in _DISTRIBUTIONS:
            raise ValueError(f"latency must be one of {_DISTRIBUTIONS}; got {self.latency!r}")
        for name in ("latency_ms", "sigma", "tail_ms", "tail_ms_max"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be finite and >= 0; got {value!r}")
        if not 0.0 <= self.tail_fraction <= 1.0:
            raise ValueError(f"tail_fraction must be from 0 to 1; got {self.tail_fraction!r}")
        self._rng = random.Random(self.seed)

    @property
    def enabled(self) -> bool:
        """Whether any request is delayed at all."""
        return self.latency != "none" or self.tail_fraction > 0.0

    def sample(self) -> float:
        """The next delay in seconds."""
        rng = self._rng
        if self.tail_fraction > 0.0 and rng.random() < self.tail_fraction:
            slow = self.tail_ms
            if self.tail_ms_max > self.tail_ms:
                slow = rng.uniform(self.tail_ms, self.tail_ms_max)
            return min(slow / 1000.0, _MAX_DELAY)
        mean = self.latency_ms / 1000.0
        if self.latency == "fixed":
            delay = mean
        elif self.latency == "exponential":
            delay = rng.expovariate(1.0 / mean) if mean > 0.0 else 0.0
        elif self.latency == "lognormal":
            delay = rng.lognormvariate(math.log(mean), self.sigma) if mean > 0.0 else 0.0
        else:
            delay = 0.0
        return min(delay, _MAX_DELAY)


def _make_handler(model: LatencyModel) -> web.Server:
    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        if request.path != "/ping":
            return web.Response(status=404, body=b"not found", content_type="text/plain")
        override = request.query.get("delay_ms")
        if override is not None:
            try:
                delay = min(max(float(override), 0.0) / 1000.0, _MAX_DELAY)
            except ValueError:
                return web.Response(status=400, body=b"bad delay_ms", content_type="text/plain")
        else:
            delay = model.sample() if model.enabled else 0.0
        if delay > 0.0:
            await asyncio.sleep(delay)
        return web.Response(status=200, body=_BODY, content_type="text/plain")

    # The low-level server skips the router and the access log: the client side
    # should be what limits throughput, not this process.
    return web.Server(handle, access_log=None)


def _watch_stdin(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    # os.read on the raw descriptor, not sys.stdin: a daemon thread blocked
    # inside a buffered reader can abort interpreter shutdown.
    try:
        while os.read(0, 4096):
            pass
    except OSError:
        pass
    with contextlib.suppress(RuntimeError):  # the loop may already be closed
        loop.call_soon_threadsafe(stop.set)


async def serve(host: str, port: int, model: LatencyModel, *, watch_stdin: bool) -> None:
    """Serve until SIGTERM/SIGINT or end of stdin; print the bound port first."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.setblocking(False)
        runner = web.ServerRunner(_make_handler(model), shutdown_timeout=1.0)
        await runner.setup()
        try:
            site = web.SockSite(runner, sock, backlog=1024)
            await site.start()
            sys.stdout.write(f"{sock.getsockname()[1]}\n")
            sys.stdout.flush()
            if watch_stdin:
                threading.Thread(
                    target=_watch_stdin, args=(loop, stop), name="stdin-watch", daemon=True
                ).start()
            await stop.wait()
        finally:
            await runner.cleanup()
    finally:
        sock.close()


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="loopback address (127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port; 0 picks a free one")
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop if installed")
    parser.add_argument("--ignore-stdin", action="store_true", help="do not stop at stdin EOF")
    parser.add_argument("--latency", choices=_DISTRIBUTIONS, default="none")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="fixed/mean/median (ms)")
    parser.add_argument("--latency-sigma", type=float, default=0.5, help="lognormal shape")
    parser.add_argument("--tail-fraction", type=float, default=0.0, help="share of slow requests")
    parser.add_argument("--tail-ms", type=float, default=0.0, help="delay of a slow request (ms)")
    parser.add_argument(
        "--tail-ms-max", type=float, default=0.0, help="slow delays uniform in [tail-ms, this]"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the delay generator")
    args = parser.parse_args(argv)
    try:
        loopback = ipaddress.ip_address(args.host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        parser.error(f"--host must be a loopback address; got {args.host!r}")
    if not 0 <= args.port <= 65535:
        parser.error(f"--port must be from 0 to 65535; got {args.port}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = _parse_args(argv)
    try:
        model = LatencyModel(
            latency=args.latency,
            latency_ms=args.latency_ms,
            sigma=args.latency_sigma,
            tail_fraction=args.tail_fraction,
            tail_ms=args.tail_ms,
            tail_ms_max=args.tail_ms_max,
            seed=args.seed,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    coro = serve(args.host, args.port, model, watch_stdin=not args.ignore_stdin)
    if args.uvloop:
        try:
            import uvloop
        except ImportError:
            print("note: uvloop is not installed; using asyncio's loop", file=sys.stderr)
        else:
            uvloop.run(coro)
            return 0
    asyncio.run(coro)
    return 0


if __name__ == "__main__":
    sys.exit(main())
