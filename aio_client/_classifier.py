"""Deciding, per attempt, whether an outcome is final or worth another attempt."""

from __future__ import annotations

import enum
from typing import Final, Protocol

from ._errors import AioClientError, CircuitOpenError, DeadlineExceededError, TransportError
from ._models import Response

__all__ = ["DO_NOT_RETRY_HEADER", "Classifier", "Verdict", "default_classifier"]

#: A response carrying this header is final, whatever its status.
DO_NOT_RETRY_HEADER: Final = "x-do-not-retry"
_RETRYABLE_STATUSES: Final = frozenset({408, 429})


class Verdict(enum.Enum):
    """What a strategy should do with an attempt's outcome."""

    #: A good response: the call is done.
    ACCEPT = "accept"
    #: Worth another attempt if the strategy has one left.
    RETRY = "retry"
    #: Final and not good (a 4xx, or an error no retry can fix).
    FAIL = "fail"


class Classifier(Protocol):
    """Classifies an attempt's outcome: a response, or the error it ended with."""

    def __call__(self, outcome: Response | AioClientError, /) -> Verdict: ...


def default_classifier(outcome: Response | AioClientError, /) -> Verdict:
    """5xx, 408, 429, connection errors and attempt timeouts are retryable.

    Other 4xx are final, as is any response carrying ``X-Do-Not-Retry``.
    """
    if isinstance(outcome, Response):
        status = outcome.status
        if status < 400:
            return Verdict.ACCEPT
        if DO_NOT_RETRY_HEADER in outcome.headers:
            return Verdict.FAIL
        if status >= 500 or status in _RETRYABLE_STATUSES:
            return Verdict.RETRY
        return Verdict.FAIL
    if isinstance(outcome, (TransportError, DeadlineExceededError, CircuitOpenError)):
        return Verdict.RETRY
    return Verdict.FAIL
