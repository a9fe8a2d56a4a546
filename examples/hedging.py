"""Hedged requests: cut the latency tail by racing a second attempt.

A local service answers in ~2 ms, except every 10th request, which takes
300 ms. With ``parallel_strategy`` a hedge goes out after 20 ms and the
first answer wins; the slow attempt is cancelled and its connection closed.

Run: python examples/hedging.py
"""

from __future__ import annotations

import itertools
import time

import anyio
from aiohttp import web

import aio_client
from aio_client.transports import AiohttpTransport


async def serve() -> tuple[web.AppRunner, str]:
    """Start a service with a 10% slow tail; return its runner and base URL."""
    counter = itertools.count()

    async def work(request: web.Request) -> web.Response:
        await anyio.sleep(0.3 if next(counter) % 10 == 9 else 0.002)
        return web.Response(text="done")

    app = web.Application()
    app.router.add_get("/work", work)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"


async def worst_of(client: aio_client.Client, strategy: aio_client.Strategy, calls: int) -> float:
    """Slowest of ``calls`` sequential calls, in milliseconds."""
    worst = 0.0
    for _ in range(calls):
        start = time.perf_counter()
        resp = await client.request(aio_client.get("work"), strategy=strategy)
        resp.raise_for_status()  # a timing of a failed call would mean nothing
        worst = max(worst, time.perf_counter() - start)
    return worst * 1000


async def main() -> None:
    """Compare the slowest call with and without hedging."""
    runner, url = await serve()
    try:
        async with aio_client.Client(AiohttpTransport(), url, timeout=2.0) as client:
            single = await worst_of(client, aio_client.single_attempt_strategy(), 20)
            hedged = await worst_of(client, aio_client.parallel_strategy(2, 0.02), 20)
        print(f"slowest of 20 calls: single attempt {single:.0f} ms, hedged {hedged:.0f} ms")
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    anyio.run(main)
