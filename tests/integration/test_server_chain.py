"""A three-hop chain A -> B (uvicorn/FastAPI) -> C (aiohttp): budgets shrink, all hops stop."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from aiohttp import web
from fastapi import FastAPI

import aio_client as ac
from aio_client._cancel import CancelReason, current_token
from aio_client.server import DeadlineMiddleware, aiohttp_middleware
from aio_client.transports import AiohttpTransport
from tests.integration.servers import serve_aiohttp, serve_uvicorn


class Hop:
    """What one hop saw: its budget and priority on arrival, and how and when it ended."""

    def __init__(self) -> None:
        self.budget = 0.0
        self.priority: ac.Priority | None = None
        self.reason: CancelReason | None = None
        self.ended_at = 0.0

    def arrive(self) -> None:
        deadline = ac.current_deadline()
        assert deadline is not None
        self.budget = deadline.remaining()
        self.priority = ac.current_priority()

    def end(self) -> None:
        token = current_token()
        self.reason = token.reason if token is not None else None
        self.ended_at = anyio.current_time()


async def test_three_hops_shrink_the_budget_and_all_stop_with_the_callers_deadline() -> None:
    """C sees less budget than B, the priority travels, every hop stops at A's deadline."""
    b, c = Hop(), Hop()

    async def c_handler(request: web.Request) -> web.Response:
        c.arrive()
        try:
            await anyio.sleep(10)
        finally:
            c.end()
        return web.Response(text="never")  # pragma: no cover

    c_app = web.Application(middlewares=[aiohttp_middleware()])
    c_app.router.add_get("/c", c_handler)

    b_app = FastAPI()
    b_app.add_middleware(DeadlineMiddleware)

    async with serve_aiohttp(c_app) as c_url, ac.Client(AiohttpTransport(), c_url) as to_c:

        @b_app.get("/b")
        async def b_handler() -> str:
            b.arrive()
            try:
                await anyio.sleep(0.02)  # B's own work, before it calls C
                # No timeout, no priority: both come from the request B is serving.
                await to_c.request(ac.get("c"))
                await anyio.sleep(10)  # pragma: no cover - B's deadline cancels the call
            finally:
                b.end()
            return "never"  # pragma: no cover

        async with serve_uvicorn(b_app) as b_url, ac.Client(AiohttpTransport(), b_url) as to_b:
            a_deadline = anyio.current_time() + 0.5
            try:
                outcome: Any = (await to_b.request(ac.get("b"), timeout=0.5, priority="low")).status
            except ac.DeadlineExceededError as exc:
                outcome = exc
            a_ended_at = anyio.current_time()

    assert outcome == 504 or isinstance(outcome, ac.DeadlineExceededError)
    assert 0.3 < c.budget < b.budget - 0.015 < 0.5
    assert b.priority is c.priority is ac.Priority.LOW
    # Only relative budgets travel, so each hop's deadline trails its caller's by
    # the one-way latency: a hop stops on its own deadline or on its caller
    # hanging up, whichever it notices first. Either way, at A's deadline.
    stopped = {CancelReason.DEADLINE, CancelReason.CLIENT_DISCONNECTED}
    assert b.reason in stopped
    assert c.reason in stopped
    for ended in (c.ended_at, b.ended_at, a_ended_at):
        assert ended == pytest.approx(a_deadline, abs=0.05)
