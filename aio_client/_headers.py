"""An immutable, case-insensitive header collection."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Final, final

from ._errors import InvalidRequestError

__all__ = ["Headers", "HeadersInput"]

#: What callers may pass where headers are expected.
HeadersInput = Mapping[str, str] | Iterable[tuple[str, str]]

_FORBIDDEN: Final = frozenset("\r\n\0")


@final
class Headers(Mapping[str, str]):
    """HTTP headers: names compared case-insensitively, values kept in order.

    Lookups return the first value for a name; :meth:`get_list` returns all of
    them (``Set-Cookie`` and friends). Names are stored lower-cased.
    """

    __slots__ = ("_first", "_items")

    _items: tuple[tuple[str, str], ...]
    _first: dict[str, str]

    def __init__(self, headers: HeadersInput | None = None) -> None:
        items = _normalise(headers) if headers else ()
        self._items = items
        first: dict[str, str] = {}
        for name, value in items:
            first.setdefault(name, value)
        self._first = first

    @classmethod
    def _trusted(cls, items: tuple[tuple[str, str], ...]) -> Headers:
        """Build from already lower-cased, validated items (hot path)."""
        self = cls.__new__(cls)
        self._items = items
        first: dict[str, str] = {}
        for name, value in items:
            first.setdefault(name, value)
        self._first = first
        return self

    def __getitem__(self, name: str) -> str:
        return self._first[name.lower()]

    def get(self, name: str, default: str | None = None) -> str | None:  # type: ignore[override]
        """The first value of ``name``, or ``default``."""
        return self._first.get(name.lower(), default)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._first

    def __iter__(self) -> Iterator[str]:
        return iter(self._first)

    def __len__(self) -> int:
        return len(self._first)

    def get_list(self, name: str) -> list[str]:
        """Every value of ``name``, in the order received."""
        key = name.lower()
        return [value for n, value in self._items if n == key]

    def multi_items(self) -> tuple[tuple[str, str], ...]:
        """Every (name, value) pair, duplicates included, in order."""
        return self._items

    def replace(self, updates: Mapping[str, str]) -> Headers:
        """A copy where each name in ``updates`` has exactly the given value.

        ``updates`` keys must already be lower-case (internal callers only).
        """
        if not self._items:  # the common case on the hot path: no caller headers
            new = Headers.__new__(Headers)
            new._items = tuple(updates.items())
            new._first = dict(updates)
            return new
        kept = tuple(item for item in self._items if item[0] not in updates)
        return Headers._trusted(kept + tuple(updates.items()))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Headers):
            return self._items == other._items
        return super().__eq__(other)

    def __hash__(self) -> int:
        return hash(self._items)

    def __repr__(self) -> str:
        return f"Headers({list(self._items)!r})"


def _normalise(headers: HeadersInput) -> tuple[tuple[str, str], ...]:
    if isinstance(headers, Headers):
        return headers._items
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    out: list[tuple[str, str]] = []
    for name, value in pairs:
        if not isinstance(name, str) or not isinstance(value, str):
            raise InvalidRequestError(
                f"header names and values must be str; got {name!r}: {value!r}"
            )
        if not name or _FORBIDDEN.intersection(name) or ":" in name or " " in name:
            raise InvalidRequestError(f"invalid header name {name!r}")
        if _FORBIDDEN.intersection(value):
            raise InvalidRequestError(f"header {name!r} has a CR, LF or NUL in its value")
        out.append((name.lower(), value))
    return tuple(out)
