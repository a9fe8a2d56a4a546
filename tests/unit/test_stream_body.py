"""Streamed request bodies: iterables sent once, functions sent as often as needed."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

import aio_client as ac
from aio_client.transports import MemoryTransport

from .helpers import Script, client_for

RETRIES = ac.sequential_strategy(attempts=3, delays=ac.constant_delays(0.0))


async def _pieces() -> AsyncIterator[bytes]:
    for piece in (b"one ", b"two ", b"three"):
        yield piece


def _sync_pieces() -> Iterator[bytes]:
    yield b"sync "
    yield b"body"


async def test_async_and_sync_iterables_arrive_whole_at_a_handler() -> None:
    """A handler gets a streamed body joined; sync iterables work too."""
    script = Script([ac.Response(200)])
    async with client_for(script) as client:
        await client.post("a", content=_pieces())
        await client.post("a", content=_sync_pieces())
        await client.post("a", content=[b"a", b"b"])
    assert [request.content for request in script.requests] == [
        b"one two three",
        b"sync body",
        b"ab",
    ]


async def test_asgi_app_receives_the_body_piece_by_piece() -> None:
    """An ASGI app receives each piece as its own http.request message."""
    received: list[tuple[bytes, bool]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            received.append((message["body"], message["more_body"]))
            if not message["more_body"]:
                break
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async with ac.Client(MemoryTransport(app), "http://svc") as client:  # type: ignore[arg-type]
        assert (await client.put("a", content=_pieces())).status == 204
    assert received == [(b"one ", True), (b"two ", True), (b"three", True), (b"", False)]


async def test_an_iterable_body_is_sent_once_and_the_error_says_why() -> None:
    """A retryable failure with an iterable body: one attempt, and a note on the error."""
    script = Script([ac.NetworkError("reset"), ac.Response(200)])
    async with client_for(script, strategy=RETRIES) as client:
        with pytest.raises(ac.NetworkError) as caught:
            await client.put("a", content=_pieces())
    assert len(script.requests) == 1
    assert len(caught.value.attempts) == 1
    assert any("can be sent once" in note for note in caught.value.__notes__)


async def test_a_body_function_is_retried_with_a_fresh_body() -> None:
    """content= a function: retried, each attempt sending the whole body again."""
    script = Script([ac.NetworkError("reset"), ac.Response(200)])
    async with client_for(script, strategy=RETRIES) as client:
        response = await client.put("a", content=_pieces)
    assert response.attempt == 2
    assert [request.content for request in script.requests] == [b"one two three"] * 2


async def test_bad_bodies_are_refused_clearly() -> None:
    """A body iterable yielding text, or a function returning bytes, is an InvalidRequestError."""
    script = Script([ac.Response(200)])
    async with client_for(script, strategy=ac.single_attempt_strategy()) as client:
        with pytest.raises(ac.InvalidRequestError, match="must yield bytes"):
            await client.post("a", content=["text"])  # type: ignore[list-item]
        with pytest.raises(ac.InvalidRequestError, match="must return an iterable"):
            await client.post("a", content=lambda: b"bytes")  # type: ignore[arg-type]
    with pytest.raises(ac.InvalidRequestError, match="content must be"):
        ac.post("a", content=42)  # type: ignore[arg-type]
    body = ac.StreamBody([b"x"])
    assert not body.repeatable
    assert repr(body) == "<StreamBody once>"
    [chunk async for chunk in body.open()]
    with pytest.raises(ac.InvalidRequestError, match="already was"):
        body.open()
