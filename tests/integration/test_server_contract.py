"""The server-adapter contract: ASGI, aiohttp and Sanic keep the same promises.

Each test runs against a real server on 127.0.0.1 (ephemeral port), once per
adapter: FastAPI under uvicorn with ``DeadlineMiddleware`` (added the way users
add it, ``app.add_middleware``), aiohttp with ``aiohttp_middleware``, and Sanic
with ``aio_client.server.sanic.setup``. The routes are described once, as
framework-free work (:data:`Work`), and :func:`serve` builds the same app on
each framework. What each framework does beyond the contract (FastAPI
dependencies, aiohttp views and runner shutdown, Sanic listeners, ASGI
lifespan, uploads) stays in that framework's own test file.

After every test, no task and no socket is left, and every request the server
counted got exactly one :class:`ServerOutcome` (both checked by :func:`serve`).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, final

import aiohttp
import anyio
import pytest
from aiohttp import web
from fastapi import FastAPI
from sanic import Request as SanicRequest
from sanic.response import HTTPResponse
from starlette.responses import Response as StarletteResponse

import aio_client as ac
from aio_client import Bulkhead, CancelReason, CircuitBreaker, CircuitState, RateLimiter
from aio_client.server import (
    DeadlineMiddleware,
    PriorityLoadShedder,
    ServerOutcome,
    ServerOutcomeKind,
    ServerStats,
    aiohttp_middleware,
    fastapi_max_timeout,
    max_timeout,
    status_of_refusal,
    trusted_peers,
)
from aio_client.transports import AiohttpTransport

from .servers import refused_url, sanic_app, serve_aiohttp, serve_sanic, serve_uvicorn, settle

FRAMEWORKS = ["asgi", "aiohttp", "sanic"]
Kind = ServerOutcomeKind


# --- one description of the routes ---------------------------------------------------


@final
@dataclass(frozen=True, slots=True)
class Reply:
    """What a route's work answers, whatever the framework."""

    status: int = 200
    body: bytes = b"done"
    headers: Mapping[str, str] = field(default_factory=dict)


#: A route's work: framework-free, it reads the ambient deadline, priority and token.
Work = Callable[[], Awaitable[Reply]]


@final
@dataclass(frozen=True, slots=True)
class Route:
    """A route's work and its own cap on the budget (``max_timeout`` / ``fastapi_max_timeout``)."""

    work: Work
    cap: float | None = None


def json_reply(document: object) -> Reply:
    """A 200 carrying ``document`` as JSON."""
    return Reply(200, json.dumps(document).encode(), {"Content-Type": "application/json"})


@final
@dataclass(slots=True)
class Served:
    """A running server under test: where it listens and what its adapter counted."""

    url: str
    stats: ServerStats
    #: The adapter's ``shutdown()``: cancels requests in flight, refuses new ones.
    shutdown: Callable[[], int]
    #: Every :class:`ServerOutcome` the observer got, in order.
    outcomes: list[ServerOutcome]

    @property
    def port(self) -> int:
        """The ephemeral port."""
        return int(self.url.rsplit(":", 1)[1])

    def kinds(self) -> list[tuple[Kind, int]]:
        """Each outcome's kind and status, in order."""
        return [(outcome.outcome, outcome.status) for outcome in self.outcomes]


def _fastapi_app(
    routes: Mapping[str, Route], options: dict[str, Any]
) -> tuple[FastAPI, DeadlineMiddleware]:
    app = FastAPI()
    app.add_middleware(DeadlineMiddleware, **options)

    def endpoint_of(work: Work) -> Callable[[], Awaitable[StarletteResponse]]:
        async def endpoint() -> StarletteResponse:
            reply = await work()
            return StarletteResponse(reply.body, reply.status, dict(reply.headers))

        return endpoint

    for path, route in routes.items():
        dependencies = [] if route.cap is None else [fastapi_max_timeout(route.cap)]
        app.add_api_route(path, endpoint_of(route.work), methods=["GET"], dependencies=dependencies)
    # Starlette builds its middleware stack on the first request; build it now to
    # reach the DeadlineMiddleware instance (its counters and shutdown switch).
    app.middleware_stack = app.build_middleware_stack()
    layer: Any = app.middleware_stack
    while not isinstance(layer, DeadlineMiddleware):
        layer = layer.app
    return app, layer


@asynccontextmanager
async def serve(
    framework: str, routes: Mapping[str, Work | Route], **options: Any
) -> AsyncIterator[Served]:
    """The same app (GET ``routes``) behind ``framework``'s adapter with ``options``.

    An observer records every outcome. Before the server stops, every request
    the adapter counted must have had exactly one outcome; once it has stopped,
    every task and socket opened since the block began must be gone (the
    test's clients are closed by then: they are opened inside the block).
    """
    tasks_before = set(asyncio.all_tasks())
    sockets_before = _open_sockets()
    async with _serve(framework, routes, **options) as served:
        yield served
    await _nothing_left(tasks_before, sockets_before)


@asynccontextmanager
async def _serve(
    framework: str, routes: Mapping[str, Work | Route], **options: Any
) -> AsyncIterator[Served]:
    outcomes: list[ServerOutcome] = []
    options = {"observer": outcomes.append, **options}
    table = {path: r if isinstance(r, Route) else Route(r) for path, r in routes.items()}
    if framework == "asgi":
        app, middleware = _fastapi_app(table, options)
        # proxy_headers off: uvicorn would otherwise rewrite the client address from
        # X-Forwarded-For, hiding whether the middleware itself trusts that header.
        async with serve_uvicorn(app, proxy_headers=False) as url:
            served = Served(url, middleware.stats, middleware.shutdown, outcomes)
            yield served
            await _one_outcome_per_request(served)
    elif framework == "aiohttp":
        guard = aiohttp_middleware(**options)
        web_app = web.Application(middlewares=[guard])
        web_app.on_shutdown.append(guard.on_shutdown)
        for path, route in table.items():
            web_app.router.add_get(path, _aiohttp_handler(route))
        async with serve_aiohttp(web_app) as url:
            served = Served(url, guard.stats, guard.shutdown, outcomes)
            yield served
            await _one_outcome_per_request(served)
    else:
        sanic, integration = sanic_app(**options)
        for path, route in table.items():
            sanic.add_route(_sanic_handler(route), path, name=path.strip("/") or "root")
        async with serve_sanic(sanic) as url:
            served = Served(url, integration.stats, integration.shutdown, outcomes)
            yield served
            await _one_outcome_per_request(served)


def _aiohttp_handler(route: Route) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handle(request: web.Request) -> web.Response:
        reply = await route.work()
        return web.Response(status=reply.status, body=reply.body, headers=dict(reply.headers))

    return handle if route.cap is None else max_timeout(route.cap)(handle)


def _sanic_handler(route: Route) -> Callable[[SanicRequest], Coroutine[Any, Any, HTTPResponse]]:
    async def handle(request: SanicRequest) -> HTTPResponse:
        reply = await route.work()
        return HTTPResponse(reply.body, status=reply.status, headers=dict(reply.headers))

    return handle if route.cap is None else max_timeout(route.cap)(handle)


async def _one_outcome_per_request(served: Served) -> None:
    # An outcome is handed over as its request ends, which may be a moment after the
    # client saw the answer (or hung up).
    await settle(lambda: len(served.outcomes) >= served.stats.requests, within=1.0)
    assert len(served.outcomes) == served.stats.requests, served.kinds()


# --- what every test leaves behind -----------------------------------------------------


def _open_sockets() -> set[str]:
    """This process's open sockets (their inodes, which are never reused while open)."""
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # closed meanwhile (the listing's own descriptor, for one)
        if target.startswith("socket:"):
            found.add(target)
    return found


def _names(tasks: set[asyncio.Task[Any]]) -> list[str]:
    return sorted(getattr(task.get_coro(), "__qualname__", repr(task)) for task in tasks)


async def _nothing_left(tasks_before: set[asyncio.Task[Any]], sockets_before: set[str]) -> None:
    def tasks_left() -> set[asyncio.Task[Any]]:
        return set(asyncio.all_tasks()) - tasks_before

    tasks_done = await settle(lambda: not tasks_left(), within=2.0)
    assert tasks_done, f"tasks left: {_names(tasks_left())}"
    sockets_done = await settle(lambda: not _open_sockets() - sockets_before, within=2.0)
    assert sockets_done, f"sockets left open: {len(_open_sockets() - sockets_before)}"


@pytest.fixture(params=FRAMEWORKS)
def framework(request: pytest.FixtureRequest) -> str:
    """Which server adapter the test runs against."""
    name: str = request.param
    return name


# --- the work the routes do -------------------------------------------------------------


@final
class Probe:
    """Framework-free route work that records what the handler saw."""

    def __init__(self) -> None:
        #: Handlers that started (any route).
        self.runs = 0
        #: Handlers of ``hang`` that started.
        self.entered = 0
        self.entered_event = anyio.Event()
        #: Why each ``hang`` stopped (its token's reason), and when (loop time).
        self.reasons: list[CancelReason | None] = []
        self.stopped = anyio.Event()
        self.stopped_at = 0.0
        #: The token of each ``report``.
        self.tokens: list[ac.CancelToken | None] = []

    async def report(self) -> Reply:
        """The budget, token budget and priority the handler sees, as JSON."""
        self.runs += 1
        deadline = ac.current_deadline()
        priority = ac.current_priority()
        token = ac.current_token()
        self.tokens.append(token)
        return json_reply(
            {
                "remaining": deadline.remaining() if deadline else None,
                "token_remaining": token.remaining() if token else None,
                "priority": priority.value if priority else None,
            }
        )

    async def ok(self) -> Reply:
        """200 ``done``."""
        self.runs += 1
        return Reply()

    async def fail(self) -> Reply:
        """A 500 the handler answers itself."""
        self.runs += 1
        return Reply(500, b"failed")

    async def hang(self) -> Reply:
        """Wait until cancelled; record why."""
        self.runs += 1
        self.entered += 1
        self.entered_event.set()
        token = ac.current_token()
        try:
            await anyio.sleep(30)
        finally:
            self.reasons.append(token.reason if token else None)
            self.stopped_at = anyio.current_time()
            self.stopped.set()
        return Reply(200, b"never")  # pragma: no cover


async def get(
    session: aiohttp.ClientSession, url: str, **headers: str
) -> tuple[int, dict[str, str], bytes]:
    """Status, headers (lower-case names) and body of one GET."""
    async with session.get(url, headers=headers) as response:
        body = await response.read()
        return response.status, {k.lower(): v for k, v in response.headers.items()}, body


async def get_json(session: aiohttp.ClientSession, url: str, **headers: str) -> dict[str, Any]:
    """The JSON body of one GET answered 200."""
    status, _, body = await get(session, url, **headers)
    assert status == 200, body
    document = json.loads(body)
    assert isinstance(document, dict)
    return document


async def hang_up_mid_request(served: Served, probe: Probe, path: str = "/hang") -> float:
    """Send a request on a raw socket, close it once the handler runs; seconds to cancellation."""
    stream = await anyio.connect_tcp("127.0.0.1", served.port)
    head = f"GET {path} HTTP/1.1\r\nHost: test\r\nX-Request-Timeout: 30\r\n\r\n"
    await stream.send(head.encode())
    with anyio.fail_after(2):
        await probe.entered_event.wait()
    await stream.aclose()
    closed_at = anyio.current_time()
    with anyio.fail_after(2):
        await probe.stopped.wait()
    return probe.stopped_at - closed_at


# --- the propagated budget ----------------------------------------------------------------


async def test_the_callers_budget_and_priority_reach_the_handler(framework: str) -> None:
    """Our client's timeout and priority become the handler's ambient deadline, priority and
    token budget; a request that completes keeps its token uncancelled, even past its deadline."""
    probe = Probe()
    routes = {"/echo": probe.report}
    async with (
        serve(framework, routes, timeout=30.0, trust_priority=trusted_peers("127.0.0.1")) as served,
        ac.Client(AiohttpTransport(), served.url) as client,
    ):
        response = await client.request(ac.get("echo"), timeout=2.0, priority="high")
        short = await client.request(ac.get("echo"), timeout=0.1)
        await anyio.sleep(0.15)
    body = response.json()
    assert isinstance(body, dict)
    assert 1.5 < body["remaining"] <= 2.0
    assert body["token_remaining"] == pytest.approx(body["remaining"], abs=0.01)
    assert body["priority"] == "high"
    assert short.status == 200
    assert all(token is not None and not token.cancelled for token in probe.tokens)
    assert [token.reason for token in probe.tokens if token] == [None, None]
    assert served.stats.completed == 2
    assert served.kinds() == [(Kind.OK, 200), (Kind.OK, 200)]


async def test_grpc_and_envoy_headers_are_read_and_the_smallest_budget_wins(framework: str) -> None:
    """grpc-timeout and x-envoy-expected-rq-timeout-ms carry a budget too; of several
    headers the smallest budget wins."""
    probe = Probe()
    async with (
        serve(framework, {"/echo": probe.report}, timeout=30.0) as served,
        aiohttp.ClientSession() as session,
    ):
        grpc = await get_json(session, f"{served.url}/echo", **{"grpc-timeout": "1500m"})
        envoy = await get_json(
            session,
            f"{served.url}/echo",
            **{"x-envoy-expected-rq-timeout-ms": "800", "X-Request-Timeout": "9"},
        )
        ours = await get_json(
            session, f"{served.url}/echo", **{"grpc-timeout": "2S", "X-Request-Timeout": "0.6"}
        )
    assert 1.4 < grpc["remaining"] <= 1.5
    assert 0.7 < envoy["remaining"] <= 0.8
    assert 0.5 < ours["remaining"] <= 0.6
    assert served.stats.malformed_headers == 0


MALFORMED = ["nan", "-5", "1e9", "9" * 40, "\t", "ab"]


async def test_malformed_headers_are_counted_and_ignored_never_a_500(framework: str) -> None:
    """A malformed, negative or absurd budget (or an unknown priority) is ignored and counted:
    the handler runs with the default budget and priority."""
    probe = Probe()
    async with (
        serve(framework, {"/echo": probe.report}, timeout=3.0) as served,
        aiohttp.ClientSession() as session,
    ):
        bodies = [
            await get_json(session, f"{served.url}/echo", **{"X-Request-Timeout": value})
            for value in MALFORMED
        ]
        both = {"X-Request-Timeout": "-1", "X-Request-Priority": "urgent"}
        bodies.append(await get_json(session, f"{served.url}/echo", **both))
    assert all(2.5 < body["remaining"] <= 3.0 for body in bodies), bodies
    assert all(body["priority"] == "normal" for body in bodies)
    assert served.stats.malformed_headers == len(MALFORMED) + 2  # each bad header counts
    assert [outcome.invalid_header for outcome in served.outcomes] == [True] * (len(MALFORMED) + 1)
    assert served.kinds() == [(Kind.OK, 200)] * (len(MALFORMED) + 1)


async def test_max_timeout_caps_the_default_and_the_header(framework: str) -> None:
    """max_timeout caps a longer default budget and a longer header; the default priority
    applies to a request without one."""
    probe = Probe()
    async with (
        serve(
            framework, {"/echo": probe.report}, timeout=7.0, max_timeout=3.0, priority="low"
        ) as served,
        aiohttp.ClientSession() as session,
    ):
        defaulted = await get_json(session, f"{served.url}/echo")
        clamped = await get_json(session, f"{served.url}/echo", **{"X-Request-Timeout": "60"})
    assert 2.5 < defaulted["remaining"] <= 3.0
    assert defaulted["priority"] == "low"
    assert 2.5 < clamped["remaining"] <= 3.0
    assert served.stats.malformed_headers == 0


async def test_a_routes_own_maximum_caps_the_budget_and_a_slow_route_gets_504(
    framework: str,
) -> None:
    """A route's max_timeout (fastapi_max_timeout on FastAPI) caps the handler's deadline and
    token below a longer header; a handler outliving its route's cap is cut with a 504."""
    probe = Probe()
    routes: dict[str, Work | Route] = {
        "/capped": Route(probe.report, cap=0.5),
        "/capped_hang": Route(probe.hang, cap=0.2),
        "/echo": probe.report,
    }
    async with serve(framework, routes) as served, aiohttp.ClientSession() as session:
        capped = await get_json(session, f"{served.url}/capped", **{"X-Request-Timeout": "5"})
        shorter = await get_json(session, f"{served.url}/capped", **{"X-Request-Timeout": "0.3"})
        free = await get_json(session, f"{served.url}/echo", **{"X-Request-Timeout": "5"})
        started = anyio.current_time()
        status, headers, _ = await get(
            session, f"{served.url}/capped_hang", **{"X-Request-Timeout": "5"}
        )
        elapsed = anyio.current_time() - started
    assert 0.4 < capped["remaining"] <= 0.5
    assert capped["token_remaining"] <= 0.5
    assert 0.2 < shorter["remaining"] <= 0.3  # the caller's shorter budget still wins
    assert 4.5 < free["remaining"] <= 5.0  # other routes are not capped
    assert (status, headers.get("x-do-not-retry")) == (504, "1")
    assert 0.15 < elapsed < 0.6
    assert probe.reasons == [CancelReason.DEADLINE]


# --- deadlines, hang-ups, shutdown --------------------------------------------------------


async def test_a_spent_budget_gets_504_and_the_handler_never_runs(framework: str) -> None:
    """A budget under low_timeout on arrival is answered 504 + X-Do-Not-Retry at once,
    whatever header carried it; the handler is not called."""
    probe = Probe()
    async with (
        serve(framework, {"/work": probe.ok}, low_timeout=0.05) as served,
        aiohttp.ClientSession() as session,
    ):
        answers = [
            await get(session, f"{served.url}/work", **headers)
            for headers in (
                {"X-Request-Timeout": "0.010"},
                {"X-Request-Timeout": "0"},
                {"grpc-timeout": "0m"},
            )
        ]
    assert [(status, headers.get("x-do-not-retry")) for status, headers, _ in answers] == [
        (504, "1")
    ] * 3
    assert probe.runs == 0
    assert served.stats.expired_on_arrival == 3
    assert served.kinds() == [(Kind.DEADLINE, 504)] * 3
    assert not any(outcome.handled for outcome in served.outcomes)


async def test_the_deadline_passing_while_handling_cancels_the_handler_with_504(
    framework: str,
) -> None:
    """When the deadline passes mid-handler, the handler is cancelled (token reason DEADLINE)
    and the client gets 504 + X-Do-Not-Retry right then."""
    probe = Probe()
    async with (
        serve(framework, {"/slow": probe.hang}) as served,
        aiohttp.ClientSession() as session,
    ):
        started = anyio.current_time()
        status, headers, _ = await get(
            session, f"{served.url}/slow", **{"X-Request-Timeout": "0.2"}
        )
        elapsed = anyio.current_time() - started
    assert (status, headers.get("x-do-not-retry")) == (504, "1")
    assert probe.reasons == [CancelReason.DEADLINE]
    assert 0.2 <= elapsed < 0.5
    assert served.stats.deadline_exceeded == 1
    assert served.kinds() == [(Kind.DEADLINE, 504)]
    assert served.outcomes[0].handled
    assert served.outcomes[0].reason is CancelReason.DEADLINE


async def test_a_handler_that_swallows_its_cancellation_gets_504_not_its_late_answer(
    framework: str,
) -> None:
    """A handler that swallows its cancellation (twice: the scope cancels it again) and then
    answers: the client gets the deadline's 504, never that late 200."""
    seen: list[CancelReason | None] = []

    async def stubborn() -> Reply:
        for _ in range(2):
            try:
                await anyio.sleep(5)
            except asyncio.CancelledError:
                token = ac.current_token()
                seen.append(None if token is None else token.reason)
        return Reply(200, b"late")

    async with (
        serve(framework, {"/stubborn": stubborn}) as served,
        aiohttp.ClientSession() as session,
    ):
        status, headers, body = await get(
            session, f"{served.url}/stubborn", **{"X-Request-Timeout": "0.1"}
        )
    assert (status, headers.get("x-do-not-retry")) == (504, "1")
    assert body != b"late"
    assert seen == [CancelReason.DEADLINE] * 2
    assert served.stats.deadline_exceeded == 1
    assert served.kinds() == [(Kind.DEADLINE, 504)]


async def test_a_client_hanging_up_cancels_the_handler_within_100ms(framework: str) -> None:
    """A client closing its socket mid-handler cancels the handler within 100 ms with
    CLIENT_DISCONNECTED; it is counted and recorded as 499."""
    probe = Probe()
    async with serve(framework, {"/hang": probe.hang}) as served:
        reaction = await hang_up_mid_request(served, probe)
        await settle(lambda: served.stats.client_disconnected == 1, within=1.0)
    assert reaction < 0.1
    assert probe.reasons == [CancelReason.CLIENT_DISCONNECTED]
    assert served.stats.client_disconnected == 1
    assert served.kinds() == [(Kind.DISCONNECTED, 499)]


async def test_shutdown_cancels_requests_in_flight_with_503_and_refuses_new_ones(
    framework: str,
) -> None:
    """shutdown() cancels the handler in flight (SHUTDOWN), which answers 503, and every
    later request gets 503 without reaching a handler."""
    probe = Probe()
    statuses: list[int] = []
    async with (
        serve(framework, {"/hang": probe.hang}) as served,
        aiohttp.ClientSession() as session,
    ):

        async def call() -> None:
            statuses.append((await get(session, f"{served.url}/hang"))[0])

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(call)
            with anyio.fail_after(2):
                await probe.entered_event.wait()
            assert served.shutdown() == 1
        await call()
    assert statuses == [503, 503]
    assert probe.reasons == [CancelReason.SHUTDOWN]
    assert probe.runs == 1
    assert served.stats.shutdown == 2
    assert served.kinds() == [(Kind.SHUTDOWN, 503)] * 2


# --- priority -------------------------------------------------------------------------------


async def test_the_priority_header_is_honoured_down_and_raised_only_when_trusted(
    framework: str,
) -> None:
    """X-Request-Priority becomes the ambient priority; from a peer trust_priority does not
    trust, a raise above the default is downgraded to it (and counted), a lowering is kept."""
    probe = Probe()
    async with (
        serve(
            framework, {"/echo": probe.report}, trust_priority=trusted_peers("10.0.0.0/8")
        ) as served,
        aiohttp.ClientSession() as session,
    ):
        raised = await get_json(session, f"{served.url}/echo", **{"X-Request-Priority": "high"})
        lowered = await get_json(session, f"{served.url}/echo", **{"X-Request-Priority": "low"})
    assert raised["priority"] == "normal"
    assert lowered["priority"] == "low"
    assert served.stats.untrusted_priority == 1
    assert [outcome.priority for outcome in served.outcomes] == [
        ac.Priority.NORMAL,
        ac.Priority.LOW,
    ]


# --- guards and load shedding -----------------------------------------------------------------


class Clock:
    """A hand-moved monotonic clock (seconds) for the policies."""

    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


async def test_a_rate_limit_guard_answers_429_with_an_accurate_retry_after(framework: str) -> None:
    """After N requests the peer gets 429 + the limiter's own wait, before the handler runs;
    a spoofed X-Forwarded-For changes nothing."""
    clock = Clock()
    limiter = RateLimiter((3, 60.0), key=lambda client: client, clock=clock)
    probe = Probe()
    async with (
        serve(framework, {"/ok": probe.ok}, guards=[limiter]) as served,
        aiohttp.ClientSession() as session,
    ):
        for _ in range(3):
            assert (await get(session, f"{served.url}/ok"))[0] == 200
        status, headers, _ = await get(session, f"{served.url}/ok")
        assert (status, headers.get("retry-after")) == (429, "20")
        clock.now += 5.0  # a quarter token back: 15 s to the next
        status, headers, _ = await get(
            session, f"{served.url}/ok", **{"X-Forwarded-For": "203.0.113.9"}
        )
        assert (status, headers.get("retry-after")) == (429, "15")
    assert probe.runs == 3
    assert served.stats.rate_limited == 2
    assert limiter.available("127.0.0.1") < 1.0
    assert limiter.available("203.0.113.9") == 3.0
    assert served.kinds()[3:] == [(Kind.RATE_LIMITED, 429)] * 2
    assert not any(outcome.handled for outcome in served.outcomes[3:])


async def test_a_trusted_forwarded_header_keys_each_client(framework: str) -> None:
    """With forwarded_header, clients behind one proxy are rate-limited one by one."""
    limiter = RateLimiter((1, 60.0), key=lambda client: client, clock=Clock())
    probe = Probe()
    async with (
        serve(
            framework, {"/ok": probe.ok}, guards=[limiter], forwarded_header="x-forwarded-for"
        ) as served,
        aiohttp.ClientSession() as session,
    ):
        first = {"X-Forwarded-For": "203.0.113.1, 127.0.0.1"}
        second = {"X-Forwarded-For": "203.0.113.2"}
        statuses = [
            (await get(session, f"{served.url}/ok", **first))[0],
            (await get(session, f"{served.url}/ok", **second))[0],
            (await get(session, f"{served.url}/ok", **first))[0],
            (await get(session, f"{served.url}/ok"))[0],  # no header: the peer's own bucket
        ]
    assert statuses == [200, 200, 429, 200]


async def test_a_full_bulkhead_guard_answers_503_and_hang_ups_give_permits_back(
    framework: str,
) -> None:
    """Slow requests fill the bulkhead: the next is refused 503 before its handler runs;
    clients hanging up give their permits back."""
    bulkhead = Bulkhead(2)
    probe = Probe()
    routes = {"/slow": probe.hang, "/ok": probe.ok}
    async with serve(framework, routes, guards=[bulkhead]) as served:
        streams = []
        for _ in range(2):
            stream = await anyio.connect_tcp("127.0.0.1", served.port)
            await stream.send(b"GET /slow HTTP/1.1\r\nHost: test\r\n\r\n")
            streams.append(stream)
        assert await settle(lambda: probe.entered == 2, within=2.0)
        async with aiohttp.ClientSession() as session:
            status, headers, _ = await get(session, f"{served.url}/ok")
            assert (status, headers.get("retry-after")) == (503, None)
            for stream in streams:
                await stream.aclose()
            assert await settle(lambda: bulkhead.active == 0, within=2.0)
            assert bulkhead.available == 2
            assert [(await get(session, f"{served.url}/ok"))[0] for _ in range(2)] == [200, 200]
    assert probe.runs == 4
    assert served.stats.refused == 1
    assert served.stats.client_disconnected == 2
    assert sorted(served.kinds()) == sorted(
        [(Kind.DISCONNECTED, 499)] * 2 + [(Kind.REFUSED, 503)] + [(Kind.OK, 200)] * 2
    )


async def test_an_open_breaker_guard_answers_503_with_retry_after_then_recovers(
    framework: str,
) -> None:
    """Handler 5xx answers open the breaker: 503 + Retry-After, handler not run; after the
    break a probe request closes it again."""
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=2, break_duration=10.0, clock=clock)
    probe = Probe()
    async with (
        serve(framework, {"/fail": probe.fail, "/ok": probe.ok}, guards=[breaker]) as served,
        aiohttp.ClientSession() as session,
    ):

        async def status_and_retry_after(path: str) -> tuple[int, str | None]:
            status, headers, _ = await get(session, f"{served.url}{path}")
            return status, headers.get("retry-after")

        assert [(await status_and_retry_after("/fail"))[0] for _ in range(2)] == [500, 500]
        assert await status_and_retry_after("/ok") == (503, "10")
        clock.now += 7.5
        assert await status_and_retry_after("/ok") == (503, "3")
        assert probe.runs == 2
        clock.now += 2.5
        assert await status_and_retry_after("/ok") == (200, None)
    assert breaker.state is CircuitState.CLOSED
    assert served.stats.refused == 2
    assert served.kinds() == [
        (Kind.OK, 500),  # the handler's own 500 is its answer, not an error
        (Kind.OK, 500),
        (Kind.REFUSED, 503),
        (Kind.REFUSED, 503),
        (Kind.OK, 200),
    ]


async def test_the_load_shedder_refuses_low_then_normal_then_high_with_503(
    framework: str,
) -> None:
    """Under saturation the shedder refuses LOW first, then NORMAL, HIGH last: each 503 +
    Retry-After before the handler runs; the requests let in all finish."""
    shedder = PriorityLoadShedder(max_in_flight=4, normal_share=0.75, low_share=0.5, retry_after=2)
    release = anyio.Event()

    async def hold() -> Reply:
        await release.wait()
        return Reply()

    finished: list[int] = []
    async with (
        serve(
            framework,
            {"/hold": hold},
            load_shedder=shedder,
            trust_priority=trusted_peers("127.0.0.1"),
        ) as served,
        aiohttp.ClientSession() as session,
    ):

        async def send(priority: str) -> tuple[int, str | None]:
            status, headers, _ = await get(
                session, f"{served.url}/hold", **{"X-Request-Priority": priority}
            )
            return status, headers.get("retry-after")

        async def held(priority: str) -> None:
            finished.append((await send(priority))[0])

        async with anyio.create_task_group() as tasks:
            for priority in ("low", "normal"):
                tasks.start_soon(held, priority)
            assert await settle(lambda: shedder.in_flight == 2, within=2.0)
            refused_low = await send("low")
            tasks.start_soon(held, "normal")
            assert await settle(lambda: shedder.in_flight == 3, within=2.0)
            refused_normal = await send("normal")
            tasks.start_soon(held, "high")
            assert await settle(lambda: shedder.in_flight == 4, within=2.0)
            refused_high = await send("high")
            release.set()
    assert [refused_low, refused_normal, refused_high] == [(503, "2")] * 3
    assert finished == [200] * 4
    assert shedder.in_flight == 0
    assert shedder.shed == {ac.Priority.LOW: 1, ac.Priority.NORMAL: 1, ac.Priority.HIGH: 1}
    assert served.stats.shed == 3
    shed = [outcome for outcome in served.outcomes if outcome.outcome is Kind.SHED]
    assert [(outcome.status, outcome.handled) for outcome in shed] == [(503, False)] * 3


# --- what the handler answers -------------------------------------------------------------------


async def test_the_handlers_own_response_passes_through_untouched(framework: str) -> None:
    """Status, headers and body the handler produces reach the client unchanged; the request
    is counted as completed and observed once, with its method and route template."""

    async def teapot() -> Reply:
        return Reply(418, b"short and stout", {"X-Mine": "1", "Content-Type": "text/plain"})

    async with (
        serve(framework, {"/teapot": teapot}) as served,
        aiohttp.ClientSession() as session,
    ):
        status, headers, body = await get(session, f"{served.url}/teapot")
    assert (status, headers["x-mine"], body) == (418, "1", b"short and stout")
    assert "x-do-not-retry" not in headers
    assert (served.stats.requests, served.stats.completed, served.stats.failed) == (1, 1, 0)
    (outcome,) = served.outcomes
    assert (outcome.outcome, outcome.status, outcome.handled) == (Kind.OK, 418, True)
    assert (outcome.method, outcome.route) == ("GET", "/teapot")
    assert outcome.reason is None


async def test_our_errors_escaping_a_handler_are_answered_per_status_of_refusal(
    framework: str,
) -> None:
    """A route's own rate limiter refusing (429 + Retry-After) and an outgoing call that
    cannot connect (502) are answered as status_of_refusal says; any other error stays the
    framework's 500, counted as failed."""
    limiter = RateLimiter((1, 60.0))
    escaped: list[Exception] = []

    @limiter
    async def limited_work() -> None:
        pass

    async def noting(work: Callable[[], Awaitable[object]]) -> Reply:
        try:
            await work()
        except Exception as exc:
            escaped.append(exc)
            raise
        return Reply()

    async def bug() -> Reply:
        raise LookupError("a bug in the handler")

    with refused_url() as upstream:
        async with ac.Client(
            AiohttpTransport(), upstream, strategy=ac.single_attempt_strategy()
        ) as client:
            routes: dict[str, Work] = {
                "/limited": lambda: noting(limited_work),
                "/upstream": lambda: noting(lambda: client.get("x")),
                "/bug": bug,
            }
            async with serve(framework, routes) as served, aiohttp.ClientSession() as session:
                first = await get(session, f"{served.url}/limited")
                limited = await get(session, f"{served.url}/limited")
                upstream_down = await get(session, f"{served.url}/upstream")
                crashed = await get(session, f"{served.url}/bug")
    assert first[0] == 200
    refusal, down = escaped
    assert isinstance(refusal, ac.RateLimitedError)
    assert isinstance(down, ac.TransportError)
    expected_refusal, expected_down = status_of_refusal(refusal), status_of_refusal(down)
    assert expected_refusal is not None
    assert expected_down is not None
    assert limited[0] == expected_refusal[0] == 429
    assert float(limited[1]["retry-after"]) > 0
    assert upstream_down[0] == expected_down[0] == 502
    assert crashed[0] == 500
    assert served.stats.rate_limited == 1
    assert served.stats.failed == 2  # the bad gateway and the bug
    assert served.kinds() == [
        (Kind.OK, 200),
        (Kind.RATE_LIMITED, 429),
        (Kind.ERROR, 502),
        (Kind.ERROR, 500),
    ]
