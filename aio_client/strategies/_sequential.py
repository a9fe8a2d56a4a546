"""Retries one after another, with backoff, inside the call's deadline."""

from __future__ import annotations

from typing import Final, final

import anyio

from .._attempts import AttemptKind
from .._call import Call, Outcome
from .._classifier import Verdict
from .._errors import ConfigError
from .._models import Response
from .._validation import positive_int, validate_timeout
from ._attempt_timeout import AttemptTimeout, pass_deadline_through
from ._base import Strategy, provably_unsent, requested_wait
from ._delays import Delays, exponential_delays

__all__ = ["SequentialStrategy", "sequential_strategy"]

# Looked up once: on Python 3.11 every attribute lookup on an enum class goes
# through the slow hook EnumType.__getattr__ installs; worth keeping while 3.11 is
# supported (benchmarks/instructions.py shows the difference).
_FIRST: Final = AttemptKind.FIRST
_RETRY: Final = AttemptKind.RETRY
_RETRY_VERDICT: Final = Verdict.RETRY


@final
class SequentialStrategy:
    """Up to ``attempts`` attempts in sequence; see :func:`sequential_strategy`."""

    __slots__ = ("_attempt_timeout", "_attempts", "_delays", "_max_retry_after")

    def __init__(
        self,
        attempts: int,
        delays: Delays,
        attempt_timeout: AttemptTimeout,
        max_retry_after: float,
    ) -> None:
        positive_int(attempts, "attempts", maximum=100)
        if not callable(delays):
            raise ConfigError(f"delays must be a delay provider; got {delays!r}")
        if not callable(attempt_timeout):
            raise ConfigError(f"attempt_timeout must be callable; got {attempt_timeout!r}")
        self._attempts = attempts
        self._delays = delays
        self._attempt_timeout = attempt_timeout
        self._max_retry_after = validate_timeout(max_retry_after, "max_retry_after")

    async def execute(self, call: Call, /) -> Response:
        """Attempt, classify, back off, repeat; finish with the last outcome."""
        limit = self._attempts if call.retries_allowed else 1
        passthrough = self._attempt_timeout is pass_deadline_through
        number = 1
        while True:
            share = (
                None if passthrough else self._attempt_timeout(call.remaining(), limit - number + 1)
            )
            outcome = await call.attempt(number, _FIRST if number == 1 else _RETRY, share=share)
            if call.classify(outcome) is not _RETRY_VERDICT:
                break
            if number >= limit and not (number == 1 and provably_unsent(outcome)):
                break
            delay = self._delay_before_retry(number, outcome)
            if delay is None or call.remaining() - delay < call.low_timeout:
                break
            if not call.try_extra_attempt(AttemptKind.RETRY):
                break
            if delay > 0.0:
                await anyio.sleep(delay)
            number += 1
        return call.result(outcome)

    def _delay_before_retry(self, retry: int, outcome: Outcome) -> float | None:
        delay = self._delays(retry)
        asked = requested_wait(outcome)
        if asked is not None:
            if asked > self._max_retry_after:
                return None  # the server wants longer than we would wait
            delay = max(delay, asked)
        return delay

    def __repr__(self) -> str:
        return (
            f"sequential_strategy(attempts={self._attempts}, delays={self._delays!r}, "
            f"attempt_timeout={getattr(self._attempt_timeout, '__name__', self._attempt_timeout)})"
        )


def sequential_strategy(
    attempts: int = 3,
    delays: Delays | None = None,
    *,
    attempt_timeout: AttemptTimeout = pass_deadline_through,
    max_retry_after: float = 30.0,
) -> Strategy:
    """Retry retryable outcomes one after another.

    - ``attempts``: most attempts in all (1 to 100); non-idempotent requests get one.
    - ``delays``: seconds before retry ``n``; default :class:`exponential_delays`
      (full jitter, 50 ms base, 2 s cap).
    - ``attempt_timeout``: each attempt's share of the remaining budget:
      :func:`pass_deadline_through` (default) or
      :func:`split_deadline_between_attempts`, or your own function.
    - ``max_retry_after``: a ``Retry-After`` longer than this (seconds) ends the call
      with that response; a shorter one is waited out.

    Retries stop early when the next delay would not leave room for an attempt
    inside the deadline, or when the client's retry budget is empty.
    """
    return SequentialStrategy(
        attempts,
        delays if delays is not None else exponential_delays(),
        attempt_timeout,
        max_retry_after,
    )
