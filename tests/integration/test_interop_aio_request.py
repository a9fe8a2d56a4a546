"""Interoperability with aio-request 0.2.9, in both directions."""

from __future__ import annotations

from typing import Any

import aio_request
import aiohttp
import pytest
from aiohttp import web
from fastapi import FastAPI

import aio_client as ac
from aio_client.server import DeadlineMiddleware, aiohttp_middleware, trusted_peers
from aio_client.transports import AiohttpTransport
from tests.integration.servers import serve_aiohttp, serve_uvicorn


def _seen() -> dict[str, Any]:
    deadline = ac.current_deadline()
    priority = ac.current_priority()
    return {
        "remaining": deadline.remaining() if deadline else None,
        "priority": priority.value if priority else None,
    }


async def _call_with_aio_request(url: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session:
        client = aio_request.setup(
            transport=aio_request.AioHttpTransport(session), endpoint=url + "/"
        )
        async with client.request(
            aio_request.get("echo"),
            deadline=aio_request.Deadline.from_timeout(2.0),
            priority=aio_request.Priority.HIGH,
        ) as response:
            assert response.status == 200
            body: dict[str, Any] = await response.json()
            return body


async def test_aio_request_client_to_our_asgi_server() -> None:
    """aio-request's X-Request-Timeout and X-Request-Priority reach a FastAPI handler."""
    app = FastAPI()
    app.add_middleware(DeadlineMiddleware, timeout=30.0, trust_priority=trusted_peers("127.0.0.1"))

    @app.get("/echo")
    async def echo() -> dict[str, Any]:
        return _seen()

    async with serve_uvicorn(app) as url:
        seen = await _call_with_aio_request(url)
    assert 1.5 < seen["remaining"] <= 2.0
    assert seen["priority"] == "high"


async def test_aio_request_client_to_our_aiohttp_server() -> None:
    """aio-request's X-Request-Timeout and X-Request-Priority reach an aiohttp handler."""

    async def echo(request: web.Request) -> web.Response:
        return web.json_response(_seen())

    app = web.Application(
        middlewares=[aiohttp_middleware(timeout=30.0, trust_priority=trusted_peers("127.0.0.1"))]
    )
    app.router.add_get("/echo", echo)
    async with serve_aiohttp(app) as url:
        seen = await _call_with_aio_request(url)
    assert 1.5 < seen["remaining"] <= 2.0
    assert seen["priority"] == "high"


async def test_our_client_to_an_aio_request_protected_server() -> None:
    """Behind aio-request's own middleware the handler's deadline is our remaining budget."""

    async def echo(request: web.Request) -> web.Response:
        context = aio_request.get_context()
        assert context.deadline is not None
        return web.json_response(
            {
                "timeout": context.deadline.timeout,
                "priority": str(context.priority),
            }
        )

    app = web.Application(middlewares=[aio_request.aiohttp_middleware_factory(timeout=30.0)])
    app.router.add_get("/echo", echo)
    async with serve_aiohttp(app) as url, ac.Client(AiohttpTransport(), url) as client:
        response = await client.request(ac.get("echo"), timeout=1.5, priority="low")
    body = response.json()
    assert isinstance(body, dict)
    assert body["timeout"] == pytest.approx(1.5, abs=0.05)
    assert body["timeout"] <= 1.5
    assert body["priority"] == "low"
