"""DeadlineMiddleware on real uvicorn (FastAPI/Starlette) and in-process ASGI."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import hashlib
import subprocess
import sys
import weakref
from collections.abc import AsyncIterator, Callable, MutableMapping
from typing import Any, final

import aiohttp
import anyio
import pytest
from fastapi import BackgroundTasks, FastAPI, Request

import aio_client as ac
from aio_client._cancel import CancelReason, current_token
from aio_client.server import (
    CancelTokenDep,
    DeadlineMiddleware,
    PriorityLoadShedder,
    ServerOutcome,
    fastapi_max_timeout,
    max_timeout,
)
from aio_client.transports import MemoryTransport
from tests.integration.servers import running_uvicorn, serve_uvicorn

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]


@final
class _Middleware:
    """Reaches the DeadlineMiddleware instance Starlette builds on the first request."""

    def __init__(self, app: FastAPI) -> None:
        self._app = app

    def __getattr__(self, name: str) -> Any:
        stack: Any = self._app.middleware_stack
        while not isinstance(stack, DeadlineMiddleware):
            stack = stack.app
        return getattr(stack, name)


def fastapi_app(**options: Any) -> tuple[FastAPI, Any]:
    """A FastAPI app with ``add_middleware(DeadlineMiddleware, ...)``, and a handle on it."""
    app = FastAPI()
    app.add_middleware(DeadlineMiddleware, **options)
    return app, _Middleware(app)


async def test_a_context_captured_at_the_last_send_keeps_nothing_of_the_request_alive() -> None:
    """uvicorn arms a connection's keep-alive timer from the app's last send, in the
    context that send runs in, and keeps it until the connection's next request: that
    context must hold nothing of the request (its token, its receive and send, and through
    the observer's route resolver what the server made for it). Checked with the collector
    off: all of it is freed by reference counting as soon as the request ends.

    A context the handler itself captures (a task it starts, a timer it arms) keeps the
    request's token, as it should, but not what the server made for the request."""
    outcomes: list[ServerOutcome] = []
    tokens: list[weakref.ref[ac.CancelToken]] = []
    in_handler: list[contextvars.Context] = []
    app = FastAPI()

    @app.get("/things/{thing}")
    async def thing(thing: str) -> dict[str, str]:
        token = current_token()
        assert token is not None
        tokens.append(weakref.ref(token))
        in_handler.append(contextvars.copy_context())
        return {"thing": thing}

    app.add_middleware(DeadlineMiddleware, observer=outcomes.append)
    captured: list[contextvars.Context] = []

    @final
    class Receive:
        async def __call__(self) -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

    @final
    class Send:
        async def __call__(self, message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.body" and not message.get("more_body"):
                captured.append(contextvars.copy_context())  # as loop.call_later does

    async def serve_one() -> tuple[weakref.ref[Receive], weakref.ref[Send]]:
        receive, send = Receive(), Send()
        scope: Scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": "/things/1",
            "raw_path": b"/things/1",
            "query_string": b"",
            "root_path": "",
            "headers": [(b"host", b"test"), (b"x-request-timeout", b"5")],
            "client": ("127.0.0.1", 5000),
            "server": ("127.0.0.1", 8000),
        }
        await app(scope, receive, send)
        return weakref.ref(receive), weakref.ref(send)

    await serve_one()  # Starlette builds its middleware stack on the first request
    gc.disable()
    try:
        receive, send = await serve_one()
        assert receive() is None
        assert send() is None
        assert tokens[-1]() is not None  # the handler's own context holds it
        in_handler.clear()
        assert tokens[-1]() is None
    finally:
        gc.enable()
    assert len(captured) == 2
    assert [outcome.route for outcome in outcomes] == ["/things/{thing}"] * 2


async def test_large_chunked_upload_arrives_whole() -> None:
    """An 8 MiB chunked upload reaches the handler byte for byte."""
    app, _ = fastapi_app()

    @app.post("/upload")
    async def upload(request: Request) -> dict[str, Any]:
        body = await request.body()
        return {"size": len(body), "sha256": hashlib.sha256(body).hexdigest()}

    chunk = bytes(range(256)) * 256  # 64 KiB
    expected = hashlib.sha256(chunk * 128).hexdigest()

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(128):
            yield chunk

    async with (
        serve_uvicorn(app) as url,
        aiohttp.ClientSession() as session,
        session.post(f"{url}/upload", data=chunks()) as resp,
    ):
        assert resp.request_info.headers.get("Transfer-Encoding") == "chunked"
        body = await resp.json()
    assert body == {"size": 128 * len(chunk), "sha256": expected}


async def test_lifespan_shutdown_event_triggers_shutdown() -> None:
    """The ASGI lifespan shutdown event puts the middleware into shutdown."""
    received: list[str] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            received.append(message["type"])
            if message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    middleware = DeadlineMiddleware(app)
    messages = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])

    async def receive() -> MutableMapping[str, Any]:
        return next(messages)

    async def send(message: MutableMapping[str, Any]) -> None:
        pass

    await middleware({"type": "lifespan"}, receive, send)
    assert received == ["lifespan.startup", "lifespan.shutdown"]
    assert middleware.core.shutting_down


def test_openapi_schema_unchanged_by_token_and_route_maximum() -> None:
    """The token dependency and the route maximum add nothing to the OpenAPI document."""

    def plain_app() -> FastAPI:
        app = FastAPI()

        @app.get("/items/{item_id}")
        async def item(item_id: int, q: str | None = None) -> dict[str, Any]:
            return {}

        return app

    def guarded_app() -> FastAPI:
        app = FastAPI()
        app.add_middleware(DeadlineMiddleware)

        @app.get("/items/{item_id}", dependencies=[fastapi_max_timeout(1.0)])
        async def item(item_id: int, token: CancelTokenDep, q: str | None = None) -> dict[str, Any]:
            return {}

        return app

    plain, guarded = plain_app().openapi(), guarded_app().openapi()
    assert guarded == plain
    parameters = guarded["paths"]["/items/{item_id}"]["get"]["parameters"]
    assert [p["name"] for p in parameters] == ["item_id", "q"]
    assert "requestBody" not in guarded["paths"]["/items/{item_id}"]["get"]


async def test_fastapi_route_maximum_caps_the_budget() -> None:
    """fastapi_max_timeout caps handler, token and outgoing budgets; a slow route gets 504."""
    app, _ = fastapi_app()
    seen: dict[str, float] = {}

    @app.get("/capped", dependencies=[fastapi_max_timeout(0.3)])
    async def capped(token: CancelTokenDep) -> str:
        deadline = ac.current_deadline()
        assert deadline is not None
        seen["ambient"] = deadline.remaining()
        seen["token"] = token.remaining()
        await anyio.sleep(10)
        return "never"  # pragma: no cover

    async with serve_uvicorn(app) as url, aiohttp.ClientSession() as session:
        started = anyio.current_time()
        async with session.get(f"{url}/capped", headers={"X-Request-Timeout": "5"}) as resp:
            status = resp.status
        elapsed = anyio.current_time() - started
    assert status == 504
    assert seen["ambient"] <= 0.3
    assert seen["token"] <= 0.3
    assert 0.25 < elapsed < 0.6


async def test_app_errors_propagate_unwrapped() -> None:
    """An exception from the app reaches the server as itself, never as an ExceptionGroup."""

    async def broken(scope: Scope, receive: Any, send: Any) -> None:
        raise LookupError("bug")

    middleware = DeadlineMiddleware(broken)
    with pytest.raises(LookupError, match="bug"):
        await MemoryTransport(middleware).send(ac.Request("GET", "http://svc/x"))
    assert middleware.stats.failed == 1


def test_load_shedder_validates_its_settings() -> None:
    """Bad shedder settings are ConfigErrors naming the parameter."""
    with pytest.raises(ac.ConfigError, match="max_in_flight"):
        PriorityLoadShedder(max_in_flight=0)
    with pytest.raises(ac.ConfigError, match="low_share"):
        PriorityLoadShedder(max_in_flight=10, normal_share=0.5, low_share=0.8)
    with pytest.raises(ac.ConfigError, match="retry_after"):
        PriorityLoadShedder(max_in_flight=10, retry_after=-1)


def test_middleware_validates_its_settings() -> None:
    """Bad middleware settings fail at construction, naming the parameter."""
    with pytest.raises(ac.ConfigError, match="max_timeout"):
        DeadlineMiddleware(FastAPI(), max_timeout=-1.0)
    with pytest.raises(ac.ConfigError, match="priority"):
        DeadlineMiddleware(FastAPI(), priority="urgent")


def test_import_needs_no_web_framework() -> None:
    """import aio_client.server works with fastapi, starlette, sanic and aiohttp unavailable."""
    code = (
        "import sys\n"
        "for name in ('fastapi', 'starlette', 'sanic', 'aiohttp'):\n"
        "    sys.modules[name] = None\n"
        "import aio_client.server as s\n"
        "assert s.DeadlineMiddleware and s.PriorityLoadShedder\n"
        "assert s.__all__ == sorted(s.__all__)\n"
    )
    subprocess.run([sys.executable, "-W", "error", "-c", code], check=True, timeout=30)


async def test_outgoing_call_cut_by_the_shared_deadline_is_a_504_not_a_500() -> None:
    """A handler whose downstream call fails with the request's deadline still answers 504."""
    app, middleware = fastapi_app()

    async def downstream(request: ac.Request) -> ac.Response:
        await anyio.sleep(10)
        return ac.Response(200)  # pragma: no cover

    async with ac.Client(MemoryTransport(downstream), "http://downstream") as client:

        @app.get("/proxy")
        async def proxy() -> str:
            # Cut either by the call's own scope (DeadlineExceededError) or by the
            # request's token (cancellation): both share the same deadline.
            await client.request(ac.get("slow"))
            return "never"  # pragma: no cover

        async with (
            serve_uvicorn(app) as url,
            aiohttp.ClientSession() as session,
            session.get(f"{url}/proxy", headers={"X-Request-Timeout": "0.15"}) as resp,
        ):
            status, header = resp.status, resp.headers.get("X-Do-Not-Retry")
    assert (status, header) == (504, "1")
    assert middleware.stats.deadline_exceeded == 1
    assert middleware.stats.failed == 0


async def test_error_raised_while_cancelled_maps_to_the_cancellation_status() -> None:
    """A handler that turns its cancellation into another error still gets the 504."""

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        try:
            await anyio.sleep(10)
        except anyio.get_cancelled_exc_class():
            raise RuntimeError("cleanup failed") from None

    middleware = DeadlineMiddleware(app)
    request = ac.Request("GET", "http://svc/", ac.Headers({"X-Request-Timeout": "0.05"}))
    response = await MemoryTransport(middleware).send(request)
    assert response.status == 504
    assert response.headers["x-do-not-retry"] == "1"
    assert middleware.stats.deadline_exceeded == 1
    assert middleware.stats.failed == 0


async def test_background_work_after_the_response_is_not_cut_by_the_deadline() -> None:
    """Once the response is complete, Starlette background tasks outlive the request budget."""
    app, _ = fastapi_app()
    finished: list[bool] = []
    done = anyio.Event()

    async def after_response() -> None:
        await anyio.sleep(0.15)
        token = current_token()
        finished.append(token is not None and not token.cancelled)
        done.set()

    @app.get("/later")
    async def later(background: BackgroundTasks) -> str:
        background.add_task(after_response)
        return "accepted"

    async with (
        serve_uvicorn(app) as url,
        aiohttp.ClientSession() as session,
        session.get(f"{url}/later", headers={"X-Request-Timeout": "0.05"}) as resp,
    ):
        assert resp.status == 200
        with anyio.fail_after(2):
            await done.wait()
    assert finished == [True]


async def test_token_dependency_without_the_middleware_says_what_is_missing() -> None:
    """Asking for the token on an app without DeadlineMiddleware fails with a clear message."""
    app = FastAPI()

    @app.get("/token")
    async def token_route(token: CancelTokenDep) -> str:
        return "never"  # pragma: no cover

    with pytest.raises(RuntimeError, match=r"add aio_client\.server\.DeadlineMiddleware"):
        await MemoryTransport(app).send(ac.Request("GET", "http://svc/token"))


# -- the cheap common path and what it must still guarantee ----------------------------


def _ok_app(record: Callable[[], None], *, pause: float = 0.0) -> Any:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if pause:
            await anyio.sleep(pause)
        record()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    return app


async def test_a_quick_request_runs_in_the_server_task_alone() -> None:
    """No relay task per request: a handler that ends quickly shares the loop with no extra task."""
    counts: list[int] = []

    def record() -> None:
        counts.append(len(asyncio.all_tasks()))

    bare = MemoryTransport(_ok_app(record))
    guarded = MemoryTransport(DeadlineMiddleware(_ok_app(record)))
    slow = MemoryTransport(DeadlineMiddleware(_ok_app(record, pause=0.1)))
    for transport in (bare, guarded, slow):
        assert (await transport.send(ac.Request("GET", "http://svc/"))).status == 200
    assert counts[1] == counts[0]
    # A request still running after the watch delay gets one watcher for hang-ups.
    assert counts[2] == counts[0] + 1


async def test_a_handler_that_swallows_its_cancellation_is_cancelled_again() -> None:
    """The deadline is level-triggered: a handler that catches the cancellation is cut again."""
    swallowed: list[bool] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        try:
            await anyio.sleep(10)
        except asyncio.CancelledError:
            swallowed.append(True)  # and carries on, as careless code does
        await anyio.sleep(10)

    middleware = DeadlineMiddleware(app)
    request = ac.Request("GET", "http://svc/", ac.Headers({"X-Request-Timeout": "0.05"}))
    started = anyio.current_time()
    response = await MemoryTransport(middleware).send(request)
    assert response.status == 504
    assert swallowed == [True]
    assert anyio.current_time() - started < 0.5
    assert middleware.stats.deadline_exceeded == 1


async def test_a_token_cancelled_by_its_own_handler_answers_503() -> None:
    """A handler cancelling its token and failing at once gets the 503, sent uncancelled."""

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        token = current_token()
        assert token is not None
        token.cancel(CancelReason.EXPLICIT, "changed my mind")
        raise RuntimeError("gave up")

    middleware = DeadlineMiddleware(app)
    response = await MemoryTransport(middleware).send(ac.Request("GET", "http://svc/"))
    assert response.status == 503
    assert middleware.stats.failed == 0


async def test_an_upload_read_late_arrives_whole() -> None:
    """A handler that reads its body only after the hang-up watcher started still gets all of it."""
    app, _ = fastapi_app()

    @app.post("/late")
    async def late(request: Request) -> dict[str, Any]:
        await anyio.sleep(0.15)
        body = await request.body()
        return {"size": len(body), "sha256": hashlib.sha256(body).hexdigest()}

    chunk = bytes(range(256)) * 256  # 64 KiB

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(64):
            yield chunk

    async with (
        serve_uvicorn(app) as url,
        aiohttp.ClientSession() as session,
        session.post(f"{url}/late", data=chunks()) as resp,
    ):
        body = await resp.json()
    assert body == {"size": 64 * len(chunk), "sha256": hashlib.sha256(chunk * 64).hexdigest()}


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_on_trio_deadlines_and_answers_hold() -> None:
    """Off asyncio the middleware falls back to cancel scopes and a relay: same answers."""

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        message = await receive()
        if message.get("body") == b"slow":
            await anyio.sleep(10)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    middleware = DeadlineMiddleware(app)
    transport = MemoryTransport(middleware)
    headers = ac.Headers({"X-Request-Timeout": "0.1"})
    fast = await transport.send(ac.Request("POST", "http://svc/", headers, content=b"fast"))
    slow = await transport.send(ac.Request("POST", "http://svc/", headers, content=b"slow"))
    assert (fast.status, slow.status) == (200, 504)
    assert middleware.stats.deadline_exceeded == 1


@pytest.mark.parametrize("group", ["anyio", "asyncio"])
async def test_the_deadline_cancels_a_handler_s_task_group_and_its_children(group: str) -> None:
    """A handler waiting on a task group is cut at its deadline, children cancelled, 504."""
    cancelled: list[str] = []

    async def child(name: str) -> None:
        try:
            await anyio.sleep(10)
        except asyncio.CancelledError:
            cancelled.append(name)
            raise

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if group == "anyio":
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(child, "a")
                tasks.start_soon(child, "b")
        else:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(child("a"))
                tasks.create_task(child("b"))

    middleware = DeadlineMiddleware(app)
    request = ac.Request("GET", "http://svc/", ac.Headers({"X-Request-Timeout": "0.1"}))
    started = anyio.current_time()
    response = await MemoryTransport(middleware).send(request)
    assert response.status == 504
    assert sorted(cancelled) == ["a", "b"]
    assert anyio.current_time() - started < 0.5
    assert middleware.stats.deadline_exceeded == 1


async def test_a_request_uvicorn_cancels_on_its_way_down_is_answered_503_not_500() -> None:
    """uvicorn lets requests in flight finish, then cancels those still running when
    ``timeout_graceful_shutdown`` runs out and answers them 500 itself: the middleware
    answers 503 (SHUTDOWN) first, and the cancellation still ends the handler."""
    app, middleware = fastapi_app(timeout=30.0)
    started = anyio.Event()
    ended: list[BaseException] = []

    @app.get("/long")
    async def long() -> str:
        started.set()
        try:
            await anyio.sleep(30)
        except BaseException as exc:
            ended.append(exc)
            raise
        return "never"  # pragma: no cover

    async with (
        running_uvicorn(app, log_level="critical", lifespan="on", timeout_graceful_shutdown=1) as (
            server,
            url,
        ),
        aiohttp.ClientSession() as session,
    ):
        call = asyncio.ensure_future(session.get(f"{url}/long"))
        with anyio.fail_after(5):
            await started.wait()
        server.should_exit = True
        with anyio.fail_after(5):
            async with await call as resp:
                assert resp.status == 503
                assert "X-Do-Not-Retry" not in resp.headers
    assert len(ended) == 1
    assert isinstance(ended[0], asyncio.CancelledError)
    assert middleware.stats.shutdown == 1


async def test_a_hang_up_during_an_upload_not_yet_read_cancels_the_handler() -> None:
    """A handler busy before reading its body: the client sends part of an upload and hangs
    up; the watcher, reading ahead of the handler, sees it and cancels within 100 ms."""
    app, _ = fastapi_app(timeout=5.0)
    reasons: list[CancelReason | None] = []
    ended = anyio.Event()

    @app.post("/upload")
    async def upload() -> str:
        try:
            await anyio.sleep(10)  # work before reading the body
        finally:
            token = current_token()
            reasons.append(None if token is None else token.reason)
            ended.set()
        return "never"  # pragma: no cover

    async with serve_uvicorn(app) as url:
        port = int(url.rsplit(":", 1)[1])
        stream = await anyio.connect_tcp("127.0.0.1", port)
        await stream.send(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n")
        for _ in range(6):
            await stream.send(b"y" * 100)
            await anyio.sleep(0.02)
        await anyio.sleep(0.1)  # the watcher has started by now
        await stream.aclose()
        hung_up = anyio.current_time()
        with anyio.fail_after(2):
            await ended.wait()
        took = anyio.current_time() - hung_up
    assert reasons == [CancelReason.CLIENT_DISCONNECTED]
    assert took < 0.1, took


async def test_the_watcher_reads_at_most_64_kib_ahead_of_a_handler_that_does_not_read() -> None:
    """Uploads keep their back-pressure: however much a client sends, the watcher holds at
    most 64 KiB the handler has not read, and the handler then reads the body whole."""
    chunk = b"z" * 16384
    pulled = 0

    async def receive() -> Message:
        nonlocal pulled
        pulled += 1
        if pulled > 1000:  # pragma: no cover - the test failed: stop reading
            return {"type": "http.request", "body": b"", "more_body": False}
        return {"type": "http.request", "body": chunk, "more_body": True}

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    seen: list[int] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await anyio.sleep(0.2)  # not reading; the watcher starts at 40 ms
        seen.append(pulled)
        for _ in range(10):
            message = await receive()
            assert message["body"] == chunk
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    scope = {"type": "http", "method": "POST", "path": "/", "headers": [], "query_string": b""}
    await DeadlineMiddleware(app)(scope, receive, send)
    assert seen[0] <= 64 * 1024 // len(chunk) + 1
    assert [m.get("status") for m in sent if m["type"] == "http.response.start"] == [200]


async def test_max_timeout_on_a_fastapi_endpoint_caps_its_budget_too() -> None:
    """``@max_timeout`` (the aiohttp and Sanic decorator) on a FastAPI endpoint caps the
    budget when the endpoint runs: the handler sees the cap and overrunning it is a 504."""
    app, _ = fastapi_app(timeout=30.0)

    @app.get("/capped")
    @max_timeout(0.3)
    async def capped(slow: bool = False) -> dict[str, float | None]:
        if slow:
            await anyio.sleep(2)
        deadline = ac.current_deadline()
        return {"remaining": None if deadline is None else deadline.remaining()}

    async with serve_uvicorn(app) as url, aiohttp.ClientSession() as session:
        async with session.get(f"{url}/capped") as resp:
            remaining = (await resp.json())["remaining"]
        async with session.get(f"{url}/capped?slow=true") as resp:
            status = resp.status
    assert remaining is not None
    assert 0.2 < remaining <= 0.3
    assert status == 504
