"""Validation of policy settings: one error, naming the parameter and its range."""

from __future__ import annotations

import math
from collections.abc import Callable

from .._errors import ConfigError

__all__ = [
    "ExceptionTypes",
    "exception_types",
    "positive_int",
    "positive_seconds",
    "ratio",
    "require_callable",
]

#: An exception class, or a tuple of them (as ``except`` accepts).
ExceptionTypes = type[BaseException] | tuple[type[BaseException], ...]


def positive_int(value: object, name: str, *, maximum: int = 1_000_000_000) -> int:
    """``value`` if it is an ``int`` from 1 to ``maximum``."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum:
        raise ConfigError(f"{name} must be an int from 1 to {maximum}; got {value!r}")
    return value


def positive_seconds(value: object, name: str) -> float:
    """``value`` as a float if it is a finite number of seconds greater than 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name} must be a number of seconds; got {value!r}")
    seconds = float(value)
    if not math.isfinite(seconds) or seconds <= 0.0:
        raise ConfigError(f"{name} must be finite and > 0 seconds; got {value!r}")
    return seconds


def ratio(value: object, name: str) -> float:
    """``value`` as a float if it is in ``(0, 1]``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name} must be a number in (0, 1]; got {value!r}")
    share = float(value)
    if not 0.0 < share <= 1.0:
        raise ConfigError(f"{name} must be in (0, 1]; got {value!r}")
    return share


def exception_types(value: object, name: str) -> tuple[type[Exception], ...]:
    """``value`` as a tuple of ``Exception`` subclasses.

    ``BaseException`` subclasses outside ``Exception`` (cancellation,
    ``KeyboardInterrupt``) are refused: no policy may count, retry or replace them.
    """
    items = value if isinstance(value, tuple) else (value,)
    if not items:
        raise ConfigError(f"{name} must name at least one exception class")
    for item in items:
        if not isinstance(item, type) or not issubclass(item, Exception):
            raise ConfigError(
                f"{name} must be an Exception subclass or a tuple of them; got {item!r}"
            )
    return items


def require_callable(value: object, name: str) -> Callable[..., object]:
    """``value`` if it is callable."""
    if not callable(value):
        raise ConfigError(f"{name} must be callable; got {value!r}")
    return value
