"""aiohttp_middleware on a real aiohttp server (AppRunner/TCPSite, 127.0.0.1, port 0).

What every adapter promises is pinned once for all in ``test_server_contract.py``;
here: what is aiohttp's own (views, ``handler_cancellation``, the runner's
shutdown hook, uploads).
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import anyio
from aiohttp import web

import aio_client as ac
from aio_client._cancel import CancelReason, CancelToken, current_token
from aio_client.server import AiohttpDeadlineMiddleware, aiohttp_middleware, max_timeout
from tests.integration.servers import serve_aiohttp

#: Tokens the echo handler saw.
TOKENS = web.AppKey("tokens", list[CancelToken | None])


def guarded_app(**options: Any) -> tuple[web.Application, AiohttpDeadlineMiddleware]:
    """An aiohttp app behind aiohttp_middleware, with shutdown wired."""
    middleware = aiohttp_middleware(**options)
    app = web.Application(middlewares=[middleware], client_max_size=64 * 1024 * 1024)
    app.on_shutdown.append(middleware.on_shutdown)
    return app, middleware


async def echo(request: web.Request) -> web.Response:
    """Reports the budget, priority and token the handler sees."""
    deadline = ac.current_deadline()
    priority = ac.current_priority()
    token = current_token()
    request.app[TOKENS].append(token)
    return web.json_response(
        {
            "remaining": deadline.remaining() if deadline else None,
            "token_remaining": token.remaining() if token else None,
            "priority": priority.value if priority else None,
        }
    )


async def test_route_maximum_on_a_view_method() -> None:
    """max_timeout on a web.View method caps that method's budget below the default."""
    app, middleware = guarded_app(timeout=30.0)
    app[TOKENS] = []

    class CappedView(web.View):
        @max_timeout(0.25)
        async def get(self) -> web.Response:
            return await echo(self.request)

    app.router.add_view("/view", CappedView)
    async with (
        serve_aiohttp(app) as url,
        aiohttp.ClientSession() as session,
        session.get(f"{url}/view") as resp,
    ):
        remaining = (await resp.json())["remaining"]
    assert 0.15 < remaining <= 0.25
    assert middleware.stats.malformed_headers == 0


async def test_route_maximums_are_remembered_per_route_and_not_for_unmatched_requests() -> None:
    """Two routes sharing a handler keep their own maximum; 404s and 405s leave no entry."""
    app, middleware = guarded_app(timeout=30.0)
    app[TOKENS] = []
    app.router.add_get("/capped", max_timeout(0.25)(echo))
    app.router.add_get("/free", echo)
    remaining: dict[str, float] = {}
    async with serve_aiohttp(app) as url, aiohttp.ClientSession() as session:
        for _ in range(2):  # the second time from the remembered entries
            for path in ("capped", "free"):
                async with session.get(f"{url}/{path}") as resp:
                    remaining[path] = (await resp.json())["remaining"]
            assert 0.15 < remaining["capped"] <= 0.25
            assert remaining["free"] > 25.0
        for _ in range(20):
            async with session.get(f"{url}/missing") as resp:
                assert resp.status == 404
            async with session.post(f"{url}/free") as resp:
                assert resp.status == 405
    assert len(middleware._caps) == 2


async def test_client_disconnect_cancels_the_handler_within_100ms_with_handler_cancellation() -> (
    None
):
    """With aiohttp's own handler_cancellation on, a hang-up still fires CLIENT_DISCONNECTED
    within 100 ms, recorded as 499 (without it: the server contract suite)."""
    statuses: list[int] = []
    app, middleware = guarded_app(observer=lambda outcome: statuses.append(outcome.status))
    entered = anyio.Event()
    cancelled = anyio.Event()
    reasons: list[CancelReason | None] = []

    async def hang(request: web.Request) -> web.Response:
        entered.set()
        try:
            await anyio.sleep(10)
        finally:
            token = current_token()
            reasons.append(token.reason if token else None)
            cancelled.set()
        return web.Response(text="never")  # pragma: no cover

    app.router.add_get("/hang", hang)
    async with serve_aiohttp(app, handler_cancellation=True) as url:
        port = int(url.rsplit(":", 1)[1])
        stream = await anyio.connect_tcp("127.0.0.1", port)
        await stream.send(b"GET /hang HTTP/1.1\r\nHost: test\r\n\r\n")
        with anyio.fail_after(2):
            await entered.wait()
        await stream.aclose()
        closed_at = anyio.current_time()
        with anyio.fail_after(2):
            await cancelled.wait()
        reaction = anyio.current_time() - closed_at
    assert reaction < 0.1
    assert reasons == [CancelReason.CLIENT_DISCONNECTED]
    assert statuses == [499]
    assert middleware.stats.client_disconnected == 1


async def test_large_chunked_upload_arrives_whole() -> None:
    """An 8 MiB chunked upload reaches the aiohttp handler byte for byte."""
    app, _ = guarded_app()

    async def upload(request: web.Request) -> web.Response:
        body = await request.read()
        return web.json_response({"size": len(body), "sha256": hashlib.sha256(body).hexdigest()})

    app.router.add_post("/upload", upload)
    chunk = bytes(range(256)) * 256

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(128):
            yield chunk

    async with (
        serve_aiohttp(app) as url,
        aiohttp.ClientSession() as session,
        session.post(f"{url}/upload", data=chunks()) as resp,
    ):
        body = await resp.json()
    assert body == {"size": 128 * len(chunk), "sha256": hashlib.sha256(chunk * 128).hexdigest()}


async def test_server_shutdown_answers_503_to_requests_in_flight() -> None:
    """Stopping the runner fires SHUTDOWN on handlers in flight, which answer 503."""
    app, middleware = guarded_app()
    entered = anyio.Event()
    reasons: list[CancelReason | None] = []

    async def hang(request: web.Request) -> web.Response:
        entered.set()
        try:
            await anyio.sleep(10)
        finally:
            token = current_token()
            reasons.append(token.reason if token else None)
        return web.Response(text="never")  # pragma: no cover

    app.router.add_get("/hang", hang)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    statuses: list[int] = []
    async with aiohttp.ClientSession() as session:

        async def call() -> None:
            async with session.get(f"http://{host}:{port}/hang") as resp:
                statuses.append(resp.status)

        async with anyio.create_task_group() as tg:
            tg.start_soon(call)
            await entered.wait()
            with anyio.fail_after(3):
                await runner.cleanup()
    assert statuses == [503]
    assert reasons == [CancelReason.SHUTDOWN]
    assert middleware.stats.shutdown == 1
