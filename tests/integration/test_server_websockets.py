"""WebSocket connections under the server middleware, over real sockets: uvicorn, aiohttp, Sanic."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, MutableMapping
from typing import Any

import aiohttp
import anyio
import pytest
from aiohttp import web
from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from sanic import Sanic

import aio_client as ac
from aio_client._cancel import CancelReason, CancelToken
from aio_client.server import CancelTokenDep, DeadlineMiddleware, aiohttp_middleware
from aio_client.server._core import ServerCore
from aio_client.server.sanic import SanicDeadline
from tests.integration.servers import sanic_app, serve_aiohttp, serve_sanic, serve_uvicorn, settle


async def open_raw_websocket(url: str, path: str) -> anyio.abc.SocketStream:
    """A WebSocket handshake over a raw socket (to drop the connection without a close frame)."""
    client = await anyio.connect_tcp("127.0.0.1", int(url.rsplit(":", 1)[1]))
    await client.send(
        f"GET {path} HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = b""
    with anyio.fail_after(2):
        while b"\r\n\r\n" not in head:
            head += await client.receive()
    assert head.startswith(b"HTTP/1.1 101"), head
    return client


async def hang_up_reaction(url: str, handler: Handler) -> float:
    """Seconds from dropping an idle connection (no close frame) to its handler stopping."""
    client = await open_raw_websocket(url, "/idle")
    with anyio.fail_after(2):
        await handler.entered.wait()
    await client.aclose()
    closed_at = anyio.current_time()
    with anyio.fail_after(2):
        await handler.stopped.wait()
    return handler.stopped_at - closed_at


async def echo_then_bye(ws: aiohttp.ClientWebSocketResponse) -> None:
    """Three messages echoed, then "bye": the app closes the connection with 1000."""
    for n in range(3):
        await ws.send_str(f"hi {n}")
        assert await ws.receive_str() == f"echo: hi {n}"
    await ws.send_str("bye")
    closing = await ws.receive()
    assert closing.type is aiohttp.WSMsgType.CLOSE
    assert ws.close_code == 1000


class Handler:
    """What a WebSocket handler saw: its token, when it stopped and why."""

    def __init__(self) -> None:
        self.entered = anyio.Event()
        self.stopped = anyio.Event()
        self.stopped_at = 0.0
        self.tokens: list[CancelToken] = []
        self.reasons: list[CancelReason | None] = []
        self.deadlines: list[ac.Deadline | None] = []

    async def idle(self, token: CancelToken) -> None:
        """Wait (neither reading nor sending) until cancelled."""
        self.tokens.append(token)
        self.entered.set()
        try:
            await anyio.sleep(3600)
        finally:
            self.stopped_at = anyio.current_time()
            self.reasons.append(token.reason)
            self.stopped.set()


def fastapi_ws_app(handler: Handler, **options: object) -> DeadlineMiddleware:
    """A FastAPI app with /idle (waits) and /echo (echoes until "bye") WebSockets, wrapped."""
    app = FastAPI()
    middleware = DeadlineMiddleware(app, **options)  # type: ignore[arg-type]

    @app.websocket("/idle")
    async def idle(websocket: WebSocket, token: CancelTokenDep) -> None:
        await websocket.accept()
        handler.deadlines.append(ac.current_deadline())  # what its calls inherit
        await handler.idle(token)

    @app.websocket("/echo")
    async def echo(websocket: WebSocket, token: CancelTokenDep) -> None:
        handler.tokens.append(token)
        await websocket.accept()
        while True:
            text = await websocket.receive_text()
            if text == "bye":
                await websocket.close(code=1000)
                return
            await websocket.send_text(f"echo: {text}")

    return middleware


@contextlib.asynccontextmanager
async def served(server: str, handler: Handler) -> AsyncIterator[tuple[str, ServerCore]]:
    """The /idle and /echo app on ``server`` (FastAPI under uvicorn, or Sanic): url and core."""
    if server == "uvicorn":
        middleware = fastapi_ws_app(handler)
        async with serve_uvicorn(middleware) as url:
            yield url, middleware.core
    else:
        app, integration = sanic_ws_app(handler)
        async with serve_sanic(app) as url:
            yield url, integration.core


@pytest.mark.parametrize("server", ["uvicorn", "sanic"])
async def test_a_connection_gets_its_token_and_echoes_untouched(server: str) -> None:
    """Messages flow both ways; an app-initiated close ends it cleanly, its token never fired."""
    handler = Handler()
    async with (
        served(server, handler) as (url, core),
        aiohttp.ClientSession() as session,
        session.ws_connect(f"{url}/echo") as ws,
    ):
        await echo_then_bye(ws)
        assert await settle(lambda: core.connections == 0, within=1.0)
    (token,) = handler.tokens
    assert not token.cancelled
    assert core.connections == 0


@pytest.mark.parametrize("unread", [False, True], ids=["nothing_unread", "a_message_unread"])
async def test_a_hang_up_cancels_the_handler_within_100ms(unread: bool) -> None:
    """A client dropping the socket cancels an idle handler with CLIENT_DISCONNECTED, fast;
    a message the handler has not read (a "subscribe" it ignores) does not hide the hang-up."""
    handler = Handler()
    middleware = fastapi_ws_app(handler)
    async with serve_uvicorn(middleware) as url, aiohttp.ClientSession() as session:
        ws = await session.ws_connect(f"{url}/idle")
        with anyio.fail_after(2):
            await handler.entered.wait()
        if unread:
            await ws.send_str("subscribe")
            await anyio.sleep(0.05)
        await ws.close()
        closed_at = anyio.current_time()
        with anyio.fail_after(2):
            await handler.stopped.wait()
        reaction = handler.stopped_at - closed_at
        assert await settle(lambda: middleware.core.connections == 0, within=1.0)
    assert reaction < 0.1
    assert handler.reasons == [CancelReason.CLIENT_DISCONNECTED]


async def test_shutdown_closes_with_going_away_and_leaves_no_task() -> None:
    """shutdown() cancels the handler with SHUTDOWN, closes with 1001, and no task is left."""
    handler = Handler()
    middleware = fastapi_ws_app(handler)
    async with serve_uvicorn(middleware) as url, aiohttp.ClientSession() as session:
        tasks_before = len(asyncio.all_tasks())
        async with session.ws_connect(f"{url}/idle") as ws:
            with anyio.fail_after(2):
                await handler.entered.wait()
            assert middleware.shutdown() == 1
            with anyio.fail_after(2):
                closing = await ws.receive()
            assert closing.type is aiohttp.WSMsgType.CLOSE
            assert ws.close_code == 1001
        assert await settle(lambda: len(asyncio.all_tasks()) <= tasks_before, within=1.0)
        assert middleware.core.connections == 0
        # Shutting down: a new connection is refused at the handshake.
        with pytest.raises(aiohttp.WSServerHandshakeError):
            await session.ws_connect(f"{url}/idle")
    assert handler.reasons == [CancelReason.SHUTDOWN]


async def test_websocket_timeout_ends_a_connection_with_going_away() -> None:
    """websocket_timeout bounds a connection's life: DEADLINE, closed with 1001."""
    handler = Handler()
    middleware = fastapi_ws_app(handler, websocket_timeout=0.3, timeout=0.05)
    async with (
        serve_uvicorn(middleware) as url,
        aiohttp.ClientSession() as session,
        session.ws_connect(f"{url}/idle", headers={"X-Request-Timeout": "0.01"}) as ws,
    ):
        opened_at = anyio.current_time()
        with anyio.fail_after(2):
            closing = await ws.receive()
        lasted = anyio.current_time() - opened_at
        assert closing.type is aiohttp.WSMsgType.CLOSE
        assert ws.close_code == 1001
    # Neither the request budget header nor `timeout` applies to a connection.
    assert 0.2 < lasted < 0.6
    assert handler.reasons == [CancelReason.DEADLINE]
    (deadline,) = handler.deadlines  # the handler's calls inherit the connection's limit
    assert deadline is not None
    assert deadline == handler.tokens[0].deadline


async def test_the_token_dependency_works_for_websocket_endpoints() -> None:
    """CancelTokenDep gives a WebSocket endpoint its connection's token, fired by the hang-up."""
    tokens: list[CancelToken] = []
    app = FastAPI()
    middleware = DeadlineMiddleware(app)

    @app.websocket("/ws")
    async def ws_endpoint(websocket: WebSocket, token: CancelTokenDep) -> None:
        await websocket.accept()
        assert token is ac.current_token()
        tokens.append(token)
        # A reading endpoint sees the hang-up as Starlette's WebSocketDisconnect (or is
        # cancelled first); either way its token says why.
        with contextlib.suppress(WebSocketDisconnect):
            await websocket.receive_text()

    async with (
        serve_uvicorn(middleware) as url,
        aiohttp.ClientSession() as session,
    ):
        async with session.ws_connect(f"{url}/ws"):
            assert await settle(lambda: bool(tokens), within=1.0)
        assert await settle(lambda: middleware.core.connections == 0, within=1.0)
    (token,) = tokens
    assert token.reason is CancelReason.CLIENT_DISCONNECTED


def test_a_bad_websocket_timeout_is_a_config_error_naming_it() -> None:
    """websocket_timeout takes seconds > 0 or None."""
    with pytest.raises(ac.ConfigError, match="websocket_timeout"):
        DeadlineMiddleware(FastAPI(), websocket_timeout=0)


def aiohttp_ws_app(handler: Handler, **options: object) -> tuple[web.Application, Any]:
    """An aiohttp app behind aiohttp_middleware with /idle and /echo WebSocket handlers."""
    middleware = aiohttp_middleware(**options)  # type: ignore[arg-type]
    app = web.Application(middlewares=[middleware])
    app.on_shutdown.append(middleware.on_shutdown)
    app.on_response_prepare.append(middleware.on_response_prepare)

    async def idle(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        token = ac.current_token()
        assert token is not None
        await handler.idle(token)
        return ws  # pragma: no cover

    async def echo(request: web.Request) -> web.WebSocketResponse:
        token = ac.current_token()
        assert token is not None
        handler.tokens.append(token)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        handler.deadlines.append(ac.current_deadline())  # what its calls inherit from here on
        async for message in ws:
            if message.data == "bye":
                await ws.close(code=1000)
            else:
                await ws.send_str(f"echo: {message.data}")
        return ws

    app.router.add_get("/idle", idle)
    app.router.add_get("/echo", echo)
    return app, middleware


async def test_aiohttp_a_connection_outlives_the_request_deadline_and_echoes() -> None:
    """Behind aiohttp_middleware a WebSocket is not cut by `timeout`; its token never fires."""
    handler = Handler()
    app, middleware = aiohttp_ws_app(handler, timeout=0.1)
    async with (
        serve_aiohttp(app) as url,
        aiohttp.ClientSession() as session,
        session.ws_connect(f"{url}/echo") as ws,
    ):
        for n in range(3):
            await ws.send_str(f"hi {n}")
            assert await ws.receive_str() == f"echo: hi {n}"
            await anyio.sleep(0.1)
        await ws.send_str("bye")
        assert (await ws.receive()).type is aiohttp.WSMsgType.CLOSE
        assert ws.close_code == 1000
        assert await settle(lambda: middleware.core.in_flight == 0, within=1.0)
    (token,) = handler.tokens
    assert not token.cancelled
    assert handler.deadlines == [None]  # not the 0.1 s request deadline
    assert middleware.stats.deadline_exceeded == 0
    assert middleware.core.in_flight == 0


async def test_aiohttp_a_hang_up_cancels_the_handler_within_100ms() -> None:
    """current_token() in an aiohttp WebSocket handler fires CLIENT_DISCONNECTED on a hang-up."""
    handler = Handler()
    app, middleware = aiohttp_ws_app(handler)
    async with serve_aiohttp(app) as url:
        # The connection dropped, not closed with a frame: a handler that does not
        # read sees a close frame only when it reads.
        reaction = await hang_up_reaction(url, handler)
        assert await settle(lambda: middleware.core.in_flight == 0, within=1.0)
    assert reaction < 0.1
    assert handler.reasons == [CancelReason.CLIENT_DISCONNECTED]


async def test_aiohttp_upgrade_headers_on_a_plain_route_buy_no_way_around_the_deadline() -> None:
    """A request claiming an upgrade to an ordinary handler is still a request: 504 on time."""
    handler = Handler()
    app, middleware = aiohttp_ws_app(handler, timeout=0.2)

    async def plain(request: web.Request) -> web.Response:
        await anyio.sleep(10)
        return web.Response(text="never")  # pragma: no cover

    app.router.add_get("/plain", plain)
    async with (
        serve_aiohttp(app) as url,
        aiohttp.ClientSession() as session,
        session.get(
            f"{url}/plain",
            headers={
                "Upgrade": "websocket",
                "Connection": "Upgrade",
                "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
                "Sec-WebSocket-Version": "13",
            },
        ) as resp,
    ):
        status = resp.status
    assert status == 504
    assert middleware.stats.deadline_exceeded == 1


@pytest.mark.parametrize("how", ["shutdown", "websocket_timeout"])
async def test_aiohttp_shutdown_and_time_limit_close_with_going_away(how: str) -> None:
    """Shutdown or websocket_timeout cancels an aiohttp WebSocket handler and closes with 1001."""
    handler = Handler()
    options = {"websocket_timeout": 0.3} if how == "websocket_timeout" else {}
    app, middleware = aiohttp_ws_app(handler, **options)
    async with serve_aiohttp(app) as url, aiohttp.ClientSession() as session:
        tasks_before = len(asyncio.all_tasks())
        async with session.ws_connect(f"{url}/idle") as ws:
            with anyio.fail_after(2):
                await handler.entered.wait()
            if how == "shutdown":
                assert middleware.shutdown() == 1
            with anyio.fail_after(2):
                closing = await ws.receive()
            assert closing.type is aiohttp.WSMsgType.CLOSE
            assert ws.close_code == 1001
        assert await settle(lambda: len(asyncio.all_tasks()) <= tasks_before, within=1.0)
        assert middleware.core.in_flight == 0
    expected = CancelReason.SHUTDOWN if how == "shutdown" else CancelReason.DEADLINE
    assert handler.reasons == [expected]


async def test_uvicorn_stopping_closes_with_1012_and_the_token_says_shutdown() -> None:
    """uvicorn's own shutdown (it closes with 1012) fires the connection's token with SHUTDOWN."""
    handler = Handler()
    middleware = fastapi_ws_app(handler)
    async with aiohttp.ClientSession() as session:
        async with serve_uvicorn(middleware) as url:
            ws = await session.ws_connect(f"{url}/idle")
            with anyio.fail_after(2):
                await handler.entered.wait()
        # Leaving serve_uvicorn stopped the server.
        with anyio.fail_after(2):
            closing = await ws.receive()
        # uvicorn sends 1012 and drops the socket at once: the client may see either.
        assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        assert ws.close_code in (1012, 1006)
        await ws.close()
    assert handler.reasons == [CancelReason.SHUTDOWN]
    assert middleware.core.connections == 0


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_in_process_the_connection_token_works_on_asyncio_and_trio() -> None:
    """A bare ASGI WebSocket app: hang-up or shutdown cancels it on any loop (1001 on shutdown)."""
    reasons: list[CancelReason | None] = []
    entered = anyio.Event()

    async def app(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        token = ac.current_token()
        entered.set()
        try:
            await anyio.sleep(3600)
        finally:
            reasons.append(token.reason if token else None)

    for ending in ("hang-up", "shutdown"):
        middleware = DeadlineMiddleware(app)
        entered = anyio.Event()
        to_app, from_client = anyio.create_memory_object_stream[MutableMapping[str, Any]](4)
        sent: list[MutableMapping[str, Any]] = []

        async def send(message: MutableMapping[str, Any]) -> None:
            sent.append(message)  # noqa: B023 - each round's own list, awaited in the round

        async with to_app, from_client, anyio.create_task_group() as tasks:
            tasks.start_soon(
                middleware, {"type": "websocket", "path": "/"}, from_client.receive, send
            )
            await to_app.send({"type": "websocket.connect"})
            with anyio.fail_after(2):
                await entered.wait()
            if ending == "hang-up":
                await to_app.send({"type": "websocket.disconnect", "code": 1001})
            else:
                assert middleware.shutdown() == 1
        assert middleware.core.connections == 0
        if ending == "shutdown":
            assert sent[-1]["type"] == "websocket.close"
            assert sent[-1]["code"] == 1001
        else:
            assert sent == [{"type": "websocket.accept"}]
    assert reasons == [CancelReason.CLIENT_DISCONNECTED, CancelReason.SHUTDOWN]


def sanic_ws_app(handler: Handler, **options: Any) -> tuple[Sanic[Any, Any], SanicDeadline]:
    """A Sanic app set up with the deadline integration, /idle and /echo WebSocket routes."""
    app, integration = sanic_app(**options)

    async def idle(request: Any, ws: Any) -> None:
        token = ac.current_token()
        assert token is not None
        handler.deadlines.append(ac.current_deadline())
        await handler.idle(token)

    async def echo(request: Any, ws: Any) -> None:
        token = ac.current_token()
        assert token is not None
        handler.tokens.append(token)
        while True:
            text = await ws.recv()
            if text == "bye":
                await ws.close(1000)
                return
            await ws.send(f"echo: {text}")

    app.add_websocket_route(idle, "/idle")
    app.add_websocket_route(echo, "/echo")
    return app, integration


async def test_sanic_a_hang_up_cancels_the_handler_within_100ms() -> None:
    """On Sanic, a client dropping the socket cancels an idle handler with CLIENT_DISCONNECTED."""
    handler = Handler()
    app, integration = sanic_ws_app(handler)
    async with serve_sanic(app) as url:
        reaction = await hang_up_reaction(url, handler)
        assert await settle(lambda: integration.core.connections == 0, within=1.0)
    assert reaction < 0.1
    assert handler.reasons == [CancelReason.CLIENT_DISCONNECTED]
    assert handler.deadlines == [None]  # no websocket_timeout: calls inherit no deadline


@pytest.mark.parametrize("how", ["shutdown", "websocket_timeout"])
async def test_sanic_shutdown_and_time_limit_close_with_going_away(how: str) -> None:
    """On Sanic, shutdown() (SHUTDOWN) and websocket_timeout (DEADLINE) close with 1001;
    while shutting down a new connection is closed at once with 1001; no task is left."""
    handler = Handler()
    options = {"websocket_timeout": 0.3} if how == "websocket_timeout" else {}
    app, integration = sanic_ws_app(handler, **options)
    async with serve_sanic(app) as url, aiohttp.ClientSession() as session:
        tasks_before = len(asyncio.all_tasks())
        async with session.ws_connect(f"{url}/idle") as ws:
            with anyio.fail_after(2):
                await handler.entered.wait()
            opened_at = anyio.current_time()
            if how == "shutdown":
                assert integration.shutdown() == 1
            with anyio.fail_after(2):
                closing = await ws.receive()
            lasted = anyio.current_time() - opened_at
            assert closing.type is aiohttp.WSMsgType.CLOSE
            assert ws.close_code == 1001
        assert await settle(lambda: len(asyncio.all_tasks()) <= tasks_before, within=1.0)
        assert integration.core.connections == 0
        if how == "shutdown":
            async with session.ws_connect(f"{url}/idle") as refused:
                with anyio.fail_after(2):
                    closing = await refused.receive()
                assert refused.close_code == 1001
            assert len(handler.reasons) == 1  # the handler never ran again
    expected = CancelReason.SHUTDOWN if how == "shutdown" else CancelReason.DEADLINE
    assert handler.reasons == [expected]
    if how == "websocket_timeout":
        assert 0.2 < lasted < 0.6
        (deadline,) = handler.deadlines
        assert deadline is not None  # the handler's calls inherit the connection's limit


async def test_sanic_an_apps_own_close_is_not_taken_for_a_hang_up() -> None:
    """On Sanic, a handler closing its connection itself and going on never sees its token
    fire CLIENT_DISCONNECTED when the connection then ends."""
    app, integration = sanic_app()
    reasons: list[CancelReason | None] = []

    async def closes_first(request: Any, ws: Any) -> None:
        token = ac.current_token()
        assert token is not None
        await ws.recv()
        await ws.close(1000)
        try:
            await anyio.sleep(0.3)  # what the handler does after its own close
        finally:
            reasons.append(token.reason)

    app.add_websocket_route(closes_first, "/ws")
    async with serve_sanic(app) as url, aiohttp.ClientSession() as session:
        async with session.ws_connect(f"{url}/ws") as ws:
            await ws.send_str("hi")
            closing = await ws.receive()
            assert closing.type is aiohttp.WSMsgType.CLOSE
        assert await settle(lambda: bool(reasons), within=2.0)
        assert await settle(lambda: integration.core.connections == 0, within=1.0)
    assert reasons == [None]
