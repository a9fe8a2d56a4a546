"""Streamed responses: a body read as it arrives, and Server-Sent Events."""

from __future__ import annotations

import codecs
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, final

import anyio

from ._errors import AioClientError, DeadlineExceededError
from ._size_limit import BodyCounter, too_large

if TYPE_CHECKING:
    from ._headers import Headers
    from ._models import Response
    from .transports._base import BodyStream

__all__ = ["OpenedBodies", "ServerSentEvent", "StreamedResponse"]

_BOM: Final = "\ufeff"
_NEWLINE: Final = re.compile(r"\r\n|\r|\n")


@final
@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    """One event of a ``text/event-stream`` body (the HTML Living Standard's parsing)."""

    #: The event type (``event:`` field); ``"message"`` when the event gave none.
    event: str
    #: The ``data:`` lines of the event, joined with ``"\\n"``.
    data: str
    #: The last event ID seen so far in the stream (``id:`` fields carry over).
    id: str
    #: The last reconnection time (milliseconds) the stream gave (``retry:``), if any.
    retry: int | None


@final
class StreamedResponse:
    """A response whose body is read as it arrives, inside ``client.stream(...)``.

    Read the body once, with one of :meth:`aiter_bytes`, :meth:`aiter_text`,
    :meth:`aiter_lines`, :meth:`aiter_sse` or :meth:`aread`. Each read is
    bounded by the call's deadline and by ``idle_timeout`` (seconds without a
    byte), both raising :class:`~aio_client.DeadlineExceededError`; with
    ``max_size``, a body passing it raises
    :class:`~aio_client.ResponseTooLargeError`. The connection is closed when
    the ``async with`` block ends, whatever was read.
    """

    __slots__ = (
        "_body",
        "_closed",
        "_counter",
        "_deadline",
        "_error",
        "_head",
        "_idle_timeout",
        "_now",
    )

    def __init__(
        self,
        head: Response,
        body: BodyStream,
        *,
        deadline: float,
        idle_timeout: float | None,
        max_size: int | None,
        now: Callable[[], float],
    ) -> None:
        self._head = head
        self._body = body
        self._deadline = deadline
        self._idle_timeout = idle_timeout
        self._counter = BodyCounter(max_size) if max_size is not None else None
        self._now = now
        self._closed = False
        #: The error that ended reading, for the call's observers.
        self._error: BaseException | None = None

    @property
    def status(self) -> int:
        """HTTP status code."""
        return self._head.status

    @property
    def headers(self) -> Headers:
        """Response headers."""
        return self._head.headers

    @property
    def url(self) -> str:
        """Absolute URL the response came from."""
        return self._head.url

    @property
    def attempt(self) -> int:
        """Number (1-based) of the attempt whose response head won."""
        return self._head.attempt

    @property
    def elapsed(self) -> float:
        """Seconds from the start of that attempt to the response head."""
        return self._head.elapsed

    @property
    def is_success(self) -> bool:
        """Whether the status is 2xx."""
        return self._head.is_success

    def __repr__(self) -> str:
        return f"<StreamedResponse {self.status} {self.url!r}>"

    async def _receive(self) -> bytes:
        """The next piece of the body, bounded by the deadline and the idle timeout."""
        if self._closed:
            raise RuntimeError("the stream is closed: read it inside its `async with` block")
        now = self._now()
        at = self._deadline
        idle = self._idle_timeout
        if idle is not None and now + idle < at:
            at = now + idle
        else:
            idle = None  # the deadline comes first
        try:
            with anyio.CancelScope(deadline=at) as scope:
                chunk = await self._body.receive()
            if scope.cancelled_caught:
                reason = (
                    f"no data for {idle} s (idle_timeout)"
                    if idle is not None
                    else "the call's deadline passed"
                )
                raise DeadlineExceededError(f"stream stopped while reading: {reason}")
            if self._counter is not None:
                self._counter.add(len(chunk))
        except AioClientError as exc:
            self._error = exc
            await self.aclose()
            raise
        return chunk

    async def aiter_bytes(self, chunk_size: int | None = None) -> AsyncIterator[bytes]:
        """The body's bytes as they arrive; in pieces of ``chunk_size`` bytes when given
        (the last one may be shorter)."""
        if chunk_size is not None and (
            isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1
        ):
            raise ValueError(f"chunk_size must be an int >= 1 or None; got {chunk_size!r}")
        if chunk_size is None:
            while chunk := await self._receive():
                yield chunk
            return
        pending = bytearray()
        while chunk := await self._receive():
            pending += chunk
            while len(pending) >= chunk_size:
                yield bytes(pending[:chunk_size])
                del pending[:chunk_size]
        if pending:
            yield bytes(pending)

    async def aiter_text(self) -> AsyncIterator[str]:
        """The body decoded with the ``Content-Type`` charset (UTF-8 by default)."""
        async for text in self._text(self._head._charset()):
            yield text

    async def _text(self, charset: str) -> AsyncIterator[str]:
        decoder = codecs.getincrementaldecoder(charset)(errors="replace")
        while chunk := await self._receive():
            text = decoder.decode(chunk)
            if text:
                yield text
        tail = decoder.decode(b"", final=True)
        if tail:
            yield tail

    async def aiter_lines(self) -> AsyncIterator[str]:
        """The body's text line by line, without line endings (LF, CRLF or CR)."""
        async for line in _lines(self._text(self._head._charset())):
            yield line

    async def aiter_sse(self) -> AsyncIterator[ServerSentEvent]:
        """The body parsed as Server-Sent Events (UTF-8), each as soon as it is complete."""
        parser = _EventParser()
        first = True
        async for line in _lines(self._text("utf-8")):
            if first:
                first = False
                line = line.removeprefix(_BOM)
            event = parser.feed(line)
            if event is not None:
                yield event

    async def aread(self) -> bytes:
        """The rest of the body, whole."""
        chunks = [chunk async for chunk in self.aiter_bytes()]
        return b"".join(chunks)

    async def aclose(self) -> None:
        """Close the connection (or give it back when the body was read whole)."""
        if not self._closed:
            self._closed = True
            with anyio.CancelScope(shield=True):
                await self._body.aclose()

    def _check_announced_size(self) -> None:
        # Refused before reading, as for buffered responses.
        counter = self._counter
        if counter is None:
            return
        length = self._head.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > counter.limit:
            raise too_large(counter.limit, announced=int(length))


@final
class OpenedBodies:
    """The bodies a streamed call's attempts opened, until the call picks one.

    Each attempt that got a response head leaves its body here; the call
    keeps the winner's and closes every other one (a retried 503, a hedge
    that lost), so no connection outlives the race.
    """

    __slots__ = ("_bodies",)

    def __init__(self) -> None:
        self._bodies: list[tuple[int, BodyStream]] = []

    def add(self, attempt: int, body: BodyStream) -> None:
        """Keep the body attempt ``attempt`` opened."""
        self._bodies.append((attempt, body))

    async def keep(self, attempt: int | None) -> BodyStream | None:
        """Close every body but attempt ``attempt``'s last one, and return that one."""
        kept: BodyStream | None = None
        bodies, self._bodies = self._bodies, []
        for number, body in reversed(bodies):
            if kept is None and number == attempt:
                kept = body
                continue
            with anyio.CancelScope(shield=True):
                await body.aclose()
        return kept


async def _lines(texts: AsyncIterator[str]) -> AsyncIterator[str]:
    """Split text into lines at LF, CRLF or CR, whatever the chunk boundaries.

    Each text is scanned once and a long line is kept in pieces, joined once
    when it ends: linear in the body, however long its lines.
    """
    pieces: list[str] = []  # the line so far (no line break in it)
    after_cr = False  # the last text ended with CR: an LF opening the next one is its pair
    async for text in texts:
        if after_cr:
            after_cr = False
            if text.startswith("\n"):
                text = text[1:]
        start = 0
        for match in _NEWLINE.finditer(text):
            pieces.append(text[start : match.start()])
            yield "".join(pieces)
            pieces.clear()
            start = match.end()
            after_cr = start == len(text) and match.group() == "\r"
        if start < len(text):
            pieces.append(text[start:])
    line = "".join(pieces)
    if line:
        yield line


@final
class _EventParser:
    """The event-stream interpretation of the HTML Living Standard, line by line."""

    __slots__ = ("_data", "_event", "_has_data", "_id", "_retry")

    def __init__(self) -> None:
        self._data: list[str] = []
        self._has_data = False
        self._event = ""
        self._id = ""
        self._retry: int | None = None

    def feed(self, line: str) -> ServerSentEvent | None:
        """Take one line; return the event a blank line completes."""
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None  # a comment
        field, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if field == "event":
            self._event = value
        elif field == "data":
            self._data.append(value)
            self._has_data = True
        elif field == "id":
            if "\0" not in value:
                self._id = value
        elif field == "retry" and value and value.isascii() and value.isdigit():
            self._retry = int(value)
        return None  # other fields are ignored

    def _dispatch(self) -> ServerSentEvent | None:
        has_data, data, event = self._has_data, self._data, self._event
        self._data = []
        self._has_data = False
        self._event = ""
        if not has_data:
            return None  # nothing to dispatch: the event type is reset all the same
        return ServerSentEvent(event or "message", "\n".join(data), self._id, self._retry)
