"""Adaptive hedge delays: a latency percentile of recent successes per route."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Final, final

from .. import _clock
from .._errors import ConfigError
from .._validation import positive_int, validate_timeout

__all__ = ["AdaptiveDelays", "LatencyWindow", "adaptive_delays"]

# Log-spaced buckets, 10% wide, from 100 µs to about a minute: a percentile is
# known to within 10%, in fixed memory, whatever the traffic.
_LOWEST: Final = 1e-4
_GROWTH: Final = 1.1
_LOG_GROWTH: Final = math.log(_GROWTH)
_BUCKETS: Final = 142
_SLICES: Final = 4
# Recompute a percentile after this many new samples (the scan costs ~140 steps).
_REFRESH_EVERY: Final = 8


def _bucket(seconds: float) -> int:
    if seconds <= _LOWEST:
        return 0
    return min(_BUCKETS - 1, int(math.log(seconds / _LOWEST) / _LOG_GROWTH) + 1)


def _upper_edge(bucket: int) -> float:
    return float(_LOWEST * _GROWTH**bucket)


@final
class LatencyWindow:
    """A log-bucketed latency histogram over a rolling time window.

    The window is kept as four slices; a slice older than the window is
    dropped whole, so memory stays fixed at four small arrays.
    """

    __slots__ = (
        "_cached",
        "_clock",
        "_since_refresh",
        "_slice",
        "_slices",
        "_sum",
        "_total",
        "_width",
    )

    def __init__(self, window: float, clock: Callable[[], float]) -> None:
        self._width = window / _SLICES
        self._clock = clock
        self._slices = [[0] * _BUCKETS for _ in range(_SLICES)]
        self._sum = [0] * _BUCKETS
        self._total = 0
        self._slice = math.floor(clock() / self._width)
        self._cached: dict[float, float] = {}
        self._since_refresh = 0

    @property
    def count(self) -> int:
        """Samples inside the window."""
        self._advance()
        return self._total

    def record(self, seconds: float) -> None:
        """Add one latency sample (seconds)."""
        self._advance()
        bucket = _bucket(seconds)
        self._slices[self._slice % _SLICES][bucket] += 1
        self._sum[bucket] += 1
        self._total += 1
        self._since_refresh += 1
        if self._since_refresh >= _REFRESH_EVERY:
            self._cached.clear()
            self._since_refresh = 0

    def percentile(self, fraction: float) -> float | None:
        """The latency below which ``fraction`` of the window's samples fall (upper
        bucket edge, so never an underestimate by more than rounding); ``None`` when empty."""
        self._advance()
        if self._total == 0:
            return None
        cached = self._cached.get(fraction)
        if cached is not None:
            return cached
        rank = max(1, math.ceil(fraction * self._total))
        seen = 0
        value = _upper_edge(_BUCKETS - 1)
        for bucket, count in enumerate(self._sum):
            seen += count
            if seen >= rank:
                value = _upper_edge(bucket)
                break
        self._cached[fraction] = value
        return value

    def _advance(self) -> None:
        current = math.floor(self._clock() / self._width)
        if current == self._slice:
            return
        for step in range(1, min(current - self._slice, _SLICES) + 1):
            stale = self._slices[(self._slice + step) % _SLICES]
            for bucket, count in enumerate(stale):
                if count:
                    self._sum[bucket] -= count
                    self._total -= count
                    stale[bucket] = 0
        self._slice = current
        self._cached.clear()


#: What a hedge delay is kept per: (endpoint, method, route template).
DelayKey = tuple[str, str, str]


@final
class AdaptiveDelays:
    """Hedge after the ``percentile`` latency of recent successful attempts.

    Kept per endpoint + method + route template (at most ``max_keys`` of them,
    least recently used dropped first), clamped to ``[min_delay, max_delay]``.
    Until ``min_samples`` successes are in the window it answers
    ``max_delay``, so a cold client does not double its load.
    """

    __slots__ = (
        "_clock",
        "_max",
        "_max_keys",
        "_min",
        "_min_samples",
        "_percentile",
        "_window",
        "_windows",
    )

    def __init__(
        self,
        percentile: float,
        min_delay: float,
        max_delay: float,
        window: float,
        min_samples: int,
        max_keys: int,
        clock: Callable[[], float] | None,
    ) -> None:
        if isinstance(percentile, bool) or not isinstance(percentile, (int, float)):
            raise ConfigError(f"percentile must be a number in (0, 1); got {percentile!r}")
        if not 0.0 < percentile < 1.0:
            raise ConfigError(f"percentile must be in (0, 1), e.g. 0.95; got {percentile!r}")
        self._percentile = float(percentile)
        self._min = validate_timeout(min_delay, "min_delay")
        self._max = validate_timeout(max_delay, "max_delay")
        if self._max < self._min:
            raise ConfigError(f"max_delay ({max_delay}) must be >= min_delay ({min_delay})")
        self._window = validate_timeout(window, "window")
        if self._window == 0.0:
            raise ConfigError("window must be > 0 seconds")
        self._min_samples = positive_int(min_samples, "min_samples")
        self._max_keys = positive_int(max_keys, "max_keys")
        if clock is not None and not callable(clock):
            raise ConfigError(f"clock must be a function returning seconds; got {clock!r}")
        self._clock = clock or _clock.now
        self._windows: dict[DelayKey, LatencyWindow] = {}

    def delay(self, key: DelayKey) -> float:
        """Seconds to wait before hedging a call with this key."""
        window = self._windows.get(key)
        if window is None or window.count < self._min_samples:
            return self._max
        value = window.percentile(self._percentile)
        if value is None:  # pragma: no cover - count > 0 implies a value
            return self._max
        return min(self._max, max(self._min, value))

    def record(self, key: DelayKey, seconds: float) -> None:
        """Add a successful attempt's latency."""
        windows = self._windows
        window = windows.pop(key, None)
        if window is None:
            window = LatencyWindow(self._window, self._clock)
            if len(windows) >= self._max_keys:
                del windows[next(iter(windows))]
        windows[key] = window  # re-inserted: most recently used last
        window.record(seconds)

    def __repr__(self) -> str:
        return (
            f"adaptive_delays(percentile={self._percentile}, min_delay={self._min}, "
            f"max_delay={self._max}, window={self._window}, min_samples={self._min_samples})"
        )


def adaptive_delays(
    percentile: float = 0.95,
    *,
    min_delay: float = 0.005,
    max_delay: float = 1.0,
    window: float = 30.0,
    min_samples: int = 20,
    max_keys: int = 1024,
    clock: Callable[[], float] | None = None,
) -> AdaptiveDelays:
    """Hedge delays that follow the observed latency; see :class:`AdaptiveDelays`.

    - ``percentile``: in (0, 1); 0.95 hedges about the slowest 5% of calls.
    - ``min_delay``/``max_delay``: clamp, seconds; ``max_delay`` is used while cold.
    - ``window``: seconds of history kept.
    - ``min_samples``: successes needed before the percentile is trusted.
    - ``max_keys``: routes remembered at most.
    """
    return AdaptiveDelays(percentile, min_delay, max_delay, window, min_samples, max_keys, clock)
