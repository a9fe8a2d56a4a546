"""A session or client closed under a transport is a typed error, never a raw RuntimeError."""

from __future__ import annotations

import aiohttp
import httpx
import pytest

import aio_client as ac
from aio_client.transports import AiohttpTransport, HttpxTransport, Transport

from .servers import app_server


async def _closed_transport(kind: str) -> Transport:
    if kind == "aiohttp":
        session = aiohttp.ClientSession()
        await session.close()
        return AiohttpTransport(session)
    client = httpx.AsyncClient()
    await client.aclose()
    return HttpxTransport(client)


@pytest.mark.parametrize("kind", ["aiohttp", "httpx"])
async def test_a_closed_session_is_a_connect_error_that_sent_nothing(kind: str) -> None:
    """The caller closed the session it lent (as a service shutting down does while a
    handler still calls out): ConnectError, may_have_reached_server False."""
    async with app_server() as server:
        client = ac.Client(
            await _closed_transport(kind), server.url, strategy=ac.single_attempt_strategy()
        )
        with pytest.raises(ac.ConnectError, match="closed") as info:
            await client.get("status/200")
        await client.aclose()
    assert info.value.may_have_reached_server is False
