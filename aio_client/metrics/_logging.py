"""Structured logging: one line per call, through the standard ``logging`` module.

The third sink of the observer interface, and the smallest: it reads the
events and writes what they say. Each line is logfmt (``key=value``), and the
same fields ride on the record as ``record.aio_client`` (a dict) for JSON or
structlog formatters.

Nothing secret is written: no header, no query string, no error message
(which may quote a URL), no user info of an endpoint; routes are templates.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, final

from .._errors import ConfigError
from .._events import CallWatcher, Observer
from .._validation import non_negative_int
from ._labels import EndpointLabels, outcome_label, validate_limit

if TYPE_CHECKING:
    from .._events import BreakerChanged, CallFinished, CallStarted

__all__ = ["LoggingObserver"]


@final
class LoggingObserver(Observer, CallWatcher):
    """One log line per call, and one per circuit breaker state change.

    ``LoggingObserver(logger="aio_client.calls", *, level=logging.INFO,
    failure_level=logging.WARNING, max_endpoints=200)``: calls that ended with
    a response below 500 log at ``level``, the others (5xx, errors) at
    ``failure_level``; breaker changes log at ``failure_level``. A call whose
    level the logger does not enable costs one check.

    A line reads::

        call method=GET route=users/{id} endpoint=http://users:8080 outcome=2xx
        status=200 duration_ms=12.3 attempts=2 winner=2
    """

    __slots__ = ("_endpoints", "_failure_level", "_level", "_logger")

    def __init__(
        self,
        logger: logging.Logger | str = "aio_client.calls",
        *,
        level: int = logging.INFO,
        failure_level: int = logging.WARNING,
        max_endpoints: int = 200,
    ) -> None:
        if isinstance(logger, str):
            logger = logging.getLogger(logger)
        elif not isinstance(logger, logging.Logger):
            raise ConfigError(f"logger must be a logging.Logger or a logger name; got {logger!r}")
        self._logger = logger
        self._level = non_negative_int(level, "level")
        self._failure_level = non_negative_int(failure_level, "failure_level")
        self._endpoints = EndpointLabels(validate_limit(max_endpoints, "max_endpoints"))

    def call_started(self, event: CallStarted, /) -> LoggingObserver | None:
        """Watch the call when its line could be written at all."""
        enabled = self._logger.isEnabledFor
        if enabled(self._level) or enabled(self._failure_level):
            return self
        return None

    def call_finished(self, event: CallFinished, /) -> None:
        """Write the call's line."""
        status = event.status
        failed = status is None or status >= 500
        level = self._failure_level if failed else self._level
        if not self._logger.isEnabledFor(level):
            return
        fields: dict[str, object] = {
            "method": event.method,
            "route": event.route or "-",
            "endpoint": self._endpoints(event.endpoint).base if event.endpoint else "-",
            "outcome": outcome_label(status, event.ending),
            "status": status if status is not None else "-",
            "duration_ms": round(event.duration * 1000, 1),
            "attempts": len(event.attempts),
            "winner": event.winner,
        }
        if event.error is not None:
            fields["error"] = type(event.error).__qualname__
        self._logger.log(level, "call %s", _logfmt(fields), extra={"aio_client": fields})

    def breaker_changed(self, event: BreakerChanged, /) -> None:
        """Write a line for the state change."""
        fields: dict[str, object] = {
            "breaker": event.name,
            "from": event.old.value,
            "to": event.new.value,
        }
        self._logger.log(
            self._failure_level, "circuit_breaker %s", _logfmt(fields), extra={"aio_client": fields}
        )

    def __repr__(self) -> str:
        return f"LoggingObserver({self._logger.name!r})"


def _logfmt(fields: dict[str, object]) -> str:
    return " ".join(f"{key}={_value(value)}" for key, value in fields.items())


def _value(value: object) -> str:
    text = str(value)
    if not text or any(c in text for c in ' "=\\') or not text.isprintable():
        escaped = text.replace("\\", "\\\\").replace('"', '\\"')
        return '"' + "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in escaped) + '"'
    return text
