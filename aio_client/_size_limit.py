"""The response size limit: its default, its validation, and the error it raises."""

from __future__ import annotations

import enum
from typing import Final

from ._call import _ATTEMPT
from ._errors import ConfigError, ResponseTooLargeError

__all__ = [
    "CLIENT_DEFAULT",
    "DEFAULT_MAX_RESPONSE_SIZE",
    "BodyCounter",
    "UseClientDefault",
    "response_size_limit",
    "too_large",
    "validate_max_size",
]

#: What ``Client(max_response_size=...)`` is by default: 64 MiB of decoded body.
DEFAULT_MAX_RESPONSE_SIZE: Final = 64 * 1024 * 1024


class UseClientDefault(enum.Enum):
    """The type of :data:`CLIENT_DEFAULT`."""

    CLIENT_DEFAULT = "client default"


#: A per-call option left at this value takes the client's setting.
CLIENT_DEFAULT: Final = UseClientDefault.CLIENT_DEFAULT


def validate_max_size(value: object, name: str) -> int | None:
    """``value`` as a size limit in bytes (``None``: no limit), or :class:`ConfigError`."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{name} must be an int >= 0 (bytes) or None for no limit; got {value!r}")
    return value


def response_size_limit() -> int | None:
    """The size limit of the attempt being sent (bytes), for transports.

    Outside a client (a transport used on its own) the default applies.
    """
    attempt = _ATTEMPT.get()
    return DEFAULT_MAX_RESPONSE_SIZE if attempt is None else attempt.max_response_size


def too_large(limit: int, *, announced: int | None = None) -> ResponseTooLargeError:
    """The error for a body past ``limit``: announced by ``Content-Length``, or read."""
    if announced is not None:
        return ResponseTooLargeError(
            f"response refused before reading: Content-Length {announced} bytes "
            f"is more than the limit of {limit} bytes (max_response_size)",
            limit=limit,
        )
    return ResponseTooLargeError(
        f"response body passed the limit of {limit} bytes (max_response_size); "
        "stopped reading and closed the connection",
        limit=limit,
    )


class BodyCounter:
    """Counts decoded body bytes against a limit while they are read."""

    __slots__ = ("limit", "seen")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.seen = 0

    def add(self, size: int) -> None:
        """Count ``size`` more bytes; raise :class:`ResponseTooLargeError` past the limit."""
        self.seen += size
        if self.seen > self.limit:
            raise too_large(self.limit)
