"""What happened on each physical attempt of a call."""

from __future__ import annotations

import enum
from typing import NamedTuple

__all__ = ["AttemptKind", "AttemptRecord"]


class AttemptKind(enum.StrEnum):
    """Why an attempt was sent."""

    FIRST = "first"
    RETRY = "retry"
    HEDGE = "hedge"


class AttemptRecord(NamedTuple):
    """One physical attempt: where it went and how it ended (an immutable record)."""

    #: 1-based attempt number, as sent in ``X-Request-Attempt``.
    number: int
    #: Why it was sent.
    kind: AttemptKind
    #: Absolute URL the attempt went to.
    url: str
    #: Seconds the attempt took (until response, error or cancellation).
    duration: float
    #: Response status, when a response arrived.
    status: int | None = None
    #: Class name of the error, when the attempt failed or was cancelled.
    error: str | None = None
    #: Whether the request may have reached the server on this attempt (the
    #: same word as :attr:`AioClientError.may_have_reached_server`).
    may_have_reached_server: bool = True
    #: The base URL (endpoint) the attempt went to.
    endpoint: str = ""
