"""The demo's two services: a flaky upstream (aiohttp) and a middle service (Starlette).

Both run in this process on 127.0.0.1 with ephemeral ports; the middle one
calls the upstream through aio_client, behind our deadline middleware.
"""

from __future__ import annotations

import contextlib
import math
import random
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field

import anyio
import uvicorn
from aiohttp import web
from starlette.applications import Starlette
from starlette.requests import Request as StarletteRequest
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from .. import _models
from .._cancel import current_token
from .._client import Client
from .._deadline import current_deadline, current_priority
from .._errors import CircuitOpenError, DeadlineExceededError, TransportError
from .._events import Observer
from ..policies._breaker import CircuitBreaker, CircuitState
from ..server._aiohttp import aiohttp_middleware
from ..server._asgi import DeadlineMiddleware
from ..server._core import ServerOutcome
from ..server._options import trusted_peers
from ..server._shedding import PriorityLoadShedder
from ..strategies._adaptive import adaptive_delays
from ..strategies._base import Strategy
from ..strategies._budget import RetryBudget
from ..strategies._delays import exponential_delays
from ..strategies._parallel import parallel_strategy
from ..strategies._sequential import sequential_strategy
from ..strategies._single import single_attempt_strategy
from ..transports import AiohttpTransport

__all__ = ["STRATEGIES", "DeadlineReport", "Services", "running_services"]


def _strategies() -> dict[str, Strategy]:
    return {
        "single attempt": single_attempt_strategy(),
        "sequential retries": sequential_strategy(3, exponential_delays(0.01, max_delay=0.1)),
        "hedged, fixed 20 ms": parallel_strategy(3, 0.02),
        "hedged, adaptive p90": parallel_strategy(
            3, adaptive_delays(0.9, min_delay=0.005, max_delay=0.1, min_samples=20)
        ),
    }


#: Strategy names, in the order phase 1 runs them.
STRATEGIES = tuple(_strategies())


@dataclass
class DeadlineReport:
    """What the upstream saw of one deadline-bounded call."""

    budget_received: float | None = None
    worked_for: float | None = None
    reason: str | None = None


@dataclass
class Upstream:
    """A service with a heavy latency tail, a few 503s, and an outage switch."""

    seed: int
    outage: bool = False
    requests: Counter[str] = field(default_factory=Counter)
    deadline_reports: list[DeadlineReport] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)

    async def work(self, request: web.Request) -> web.Response:
        self.requests[request.query.get("s", "")] += 1
        if self.outage:
            await anyio.sleep(0.05)  # a struggling service: slow, then fails
            return web.Response(status=503, text="outage")
        roll = self._random.random()
        if roll < 0.01:
            return web.Response(status=503, text="overloaded")
        if roll < 0.05:
            await anyio.sleep(self._random.uniform(0.1, 0.3))
        else:
            await anyio.sleep(self._random.uniform(0.002, 0.006))
        return web.Response(text="ok")

    async def slow_report(self, request: web.Request) -> web.Response:
        """Two seconds of work that must stop when the caller's budget runs out."""
        report = DeadlineReport()
        self.deadline_reports.append(report)
        deadline = current_deadline()
        report.budget_received = deadline.remaining() if deadline else None
        start = anyio.current_time()
        try:
            for _ in range(200):
                await anyio.sleep(0.01)
            return web.Response(text="done")
        finally:
            report.worked_for = anyio.current_time() - start
            token = current_token()
            report.reason = token.reason.value if token and token.reason else None


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The demo owns Ctrl-C; uvicorn must not take over the signal handlers.
        yield


@dataclass
class Services:
    """The running services and the handles the phases need."""

    upstream: Upstream
    upstream_url: str
    middle_url: str
    shedder: PriorityLoadShedder
    breaker_events: list[tuple[float, str]]
    middle_budgets: list[float]


def _answer(upstream: _models.Response) -> Response:
    """The upstream's answer passed on, or a 502 in place of its failure."""
    if upstream.status >= 500:
        return PlainTextResponse(f"the upstream answered {upstream.status}", status_code=502)
    return PlainTextResponse(upstream.text, status_code=upstream.status)


def _middle_app(
    upstream_url: str,
    shedder: PriorityLoadShedder,
    breaker_events: list[tuple[float, str]],
    middle_budgets: list[float],
    observers: tuple[Observer, ...],
) -> tuple[Starlette, list[Client]]:
    transport = AiohttpTransport(limit=200)
    budget = RetryBudget()
    clients: dict[str, Client] = {
        name: Client(
            transport,
            upstream_url,
            timeout=2.0,
            strategy=strategy,
            budget=budget,
            observers=observers,
        )
        for name, strategy in _strategies().items()
    }

    def on_breaker(breaker: CircuitBreaker, old: CircuitState, new: CircuitState) -> None:
        breaker_events.append((anyio.current_time(), new.value))

    breaker = CircuitBreaker(
        failure_ratio=0.5,
        minimum_throughput=10,
        sampling_duration=1.0,
        break_duration=0.5,
        half_open_max_calls=2,
        success_threshold=2,
        listeners=[on_breaker],
    )
    guarded = Client(
        transport,
        upstream_url,
        timeout=1.0,
        strategy=single_attempt_strategy(),
        circuit_breaker=breaker,
        observers=observers,
    )
    chain = Client(transport, upstream_url, strategy=single_attempt_strategy(), observers=observers)

    # The middle service answers for the upstream as the README's "Answering for an
    # upstream" says: 502 for its failures, 503 for a refusal, and the middleware's 504 when
    # the request's budget is spent (a DeadlineExceededError is let through).
    async def api(request: StarletteRequest) -> Response:
        name = request.query_params.get("strategy", "single attempt")
        client = clients.get(name)
        if client is None:
            return PlainTextResponse("unknown strategy", status_code=400)
        try:
            resp = await client.request(_models.get("work", query={"s": name}))
        except TransportError as exc:
            return PlainTextResponse(type(exc).__name__, status_code=502)
        return _answer(resp)

    async def guarded_api(request: StarletteRequest) -> Response:
        try:
            resp = await guarded.request(_models.get("work", query={"s": "breaker"}))
        except CircuitOpenError as exc:
            return PlainTextResponse(
                "circuit open",
                status_code=503,
                headers={
                    "Retry-After": str(math.ceil(exc.retry_after)),
                    "X-Demo-Refused": f"{exc.retry_after:.2f}",
                },
            )
        except DeadlineExceededError:
            # The guarded client's own 1 s timeout, shorter than the request's budget.
            return PlainTextResponse("the upstream took over 1 s", status_code=504)
        except TransportError as exc:
            return PlainTextResponse(type(exc).__name__, status_code=502)
        return _answer(resp)

    async def chain_api(request: StarletteRequest) -> Response:
        deadline = current_deadline()
        middle_budgets.append(deadline.remaining() if deadline else -1.0)
        # No timeout: the budget is inherited, and when it runs out the middleware answers.
        return _answer(await chain.request(_models.get("report")))

    async def heavy(request: StarletteRequest) -> Response:
        await anyio.sleep(0.02)  # stands in for CPU or database work
        priority = current_priority()
        return JSONResponse({"priority": priority.value if priority else None})

    app = Starlette(
        routes=[
            Route("/api", api),
            Route("/guarded", guarded_api),
            Route("/chain", chain_api),
            Route("/heavy", heavy),
        ]
    )
    all_clients = [*clients.values(), guarded, chain]
    return app, all_clients


@contextlib.asynccontextmanager
async def running_services(
    seed: int,
    observers: tuple[Observer, ...] = (),
    server_observer: Callable[[ServerOutcome], object] | None = None,
) -> AsyncIterator[Services]:
    """Start the upstream and the middle service; stop both on exit.

    ``observers`` watch the middle service's outgoing calls, ``server_observer``
    its incoming requests.
    """
    upstream = Upstream(seed)
    # Everything runs on this machine: the driver and the middle service may set priorities.
    local = trusted_peers("127.0.0.1", "::1")
    upstream_app = web.Application(
        middlewares=[aiohttp_middleware(timeout=5.0, trust_priority=local)]
    )
    upstream_app.router.add_get("/work", upstream.work)
    upstream_app.router.add_get("/report", upstream.slow_report)
    # shutdown_timeout: a stopped demo waits at most a second for the upstream's
    # connections (aiohttp's default is a minute; uvicorn below gets one second too).
    runner = web.AppRunner(
        upstream_app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0
    )
    await runner.setup()
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(runner.cleanup)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        upstream_port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        upstream_url = f"http://127.0.0.1:{upstream_port}"

        shedder = PriorityLoadShedder(max_in_flight=16, retry_after=1.0)
        breaker_events: list[tuple[float, str]] = []
        middle_budgets: list[float] = []
        app, clients = _middle_app(upstream_url, shedder, breaker_events, middle_budgets, observers)
        for client in clients:
            stack.push_async_callback(client.aclose)
        middle = DeadlineMiddleware(
            app,
            timeout=5.0,
            load_shedder=shedder,
            observer=server_observer,
            trust_priority=local,
        )
        server = _Server(
            uvicorn.Config(
                middle,
                host="127.0.0.1",
                port=0,
                log_level="error",
                lifespan="off",
                timeout_graceful_shutdown=1,
            )
        )
        stopped = anyio.Event()

        async def serve() -> None:
            try:
                await server.serve()
            finally:
                stopped.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(serve)
            with anyio.fail_after(10):
                while not server.started:  # noqa: ASYNC110 - uvicorn offers no startup event
                    await anyio.sleep(0.005)
            port = server.servers[0].sockets[0].getsockname()[1]
            try:
                yield Services(
                    upstream=upstream,
                    upstream_url=upstream_url,
                    middle_url=f"http://127.0.0.1:{port}",
                    shedder=shedder,
                    breaker_events=breaker_events,
                    middle_budgets=middle_budgets,
                )
            finally:
                # A graceful stop, even when the demo is being cancelled (Ctrl-C): the
                # middle service answers what it is handling (its handlers' deadlines
                # bound that) instead of having its requests cut by the loop's shutdown.
                server.should_exit = True
                with anyio.CancelScope(shield=True), anyio.move_on_after(3.0):
                    await stopped.wait()
