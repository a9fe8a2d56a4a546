"""An immutable, case-insensitive header collection."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import final

from ._errors import InvalidRequestError
from ._redaction import REDACTED, is_sensitive
from ._validation import header_name, header_value

__all__ = ["Headers", "HeadersInput"]

#: What callers may pass where headers are expected.
HeadersInput = Mapping[str, str] | Iterable[tuple[str, str]]


@final
class Headers(Mapping[str, str]):
    """HTTP headers: names compared case-insensitively, values kept in order.

    Lookups return the first value for a name; :meth:`get_list` returns all of
    them (``Set-Cookie`` and friends). Names are stored lower-cased.
    """

    # Built lazily, as most headers on the hot path are never looked at: a
    # transport only iterates the request's, and most callers never read a
    # response's. ``_source`` holds received pairs not yet lower-cased,
    # ``_items`` the lower-cased pairs, ``_first`` the lookup index.
    __slots__ = ("_first", "_items", "_source")

    _items: tuple[tuple[str, str], ...] | None
    _first: dict[str, str] | None
    _source: Iterable[tuple[str, str]] | None

    def __init__(self, headers: HeadersInput | None = None) -> None:
        self._items = _normalise(headers) if headers else ()
        self._first = None
        self._source = None

    @classmethod
    def _trusted(cls, items: tuple[tuple[str, str], ...]) -> Headers:
        """Build from already lower-cased, validated items (hot path)."""
        self = _new(cls)
        self._items = items
        self._first = None
        self._source = None
        return self

    @classmethod
    def _received(cls, pairs: Iterable[tuple[str, str]]) -> Headers:
        """Wrap pairs a backend parsed off the wire; lower-cased on first use (hot path).

        ``pairs`` is read once, on first use, so it must stay valid until then
        (the items view of the backend's immutable header mapping).
        """
        self = _new(cls)
        self._items = None
        self._first = None
        self._source = pairs
        return self

    def _pairs(self) -> tuple[tuple[str, str], ...]:
        items = self._items
        if items is None:
            source = self._source
            assert source is not None
            items = self._items = tuple((name.lower(), value) for name, value in source)
            self._source = None
        return items

    def _index(self) -> dict[str, str]:
        first = self._first
        if first is None:
            first = {}
            for name, value in self._pairs():
                first.setdefault(name, value)
            self._first = first
        return first

    def __getitem__(self, name: str) -> str:
        return self._index()[name.lower()]

    def get(self, name: str, default: str | None = None) -> str | None:  # type: ignore[override]
        """The first value of ``name``, or ``default``."""
        return self._index().get(name.lower(), default)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._index()

    def __iter__(self) -> Iterator[str]:
        return iter(self._index())

    def __len__(self) -> int:
        return len(self._index())

    def get_list(self, name: str) -> list[str]:
        """Every value of ``name``, in the order received."""
        key = name.lower()
        return [value for n, value in self._pairs() if n == key]

    def multi_items(self) -> tuple[tuple[str, str], ...]:
        """Every (name, value) pair, duplicates included, in order."""
        return self._pairs()

    def replace(self, updates: HeadersInput) -> Headers:
        """A copy where each name in ``updates`` has exactly the given value.

        Names are case-insensitive and checked like the constructor's; when
        ``updates`` names a header twice, the last value wins.
        """
        unique = dict(_normalise(updates)) if updates else {}
        return self._with(tuple(unique.items()))

    def _with(self, pairs: tuple[tuple[str, str], ...]) -> Headers:
        """A copy where each name in ``pairs`` (lower-case, unique) has exactly that value."""
        items = self._pairs()
        if items:
            names = {name for name, _ in pairs}
            pairs = tuple(item for item in items if item[0] not in names) + pairs
        return Headers._trusted(pairs)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Headers):
            return self._pairs() == other._pairs()
        return super().__eq__(other)

    def __hash__(self) -> int:
        return hash(self._pairs())

    def __repr__(self) -> str:
        shown = [(name, REDACTED if is_sensitive(name) else value) for name, value in self._pairs()]
        return f"Headers({shown!r})"


_new = object.__new__


def _normalise(headers: HeadersInput) -> tuple[tuple[str, str], ...]:
    if isinstance(headers, Headers):
        return headers._pairs()
    if isinstance(headers, Mapping):
        pairs: Iterable[object] = headers.items()
    elif isinstance(headers, Iterable) and not isinstance(headers, (str, bytes)):
        pairs = headers
    else:
        raise InvalidRequestError(
            "headers must be a mapping of names to values or (name, value) pairs; "
            f"got {type(headers).__name__}"
        )
    out: list[tuple[str, str]] = []
    for pair in pairs:
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise InvalidRequestError(
                f"headers pairs must be (name, value) tuples; got a {type(pair).__name__}"
            )
        name = header_name(pair[0])
        out.append((name.lower(), header_value(name, pair[1], secret=is_sensitive(name))))
    return tuple(out)
