"""Request bodies sent as they are produced: an iterable of bytes, or a function making one."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterable, Callable, Iterable
from typing import final

from ._errors import InvalidRequestError

__all__ = ["BodyChunks", "BodyFactory", "OpenBody", "StreamBody", "byte_count"]

#: Bytes produced piece by piece: an async or a sync iterable (a generator, a list...).
BodyChunks = AsyncIterable[bytes] | Iterable[bytes]
#: A function returning fresh :data:`BodyChunks` each time: a body that can be sent again.
BodyFactory = Callable[[], BodyChunks]


@final
class StreamBody:
    """A request body streamed to the server (``content=`` an iterable or a function).

    An iterable can be read once, so a request carrying one gets one attempt:
    the call's strategy neither retries nor hedges it. A function returning a
    fresh iterable each time (``content=lambda: chunks()``) can be sent as
    often as the strategy wants. A sync iterable is read on the event loop:
    keep it quick (no blocking file or network reads).
    """

    __slots__ = ("_factory", "_length", "_once", "_used")

    def __init__(self, source: BodyChunks | BodyFactory) -> None:
        if isinstance(source, (str, bytes, bytearray, memoryview)):
            raise InvalidRequestError("a StreamBody streams an iterable of bytes; pass bytes as is")
        if isinstance(source, (AsyncIterable, Iterable)):
            self._factory: BodyFactory | None = None
            self._once: BodyChunks | None = source
        elif callable(source):
            self._factory = source
            self._once = None
        else:
            raise InvalidRequestError(
                "content must be bytes, str, an iterable of bytes (sync or async) or a "
                f"function returning one; got {type(source).__name__}"
            )
        self._used = False
        # The bytes the body must add up to: the request's Content-Length, set
        # when the request is built (see _models._check_framing), or None.
        self._length: int | None = None

    @property
    def repeatable(self) -> bool:
        """Whether the body can be sent more than once (it comes from a function)."""
        return self._factory is not None

    def open(self) -> OpenBody:
        """The body's bytes, from the start: a fresh iterable each time for a function's,
        once for an iterable's (:class:`~aio_client.InvalidRequestError` after that)."""
        if self._factory is not None:
            source = self._factory()
            if isinstance(source, (str, bytes, bytearray, memoryview)) or not isinstance(
                source, (AsyncIterable, Iterable)
            ):
                raise InvalidRequestError(
                    "the content= function must return an iterable of bytes (sync or async); "
                    f"got {type(source).__name__}"
                )
            return OpenBody(source, self._length)
        if self._used or self._once is None:
            raise InvalidRequestError(
                "the request body is an iterable, which can be sent once and already was; "
                "pass a function returning a fresh iterable (content=lambda: ...) to send it again"
            )
        self._used = True
        return OpenBody(self._once, self._length)

    def __repr__(self) -> str:
        return f"<StreamBody {'repeatable' if self._factory is not None else 'once'}>"


@final
class OpenBody:
    """One sending of a :class:`StreamBody`: its chunks, checked, and why they stopped.

    A transport that sends the body from a task of its own (aiohttp) reports
    a failure of the body as a broken connection; :attr:`failure` keeps the
    body's own exception (the caller's, or an
    :class:`~aio_client.InvalidRequestError` for a chunk that is not bytes or a
    body that does not add up to its ``Content-Length``) so the transport can
    raise that instead.
    """

    __slots__ = ("_chunks", "_left", "failure")

    def __init__(self, source: BodyChunks, length: int | None) -> None:
        self._chunks = _chunks(source)
        self._left = length
        #: The exception the body raised, if it did.
        self.failure: Exception | None = None

    def __aiter__(self) -> OpenBody:
        return self

    async def __anext__(self) -> bytes:
        try:
            chunk = await self._chunks.__anext__()
        except StopAsyncIteration:
            if self._left:
                self._fail(f"the body ended {byte_count(self._left)} short of its Content-Length")
            raise
        except Exception as exc:
            self.failure = exc
            raise
        if self._left is not None:
            self._left -= len(chunk)
            if self._left < 0:
                self._fail(f"the body is {byte_count(-self._left)} longer than its Content-Length")
        return chunk

    def _fail(self, message: str) -> None:
        exc = self.failure = InvalidRequestError(message)
        raise exc


def byte_count(count: int) -> str:
    """``1 byte``, ``5 bytes``."""
    return f"{count} byte" if count == 1 else f"{count} bytes"


async def _chunks(source: BodyChunks) -> AsyncGenerator[bytes, None]:
    if isinstance(source, AsyncIterable):
        async for chunk in source:
            yield _checked(chunk)
    else:
        for chunk in source:
            yield _checked(chunk)


def _checked(chunk: object) -> bytes:
    if isinstance(chunk, bytes):
        return chunk
    if isinstance(chunk, (bytearray, memoryview)):
        return bytes(chunk)
    raise InvalidRequestError(f"a body iterable must yield bytes; got {type(chunk).__name__}")
