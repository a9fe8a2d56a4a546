"""aiohttp_middleware on a real aiohttp server (AppRunner/TCPSite, 127.0.0.1, port 0)."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import anyio
import pytest
from aiohttp import web

import aio_client as ac
from aio_client._cancel import CancelReason, CancelToken, current_token
from aio_client.server import AiohttpDeadlineMiddleware, aiohttp_middleware, max_timeout
from aio_client.transports import AiohttpTransport
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


async def test_header_budget_and_priority_reach_the_handler() -> None:
    """Our client's budget and priority become the aiohttp handler's ambient values and token."""
    app, _ = guarded_app(timeout=30.0)
    app[TOKENS] = []
    app.router.add_get("/echo", echo)
    async with serve_aiohttp(app) as url, ac.Client(AiohttpTransport(), url) as client:
        response = await client.request(ac.get("echo"), timeout=2.0, priority="low")
    body = response.json()
    assert isinstance(body, dict)
    assert 1.5 < body["remaining"] <= 2.0
    assert body["token_remaining"] == pytest.approx(body["remaining"], abs=0.01)
    assert body["priority"] == "low"


async def test_route_maximum_and_accepted_header_formats() -> None:
    """max_timeout caps a route (functions and views); grpc and envoy headers are read."""
    app, middleware = guarded_app(timeout=30.0)
    app[TOKENS] = []
    app.router.add_get("/echo", echo)
    app.router.add_get("/capped", max_timeout(0.5)(echo))

    class CappedView(web.View):
        @max_timeout(0.25)
        async def get(self) -> web.Response:
            return await echo(self.request)

    app.router.add_view("/view", CappedView)
    async with serve_aiohttp(app) as url, aiohttp.ClientSession() as session:
        results = {}
        for path, headers in [
            ("/capped", {"X-Request-Timeout": "5"}),
            ("/view", {}),
            ("/echo", {"grpc-timeout": "1500m"}),
            ("/echo", {"x-envoy-expected-rq-timeout-ms": "800", "X-Request-Timeout": "9"}),
        ]:
            async with session.get(url + path, headers=headers) as resp:
                results[path, tuple(headers)] = (await resp.json())["remaining"]
    remaining = list(results.values())
    assert 0.4 < remaining[0] <= 0.5
    assert 0.15 < remaining[1] <= 0.25
    assert 1.4 < remaining[2] <= 1.5
    assert 0.7 < remaining[3] <= 0.8  # the nearest of several headers wins
    assert middleware.stats.malformed_headers == 0


async def test_spent_budget_and_malformed_headers() -> None:
    """A spent budget is 504 + X-Do-Not-Retry unhandled; garbage headers are counted, not 500."""
    app, middleware = guarded_app(timeout=3.0)
    app[TOKENS] = []
    app.router.add_get("/echo", echo)
    bad = {"X-Request-Timeout": "-1", "X-Request-Priority": "urgent"}
    async with serve_aiohttp(app) as url, aiohttp.ClientSession() as session:
        async with session.get(f"{url}/echo", headers={"X-Request-Timeout": "0"}) as resp:
            spent = (resp.status, resp.headers.get("X-Do-Not-Retry"))
        async with session.get(f"{url}/echo", headers=bad) as resp:
            garbage = (resp.status, await resp.json())
    assert spent == (504, "1")
    assert garbage[0] == 200
    assert 2.5 < garbage[1]["remaining"] <= 3.0
    assert garbage[1]["priority"] == "normal"
    assert len(app[TOKENS]) == 1
    assert middleware.stats.malformed_headers == 2
    assert middleware.stats.expired_on_arrival == 1


async def test_deadline_during_handling_cancels_and_answers_504() -> None:
    """The handler is cancelled at the deadline and the client gets 504 + X-Do-Not-Retry."""
    app, middleware = guarded_app()
    reasons: list[CancelReason | None] = []

    async def slow(request: web.Request) -> web.Response:
        try:
            await anyio.sleep(10)
        finally:
            token = current_token()
            reasons.append(token.reason if token else None)
        return web.Response(text="never")  # pragma: no cover

    app.router.add_get("/slow", slow)
    async with serve_aiohttp(app) as url, aiohttp.ClientSession() as session:
        started = anyio.current_time()
        async with session.get(f"{url}/slow", headers={"X-Request-Timeout": "0.2"}) as resp:
            status, header = resp.status, resp.headers.get("X-Do-Not-Retry")
        elapsed = anyio.current_time() - started
    assert (status, header) == (504, "1")
    assert reasons == [CancelReason.DEADLINE]
    assert 0.2 <= elapsed < 0.5
    assert middleware.stats.deadline_exceeded == 1


async def test_deadline_during_streaming_breaks_the_connection() -> None:
    """After the response started, the deadline breaks the stream instead of ending it cleanly."""
    app, _ = guarded_app()
    reasons: list[CancelReason | None] = []

    async def stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(b"first\n")
        try:
            await anyio.sleep(10)
        finally:
            token = current_token()
            reasons.append(token.reason if token else None)
        return response  # pragma: no cover

    app.router.add_get("/stream", stream)
    async with (
        serve_aiohttp(app) as url,
        aiohttp.ClientSession() as session,
        session.get(f"{url}/stream", headers={"X-Request-Timeout": "0.2"}) as resp,
    ):
        assert resp.status == 200
        assert await resp.content.readline() == b"first\n"
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()
    assert reasons == [CancelReason.DEADLINE]


@pytest.mark.parametrize("handler_cancellation", [False, True])
async def test_client_disconnect_cancels_the_handler_within_100ms(
    handler_cancellation: bool,
) -> None:
    """A raw socket closing mid-handler cancels the work fast, recorded as 499."""
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
    async with serve_aiohttp(app, handler_cancellation=handler_cancellation) as url:
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


async def test_completed_request_token_is_never_cancelled() -> None:
    """A normally completed request's token ends uncancelled, even after its deadline."""
    app, middleware = guarded_app()
    app[TOKENS] = []
    app.router.add_get("/echo", echo)
    async with serve_aiohttp(app) as url, ac.Client(AiohttpTransport(), url) as client:
        assert (await client.request(ac.get("echo"), timeout=0.1)).status == 200
        await anyio.sleep(0.15)
    (token,) = app[TOKENS]
    assert token is not None
    assert not token.cancelled
    assert middleware.stats.completed == 1


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
