"""The response size limit and HEAD over the in-memory transport."""

from __future__ import annotations

from typing import Any

import pytest

import aio_client as ac
from aio_client.transports import MemoryTransport

from .helpers import client_for

MiB = 1024 * 1024


def _asgi_app(body: bytes, *, chunks: int = 1, announce: bool = True) -> Any:
    """An ASGI app answering ``chunks`` copies of ``body``, with Content-Length if asked."""
    sent: list[int] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        headers = [(b"content-length", str(len(body) * chunks).encode())] if announce else []
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for number in range(chunks):
            sent.append(number)
            more = number < chunks - 1
            await send({"type": "http.response.body", "body": body, "more_body": more})

    app.sent = sent  # type: ignore[attr-defined]
    return app


async def test_handler_response_over_the_limit_is_refused() -> None:
    """A handler's response larger than max_response_size raises ResponseTooLargeError, once."""
    calls: list[ac.Request] = []

    async def handler(request: ac.Request) -> ac.Response:
        calls.append(request)
        return ac.Response(200, content=b"x" * 11)

    async with client_for(handler, max_response_size=10) as client:
        with pytest.raises(ac.ResponseTooLargeError) as caught:
            await client.get("a")
        assert caught.value.limit == 10
        assert caught.value.may_have_reached_server is True
        assert isinstance(caught.value, ac.AioClientError)
        assert len(calls) == 1  # final: not retried
        assert (await client.get("a", max_response_size=11)).content == b"x" * 11
        assert (await client.get("a", max_response_size=None)).content == b"x" * 11


async def test_asgi_content_length_over_the_limit_is_refused_before_the_body() -> None:
    """An ASGI app announcing more than the limit is stopped at its response head."""
    app = _asgi_app(b"x" * 100, chunks=5)
    async with ac.Client(MemoryTransport(app), "http://svc", max_response_size=99) as client:
        with pytest.raises(ac.ResponseTooLargeError, match="Content-Length 500"):
            await client.get("a")
    assert app.sent == []


async def test_asgi_body_is_counted_while_it_is_sent() -> None:
    """Without Content-Length, the app is stopped at the chunk that passes the limit."""
    app = _asgi_app(b"x" * 100, chunks=50, announce=False)
    async with ac.Client(MemoryTransport(app), "http://svc", max_response_size=250) as client:
        with pytest.raises(ac.ResponseTooLargeError, match="250 bytes"):
            await client.get("a")
    assert app.sent == [0, 1, 2]


async def test_asgi_body_within_the_limit_arrives() -> None:
    """A body exactly at the limit arrives whole."""
    app = _asgi_app(b"x" * 100, chunks=3, announce=False)
    async with ac.Client(MemoryTransport(app), "http://svc", max_response_size=300) as client:
        assert (await client.get("a")).content == b"x" * 300


async def test_head_over_asgi_has_no_body() -> None:
    """An ASGI app that writes a body for HEAD: the caller gets none, as over the wire."""
    app = _asgi_app(b"body of the GET", announce=True)
    async with ac.Client(MemoryTransport(app), "http://svc") as client:
        response = await client.head("a")
        assert response.content == b""
        assert response.headers["content-length"] == "15"
        assert (await client.get("a")).content == b"body of the GET"


async def test_transport_on_its_own_applies_the_default_limit() -> None:
    """Outside a client, a transport reads at most the default 64 MiB."""

    async def handler(request: ac.Request) -> ac.Response:
        return ac.Response(200, content=bytes(64 * MiB + 1))

    with pytest.raises(ac.ResponseTooLargeError) as caught:
        await MemoryTransport(handler).send(ac.Request("GET", "http://svc/a"))
    assert caught.value.limit == 64 * MiB


@pytest.mark.parametrize("value", [-1, 1.5, "10", True])
async def test_bad_limits_are_rejected_by_name(value: object) -> None:
    """max_response_size must be an int >= 0 or None, on the client and per call."""
    with pytest.raises(ac.ConfigError, match="max_response_size"):
        client_for(lambda request: None, max_response_size=value)  # type: ignore[arg-type, return-value]
    async with client_for(lambda request: None) as client:  # type: ignore[arg-type, return-value]
        with pytest.raises(ac.ConfigError, match="max_response_size"):
            await client.get("a", max_response_size=value)  # type: ignore[arg-type]
