"""Several server observers as one: each told in order, one raising never stops the next."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Final, final

from .._errors import ConfigError
from .._server_events import Admission, ServerOutcome

__all__ = ["combine_observers", "notify"]

_log: Final = logging.getLogger("aio_client.server")


def notify(observer: Callable[[ServerOutcome], object], outcome: ServerOutcome) -> None:
    """Tell ``observer`` about ``outcome``; an exception it raises is logged, never raised."""
    try:
        observer(outcome)
    except Exception:
        _log.exception("the server observer raised; the response is unaffected")


def combine_observers(
    observer: Callable[[ServerOutcome], object]
    | Sequence[Callable[[ServerOutcome], object]]
    | None,
) -> Callable[[ServerOutcome], object] | None:
    """The ``observer`` option as one callable (``None``: no observer); checks each one."""
    if observer is None or callable(observer):
        return observer
    if isinstance(observer, (str, bytes)) or not isinstance(observer, Sequence):
        raise ConfigError(f"observer must be callable or a sequence of callables; got {observer!r}")
    for each in observer:
        if not callable(each):
            raise ConfigError(f"observer must be callable or a sequence of callables; got {each!r}")
        started = getattr(each, "request_started", None)
        if started is not None and not callable(started):
            raise ConfigError(f"observer.request_started must be callable; got {started!r}")
    if not observer:
        return None
    if len(observer) == 1:
        return observer[0]
    return _Observers(tuple(observer))


@final
class _Observers:
    """Several observers as one: each called in order, one raising does not stop the next."""

    __slots__ = ("_each", "_started")

    def __init__(self, observers: tuple[Callable[[ServerOutcome], object], ...]) -> None:
        self._each = observers
        self._started = tuple(
            started
            for started in (getattr(each, "request_started", None) for each in observers)
            if started is not None
        )

    def __call__(self, outcome: ServerOutcome, /) -> None:
        for observer in self._each:
            try:
                observer(outcome)
            except Exception:
                _log.exception("a server observer raised; the response is unaffected")

    def request_started(self, admission: Admission, /) -> None:
        """Tell each observer that has ``request_started``."""
        for started in self._started:
            try:
                started(admission)
            except Exception:
                _log.exception("a server observer raised; the response is unaffected")

    def __repr__(self) -> str:
        return f"observers({', '.join(map(repr, self._each))})"
