"""aio_client.server.sanic.setup on a real Sanic server in this event loop."""

from __future__ import annotations

import itertools
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import anyio
import pytest
from sanic import Request, Sanic, response

import aio_client as ac
from aio_client._cancel import CancelReason, CancelToken, current_token
from aio_client.server import max_timeout, trusted_peers
from aio_client.server.sanic import SanicDeadline, setup
from aio_client.transports import AiohttpTransport

_names = itertools.count()


def sanic_app(**options: Any) -> tuple[Sanic[Any, Any], SanicDeadline]:
    """A fresh Sanic app (unique name) with the deadline integration set up."""
    app: Sanic[Any, Any] = Sanic(f"aio_client_test_{next(_names)}")
    app.config.MOTD = False
    app.config.ACCESS_LOG = False
    # TouchUp recompiles Sanic's methods from source once per process; a second app
    # in the same process would fail to find them.
    app.config.TOUCHUP = False
    return app, setup(app, **options)


@asynccontextmanager
async def serve_sanic(app: Sanic[Any, Any]) -> AsyncIterator[str]:
    """Run ``app`` on a socket bound to 127.0.0.1:<ephemeral>; yield its URL.

    Sanic reads ``port=0`` as "use 8000", so the socket is bound here and handed over.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    port = sock.getsockname()[1]
    server = await app.create_server(sock=sock, return_asyncio_server=True, access_log=False)
    assert server is not None
    await server.startup()
    await server.before_start()
    await server.after_start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await server.before_stop()
        await server.close()
        for connection in list(server.connections):
            connection.close_if_idle()
        await server.after_stop()


async def test_budget_priority_and_route_maximum_reach_the_handler() -> None:
    """Sanic handlers see the caller's budget, priority and token; max_timeout caps a route."""
    app, _ = sanic_app(timeout=30.0, trust_priority=trusted_peers("127.0.0.1"))
    tokens: list[CancelToken | None] = []

    async def echo(request: Request) -> response.HTTPResponse:
        deadline = ac.current_deadline()
        priority = ac.current_priority()
        tokens.append(current_token())
        return response.json(
            {
                "remaining": deadline.remaining() if deadline else None,
                "priority": priority.value if priority else None,
            }
        )

    app.add_route(echo, "/echo")
    app.add_route(max_timeout(0.5)(echo), "/capped", name="capped")
    async with serve_sanic(app) as url, ac.Client(AiohttpTransport(), url) as client:
        plain = (await client.request(ac.get("echo"), timeout=2.0, priority="high")).json()
        capped = (await client.request(ac.get("capped"), timeout=2.0)).json()
    assert isinstance(plain, dict)
    assert isinstance(capped, dict)
    assert 1.5 < plain["remaining"] <= 2.0
    assert plain["priority"] == "high"
    assert 0.4 < capped["remaining"] <= 0.5
    assert all(token is not None and not token.cancelled for token in tokens)


async def test_spent_budget_and_deadline_during_handling_give_504() -> None:
    """Spent on arrival: 504 unhandled; deadline mid-handler: cancelled and 504."""
    app, integration = sanic_app(low_timeout=0.05)
    reasons: list[CancelReason | None] = []

    async def slow(request: Request) -> response.HTTPResponse:
        try:
            await anyio.sleep(10)
        finally:
            token = current_token()
            reasons.append(token.reason if token else None)
        return response.text("never")  # pragma: no cover

    app.add_route(slow, "/slow")
    async with serve_sanic(app) as url, aiohttp.ClientSession() as session:
        async with session.get(f"{url}/slow", headers={"X-Request-Timeout": "0.01"}) as resp:
            spent = (resp.status, resp.headers.get("X-Do-Not-Retry"))
        async with session.get(f"{url}/slow", headers={"X-Request-Timeout": "0.2"}) as resp:
            late = (resp.status, resp.headers.get("X-Do-Not-Retry"))
    assert spent == (504, "1")
    assert late == (504, "1")
    assert reasons == [CancelReason.DEADLINE]
    assert integration.stats.expired_on_arrival == 1
    assert integration.stats.deadline_exceeded == 1


async def test_client_disconnect_cancels_the_handler_within_100ms() -> None:
    """A raw socket closing mid-handler cancels the Sanic handler fast; recorded as 499."""
    statuses: list[int] = []
    app, integration = sanic_app(observer=lambda outcome: statuses.append(outcome.status))
    entered = anyio.Event()
    cancelled = anyio.Event()
    reasons: list[CancelReason | None] = []

    async def hang(request: Request) -> response.HTTPResponse:
        entered.set()
        try:
            await anyio.sleep(10)
        finally:
            token = current_token()
            reasons.append(token.reason if token else None)
            cancelled.set()
        return response.text("never")  # pragma: no cover

    app.add_route(hang, "/hang")
    async with serve_sanic(app) as url:
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
        await anyio.sleep(0.01)  # let the cancellation leave the middleware
    assert reaction < 0.1
    assert reasons == [CancelReason.CLIENT_DISCONNECTED]
    assert statuses == [499]
    assert integration.stats.client_disconnected == 1


async def test_server_stop_answers_503_to_requests_in_flight() -> None:
    """before_server_stop fires SHUTDOWN on handlers in flight, which answer 503."""
    app, integration = sanic_app()
    entered = anyio.Event()
    reasons: list[CancelReason | None] = []

    async def hang(request: Request) -> response.HTTPResponse:
        entered.set()
        try:
            await anyio.sleep(10)
        finally:
            token = current_token()
            reasons.append(token.reason if token else None)
        return response.text("never")  # pragma: no cover

    app.add_route(hang, "/hang")
    statuses: list[int] = []
    async with aiohttp.ClientSession() as session:

        async def call(url: str) -> None:
            async with session.get(f"{url}/hang") as resp:
                statuses.append(resp.status)

        async with serve_sanic(app) as url, anyio.create_task_group() as tg:
            tg.start_soon(call, url)
            await entered.wait()
            assert integration.shutdown() == 1
    assert statuses == [503]
    assert reasons == [CancelReason.SHUTDOWN]


@pytest.mark.parametrize("header", ["nan", "-5", "1e9", "9" * 40, "\t", "ab"])
async def test_malformed_headers_never_500(header: str) -> None:
    """Malformed budget headers are ignored and counted; the handler runs with the default."""
    app, integration = sanic_app(timeout=3.0)

    async def echo(request: Request) -> response.HTTPResponse:
        deadline = ac.current_deadline()
        return response.json({"remaining": deadline.remaining() if deadline else None})

    app.add_route(echo, "/echo")
    async with (
        serve_sanic(app) as url,
        aiohttp.ClientSession() as session,
        session.get(f"{url}/echo", headers={"X-Request-Timeout": header}) as resp,
    ):
        status, body = resp.status, await resp.json()
    assert status == 200
    assert 2.5 < body["remaining"] <= 3.0
    assert integration.stats.malformed_headers == 1


async def test_deadline_during_streaming_breaks_the_connection() -> None:
    """After a streamed response started, the deadline breaks the connection, not a clean end."""
    app, integration = sanic_app()
    reasons: list[CancelReason | None] = []

    async def stream(request: Request) -> None:
        streamed = await request.respond(content_type="text/plain")
        await streamed.send(b"first\n")
        try:
            await anyio.sleep(10)
        finally:
            token = current_token()
            reasons.append(token.reason if token else None)

    app.add_route(stream, "/stream")
    async with (
        serve_sanic(app) as url,
        aiohttp.ClientSession() as session,
        session.get(f"{url}/stream", headers={"X-Request-Timeout": "0.2"}) as resp,
    ):
        assert resp.status == 200
        assert await resp.content.readline() == b"first\n"
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()
    assert reasons == [CancelReason.DEADLINE]
    assert integration.stats.deadline_exceeded == 1
