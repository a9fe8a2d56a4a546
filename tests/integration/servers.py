"""Real servers on 127.0.0.1 (ephemeral ports) for the integration tests.

- :func:`app_server`: a well-behaved aiohttp.web app that echoes requests, answers
  chosen statuses and bodies, hangs on demand, and records the propagation
  headers each attempt carried.
- :func:`raw_server`: a bare TCP server with one scripted behaviour per connection
  (reset, close, garbage, silence, a minimal keep-alive 200) that counts the
  connections it still has open, so a test can prove the client let go of one.
- :func:`serve_uvicorn`, :func:`serve_aiohttp`, :func:`serve_sanic`: an ASGI app,
  an aiohttp app or a Sanic app (made by :func:`sanic_app`) served in the test's loop.
- :func:`refused_url`: a URL where nothing listens.
- :func:`hanging_connect_url`: a URL where connecting hangs (a full accept queue).
- :func:`settle`: wait, bounded, for a condition on state another party owns.

Every server runs inside the test's own event loop and is shut down, with every
connection closed, when its ``async with`` block ends.
"""

from __future__ import annotations

import asyncio
import itertools
import select
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import ExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any, Final, final
from urllib.parse import parse_qsl

import anyio
import uvicorn
from aiohttp import web
from sanic import Sanic

from aio_client.server.sanic import SanicDeadline, setup

__all__ = [
    "LARGE_BODY",
    "AppServer",
    "RawServer",
    "Seen",
    "advertise_huge_body",
    "answer_garbage",
    "answer_ok_keep_alive",
    "answer_once_then_close",
    "app_server",
    "close_without_answer",
    "hanging_connect_url",
    "never_answer",
    "raw_server",
    "refused_url",
    "reset_after_request",
    "sanic_app",
    "serve_aiohttp",
    "serve_sanic",
    "serve_uvicorn",
    "settle",
]

#: What ``GET /large`` answers: 1 MiB with every byte value, so corruption shows.
LARGE_BODY: Final = bytes(range(256)) * 4096
#: Bytes that are not an HTTP response (no status line).
GARBAGE: Final = b"SPAM SPAM SPAM\r\nnot: http\r\n\r\n"
#: A response head announcing 1 GiB of body.
HUGE_HEAD: Final = (
    b"HTTP/1.1 200 OK\r\nContent-Length: 1073741824\r\n"
    b"Content-Type: application/octet-stream\r\n\r\n"
)
_OK_KEEP_ALIVE: Final = (
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"
)


# --- the well-behaved app -------------------------------------------------------------


@final
@dataclass(frozen=True, slots=True)
class Seen:
    """The propagation headers one request to ``/record`` arrived with."""

    timeout: str | None
    priority: str | None
    attempt: str | None
    #: Loop time (seconds) when the request reached the handler.
    arrived: float


@final
class AppServer:
    """A running :func:`app_server`: its base URL and what ``/record`` saw."""

    __slots__ = ("_closing", "seen", "url")

    def __init__(self) -> None:
        #: ``http://127.0.0.1:PORT``, no trailing slash.
        self.url = ""
        #: Every request to ``/record``, in arrival order.
        self.seen: list[Seen] = []
        self._closing = asyncio.Event()

    # Routes (per-request data in locals; ``seen`` is the one shared record).

    async def echo(self, request: web.Request) -> web.Response:
        """Method, raw request target, query, headers and body, back as JSON."""
        body = await request.read()
        target = request.raw_path  # exactly as sent: not decoded, not normalised
        path, _, query = target.partition("?")
        return web.json_response(
            {
                "method": request.method,
                "target": target,
                "path": path,
                "query": query,
                "query_pairs": parse_qsl(query, keep_blank_values=True),
                "headers": [
                    [name.decode("latin-1").lower(), value.decode("latin-1")]
                    for name, value in request.raw_headers
                ],
                # latin-1 maps bytes 0-255 one to one, so any body round-trips exactly.
                "body": body.decode("latin-1"),
            }
        )

    async def status(self, request: web.Request) -> web.Response:
        """Answer the status in the path, with a short body unless it forbids one."""
        code = int(request.match_info["code"])
        if code in (204, 304):
            return web.Response(status=code)
        return web.Response(status=code, text=f"status {code}")

    async def json(self, request: web.Request) -> web.Response:
        """A small JSON document with non-ASCII text."""
        return web.json_response({"hello": "world", "numbers": [1, 2, 3], "text": "héllo ✓"})

    async def text(self, request: web.Request) -> web.Response:
        """Latin-1 text, declared in the Content-Type charset."""
        return web.Response(
            body="héllo wörld".encode("latin-1"),
            headers={"Content-Type": "text/plain; charset=iso-8859-1"},
        )

    async def headers(self, request: web.Request) -> web.Response:
        """Repeated and mixed-case response headers."""
        response = web.Response(text="headers")
        response.headers.add("X-Repeated", "one")
        response.headers.add("X-Repeated", "two")
        response.headers.add("X-Mixed-Case", "Value")
        response.set_cookie("a", "1")
        response.set_cookie("b", "2")
        return response

    async def large(self, request: web.Request) -> web.Response:
        """:data:`LARGE_BODY` (1 MiB)."""
        return web.Response(body=LARGE_BODY, content_type="application/octet-stream")

    async def slow(self, request: web.Request) -> web.Response:
        """Answer 200 after ``?seconds=`` seconds."""
        await asyncio.sleep(float(request.query.get("seconds", "0.1")))
        return web.Response(text="slow")

    async def hang(self, request: web.Request) -> web.Response:
        """Never answer (until the server shuts down, or the client goes away)."""
        await self._closing.wait()
        return web.Response(status=503, text="shutting down")

    async def record(self, request: web.Request) -> web.Response:
        """Record the propagation headers; 503 for the first ``?fail=`` requests.

        ``?delay=`` seconds are spent before answering, so each retry leaves
        with measurably less budget than the one before.
        """
        seen = Seen(
            timeout=request.headers.get("X-Request-Timeout"),
            priority=request.headers.get("X-Request-Priority"),
            attempt=request.headers.get("X-Request-Attempt"),
            arrived=asyncio.get_running_loop().time(),
        )
        self.seen.append(seen)
        delay = float(request.query.get("delay", "0"))
        if delay:
            await asyncio.sleep(delay)
        if len(self.seen) <= int(request.query.get("fail", "0")):
            return web.Response(status=503, text="try again")
        return web.json_response({"attempt": seen.attempt, "timeout": seen.timeout})

    def app(self) -> web.Application:
        """The aiohttp application serving these routes."""
        app = web.Application()
        app.router.add_route("*", "/echo", self.echo)
        # Any tail, newlines included (a decoded %0A): every target is echoed.
        app.router.add_route("*", r"/echo/{tail:[\s\S]*}", self.echo)
        app.router.add_get("/status/{code:[0-9]{3}}", self.status)
        app.router.add_get("/json", self.json)
        app.router.add_get("/text", self.text)
        app.router.add_get("/headers", self.headers)
        app.router.add_get("/large", self.large)
        app.router.add_get("/slow", self.slow)
        app.router.add_get("/hang", self.hang)
        app.router.add_route("*", "/record", self.record)
        return app


@asynccontextmanager
async def app_server() -> AsyncIterator[AppServer]:
    """Serve :class:`AppServer`'s routes on 127.0.0.1 at an ephemeral port."""
    server = AppServer()
    # handler_cancellation: a handler whose client went away is cancelled, as in
    # production servers, instead of running on unobserved.
    runner = web.AppRunner(
        server.app(), access_log=None, handler_cancellation=True, shutdown_timeout=1.0
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        server.url = f"http://{host}:{port}"
        yield server
    finally:
        server._closing.set()  # release hanging handlers so shutdown is prompt
        with anyio.CancelScope(shield=True):  # a cancelled test still shuts down
            await runner.cleanup()


# --- raw TCP servers that misbehave -------------------------------------------------

#: What a raw server does with one accepted connection.
Behaviour = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _read_head(reader: asyncio.StreamReader) -> bytes:
    # Requests in these tests carry no body, so the head is the whole request.
    return await reader.readuntil(b"\r\n\r\n")


async def _wait_for_eof(reader: asyncio.StreamReader) -> None:
    while await reader.read(65536):
        pass


async def reset_after_request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Read the request, then reset the connection (RST, not FIN)."""
    await _read_head(reader)
    sock = writer.get_extra_info("socket")
    # Linger on with a zero timeout: close() sends RST and drops unsent data.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def close_without_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Read the request, then close the connection cleanly (FIN) without a byte."""
    await _read_head(reader)


async def answer_garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Read the request, answer bytes that are not HTTP, then close."""
    await _read_head(reader)
    writer.write(GARBAGE)
    await writer.drain()


async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Read the request, then stay silent until the client closes the connection."""
    await _read_head(reader)
    await _wait_for_eof(reader)


async def answer_ok_keep_alive(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answer every request on the connection with 200 ``ok``; keep it open until EOF."""
    while True:
        try:
            await _read_head(reader)
        except asyncio.IncompleteReadError:
            return  # the client closed the idle connection
        writer.write(_OK_KEEP_ALIVE)
        await writer.drain()


def answer_once_then_close(served: list[str]) -> Behaviour:
    """Answer one request per connection with a keep-alive 200, then close the connection.

    The answer does not say ``Connection: close``: the client pools the
    connection and finds it closed only when it sends the next request on it,
    as after a server's idle keep-alive timeout. Each request line that
    reached the server is appended to ``served``.
    """

    async def behaviour(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await _read_head(reader)
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if length:
            await reader.readexactly(length)
        served.append(head.split(b"\r\n", 1)[0].decode("latin-1"))
        writer.write(_OK_KEEP_ALIVE)
        await writer.drain()

    return behaviour


async def advertise_huge_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answer a head announcing a 1 GiB body, send 64 KiB of it, then wait for the client."""
    await _read_head(reader)
    writer.write(HUGE_HEAD + bytes(65536))
    await writer.drain()
    await _wait_for_eof(reader)


@final
class RawServer:
    """A running :func:`raw_server`: its URL and its connection counts."""

    __slots__ = ("_behaviour", "_changed", "_writers", "accepted", "url")

    def __init__(self, behaviour: Behaviour) -> None:
        #: ``http://127.0.0.1:PORT``, no trailing slash.
        self.url = ""
        #: Connections accepted so far.
        self.accepted = 0
        self._behaviour = behaviour
        self._writers: set[asyncio.StreamWriter] = set()
        self._changed = asyncio.Event()

    @property
    def open_connections(self) -> int:
        """Connections accepted and not yet closed (by either side)."""
        return len(self._writers)

    async def settle(self, open_connections: int, *, within: float) -> int:
        """Wait up to ``within`` seconds for exactly ``open_connections`` to be open.

        Returns the count when it matched or when the wait ran out, for the
        test to assert on.
        """
        with anyio.move_on_after(within):
            while len(self._writers) != open_connections:
                await self._changed.wait()
        return len(self._writers)

    def _notify(self) -> None:
        # Wake every waiter, and give later waiters a fresh event to wait on.
        self._changed.set()
        self._changed = asyncio.Event()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self._writers.add(writer)
        self._notify()
        try:
            await self._behaviour(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away first: part of what these servers exercise
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except ConnectionError:
                pass  # already reset: closed is closed
            self._writers.discard(writer)
            self._notify()

    def _abort_all(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()


@asynccontextmanager
async def raw_server(behaviour: Behaviour) -> AsyncIterator[RawServer]:
    """Serve ``behaviour`` on 127.0.0.1 at an ephemeral port."""
    raw = RawServer(behaviour)
    server = await asyncio.start_server(raw._serve, "127.0.0.1", 0)
    try:
        host, port = server.sockets[0].getsockname()[:2]
        raw.url = f"http://{host}:{port}"
        yield raw
    except BaseException:
        with anyio.CancelScope(shield=True):  # a cancelled test still shuts down
            await _shut_down(server, raw)
        raise
    left_open = await _shut_down(server, raw)
    assert left_open == 0, f"{left_open} raw server connection(s) would not close"


async def _shut_down(server: asyncio.Server, raw: RawServer) -> int:
    server.close()
    await asyncio.sleep(0)  # let just-accepted connections reach _serve
    raw._abort_all()
    left_open = await raw.settle(0, within=2.0)
    await server.wait_closed()
    return left_open


@contextmanager
def refused_url() -> Iterator[str]:
    """A URL on 127.0.0.1 where connecting is refused.

    The port stays bound (but not listening) for the block, so no other
    process can start listening on it meanwhile.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        yield f"http://127.0.0.1:{port}"


@asynccontextmanager
async def serve_uvicorn(app: Any, **config: Any) -> AsyncIterator[str]:
    """Run an ASGI ``app`` on uvicorn in this event loop at 127.0.0.1:<ephemeral>; yield its URL.

    ``config`` adds uvicorn options (e.g. ``proxy_headers=False``).
    """
    async with running_uvicorn(app, **config) as (_, url):
        yield url


@asynccontextmanager
async def running_uvicorn(app: Any, **config: Any) -> AsyncIterator[tuple[uvicorn.Server, str]]:
    """:func:`serve_uvicorn`, yielding the server too (to stop it: ``should_exit``).

    ``config`` may also replace the defaults (log level warning, no lifespan, 2 s of
    graceful shutdown).
    """
    options: dict[str, Any] = {
        "log_level": "warning",
        "lifespan": "off",
        "timeout_graceful_shutdown": 2,
        **config,
    }
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, **options))
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve)
        with anyio.fail_after(5):
            while not server.started:  # noqa: ASYNC110 - uvicorn offers no startup event
                await anyio.sleep(0.005)
        port = server.servers[0].sockets[0].getsockname()[1]
        try:
            yield server, f"http://127.0.0.1:{port}"
        finally:
            server.should_exit = True


@asynccontextmanager
async def serve_aiohttp(app: web.Application, **runner_options: Any) -> AsyncIterator[str]:
    """Run an aiohttp ``app`` at 127.0.0.1:<ephemeral> in this event loop; yield its URL."""
    options: dict[str, Any] = {"access_log": None, "shutdown_timeout": 2.0, **runner_options}
    runner = web.AppRunner(app, **options)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        yield f"http://{host}:{port}"
    finally:
        with anyio.CancelScope(shield=True):
            await runner.cleanup()


_sanic_names = itertools.count()


def sanic_app(**options: Any) -> tuple[Sanic[Any, Any], SanicDeadline]:
    """A fresh Sanic app (unique name) with the deadline integration set up.

    ``options``: those of :class:`aio_client.server.ServerOptions`.
    """
    app: Sanic[Any, Any] = Sanic(f"aio_client_test_{next(_sanic_names)}")
    app.config.MOTD = False
    app.config.ACCESS_LOG = False
    # TouchUp recompiles Sanic's methods from source once per process; a second app
    # in the same process would fail to find them.
    app.config.TOUCHUP = False
    return app, setup(app, **options)


@asynccontextmanager
async def serve_sanic(app: Sanic[Any, Any]) -> AsyncIterator[str]:
    """Run ``app`` on a socket bound to 127.0.0.1:<ephemeral>; yield its URL.

    Sanic reads ``port=0`` as "use 8000", so the socket is bound here and handed over.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    port = sock.getsockname()[1]
    server = await app.create_server(sock=sock, return_asyncio_server=True, access_log=False)
    assert server is not None
    await server.startup()
    await server.before_start()
    await server.after_start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await server.before_stop()
        await server.close()
        for connection in list(server.connections):
            connection.close_if_idle()
        await server.after_stop()


@contextmanager
def hanging_connect_url(*, attempts: int = 16) -> Iterator[str]:
    """A URL on 127.0.0.1 where a TCP connect hangs: the listener's accept queue is full.

    The socket listens with a backlog of 0 and never accepts. Connects fill its
    queue (Linux lets one in) until one stays pending; from then on the kernel
    drops every SYN, so a connect neither succeeds nor is refused until its own
    timeout. Proven before the block starts: a further blocking connect must
    time out. Every socket is closed when the block ends.
    """
    with ExitStack() as stack:
        listener = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        address = listener.getsockname()[:2]
        for _ in range(attempts):
            filler = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            filler.setblocking(False)
            filler.connect_ex(address)
            _, done, _ = select.select([], [filler], [], 0.05)
            if done:
                continue  # it got into the queue: the queue had room
            # Pending: the queue looks full. Prove it; if the proof connects after
            # all, it is one more filler and the filling goes on.
            probe = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            probe.settimeout(0.05)
            try:
                probe.connect(address)
            except TimeoutError:
                break
        else:
            raise RuntimeError(f"could not fill the accept queue of {address}")
        yield f"http://{address[0]}:{address[1]}"


async def settle(condition: Callable[[], bool], within: float) -> bool:
    """Whether ``condition()`` holds within ``within`` seconds (state owned by others)."""
    with anyio.move_on_after(within):
        while not condition():  # noqa: ASYNC110 - polling state we cannot subscribe to
            await anyio.sleep(0.01)
        return True
    return condition()
