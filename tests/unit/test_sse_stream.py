"""aio_client.server.sse_stream: encoding, heartbeats, stopping with the token (virtual time)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import anyio
import pytest

import aio_client as ac
from aio_client import ServerSentEvent
from aio_client._cancel import CancelReason, CancelToken
from aio_client._stream import _EventParser
from aio_client.server import sse_stream


def parse(body: bytes) -> list[ServerSentEvent]:
    """The events a client parses from ``body`` (the client's own SSE parser)."""
    parser = _EventParser()
    events = []
    for line in body.decode().split("\n"):
        event = parser.feed(line)
        if event is not None:
            events.append(event)
    return events


async def collect(stream: AsyncIterator[bytes]) -> list[bytes]:
    """Every chunk of ``stream``."""
    return [chunk async for chunk in stream]


async def test_events_round_trip_through_the_client_parser() -> None:
    """Strings and ServerSentEvents (names, ids, retry, multi-line data) parse back as sent."""

    async def events() -> AsyncIterator[ServerSentEvent | str]:
        yield "hello"
        yield ServerSentEvent(event="tick", data="line 1\nline 2\r\nline 3", id="7", retry=1500)
        yield ServerSentEvent(event="message", data="", id="", retry=None)

    body = b"".join(await collect(sse_stream(events(), heartbeat=None)))
    assert parse(body) == [
        ServerSentEvent(event="message", data="hello", id="", retry=None),
        ServerSentEvent(event="tick", data="line 1\nline 2\nline 3", id="7", retry=1500),
        ServerSentEvent(event="message", data="", id="7", retry=1500),
    ]


async def test_a_heartbeat_goes_out_while_the_events_pause() -> None:
    """With heartbeat=15, a 40 s pause between two events carries two comment lines."""
    sent_at: list[tuple[float, bytes]] = []

    async def events() -> AsyncIterator[str]:
        yield "first"
        await anyio.sleep(40)
        yield "second"

    started = anyio.current_time()
    async for chunk in sse_stream(events(), heartbeat=15.0):
        sent_at.append((round(anyio.current_time() - started), chunk))
    assert sent_at == [
        (0, b"data: first\n\n"),
        (15, b": heartbeat\n\n"),
        (30, b": heartbeat\n\n"),
        (40, b"data: second\n\n"),
    ]
    assert [e.data for e in parse(b"".join(chunk for _, chunk in sent_at))] == ["first", "second"]


async def test_the_token_firing_stops_the_source_and_leaves_no_task() -> None:
    """A fired request token cancels the wait for the next event; the source's finally runs."""
    token = CancelToken()
    source_stopped = anyio.Event()
    tasks_before = len(asyncio.all_tasks())

    async def events() -> AsyncIterator[str]:
        try:
            yield "first"
            await anyio.sleep(3600)
            yield "never"  # pragma: no cover
        finally:
            source_stopped.set()

    chunks: list[bytes] = []

    async def consume() -> None:
        async for chunk in sse_stream(events(), heartbeat=10.0):
            chunks.append(chunk)

    with token.scope():
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(consume)
            await anyio.sleep(25)
            token.cancel(CancelReason.CLIENT_DISCONNECTED)
    assert source_stopped.is_set()
    assert chunks == [b"data: first\n\n", b": heartbeat\n\n", b": heartbeat\n\n"]
    assert len(asyncio.all_tasks()) == tasks_before


async def test_closing_the_stream_early_cancels_the_pending_wait() -> None:
    """A consumer that stops reading and closes the stream leaves no source running."""
    source_stopped = anyio.Event()

    async def events() -> AsyncIterator[str]:
        try:
            yield "first"
            await anyio.sleep(3600)
        finally:
            source_stopped.set()

    stream = sse_stream(events(), heartbeat=5.0)
    assert await anext(stream) == b"data: first\n\n"
    assert await anext(stream) == b": heartbeat\n\n"
    await stream.aclose()  # type: ignore[attr-defined]
    assert source_stopped.is_set()


async def test_an_error_in_the_source_reaches_the_response() -> None:
    """The source's own exception escapes the stream unchanged."""

    async def events() -> AsyncIterator[str]:
        yield "first"
        raise LookupError("no more rows")

    with pytest.raises(LookupError, match="no more rows"):
        await collect(sse_stream(events(), heartbeat=5.0))


@pytest.mark.parametrize(
    ("heartbeat", "match"),
    [(0, "heartbeat must be > 0"), (-1.0, "heartbeat"), ("15", "heartbeat"), (True, "heartbeat")],
)
async def test_a_bad_heartbeat_is_a_config_error_naming_it(heartbeat: object, match: str) -> None:
    """heartbeat takes seconds > 0 or None."""

    async def events() -> AsyncIterator[str]:
        yield "x"  # pragma: no cover

    with pytest.raises(ac.ConfigError, match=match):
        await collect(sse_stream(events(), heartbeat=heartbeat))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("event", "match"),
    [
        (b"bytes", "events must yield str or aio_client.ServerSentEvent"),
        (ServerSentEvent(event="a\nb", data="", id="", retry=None), "event must be a str without"),
        (ServerSentEvent(event="message", data="", id="1\r", retry=None), "id must be a str"),
        (ServerSentEvent(event="message", data="", id="", retry=-1), "retry must be"),
    ],
)
async def test_an_event_that_cannot_be_sent_is_a_config_error(event: object, match: str) -> None:
    """An event whose fields would break the stream's framing is refused, naming the field."""

    async def events() -> AsyncIterator[object]:
        yield event

    with pytest.raises(ac.ConfigError, match=match):
        await collect(sse_stream(events(), heartbeat=None))  # type: ignore[arg-type]


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_on_trio_events_flow_without_heartbeats_and_heartbeats_say_what_they_need() -> None:
    """heartbeat=None works on trio; a heartbeat there is a clear error, not a crash inside."""

    async def events() -> AsyncIterator[str]:
        yield "a"

    assert await collect(sse_stream(events(), heartbeat=None)) == [b"data: a\n\n"]
    with pytest.raises(RuntimeError, match="heartbeat=None"):
        await collect(sse_stream(events(), heartbeat=1.0))


@pytest.mark.parametrize("heartbeat", [15.0, None])
async def test_a_stream_stopped_between_events_closes_its_source(heartbeat: float | None) -> None:
    """The response stops taking events (its client left while a send was blocked): closing
    the stream closes the source at once, its finally included, not at the next collection."""
    closed: list[bool] = []

    async def source() -> AsyncIterator[str]:
        try:
            while True:
                yield "tick"
        finally:
            closed.append(True)

    stream = sse_stream(source(), heartbeat=heartbeat)
    assert await anext(stream) == b"data: tick\n\n"
    await stream.aclose()  # type: ignore[attr-defined]
    assert closed == [True]
