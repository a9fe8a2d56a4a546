"""aio_client.server.sanic.setup on a real Sanic server in this event loop.

What every adapter promises is pinned once for all in ``test_server_contract.py``;
here: what is Sanic's own (class-based views, the server-stop listener).
"""

from __future__ import annotations

import aiohttp
import anyio
from sanic import Request, response
from sanic.views import HTTPMethodView

import aio_client as ac
from aio_client import CancelReason
from aio_client.server import max_timeout

from .servers import sanic_app, serve_sanic


async def test_route_maximum_on_a_class_based_view_method() -> None:
    """max_timeout on an HTTPMethodView method caps that method's budget below the default."""
    app, integration = sanic_app(timeout=30.0)

    class Capped(HTTPMethodView):
        @max_timeout(0.25)
        async def get(self, request: Request) -> response.HTTPResponse:
            deadline = ac.current_deadline()
            return response.json({"remaining": deadline.remaining() if deadline else None})

    app.add_route(Capped.as_view(), "/view")
    async with (
        serve_sanic(app) as url,
        aiohttp.ClientSession() as session,
        session.get(f"{url}/view") as resp,
    ):
        remaining = (await resp.json())["remaining"]
    assert 0.15 < remaining <= 0.25
    assert integration.stats.completed == 1


async def _post_slowly(url: str, path: str, budget: str, pause: float) -> bytes:
    """POST a 4-byte body ``pause`` seconds after the head; the raw answer."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    stream = await anyio.connect_tcp(host, int(port))
    async with stream:
        await stream.send(
            f"POST {path} HTTP/1.1\r\nHost: x\r\nX-Request-Timeout: {budget}\r\n"
            "Content-Length: 4\r\nConnection: close\r\n\r\n".encode()
        )
        await anyio.sleep(pause)
        await stream.send(b"body")
        answer = b""
        with anyio.fail_after(5):
            while True:
                try:
                    answer += await stream.receive()
                except anyio.EndOfStream:
                    return answer


async def test_the_budget_runs_from_the_head_not_from_the_end_of_a_slow_body() -> None:
    """Sanic reads the whole body before the handler runs: the budget still runs from the
    head's arrival, so the handler sees what the caller has left, and a budget the upload
    used up is answered 504 without running the handler."""
    app, integration = sanic_app(timeout=30.0)
    seen: list[float] = []

    @app.post("/upload")
    async def upload(request: Request) -> response.HTTPResponse:
        deadline = ac.current_deadline()
        assert deadline is not None
        seen.append(deadline.remaining())
        return response.text("ok")

    async with serve_sanic(app) as url:
        answered = await _post_slowly(url, "/upload", "1.0", 0.3)
        assert answered.startswith(b"HTTP/1.1 200")
        assert len(seen) == 1
        assert seen[0] <= 0.75
        answered = await _post_slowly(url, "/upload", "0.2", 0.4)
        assert answered.startswith(b"HTTP/1.1 504")
    assert len(seen) == 1
    assert integration.stats.expired_on_arrival == 1


async def test_stopping_the_server_answers_503_to_requests_in_flight() -> None:
    """The before_server_stop listener fires SHUTDOWN on handlers in flight, which answer 503."""
    app, integration = sanic_app()
    entered = anyio.Event()
    reasons: list[CancelReason | None] = []

    async def hang(request: Request) -> response.HTTPResponse:
        entered.set()
        try:
            await anyio.sleep(10)
        finally:
            token = ac.current_token()
            reasons.append(token.reason if token else None)
        return response.text("never")  # pragma: no cover

    app.add_route(hang, "/hang")
    statuses: list[int] = []
    # Leaving serve_sanic stops the server (its before_server_stop listeners run first);
    # the task group then waits for the answer.
    async with (
        aiohttp.ClientSession() as session,
        anyio.create_task_group() as tasks,
        serve_sanic(app) as url,
    ):

        async def call() -> None:
            async with session.get(f"{url}/hang") as resp:
                statuses.append(resp.status)

        tasks.start_soon(call)
        with anyio.fail_after(2):
            await entered.wait()
    assert statuses == [503]
    assert reasons == [CancelReason.SHUTDOWN]
    assert integration.stats.shutdown == 1
