"""The checks every setting and request input goes through, each spelled once.

Each check returns the value it accepted (normalised where that is its job)
or raises the library's typed error naming the parameter and what is
allowed: :class:`ConfigError` for settings, :class:`InvalidRequestError` for
what a request is built from. This module imports only the error tree and the
standard library, so every layer may use it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Final, TypeVar
from urllib.parse import unquote, urlsplit

from ._errors import ConfigError, InvalidRequestError

__all__ = [
    "ExceptionTypes",
    "dot_segment",
    "exception_types",
    "header_name",
    "header_value",
    "non_negative_int",
    "positive_int",
    "positive_seconds",
    "ratio",
    "require_callable",
    "validate_endpoint",
    "validate_timeout",
]

#: An exception class, or a tuple of them (as ``except`` accepts).
ExceptionTypes = type[BaseException] | tuple[type[BaseException], ...]

# RFC 9110 section 5.6.2: a field name is a token.
_TOKEN: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+", re.ASCII)
# RFC 9110 section 5.5, minus obs-text: visible ASCII, with single spaces and
# tabs only between visible characters (a receiver strips them at the ends).
_FIELD_VALUE: Final = re.compile(r"(?:[\x21-\x7e](?:[\x20\x09]*[\x21-\x7e])*)?", re.ASCII)
# Anything at or below a space, and DEL: never part of a URL as given.
_URL_FORBIDDEN: Final = re.compile(r"[\x00-\x20\x7f]")


# --- numbers -----------------------------------------------------------------


def validate_timeout(value: object, name: str = "timeout") -> float:
    """``value`` as a float if it is a finite, non-negative number of seconds."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name} must be a number of seconds; got {value!r}")
    seconds = float(value)
    if not math.isfinite(seconds) or seconds < 0:
        raise ConfigError(f"{name} must be finite and >= 0 seconds; got {value!r}")
    return seconds


def positive_seconds(value: object, name: str) -> float:
    """``value`` as a float if it is a finite number of seconds greater than 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name} must be a number of seconds; got {value!r}")
    seconds = float(value)
    if not math.isfinite(seconds) or seconds <= 0.0:
        raise ConfigError(f"{name} must be finite and > 0 seconds; got {value!r}")
    return seconds


def positive_int(value: object, name: str, *, maximum: int | None = None) -> int:
    """``value`` if it is an ``int`` >= 1 (and <= ``maximum`` when given); ``bool`` is refused."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value < 1
        or (maximum is not None and value > maximum)
    ):
        allowed = "an int >= 1" if maximum is None else f"an int from 1 to {maximum}"
        raise ConfigError(f"{name} must be {allowed}; got {value!r}")
    return value


def non_negative_int(value: object, name: str) -> int:
    """``value`` if it is an ``int`` >= 0; ``bool`` is refused."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{name} must be an int >= 0; got {value!r}")
    return value


def ratio(value: object, name: str) -> float:
    """``value`` as a float if it is in ``(0, 1]``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name} must be a number in (0, 1]; got {value!r}")
    share = float(value)
    if not 0.0 < share <= 1.0:
        raise ConfigError(f"{name} must be in (0, 1]; got {value!r}")
    return share


# --- callables and classes ------------------------------------------------------


def require_callable(value: object, name: str) -> Callable[..., object]:
    """``value`` if it is callable."""
    if not callable(value):
        raise ConfigError(f"{name} must be callable; got {value!r}")
    return value


_T = TypeVar("_T")


def validate_strategy(value: _T) -> _T:
    """``value`` if it looks like a strategy (it has an ``execute`` method)."""
    if not callable(getattr(value, "execute", None)):
        raise ConfigError(f"strategy must have an async execute(call); got {value!r}")
    return value


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


# --- HTTP ----------------------------------------------------------------------


def header_name(name: object) -> str:
    """``name`` if it is an RFC 9110 token (letters, digits and ``!#$%&'*+-.^_`|~``)."""
    if not isinstance(name, str):
        raise InvalidRequestError(f"header names must be str; got {type(name).__name__}")
    if _TOKEN.fullmatch(name) is None:
        raise InvalidRequestError(
            f"invalid header name {name!r}: a name is one or more ASCII letters, digits "
            "or !#$%&'*+-.^_`|~ (RFC 9110 token); no spaces, tabs, colons or separators"
        )
    return name


def header_value(name: str, value: object, *, secret: bool = False) -> str:
    """``value`` if it is a header value both transports send byte for byte.

    Allowed: visible ASCII, with spaces and tabs between visible characters;
    an empty value. Refused: control characters (CR, LF, NUL...), spaces or
    tabs at either end (receivers strip them) and non-ASCII characters, which
    HTTP leaves without an agreed encoding (RFC 9110 section 5.5): encode such
    text yourself (percent-encoding, RFC 8187, base64). With ``secret`` the
    message does not show the offending character.
    """
    if not isinstance(value, str):
        raise InvalidRequestError(
            f"header {name!r} must have a str value; got {type(value).__name__}"
        )
    if _FIELD_VALUE.fullmatch(value) is not None:
        return value
    if value != value.strip(" \t"):
        problem = "a space or tab at either end (receivers strip them)"
    else:
        index, char = next(
            (i, c) for i, c in enumerate(value) if not ("\x20" <= c <= "\x7e" or c == "\t")
        )
        kind = "a control character" if ord(char) < 0x80 else "a non-ASCII character"
        shown = "" if secret else f" (U+{ord(char):04X})"
        problem = f"{kind}{shown} at index {index}"
    raise InvalidRequestError(
        f"header {name!r} has {problem}; values must be visible ASCII with inner spaces "
        "or tabs only (encode other text yourself, e.g. percent-encoding)"
    )


def validate_endpoint(value: object, name: str = "endpoint") -> str:
    """``value`` without trailing slashes if it is an absolute ``http(s)`` base URL.

    Refused: other schemes, a missing host, a bad port, a query or fragment,
    whitespace or control characters anywhere, and credentials in the URL
    (``user:pass@``), which would bypass or replace the request's own
    ``Authorization`` header depending on the transport.
    """
    if not isinstance(value, str):
        raise ConfigError(f"{name} must be a str URL; got {value!r}")
    try:
        parts = urlsplit(value)
    except ValueError as exc:
        raise ConfigError(f"{name} is not a valid URL ({exc}); got {value!r}") from None
    if "@" in parts.netloc:
        # Checked first, so no message below ever shows the password.
        raise ConfigError(
            f"{name} must not carry credentials (user:password@); send them in a header "
            "instead, e.g. headers={'Authorization': 'Basic ...'} on the request"
        )
    if _URL_FORBIDDEN.search(value) is not None:
        raise ConfigError(
            f"{name} must not contain whitespace or control characters; got {value!r}"
        )
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        raise ConfigError(f"{name} must be an absolute http(s) URL; got {value!r}")
    try:
        parts.port  # noqa: B018 - parsing it is the check
    except ValueError:
        raise ConfigError(f"{name} has an invalid port; got {value!r}") from None
    if parts.query or parts.fragment or value.endswith(("?", "#")):
        raise ConfigError(f"{name} must not have a query or fragment; got {value!r}")
    return value.rstrip("/")


def dot_segment(path: str) -> str | None:
    """The first ``.`` or ``..`` segment of ``path``, literal or percent-encoded, or ``None``."""
    for segment in path.split("/"):
        if segment and ("." in segment or "%" in segment) and unquote(segment) in {".", ".."}:
            return segment
    return None
