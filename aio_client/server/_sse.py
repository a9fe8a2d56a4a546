"""Server-Sent Events for a streamed response: encoding, heartbeats, and stopping on cancellation.

``sse_stream(events, heartbeat=15.0)`` turns the app's events into the bytes of
a ``text/event-stream`` body, for any framework's streamed response. Proxies
and load balancers close a connection that carries nothing for a while (often
60 s), so while the app has nothing to say the stream sends a comment line,
which every client ignores. Waiting for the app's next event and for the
heartbeat's time at once takes a second task: each wait for an event runs in
an asyncio task of its own, which inherits the request's context (its token
and ambient deadline), is cancelled as soon as the request's token fires, and
is cancelled and awaited whenever the stream ends, so nothing outlives it.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterable, AsyncIterator
from typing import Final

from .._cancel import CancelRegistration, current_token
from .._errors import ConfigError
from .._stream import ServerSentEvent
from .._validation import validate_timeout

__all__ = ["encode_event", "sse_stream"]

#: What a heartbeat sends: a comment line, then the blank line that ends it.
HEARTBEAT: Final = b": heartbeat\n\n"
_NEWLINE: Final = re.compile(r"\r\n|\r|\n")
_FORBIDDEN_IN_FIELD: Final = re.compile(r"[\r\n\0]")


def encode_event(event: ServerSentEvent | str) -> bytes:
    """One event as the bytes of a ``text/event-stream`` body (UTF-8, ending with a blank line).

    A ``str`` is the data of a ``message`` event. A :class:`~aio_client.ServerSentEvent`
    sends its ``event`` (unless ``"message"``), its ``id`` (unless empty), its
    ``retry`` (unless ``None``) and its ``data``, one ``data:`` line per line.
    """
    if isinstance(event, str):
        return _data_lines(event)
    if not isinstance(event, ServerSentEvent):
        raise ConfigError(
            f"events must yield str or aio_client.ServerSentEvent; got {type(event).__name__}"
        )
    head = ""
    if event.event != "message":
        head += f"event: {_field('event', event.event)}\n"
    if event.id:
        head += f"id: {_field('id', event.id)}\n"
    if event.retry is not None:
        if isinstance(event.retry, bool) or not isinstance(event.retry, int) or event.retry < 0:
            raise ConfigError(f"an event's retry must be milliseconds >= 0; got {event.retry!r}")
        head += f"retry: {event.retry}\n"
    return head.encode() + _data_lines(event.data)


async def sse_stream(
    events: AsyncIterable[ServerSentEvent | str], *, heartbeat: float | None = 15.0
) -> AsyncIterator[bytes]:
    """The bytes of a ``text/event-stream`` body: ``events``, and a heartbeat while they pause.

    ``heartbeat`` is the seconds without anything sent after which a comment
    line (``: heartbeat``) goes out (``None``: never). Stops when ``events``
    ends, or when the request is cancelled (its client hung up, its deadline
    or ``stream_timeout`` passed, the server shuts down): the wait for the
    next event is cancelled too, so ``events`` stops where it was. Heartbeats
    need asyncio (``heartbeat=None`` works anywhere). With any framework's
    streamed response::

        # Starlette / FastAPI
        return StreamingResponse(sse_stream(ticks()), media_type="text/event-stream")

        # aiohttp
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        async for chunk in sse_stream(ticks()):
            await response.write(chunk)
    """
    every = None if heartbeat is None else validate_timeout(heartbeat, "heartbeat")
    if every == 0:
        raise ConfigError("heartbeat must be > 0 seconds or None")
    if not isinstance(events, AsyncIterable):
        raise ConfigError(f"events must be an async iterable; got {type(events).__name__}")
    source = aiter(events)
    if every is None:
        try:
            async for event in source:
                yield encode_event(event)
        finally:
            await _close(source)
        return
    loop = asyncio._get_running_loop()
    if loop is None:
        raise RuntimeError(
            "sse_stream's heartbeats run on asyncio; on another event loop pass heartbeat=None"
        )
    token = current_token()
    pending: asyncio.Task[ServerSentEvent | str] | None = None
    registration: CancelRegistration | None = None
    try:
        while True:
            if pending is None:
                pending = loop.create_task(_next(source))
                if token is not None:
                    # The request's token fired: stop the source now, even if the
                    # response is not waiting on this stream at this moment.
                    registration = token.on_cancel(pending.cancel)
            done, _ = await asyncio.wait((pending,), timeout=every)
            if not done:
                yield HEARTBEAT
                continue
            finished, pending = pending, None
            if registration is not None:
                registration.remove()
                registration = None
            try:
                event = finished.result()
            except StopAsyncIteration:
                return
            yield encode_event(event)
    finally:
        if registration is not None:
            registration.remove()
        if pending is not None:
            await _reap(pending)
        # Stopped between events (the response stopped taking them, the client
        # left while a send was blocked): the source's own finally runs now,
        # not whenever the garbage collector gets to it.
        await _close(source)


async def _close(source: AsyncIterator[ServerSentEvent | str]) -> None:
    close = getattr(source, "aclose", None)
    if close is not None:
        await close()


async def _next(source: AsyncIterator[ServerSentEvent | str]) -> ServerSentEvent | str:
    return await anext(source)


async def _reap(task: asyncio.Task[ServerSentEvent | str]) -> None:
    # Wait for the cancelled wait to end, even while this task is cancelled too.
    task.cancel()
    cancelled: BaseException | None = None
    while not task.done():
        try:
            await asyncio.wait((task,))
        except asyncio.CancelledError as exc:
            cancelled = exc
    if not task.cancelled():
        task.exception()  # seen: an error raised while cancelled is not logged as lost
    if cancelled is not None:
        raise cancelled


def _data_lines(data: str) -> bytes:
    if not isinstance(data, str):
        raise ConfigError(f"an event's data must be a str; got {type(data).__name__}")
    return "".join(f"data: {line}\n" for line in _NEWLINE.split(data)).encode() + b"\n"


def _field(name: str, value: str) -> str:
    if not isinstance(value, str) or _FORBIDDEN_IN_FIELD.search(value):
        raise ConfigError(f"an event's {name} must be a str without line breaks; got {value!r}")
    return value
