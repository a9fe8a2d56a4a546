"""A served request's one outgoing call, cut by the request's inherited deadline.

Over real sockets on 127.0.0.1: an outer client sends ``X-Request-Timeout`` to a
served app (FastAPI on uvicorn, aiohttp, Sanic, each behind our middleware) whose
handler makes one call, with the strategy under test, to a plain aiohttp upstream.
Whatever the timing, every answer is the handler's 200 or a 504 with
``X-Do-Not-Retry`` — never a 500, never a dropped connection — and nothing is
left running or connected once a cell is over.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any, Final, final
from urllib.parse import parse_qsl

import aiohttp
import anyio
import pytest
from aiohttp import web
from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse
from sanic import Request as SanicRequest
from sanic import Sanic
from sanic import response as sanic_response

import aio_client as ac
from aio_client.server import DeadlineMiddleware, aiohttp_middleware
from aio_client.transports import AiohttpTransport, HttpxTransport, Transport
from tests.integration.servers import sanic_app, serve_aiohttp, serve_sanic, serve_uvicorn, settle
from tests.integration.test_hedging_real import client_connections_to

#: The hedge delay (seconds) of both parallel strategies.
D: Final = 0.04
#: How long a slow upstream attempt takes (seconds): longer than any budget below.
SLOW: Final = 0.2
#: Upstream latency (seconds) in the cell where the answer just beats the deadline,
#: and the hair by which the budget exceeds it: about the handler's own overhead, so
#: the deadline lands right around the answer (both sides of it happen).
LATENCY: Final = 0.1
HAIR: Final = 0.008
#: Requests per cell. The first half arrive paced, STEP every TICK seconds (about
#: 1,000 a second): each reaches its handler on time, so the cell's timing holds.
#: The second half arrive at once: the deadlines fire with the loop loaded and
#: BURST calls in flight, their timing smeared by the load.
REQUESTS: Final = 200
STEP: Final = 10
TICK: Final = 0.01
BURST: Final = REQUESTS // 2
#: Far beyond any honest answer in a cell: an outer request still waiting is hung.
HUNG: Final = 3.0

HANDLER_200: Final = "200 from the handler"
DEADLINE_504: Final = "504 + X-Do-Not-Retry"


# --- the upstream: a plain aiohttp app, latency chosen per attempt ----------------


@final
class Upstream:
    """The upstream's route, and how many attempts of each number reached it."""

    __slots__ = ("attempts", "port", "url")

    def __init__(self) -> None:
        #: ``http://127.0.0.1:PORT`` once serving, and the port.
        self.url = ""
        self.port = 0
        #: Attempts that arrived, by ``X-Request-Attempt`` (reset by each cell).
        self.attempts: Counter[str] = Counter()

    async def work(self, request: web.Request) -> web.Response:
        """Answer 200 after ``?first=`` seconds for attempt 1, ``?later=`` for the others."""
        attempt = request.headers.get("X-Request-Attempt", "1")
        self.attempts[attempt] += 1
        key = "first" if attempt == "1" else "later"
        await asyncio.sleep(float(request.query.get(key, "0")))
        return web.Response(text=f"upstream attempt {attempt}")


# --- the served apps: one route, one call, errors not caught ----------------------
#
# The route is POST: aiohttp's client quietly sends an idempotent request again
# when its connection drops, which would hide the very drops counted here. The
# handler's own call to the upstream is a GET, so it may be retried and hedged.


@final
class Relay:
    """The handler's way to the upstream; each cell plugs in its own client."""

    __slots__ = ("client",)

    def __init__(self) -> None:
        self.client: ac.Client | None = None

    async def call(self, query: str) -> str:
        """Make the handler's one call, forwarding its query; the upstream's body."""
        client = self.client
        assert client is not None, "a request reached a served app outside a cell"
        response = await client.request(ac.get("work", query=dict(parse_qsl(query))))
        return response.text


@final
@dataclass(frozen=True, slots=True)
class Served:
    """A running served app: which server, its URL, and the relay its handler uses."""

    name: str
    url: str
    relay: Relay


def fastapi_app(relay: Relay) -> FastAPI:
    """FastAPI with ``DeadlineMiddleware``; ``POST /call`` relays to the upstream."""
    app = FastAPI()
    app.add_middleware(DeadlineMiddleware)

    @app.post("/call")
    async def call(request: Request) -> PlainTextResponse:
        return PlainTextResponse(await relay.call(request.url.query))

    return app


def aiohttp_app(relay: Relay) -> web.Application:
    """aiohttp with ``aiohttp_middleware()``; ``POST /call`` relays to the upstream."""

    async def call(request: web.Request) -> web.Response:
        return web.Response(text=await relay.call(request.query_string))

    app = web.Application(middlewares=[aiohttp_middleware()])
    app.router.add_post("/call", call)
    return app


def sanic_served_app(relay: Relay) -> Sanic[Any, Any]:
    """Sanic with ``sanic.setup``; ``POST /call`` relays to the upstream."""
    app, _ = sanic_app()

    async def call(request: SanicRequest) -> sanic_response.HTTPResponse:
        return sanic_response.text(await relay.call(request.query_string))

    app.add_route(call, "/call", methods=["POST"])
    return app


# --- the cells --------------------------------------------------------------------


@final
@dataclass(frozen=True, slots=True)
class Timing:
    """When the inherited deadline fires relative to the call's attempts."""

    name: str
    #: The ``X-Request-Timeout`` the outer client sends (seconds).
    budget: float
    #: Upstream latency of attempt 1 and of later attempts (seconds).
    first: float
    later: float


TIMINGS: Final = [
    # The deadline fires while attempt 1 is alone: no hedge ever starts.
    Timing("before-hedge", budget=D / 2, first=SLOW, later=SLOW),
    # The deadline and the hedge timer are due at the same instant.
    Timing("at-hedge", budget=D, first=SLOW, later=SLOW),
    # Attempt 1 and the hedge are both in flight when the deadline fires.
    Timing("two-in-flight", budget=2 * D, first=SLOW, later=SLOW),
    # Attempt 1 answers about when the deadline fires, the hedge still out: the
    # loser's cancellation and the response race the deadline.
    Timing("just-after-answer", budget=LATENCY + HAIR, first=LATENCY, later=LATENCY),
]

STRATEGIES: Final[dict[str, Callable[[], ac.Strategy]]] = {
    "single": ac.single_attempt_strategy,
    "sequential": ac.sequential_strategy,
    "parallel-fixed": lambda: ac.parallel_strategy(attempts=2, delays=D),
    # Cold, adaptive delays answer max_delay; warm, the percentile clamped to
    # [0.75 D, D], and every latency here is above D: it hedges after D throughout.
    "parallel-adaptive": lambda: ac.parallel_strategy(
        attempts=2, delays=ac.adaptive_delays(0.95, min_delay=0.75 * D, max_delay=D)
    ),
}

TRANSPORTS: Final[dict[str, Callable[[], Transport]]] = {
    # Room for every attempt of every request in flight: attempts never queue
    # for a connection, so each timing cell keeps its meaning.
    "AiohttpTransport": lambda: AiohttpTransport(limit=2 * BURST + 10),
    "HttpxTransport": lambda: HttpxTransport(limit=2 * BURST + 10),
}


# --- fixtures: the servers live for the module, the clients for a cell ------------


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    """The module's servers and its tests share one asyncio loop."""
    return "asyncio"


@pytest.fixture(scope="module")
async def upstream() -> AsyncIterator[Upstream]:
    """The plain upstream; handler cancellation on, so abandoned attempts stop there."""
    upstream = Upstream()
    app = web.Application()
    app.router.add_get("/work", upstream.work)
    async with serve_aiohttp(app, handler_cancellation=True) as url:
        upstream.url, upstream.port = url, int(url.rsplit(":", 1)[1])
        yield upstream


@pytest.fixture(scope="module", params=["fastapi", "aiohttp.web", "sanic"])
async def served(request: pytest.FixtureRequest) -> AsyncIterator[Served]:
    """Each served app, behind its framework's deadline middleware."""
    relay = Relay()
    async with AsyncExitStack() as stack:
        if request.param == "fastapi":
            url = await stack.enter_async_context(serve_uvicorn(fastapi_app(relay)))
        elif request.param == "aiohttp.web":
            url = await stack.enter_async_context(serve_aiohttp(aiohttp_app(relay)))
        else:
            url = await stack.enter_async_context(serve_sanic(sanic_served_app(relay)))
        yield Served(request.param, url, relay)


# --- one cell -----------------------------------------------------------------------


def verdict(status: int, headers: Any, body: bytes) -> str:
    """What one answer was, as a label for the per-cell count."""
    if status == 200 and body.startswith(b"upstream attempt "):
        return HANDLER_200
    if status == 504 and headers.get("X-Do-Not-Retry") == "1":
        return DEADLINE_504
    retry = "with" if "X-Do-Not-Retry" in headers else "without"
    first_line = body.decode("utf-8", "replace").strip().partition("\n")[0][:60]
    return f"{status} {retry} X-Do-Not-Retry: {first_line!r}"


async def drive(served: Served, timing: Timing) -> Counter[str]:
    """Send the cell's requests through a raw aiohttp session; count the answers."""
    counts: Counter[str] = Counter()
    url = f"{served.url}/call?first={timing.first}&later={timing.later}"
    headers = {"X-Request-Timeout": f"{timing.budget:.3f}"}
    connector = aiohttp.TCPConnector(limit=BURST)
    timeout = aiohttp.ClientTimeout(total=HUNG)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one() -> None:
            try:
                async with session.post(url, headers=headers) as resp:
                    body = await resp.read()
                    counts[verdict(resp.status, resp.headers, body)] += 1
            except (aiohttp.ClientError, TimeoutError) as exc:
                counts[f"no answer: {type(exc).__name__}"] += 1

        async with anyio.create_task_group() as tg:
            for n in range(REQUESTS - BURST):
                tg.start_soon(one)
                if n % STEP == STEP - 1:
                    await anyio.sleep(TICK)
        async with anyio.create_task_group() as tg:
            for _ in range(BURST):
                tg.start_soon(one)
    return counts


def describe(tasks: set[asyncio.Task[Any]]) -> list[str]:
    """Readable names of leftover tasks: their coroutines' qualified names."""
    return sorted(getattr(task.get_coro(), "__qualname__", repr(task)) for task in tasks)


# Untraced: coverage's tracing stretches the handler overhead HAIR is tuned to, shifting each
# cell's timing, and adds about 70% to this file's run.
@pytest.mark.no_cover
@pytest.mark.parametrize("timing", TIMINGS, ids=lambda timing: timing.name)
@pytest.mark.parametrize("strategy", list(STRATEGIES))
@pytest.mark.parametrize("transport", list(TRANSPORTS))
async def test_inherited_deadline_answers_200_or_504_and_leaves_nothing(
    served: Served, upstream: Upstream, transport: str, strategy: str, timing: Timing
) -> None:
    """200 from the handler or 504 + X-Do-Not-Retry, never 500/drop; no task or socket left."""
    tasks_before = set(asyncio.all_tasks())
    upstream.attempts.clear()
    client = ac.Client(
        TRANSPORTS[transport](),
        upstream.url,
        strategy=STRATEGIES[strategy](),
        # One extra attempt per call: every call may hedge.
        budget=ac.RetryBudget(ratio=1.0),
    )
    async with client:
        served.relay.client = client
        try:
            counts = await drive(served, timing)
        finally:
            served.relay.client = None

    problems = []
    if set(counts) - {HANDLER_200, DEADLINE_504} or counts.total() != REQUESTS:
        problems.append(f"answers: {dict(counts)}")
    # The client closed its pool: the kernel shows no connection of ours to the upstream.
    if not await settle(lambda: client_connections_to(upstream.port) == 0, within=2.0):
        left = client_connections_to(upstream.port)
        problems.append(f"{left} connection(s) to the upstream still established")
    # Every connection is closed, so the servers' per-connection tasks end too; the
    # servers' own long-lived tasks (and the test runner's) were there before.
    if not await settle(lambda: not set(asyncio.all_tasks()) - tasks_before, within=2.0):
        problems.append(f"tasks left: {describe(set(asyncio.all_tasks()) - tasks_before)}")
    cell = f"{served.name} server, {strategy} strategy, {transport}, {timing.name}"
    reached = f"attempts that reached the upstream: {dict(upstream.attempts)}"
    assert not problems, f"{cell} (budget {timing.budget:.3f} s): {'; '.join(problems)} ({reached})"
