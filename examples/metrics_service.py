"""Prometheus metrics on both sides of a call: a FastAPI service calling an aiohttp one.

Starts, on 127.0.0.1 ephemeral ports and in this process:

- ``inventory``: an aiohttp service; one answer in four takes 300 ms and the
  first answer for each item is a 503;
- ``orders``: a FastAPI service behind ``DeadlineMiddleware`` that serves
  ``/orders/{order_id}`` by calling ``inventory`` through aio_client (hedged,
  so the slow answers are raced; failures answered as the README's "Answering
  for an upstream" says), and ``/metrics`` from prometheus_client's
  ``generate_latest``.

One :class:`~aio_client.metrics.PrometheusMetrics` records the client side
(calls, attempts by kind, hedges) and the server side (requests by route
template, deadlines, in-flight). The script places a few orders, scrapes
``/metrics`` over HTTP like Prometheus would, prints some series and exits.

Run: python examples/metrics_service.py
"""

from __future__ import annotations

import itertools
import math
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

import aiohttp
import anyio
import uvicorn
from aiohttp import web
from fastapi import FastAPI, HTTPException, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import aio_client
from aio_client.metrics import PrometheusMetrics
from aio_client.server import DeadlineMiddleware
from aio_client.transports import AiohttpTransport

ORDERS = 12
SHOWN = (
    "aio_client_requests_total",
    "aio_client_attempts_total",
    "aio_client_hedges_total",
    "aio_client_server_requests_total",
)


@asynccontextmanager
async def inventory_service() -> AsyncIterator[str]:
    """The called service (aiohttp): slow one time in four, 503 on each item's first ask."""
    counter = itertools.count()
    failed_once: set[str] = set()

    async def stock(request: web.Request) -> web.Response:
        sku = request.match_info["sku"]
        if sku not in failed_once:
            failed_once.add(sku)
            return web.Response(status=503)
        if next(counter) % 4 == 3:
            await anyio.sleep(0.3)
        return web.json_response({"sku": sku, "available": 3})

    app = web.Application()
    app.router.add_get("/stock/{sku}", stock)
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


def orders_app(metrics: PrometheusMetrics, inventory_url: str) -> FastAPI:
    """The calling service (FastAPI): deadline middleware, /metrics, one client."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with aio_client.Client(
            AiohttpTransport(),
            inventory_url,
            strategy=aio_client.parallel_strategy(2, 0.05),
            observers=[metrics],
        ) as client:
            app.state.inventory = client
            yield

    app = FastAPI(lifespan=lifespan)
    app.add_middleware(DeadlineMiddleware, timeout=2.0, observer=metrics.server_observer)

    @app.get("/metrics", include_in_schema=False)
    def scrape() -> Response:  # a route: a mount would answer /metrics with a 307
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/orders/{order_id}")
    async def order(order_id: int, request: Request) -> Mapping[str, object]:
        client: aio_client.Client = request.app.state.inventory
        sku = f"sku-{order_id % 4}"
        try:
            # The call inherits what is left of this request's deadline; when that runs
            # out, its DeadlineExceededError goes through and the middleware answers 504.
            response = await client.request(aio_client.get("stock/{sku}", path_params={"sku": sku}))
        except aio_client.RefusedError as exc:
            retry_after = {"Retry-After": str(math.ceil(exc.retry_after))}
            raise HTTPException(503, "inventory unavailable", retry_after) from exc
        except aio_client.TransportError as exc:
            raise HTTPException(502, "inventory unreachable") from exc
        if response.status >= 400:
            raise HTTPException(502, f"inventory answered {response.status}")
        return {"order": order_id, "stock": response.json(), "attempt": response.attempt}

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
    """Place some orders, then scrape the orders service's /metrics and print a few series."""
    metrics = PrometheusMetrics()  # prometheus_client's global REGISTRY, registered now
    async with (
        inventory_service() as inventory_url,
        serve(orders_app(metrics, inventory_url)) as orders_url,
        aiohttp.ClientSession() as session,
    ):
        for order_id in range(ORDERS):
            headers = {"X-Request-Timeout": "1.5"}
            async with session.get(f"{orders_url}/orders/{order_id}", headers=headers) as resp:
                resp.raise_for_status()
        async with session.get(f"{orders_url}/metrics", allow_redirects=False) as resp:
            assert resp.status == 200, resp.status
            exposition = await resp.text()
    print(f"placed {ORDERS} orders; scraped /metrics over HTTP ({len(exposition)} bytes):")
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name in SHOWN:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
                print(f"  {sample.name}{{{labels}}} {sample.value:g}")


if __name__ == "__main__":
    anyio.run(main)
