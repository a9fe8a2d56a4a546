"""Quick start: call a local service with a deadline, retries and a typed error.

Starts a tiny aiohttp service on 127.0.0.1 (ephemeral port) whose first answer
to each item is a 503, then calls it through aio_client: the sequential
strategy retries the 503 inside the call's 2-second budget.

Run: python examples/quickstart.py
"""

from __future__ import annotations

import anyio
from aiohttp import web

import aio_client
from aio_client.transports import AiohttpTransport


async def serve() -> tuple[web.AppRunner, str]:
    """Start the demo service; return its runner and base URL."""
    failed_once: set[str] = set()

    async def item(request: web.Request) -> web.Response:
        item_id = request.match_info["id"]
        if item_id not in failed_once:
            failed_once.add(item_id)
            return web.Response(status=503)
        return web.json_response(
            {
                "id": item_id,
                "budget_seen_s": request.headers["X-Request-Timeout"],
                "attempt": request.headers["X-Request-Attempt"],
            }
        )

    app = web.Application()
    app.router.add_get("/items/{id}", item)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"


async def main() -> None:
    """Make one call and print what the service saw."""
    runner, url = await serve()
    try:
        async with aio_client.Client(AiohttpTransport(), url, timeout=2.0) as client:
            resp = await client.request(
                aio_client.get("items/{id}", path_params={"id": "42"}),
                priority=aio_client.Priority.HIGH,
            )
            resp.raise_for_status()
            print(f"status {resp.status} from attempt {resp.attempt}: {resp.json()}")
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    anyio.run(main)
