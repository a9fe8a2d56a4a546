"""Fan-out over real sockets: aiohttp upstreams on 127.0.0.1, the aiohttp transport.

The upstreams count how many requests they serve at once and which handlers were
cancelled (aiohttp cancels a handler whose client went away), so the tests see
from the server's side what the fan-out promises: the concurrency bound, the
stragglers cut at the fan-out's deadline, the calls a quorum no longer needs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from aiohttp import web

import aio_client as ac
from aio_client.transports import AiohttpTransport
from tests.integration.servers import serve_aiohttp, settle


class Upstream:
    """``GET /n/{number}``: the number, after ``delay`` (``slow_delay`` for ``slow`` ones)."""

    def __init__(
        self, *, delay: float = 0.002, slow: frozenset[int] = frozenset(), slow_delay: float = 2.0
    ) -> None:
        self.delay = delay
        self.slow = slow
        self.slow_delay = slow_delay
        self.in_flight = 0
        self.most_in_flight = 0
        self.served = 0
        self.cancelled: list[int] = []

    async def handle(self, request: web.Request) -> web.Response:
        """Count the request while it is served; record it if it gets cancelled."""
        number = int(request.match_info["number"])
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.slow_delay if number in self.slow else self.delay)
        except asyncio.CancelledError:
            self.cancelled.append(number)
            raise
        finally:
            self.in_flight -= 1
        self.served += 1
        return web.Response(text=str(number))


@asynccontextmanager
async def served(upstream: Upstream) -> AsyncIterator[ac.Client]:
    """A client of ``upstream`` served by aiohttp at 127.0.0.1 (handlers cancellable)."""
    app = web.Application()
    app.router.add_get("/n/{number}", upstream.handle)
    async with (
        serve_aiohttp(app, handler_cancellation=True) as url,
        ac.Client(AiohttpTransport(), url) as client,
    ):
        yield client


def numbered(count: int) -> list[ac.Request]:
    return [ac.get(f"n/{number}") for number in range(count)]


async def test_the_upstream_never_sees_more_than_concurrency_calls() -> None:
    """1,000 calls with concurrency=50: the server serves at most 50 at once, and every
    outcome comes back in input order."""
    upstream = Upstream()
    async with served(upstream) as client:
        outcomes = await client.fan_out(numbered(1000), concurrency=50)
    assert [o.text if isinstance(o, ac.Response) else o for o in outcomes] == [
        str(number) for number in range(1000)
    ]
    assert 10 < upstream.most_in_flight <= 50
    assert upstream.served == 1000


async def test_the_fan_out_deadline_cuts_the_stragglers_at_the_server() -> None:
    """A 0.6 s fan-out where 1% of 200 calls take 2 s: it returns at about 0.6 s with those
    calls as DeadlineExceededError and the rest as responses, and the server sees the
    stragglers' handlers cancelled. (The other 198 take about 0.1 s, 0.3 s under
    coverage on a busy machine: the deadline leaves them room.)"""
    slow = frozenset({7, 107})
    upstream = Upstream(slow=slow)
    async with served(upstream) as client:
        start = time.monotonic()
        outcomes = await client.fan_out(numbered(200), concurrency=50, timeout=0.6)
        elapsed = time.monotonic() - start
        assert await settle(lambda: slow <= set(upstream.cancelled), within=2.0)
    assert 0.6 <= elapsed < 0.9, elapsed
    for number, outcome in enumerate(outcomes):
        if number in slow:
            assert isinstance(outcome, ac.DeadlineExceededError), outcome
        else:
            assert isinstance(outcome, ac.Response), outcome
            assert outcome.text == str(number)
    assert sorted(upstream.cancelled) == sorted(slow)


async def test_a_quorum_of_replicas_returns_at_the_third_success() -> None:
    """Five replicas, min_success=3, two of them slow: aio_client.fan_out returns once three
    answered, and the two slow replicas see their handlers cancelled."""
    replicas = [Upstream(delay=0.01 * (k + 1)) for k in range(3)]
    replicas += [Upstream(delay=5.0), Upstream(delay=5.0)]
    async with AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(served(replica)) for replica in replicas]
        start = time.monotonic()
        outcomes = await ac.fan_out(
            [(client, ac.get("n/1")) for client in clients], min_success=3, timeout=10.0
        )
        elapsed = time.monotonic() - start
        assert await settle(lambda: all(r.cancelled == [1] for r in replicas[3:]), within=2.0)
    assert elapsed < 1.0, elapsed
    assert [type(o).__name__ for o in outcomes] == ["Response"] * 3 + ["FanOutStoppedError"] * 2
    assert [r.served for r in replicas] == [1, 1, 1, 0, 0]
