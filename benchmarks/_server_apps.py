"""One server variant of ``server_overhead.py``, run in a process of its own.

Usage::

    python benchmarks/_server_apps.py VARIANT [--port 0] [--gc-freeze]

- The first line on stdout is the bound port; the last, once it stops, is
  ``gc {...}``: the garbage collections made while serving, per generation,
  and the seconds they took (JSON). Nothing else is printed on stdout.
- ``GET /ping`` answers ``200 pong`` (``text/plain``, with a ``Content-Length``)
  from a trivial handler, so what differs between variants is the middleware.
- Variants: ``asgi_bare``, ``asgi_passthrough``, ``asgi_deadline``,
  ``asgi_deadline_prometheus``, ``asgi_minimal`` (FastAPI under uvicorn with
  httptools), and ``aiohttp_bare``, ``aiohttp_passthrough``,
  ``aiohttp_deadline``, ``aiohttp_aio_request``, ``aiohttp_minimal``
  (aiohttp.web); every server runs on uvloop when it is installed.
- The two ``_minimal`` variants are a reference, not a product: the least a
  deadline middleware does on that server (see :class:`MinimalDeadline`).
- It stops when its stdin reaches end of file (so it cannot outlive the
  benchmark that spawned it), or on SIGTERM / SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import contextvars
import gc
import json
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any, Final

ASGI_VARIANTS: Final = (
    "asgi_bare",
    "asgi_passthrough",
    "asgi_deadline",
    "asgi_deadline_prometheus",
    "asgi_minimal",
)
AIOHTTP_VARIANTS: Final = (
    "aiohttp_bare",
    "aiohttp_passthrough",
    "aiohttp_deadline",
    "aiohttp_aio_request",
    "aiohttp_minimal",
)
VARIANTS: Final = ASGI_VARIANTS + AIOHTTP_VARIANTS
# Whether to gc.freeze() once serving (--gc-freeze).
_FREEZE = False
# Collections per generation while serving, and the seconds they took.
_COLLECTIONS = [0, 0, 0]
_GC_SECONDS = [0.0]
_GC_STARTED = [0.0]


def _count_collection(phase: str, info: dict[str, int]) -> None:
    if phase == "start":
        _GC_STARTED[0] = time.perf_counter()
    else:
        _COLLECTIONS[info["generation"]] += 1
        _GC_SECONDS[0] += time.perf_counter() - _GC_STARTED[0]


Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class PassThrough:
    """A pure ASGI middleware that does nothing: the floor of any middleware."""

    __slots__ = ("app",)

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


# The deadline (loop time) of a request served by a _minimal variant: what calls
# made by its handler would inherit.
_DEADLINE: Final[contextvars.ContextVar[float]] = contextvars.ContextVar("deadline", default=0.0)
_DEFAULT_BUDGET: Final = 10.0


def _budget(raw: bytes | str | None) -> float:
    if raw is None:
        return _DEFAULT_BUDGET
    try:
        budget = float(raw)
    except ValueError:
        return _DEFAULT_BUDGET
    return budget if 0.0 < budget < _DEFAULT_BUDGET else _DEFAULT_BUDGET


class MinimalDeadline:
    """The least a deadline middleware does, as a reference for what ours costs.

    The budget from ``X-Request-Timeout`` goes into a context variable, one
    loop timer cancels the handler when it runs out, and a handler cut before
    its response started gets a 504. Nothing else: no other header, no
    priority, no client hang-up, no shutdown, no counters, no token.
    """

    __slots__ = ("app",)

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw = None
        for name, value in scope["headers"]:
            if name == b"x-request-timeout":
                raw = value
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        at = loop.time() + _budget(raw)
        timer = loop.call_at(at, task.cancel)
        started = False

        async def watched(message: Message) -> None:
            nonlocal started
            started = True
            await send(message)

        reset = _DEADLINE.set(at)
        try:
            await self.app(scope, receive, watched)
        except asyncio.CancelledError:
            if loop.time() < at or task.uncancel():
                raise
            if started:  # too late for a 504: the server breaks the connection
                return
            await send({"type": "http.response.start", "status": 504, "headers": []})
            await send({"type": "http.response.body", "body": b""})
        finally:
            timer.cancel()
            _DEADLINE.reset(reset)


def asgi_app(variant: str) -> Any:
    """The FastAPI app of an ASGI variant."""
    from fastapi import FastAPI
    from fastapi.responses import PlainTextResponse

    from aio_client.server import DeadlineMiddleware

    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    @app.get("/ping")
    async def ping() -> PlainTextResponse:
        return PlainTextResponse("pong")

    if variant == "asgi_passthrough":
        app.add_middleware(PassThrough)
    elif variant == "asgi_deadline":
        app.add_middleware(DeadlineMiddleware)
    elif variant == "asgi_deadline_prometheus":
        from prometheus_client import CollectorRegistry

        from aio_client.metrics import PrometheusMetrics

        metrics = PrometheusMetrics(registry=CollectorRegistry())
        app.add_middleware(DeadlineMiddleware, observer=metrics.server_observer)
    elif variant == "asgi_minimal":
        app.add_middleware(MinimalDeadline)
    return app


def aiohttp_app(variant: str) -> Any:
    """The aiohttp application of an aiohttp variant."""
    from aiohttp import web

    middlewares: list[Any] = []
    if variant == "aiohttp_passthrough":

        @web.middleware
        async def passthrough(request: web.Request, handler: Any) -> web.StreamResponse:
            response: web.StreamResponse = await handler(request)
            return response

        middlewares.append(passthrough)
    elif variant == "aiohttp_deadline":
        from aio_client.server import aiohttp_middleware

        middlewares.append(aiohttp_middleware())
    elif variant == "aiohttp_aio_request":
        import aio_request

        middlewares.append(aio_request.aiohttp_middleware_factory())
    elif variant == "aiohttp_minimal":

        @web.middleware
        async def minimal(request: web.Request, handler: Any) -> web.StreamResponse:
            # MinimalDeadline's work, on aiohttp's middleware API.
            loop = asyncio.get_running_loop()
            task = asyncio.current_task()
            assert task is not None
            at = loop.time() + _budget(request.headers.get("X-Request-Timeout"))
            timer = loop.call_at(at, task.cancel)
            reset = _DEADLINE.set(at)
            try:
                response: web.StreamResponse = await handler(request)
            except asyncio.CancelledError:
                if loop.time() < at or task.uncancel():
                    raise
                return web.Response(status=504)
            finally:
                timer.cancel()
                _DEADLINE.reset(reset)
            return response

        middlewares.append(minimal)

    async def ping(request: web.Request) -> web.Response:
        return web.Response(text="pong")

    app = web.Application(middlewares=middlewares)
    app.router.add_get("/ping", ping)
    return app


def _watch_stdin(loop: asyncio.AbstractEventLoop, stop: Callable[[], object]) -> None:
    # os.read on the raw descriptor: a daemon thread blocked in a buffered
    # reader can abort interpreter shutdown.
    try:
        while os.read(0, 4096):
            pass
    except OSError:
        pass
    with contextlib.suppress(RuntimeError):  # the loop may already be closed
        loop.call_soon_threadsafe(stop)


def _listen(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


async def serve_asgi(variant: str, sock: socket.socket) -> None:
    """Serve the variant's FastAPI app on uvicorn until told to stop."""
    import uvicorn

    config = uvicorn.Config(
        asgi_app(variant),
        http="httptools",
        access_log=False,
        log_level="warning",
        lifespan="off",
        timeout_graceful_shutdown=1,
        timeout_keep_alive=3600,  # the benchmark keeps its connections across rounds
    )
    server = uvicorn.Server(config)
    loop = asyncio.get_running_loop()

    def stop() -> None:
        server.should_exit = True

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            await task  # raises why it did not start
            return
        await asyncio.sleep(0.01)
    # uvicorn installs its own signal handlers while serving: put ours back.
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop)
    _ready(sock)
    threading.Thread(target=_watch_stdin, args=(loop, stop), daemon=True).start()
    await task


async def serve_aiohttp(variant: str, sock: socket.socket) -> None:
    """Serve the variant's aiohttp app until told to stop."""
    from aiohttp import web

    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, done.set)
    runner = web.AppRunner(aiohttp_app(variant), access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    try:
        await web.SockSite(runner, sock).start()
        _ready(sock)
        threading.Thread(target=_watch_stdin, args=(loop, done.set), daemon=True).start()
        await done.wait()
    finally:
        await runner.cleanup()


def _ready(sock: socket.socket) -> None:
    if _FREEZE:
        gc.collect()
        gc.freeze()
    gc.callbacks.append(_count_collection)
    sys.stdout.write(f"{sock.getsockname()[1]}\n")
    sys.stdout.flush()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variant", choices=VARIANTS)
    parser.add_argument("--port", type=int, default=0, help="port; 0 picks a free one")
    parser.add_argument(
        "--gc-freeze",
        action="store_true",
        help="gc.freeze() once serving: start-up objects leave the collector's full passes",
    )
    args = parser.parse_args(argv)
    global _FREEZE
    _FREEZE = args.gc_freeze
    sock = _listen(args.port)
    serve = serve_asgi if args.variant in ASGI_VARIANTS else serve_aiohttp
    coro = serve(args.variant, sock)
    try:
        import uvloop
    except ImportError:
        asyncio.run(coro)
    else:
        uvloop.run(coro)
    gc.callbacks.remove(_count_collection)
    report = {"collections": _COLLECTIONS, "seconds": round(_GC_SECONDS[0], 4)}
    sys.stdout.write(f"gc {json.dumps(report)}\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
