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
