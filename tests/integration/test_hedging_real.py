"""Hedged attempts over real sockets, with both transports."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import anyio
import pytest
from aiohttp import web

import aio_client as ac
from aio_client.transports import AiohttpTransport, HttpxTransport, Transport

LIMIT = 8


@dataclass
class SlowFirst:
    """Attempt 1 of each call hangs; later attempts answer at once.

    Runs with handler cancellation on, so a client hanging up cancels the
    handler, which records it.
    """

    runner: web.AppRunner
    url: str
    cancelled: int = 0
    answered: int = 0
    running: int = 0
    max_connections: int = 0
    cancelled_event: anyio.Event = field(default_factory=anyio.Event)
    #: Seconds a first attempt hangs unless cancelled.
    hang: float = 30.0

    @property
    def open_connections(self) -> int:
        """Connections the server still holds (it notices a client's close a little late)."""
        server = self.runner.server
        assert server is not None
        return len(server.connections)

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])


def client_connections_to(port: int) -> int:
    """ESTABLISHED client-side sockets to ``port``, as the kernel reports them.

    A socket the client has closed is no longer ESTABLISHED even while the
    server has yet to notice, so this counts exactly what the client's pool holds.
    """
    # "<remote ip>:<PORT> 01 " is the remote address followed by the ESTABLISHED
    # state; a plain substring test keeps this fast with thousands of sockets in
    # TIME_WAIT left by earlier tests.
    needle = f":{port:04X} 01 "
    with open("/proc/net/tcp") as table:
        return sum(1 for line in table if needle in line)


async def eventually(condition: Callable[[], bool], within: float = 2.0) -> None:
    """Wait until ``condition()`` holds (state owned by another party), or fail."""
    with anyio.fail_after(within):
        while not condition():  # noqa: ASYNC110 - polling state we cannot subscribe to
            await anyio.sleep(0.01)


@pytest.fixture
async def slow_first() -> AsyncIterator[SlowFirst]:
    """A real aiohttp server on 127.0.0.1 whose first attempts hang."""
    state: list[SlowFirst] = []

    async def handle(request: web.Request) -> web.Response:
        me = state[0]
        if me.answered % 5 == 0:  # reading the kernel's table is slow; sample
            # asyncio closes a socket in a callback one loop turn after its transport
            # was closed (and its pool slot freed); under load many such closes wait at
            # once. A socket the pool really holds is still open a turn later, one
            # waiting to be closed is not: the fewer of two counts a turn apart is what
            # the pool holds.
            first = client_connections_to(me.port)
            await asyncio.sleep(0)
            held = min(first, client_connections_to(me.port))
            me.max_connections = max(me.max_connections, held)
        me.running += 1
        try:
            if request.headers.get("X-Request-Attempt") == "1" and "fast" not in request.query:
                try:
                    await asyncio.sleep(me.hang)
                except asyncio.CancelledError:
                    me.cancelled += 1
                    me.cancelled_event.set()
                    raise
            me.answered += 1
            return web.Response(text=request.headers["X-Request-Attempt"])
        finally:
            me.running -= 1

    app = web.Application()
    app.router.add_get("/work", handle)
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    state.append(SlowFirst(runner, f"http://127.0.0.1:{port}"))
    try:
        yield state[0]
    finally:
        await runner.cleanup()


@pytest.fixture(params=["aiohttp", "httpx"])
def transport(request: pytest.FixtureRequest) -> Transport:
    """Each transport, owning its pool of at most LIMIT connections."""
    if request.param == "aiohttp":
        return AiohttpTransport(limit=LIMIT)
    return HttpxTransport(limit=LIMIT)


async def test_slow_first_attempt_loses_to_hedge(
    slow_first: SlowFirst, transport: Transport
) -> None:
    """The hedge answers; the hung first attempt is cancelled and the server sees it go."""
    async with ac.Client(transport, slow_first.url, timeout=5.0) as client:
        start = anyio.current_time()
        resp = await client.request(ac.get("work"), strategy=ac.parallel_strategy(2, 0.05))
        took = anyio.current_time() - start
        # The loser's connection was closed by the call, not by closing the client.
        with anyio.fail_after(2):
            await slow_first.cancelled_event.wait()
    assert (resp.status, resp.text, resp.attempt) == (200, "2", 2)
    assert took < 1.0
    assert slow_first.cancelled == 1


def pool_of(kind: str, limit: int) -> Transport:
    """A transport of ``kind`` owning a pool of at most ``limit`` connections."""
    if kind == "aiohttp":
        return AiohttpTransport(limit=limit)
    return HttpxTransport(limit=limit)


@pytest.mark.parametrize("kind", ["aiohttp", "httpx"])
async def test_a_hedge_goes_before_first_attempts_waiting_for_the_pool(
    slow_first: SlowFirst, kind: str
) -> None:
    """Two connections: A's first attempt stalls on one, B holds the other until its
    deadline, C waits for a connection. When B's connection comes back, A's hedge gets
    it, ahead of C's first attempt that waited longer: A's hedge wins, ending A's stalled
    attempt, and C goes next and is hedged in turn. Given to C's first attempt, which
    stalls too, both connections would be held by stalled attempts while the hedges
    that would end them waited: A and C would run to their deadlines."""
    hedged = ac.parallel_strategy(2, 0.2)
    async with ac.Client(pool_of(kind, 2), slow_first.url, timeout=3.0) as client:
        results: dict[str, ac.Response | Exception] = {}

        async def call(name: str, strategy: ac.Strategy, budget: float | None = None) -> None:
            try:
                results[name] = await client.request(
                    ac.get("work", query={"id": name}), strategy=strategy, timeout=budget
                )
            except ac.AioClientError as exc:
                results[name] = exc

        start = anyio.current_time()
        async with anyio.create_task_group() as group:
            group.start_soon(call, "A", hedged)
            group.start_soon(call, "B", ac.single_attempt_strategy(), 0.5)
            await anyio.sleep(0.1)
            group.start_soon(call, "C", hedged)
        took = anyio.current_time() - start
    a, b, c = results["A"], results["B"], results["C"]
    assert isinstance(b, ac.DeadlineExceededError)
    assert isinstance(a, ac.Response)
    assert isinstance(c, ac.Response)
    assert (a.status, a.attempt, c.status, c.attempt) == (200, 2, 200, 2)
    assert took < 2.0
    await eventually(lambda: slow_first.running == 0)


@pytest.mark.parametrize("kind", ["aiohttp", "httpx"])
async def test_no_hedge_is_sent_while_the_first_attempt_waits_for_the_pool(
    slow_first: SlowFirst, kind: str
) -> None:
    """The hedge delay counts from when an attempt gets a connection: a call queued
    behind a busy pool for longer than its hedge delay sends one attempt, not two."""
    async with ac.Client(pool_of(kind, 1), slow_first.url, timeout=3.0) as client:

        async def occupy() -> None:
            # The one connection is busy until this call's deadline.
            with pytest.raises(ac.DeadlineExceededError):
                await client.request(
                    ac.get("work"), strategy=ac.single_attempt_strategy(), timeout=0.4
                )

        async with anyio.create_task_group() as group:
            group.start_soon(occupy)
            await anyio.sleep(0.05)
            # Waits about 0.35 s for the connection: 7 hedge delays.
            resp = await client.request(
                ac.get("work", query={"fast": 1}), strategy=ac.parallel_strategy(3, 0.05)
            )
    assert (resp.status, resp.attempt) == (200, 1)
    assert [record.number for record in resp.attempts] == [1]


async def test_many_hedged_calls_leak_nothing(slow_first: SlowFirst, transport: Transport) -> None:
    """1,000 hedged calls: every call answered, no task left, pool within its limit."""
    # 32 callers share 8 connections. Hedges go first at the pool, so a hung first
    # attempt is normally ended by its hedge within a connection's turn. Should 8 hung
    # first attempts still take all 8 connections before any of their hedges is due (a
    # stalled loop can line them up), the hedges wait for one that none of them gives
    # back. The test is about leaks, not about that: a hang well under the deadline lets
    # the pool drain.
    slow_first.hang = 2.0
    tasks_before = len(asyncio.all_tasks())
    budget = ac.RetryBudget(ratio=1.0)
    strategy = ac.parallel_strategy(2, 0.02)
    statuses: list[int] = []

    async def one(client: ac.Client, n: int) -> None:
        # Every 10th call hangs on its first attempt and must be won by a hedge.
        query = None if n % 10 == 0 else {"fast": 1}
        resp = await client.request(ac.get("work", query=query), strategy=strategy)
        statuses.append(resp.status)

    async with ac.Client(transport, slow_first.url, timeout=10.0, budget=budget) as client:
        limiter = anyio.Semaphore(32)

        async def limited(n: int) -> None:
            async with limiter:
                await one(client, n)

        async with anyio.create_task_group() as tg:
            for n in range(1000):
                tg.start_soon(limited, n)
        # While the client is still open, every hung first attempt that reached
        # the server has been cancelled there: the losers' connections went away.
        await eventually(lambda: slow_first.running == 0)
    assert statuses == [200] * 1000
    # The client closed its pool: the server sees every connection go, and the
    # server's own per-connection tasks end; nothing of ours is left running.
    await eventually(
        lambda: slow_first.open_connections == 0 and len(asyncio.all_tasks()) == tasks_before
    )
    # Cancelled losers close their connections: never more open than the pool allows
    # (+1: a cancelled loser's socket closes one loop turn after its pool slot is freed).
    assert 0 < slow_first.max_connections <= LIMIT + 1
    assert slow_first.cancelled > 0
