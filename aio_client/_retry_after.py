"""The ``Retry-After`` header codec (RFC 9110 section 10.2.3)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from typing import Final

__all__ = ["RETRY_AFTER_HEADER", "format_retry_after", "parse_retry_after"]

RETRY_AFTER_HEADER: Final = "retry-after"


def parse_retry_after(
    value: str | None, *, wall_clock: Callable[[], float] = time.time
) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delta-seconds or HTTP date).

    Garbage gives ``None``; a date in the past gives ``0.0``.
    """
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(int(value[:12]))
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - wall_clock())


def format_retry_after(seconds: float) -> str:
    """Encode a wait as whole delta-seconds, rounded up, and at least 1.

    A refusal with no wait of its own (a half-open breaker busy with its probe)
    still says 1: ``0`` would invite every client to retry at once.
    """
    return str(max(1, math.ceil(seconds)))


def format_http_date(timestamp: float) -> str:
    """An RFC 9110 HTTP date for a POSIX timestamp (used by tests and servers)."""
    return format_datetime(datetime.fromtimestamp(timestamp, UTC), usegmt=True)
