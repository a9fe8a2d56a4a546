"""Request bodies sent as they are produced: an iterable of bytes, or a function making one."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from typing import final

from ._errors import InvalidRequestError

__all__ = ["BodyChunks", "BodyFactory", "StreamBody"]

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

    __slots__ = ("_factory", "_once", "_used")

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

    @property
    def repeatable(self) -> bool:
        """Whether the body can be sent more than once (it comes from a function)."""
        return self._factory is not None

    def open(self) -> AsyncIterator[bytes]:
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
            return _chunks(source)
        if self._used or self._once is None:
            raise InvalidRequestError(
                "the request body is an iterable, which can be sent once and already was; "
                "pass a function returning a fresh iterable (content=lambda: ...) to send it again"
            )
        self._used = True
        return _chunks(self._once)

    def __repr__(self) -> str:
        return f"<StreamBody {'repeatable' if self._factory is not None else 'once'}>"


async def _chunks(source: BodyChunks) -> AsyncIterator[bytes]:
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
