"""gzip and deflate decoding in bounded pieces, so a decompression bomb never lands whole."""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from typing import Final, final

from .._errors import ProtocolError

__all__ = ["INFLATED", "PIECE", "Inflater"]

#: The content codings decoded here.
INFLATED: Final = frozenset({"gzip", "x-gzip", "deflate"})
#: Bytes of decoded body made from raw bytes at a time, at most.
PIECE: Final = 64 * 1024


@final
class Inflater:
    """gzip/deflate decoding that never makes more than :data:`PIECE` bytes at once."""

    __slots__ = ("_decoder", "_deflate", "_started")

    def __init__(self, encoding: str) -> None:
        self._deflate = encoding == "deflate"
        # deflate is meant to be zlib-wrapped, but raw deflate is common: tried if zlib fails.
        self._decoder = zlib.decompressobj(zlib.MAX_WBITS if self._deflate else zlib.MAX_WBITS | 16)
        self._started = False

    def feed(self, data: bytes) -> Iterator[bytes]:
        try:
            while data:
                piece = self._decoder.decompress(data, PIECE)
                self._started = True
                data = self._decoder.unconsumed_tail
                if piece:
                    yield piece
        except zlib.error as exc:
            if self._deflate and not self._started:
                self._decoder = zlib.decompressobj(-zlib.MAX_WBITS)
                self._deflate = False
                yield from self.feed(data)
                return
            raise ProtocolError(f"malformed response body: {exc}") from None

    def flush(self) -> bytes:
        try:
            return self._decoder.flush()
        except zlib.error as exc:
            raise ProtocolError(f"malformed response body: {exc}") from None
