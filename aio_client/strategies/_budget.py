"""The retry budget shared by every retry and hedge of a client."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Final, final

from .. import _clock
from .._errors import ConfigError

__all__ = ["RetryBudget"]

_BUCKETS: Final = 10


@final
class RetryBudget:
    """Limits extra attempts (retries and hedges) to a share of recent calls.

    Each call deposits one token; each extra attempt withdraws one. An extra
    attempt may go out while ``reserve + ratio * calls - extra`` over the last
    ``ttl`` seconds is at least one, where ``reserve = min_per_second * ttl``
    keeps retries possible at low traffic (the scheme of Finagle's and Envoy's
    retry budgets). A struggling dependency therefore sees at most about
    ``1 + ratio`` times its normal load from this client, never ``attempts``
    times.

    Memory is fixed (ten counters). Not thread-safe: use one per event loop.
    """

    __slots__ = (
        "_bucket",
        "_clock",
        "_deposits",
        "_edges",
        "_exhausted",
        "_on_loop_clock",
        "_ratio",
        "_reserve",
        "_total_deposits",
        "_total_withdrawals",
        "_width",
        "_withdrawals",
    )

    def __init__(
        self,
        ratio: float = 0.2,
        min_per_second: float = 10.0,
        ttl: float = 10.0,
        *,
        clock: Callable[[], float] | None = None,
    ) -> None:
        for name, value in (("ratio", ratio), ("min_per_second", min_per_second), ("ttl", ttl)):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"{name} must be a number; got {value!r}")
            if not math.isfinite(value) or value < 0:
                raise ConfigError(f"{name} must be finite and >= 0; got {value!r}")
        if ratio > 1000:
            raise ConfigError(f"ratio must be <= 1000; got {ratio!r}")
        if ttl <= 0:
            raise ConfigError(f"ttl must be > 0 seconds; got {ttl!r}")
        self._ratio = float(ratio)
        self._reserve = float(min_per_second) * float(ttl)
        self._width = float(ttl) / _BUCKETS
        if clock is not None and not callable(clock):
            raise ConfigError(f"clock must be a function returning seconds; got {clock!r}")
        self._clock = clock or _clock.now
        # On the event loop's clock, a client passes the reading it already took.
        self._on_loop_clock = clock is None
        self._deposits = [0] * _BUCKETS
        self._withdrawals = [0] * _BUCKETS
        self._total_deposits = 0
        self._total_withdrawals = 0
        self._bucket = math.floor(self._clock() / self._width)
        # The clock readings between which the current bucket stays current: the
        # common case (no bucket boundary crossed) costs two comparisons.
        self._edges = (self._bucket * self._width, (self._bucket + 1) * self._width)
        #: Extra attempts refused since the budget was made.
        self._exhausted = 0

    @property
    def exhausted_count(self) -> int:
        """How many extra attempts the budget has refused."""
        return self._exhausted

    def deposit(self) -> None:
        """Record one call (its first attempt)."""
        self._deposit_at(self._clock())

    def _deposit_at(self, now: float) -> None:
        # Every call pays for this (the client calls it with its own reading of
        # the loop's clock when the budget has no clock of its own): _advance()
        # inlined for the common case.
        low, high = self._edges
        index = self._bucket % _BUCKETS if low <= now < high else self._advance()
        self._deposits[index] += 1
        self._total_deposits += 1

    def try_withdraw(self) -> bool:
        """Take a token for one extra attempt; ``False`` (and counted) when empty."""
        index = self._advance()
        balance = self._reserve + self._ratio * self._total_deposits - self._total_withdrawals
        if balance >= 1.0:
            self._withdrawals[index] += 1
            self._total_withdrawals += 1
            return True
        self._exhausted += 1
        return False

    def balance(self) -> float:
        """Extra attempts that could go out now."""
        self._advance()
        return self._reserve + self._ratio * self._total_deposits - self._total_withdrawals

    def _advance(self) -> int:
        bucket = math.floor(self._clock() / self._width)
        if bucket != self._bucket:
            stale = min(bucket - self._bucket, _BUCKETS)
            for step in range(1, stale + 1):
                index = (self._bucket + step) % _BUCKETS
                self._total_deposits -= self._deposits[index]
                self._total_withdrawals -= self._withdrawals[index]
                self._deposits[index] = 0
                self._withdrawals[index] = 0
            self._bucket = bucket
            self._edges = (bucket * self._width, (bucket + 1) * self._width)
        return bucket % _BUCKETS

    def __repr__(self) -> str:
        return f"RetryBudget(balance={self.balance():.1f}, exhausted={self._exhausted})"
