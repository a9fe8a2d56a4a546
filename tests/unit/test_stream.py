"""StreamedResponse's readers and the Server-Sent Events parser, and client.stream() in memory."""

from __future__ import annotations

import asyncio
import itertools
import re
import time
from collections.abc import AsyncIterator, Sequence

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

import aio_client as ac
from aio_client._stream import _lines
from aio_client.metrics import CallFinished, CallStarted, CallWatcher, Observer
from aio_client.transports import MemoryTransport

from .helpers import client_for


class Pieces:
    """A body that arrives in the given pieces (a BodyStream), recording its closing."""

    def __init__(self, pieces: Sequence[bytes]) -> None:
        self.pieces = list(pieces)
        self.closed = False

    async def receive(self) -> bytes:
        await anyio.lowlevel.checkpoint()
        return self.pieces.pop(0) if self.pieces else b""

    async def aclose(self) -> None:
        self.closed = True


def _streamed(
    pieces: Sequence[bytes],
    *,
    content_type: str = "text/plain",
    max_size: int | None = None,
) -> tuple[ac.StreamedResponse, Pieces]:
    body = Pieces(pieces)
    head = ac.Response(200, ac.Headers({"content-type": content_type}), url="http://svc/a")
    response = ac.StreamedResponse(
        head,
        body,
        deadline=anyio.current_time() + 10.0,
        idle_timeout=None,
        max_size=max_size,
        now=anyio.current_time,
    )
    return response, body


async def test_sse_parser_follows_the_standard_across_piece_boundaries() -> None:
    """Events split anywhere (even inside CRLF) parse the same: BOM, comments, fields,
    multi-line data, id carried over, retry digits only, unknown fields, no-data blocks."""
    stream = (
        "\ufeffevent: first\r\ndata: a\r\ndata:b\r\nid: 7\r\n\r\n"
        ": comment\n"
        "retry: soon\nretry: 250\nunknown: x\ndata\n\n"
        "event: empty\n\n"
        "id: 8\0\ndata: c\rdata: d\r\r"
        "data: never dispatched"
    ).encode()
    expected = [
        ac.ServerSentEvent("first", "a\nb", "7", None),
        ac.ServerSentEvent("message", "", "7", 250),
        ac.ServerSentEvent("message", "c\nd", "7", 250),
    ]
    for size in (1, 2, 3, 7, len(stream)):
        pieces = [stream[i : i + size] for i in range(0, len(stream), size)]
        response, _ = _streamed(pieces, content_type="text/event-stream")
        assert [event async for event in response.aiter_sse()] == expected, size


async def test_lines_split_at_lf_crlf_and_cr_only() -> None:
    """aiter_lines() splits at LF, CRLF and CR (not at other Unicode breaks), across pieces."""
    response, _ = _streamed([b"one\r", b"\ntwo\x0bstill two\rthree\n", b"\nfour"])
    assert [line async for line in response.aiter_lines()] == [
        "one",
        "two\x0bstill two",
        "three",
        "",
        "four",
    ]


async def test_text_decodes_characters_split_between_pieces() -> None:
    """aiter_text() decodes with the declared charset, whatever the piece boundaries."""
    data = "héllo ✓".encode()
    response, _ = _streamed([data[:2], data[2:9], data[9:]])
    assert "".join([text async for text in response.aiter_text()]) == "héllo ✓"
    latin, _ = _streamed(["é".encode("latin-1")], content_type="text/plain; charset=latin-1")
    assert [text async for text in latin.aiter_text()] == ["é"]


async def test_bytes_in_fixed_chunks() -> None:
    """aiter_bytes(chunk_size) hands out exactly that many bytes, the rest at the end."""
    response, _ = _streamed([b"abcde", b"fg", b"hijklmn"])
    assert [chunk async for chunk in response.aiter_bytes(4)] == [b"abcd", b"efgh", b"ijkl", b"mn"]
    with pytest.raises(ValueError, match="chunk_size"):
        async for _ in response.aiter_bytes(0):
            pass  # pragma: no cover


async def test_max_size_counts_while_reading_and_closes() -> None:
    """A stream passing max_size raises ResponseTooLargeError and closes its body."""
    response, body = _streamed([b"x" * 6, b"x" * 6], max_size=10)
    with pytest.raises(ac.ResponseTooLargeError):
        await response.aread()
    assert body.closed


async def test_stream_over_memory_and_observers_see_the_close() -> None:
    """client.stream() over MemoryTransport; CallFinished comes when the block ends."""
    finished: list[CallFinished] = []

    class Watcher(CallWatcher):
        def call_finished(self, event: CallFinished, /) -> None:
            finished.append(event)

    class Watching(Observer):
        def call_started(self, event: CallStarted, /) -> CallWatcher | None:
            return Watcher()

    async def handler(request: ac.Request) -> ac.Response:
        return ac.Response(200, content=b"streamed body")

    async with ac.Client(MemoryTransport(handler), "http://svc", observers=[Watching()]) as client:
        async with client.stream(ac.get("a")) as response:
            assert response.status == 200
            assert finished == []
            await anyio.sleep(0.05)
            assert await response.aread() == b"streamed body"
        assert len(finished) == 1
        assert finished[0].status == 200
        assert finished[0].duration >= 0.05
        assert finished[0].error is None


async def test_stream_options_are_checked() -> None:
    """Bad max_size or idle_timeout raise ConfigError naming them."""
    async with client_for(lambda request: None) as client:  # type: ignore[arg-type, return-value]
        with pytest.raises(ac.ConfigError, match="max_size"):
            client.stream(ac.get("a"), max_size=-1)
        with pytest.raises(ac.ConfigError, match="idle_timeout"):
            client.stream(ac.get("a"), idle_timeout=0)


async def test_a_transport_without_open_cannot_stream() -> None:
    """A transport with send() only: client.stream() raises ConfigError saying why."""

    class SendOnly:
        async def send(self, request: ac.Request, /) -> ac.Response:
            return ac.Response(200)  # pragma: no cover

        async def aclose(self) -> None:
            return None

    async with ac.Client(SendOnly(), "http://svc") as client:
        with pytest.raises(ac.ConfigError, match="cannot stream"):
            async with client.stream(ac.get("a")):
                pass  # pragma: no cover


@given(
    text=st.text(alphabet="ab\r\n", max_size=80),
    cuts=st.lists(st.integers(min_value=0, max_value=80), max_size=10),
)
def test_lines_do_not_depend_on_where_the_pieces_break(text: str, cuts: list[int]) -> None:
    """However the body is cut into pieces, the lines are those of the whole text."""
    bounds = sorted({0, len(text), *(cut for cut in cuts if cut < len(text))})
    pieces = [text[a:b] for a, b in itertools.pairwise(bounds)]

    async def texts() -> AsyncIterator[str]:
        for piece in pieces:
            yield piece

    async def collect() -> list[str]:
        return [line async for line in _lines(texts())]

    expected = re.split(r"\r\n|\r|\n", text)
    if expected and not expected[-1]:
        expected.pop()
    assert asyncio.run(collect()) == expected


async def test_a_long_line_is_read_in_linear_time() -> None:
    """One 8 MiB line in 8 KiB pieces: the pieces are kept, not re-joined and re-scanned
    on each one (that took over a second, stalling the event loop)."""
    piece = "x" * 8192

    async def texts() -> AsyncIterator[str]:
        for _ in range(1024):
            yield piece

    started = time.perf_counter()
    lines = [line async for line in _lines(texts())]
    assert [len(line) for line in lines] == [8 * 1024 * 1024]
    assert time.perf_counter() - started < 0.5
