"""A service answering for its upstream: 502, 503 and 504 where a careful service gives them.

Starts, on 127.0.0.1 ephemeral ports and in this process:

- ``catalog``: an aiohttp service; ``/items/broken`` always answers 500 and
  ``/items/slow`` takes a second;
- ``shop``: a FastAPI service behind ``DeadlineMiddleware`` whose
  ``/items/{item_id}`` calls ``catalog`` through aio_client (retries, and a
  breaker that opens after three failures in a row) and turns the call's
  failures into its own answers, as the README's "Answering for an upstream"
  table says.

Then it asks ``shop`` for four items and prints what came back:

- a good item: 200 with the catalog's JSON;
- the slow item with a 200 ms budget: the middleware's 504 (``text/plain``,
  ``X-Do-Not-Retry: 1``), the same whichever side noticed the deadline first;
- the broken item: 502 once the retries are spent (three failures: the
  breaker opens);
- the good item again: 503 with ``Retry-After``, without calling the catalog.

Run: python examples/gateway.py
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

import aiohttp
import anyio
import uvicorn
from aiohttp import web
from fastapi import FastAPI, HTTPException, Request

import aio_client
from aio_client.server import DeadlineMiddleware
from aio_client.transports import AiohttpTransport


@asynccontextmanager
async def catalog_service() -> AsyncIterator[str]:
    """The upstream (aiohttp): one broken item, one slow item; yields its base URL."""

    async def item(request: web.Request) -> web.Response:
        item_id = request.match_info["item_id"]
        if item_id == "broken":
            return web.Response(status=500, text="catalog bug")
        if item_id == "slow":
            await anyio.sleep(1.0)
        return web.json_response({"id": item_id, "price": 12.5})

    app = web.Application()
    app.router.add_get("/items/{item_id}", item)
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


async def call_upstream(
    client: aio_client.Client, request: aio_client.Request
) -> aio_client.Response:
    """Calls the upstream; what goes wrong there becomes this service's answer."""
    try:
        resp = await client.request(request)  # inherits the request's budget and priority
    except aio_client.RefusedError as exc:  # the breaker is open: nothing was sent
        retry_after = {"Retry-After": str(math.ceil(exc.retry_after))}
        raise HTTPException(503, "catalog unavailable", retry_after) from exc
    except aio_client.TransportError as exc:  # no answer, or a malformed one
        raise HTTPException(502, "catalog unreachable") from exc
    # DeadlineExceededError goes through: the middleware answers 504 + X-Do-Not-Retry: 1.
    if resp.status >= 400:
        raise HTTPException(502, f"catalog answered {resp.status}")
    return resp


def shop_app(catalog_url: str) -> FastAPI:
    """The calling service (FastAPI): deadline middleware and one client with a breaker."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with aio_client.Client(
            AiohttpTransport(),
            catalog_url,
            strategy=aio_client.sequential_strategy(attempts=3),
            circuit_breaker=aio_client.CircuitBreaker(failure_threshold=3, break_duration=30.0),
        ) as client:
            app.state.catalog = client
            yield

    app = FastAPI(lifespan=lifespan)
    app.add_middleware(DeadlineMiddleware, timeout=5.0)

    @app.get("/items/{item_id}")
    async def item(item_id: str, request: Request) -> Mapping[str, object]:
        client: aio_client.Client = request.app.state.catalog
        resp = await call_upstream(
            client, aio_client.get("items/{item_id}", path_params={"item_id": item_id})
        )
        data = resp.json()
        if not isinstance(data, Mapping):
            raise HTTPException(502, "catalog answered no JSON object")
        return data

    return app


@asynccontextmanager
async def serve(app: FastAPI) -> AsyncIterator[str]:
    """Run ``app`` on uvicorn in this event loop; yield its base URL."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(server.serve)
        with anyio.fail_after(5):
            while not server.started:  # noqa: ASYNC110 - uvicorn has no startup event
                await anyio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            server.should_exit = True


async def main() -> None:
    """Ask the shop for a good, a slow, a broken and again the good item; print the answers."""
    asks = [
        ("good item", "/items/1", {}),
        ("slow item, 200 ms budget", "/items/slow", {"X-Request-Timeout": "0.2"}),
        ("broken item", "/items/broken", {}),
        ("good item, breaker open", "/items/1", {}),
    ]
    statuses: list[int] = []
    async with (
        catalog_service() as catalog_url,
        serve(shop_app(catalog_url)) as shop_url,
        aiohttp.ClientSession() as session,
    ):
        for what, path, headers in asks:
            async with session.get(shop_url + path, headers=headers) as resp:
                body = (await resp.text()).strip()
                notable = {
                    name: resp.headers[name]
                    for name in ("Content-Type", "X-Do-Not-Retry", "Retry-After")
                    if name in resp.headers
                }
                print(f"{what:<26} {resp.status}  {notable}  {body}")
                statuses.append(resp.status)
    print("statuses:", " ".join(map(str, statuses)))


if __name__ == "__main__":
    anyio.run(main)
