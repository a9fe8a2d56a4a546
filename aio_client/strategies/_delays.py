"""Delay providers: how long to wait before retry number ``n`` (1-based)."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import final

from .._errors import ConfigError
from .._validation import validate_timeout

__all__ = ["Delays", "constant_delays", "exponential_delays", "linear_delays"]

#: Seconds to wait before retry ``n`` (``n`` = 1 for the first retry).
Delays = Callable[[int], float]


def constant_delays(delay: float = 0.05) -> Delays:
    """The same delay before every retry."""
    return _Constant(delay)


def linear_delays(min_delay: float = 0.05, step: float = 0.05, max_delay: float = 5.0) -> Delays:
    """``min_delay + (n - 1) * step``, capped at ``max_delay``."""
    return _Linear(min_delay, step, max_delay)


def exponential_delays(
    base: float = 0.05,
    *,
    multiplier: float = 2.0,
    max_delay: float = 2.0,
    jitter: bool = True,
    random_fn: Callable[[], float] = random.random,
) -> Delays:
    """Exponential backoff with full jitter: uniform in ``[0, min(max_delay, base * m**(n-1))]``.

    ``m`` is ``multiplier``.

    Full jitter spreads retries of many clients apart, which is what keeps a
    recovering server from being hit by synchronised waves. ``jitter=False``
    gives the capped exponential itself.
    """
    return _Exponential(base, multiplier, max_delay, jitter, random_fn)


@final
class _Constant:
    __slots__ = ("_delay",)

    def __init__(self, delay: float) -> None:
        self._delay = validate_timeout(delay, "delay")

    def __call__(self, n: int) -> float:
        return self._delay

    def __repr__(self) -> str:
        return f"constant_delays({self._delay!r})"


@final
class _Linear:
    __slots__ = ("_max", "_min", "_step")

    def __init__(self, min_delay: float, step: float, max_delay: float) -> None:
        self._min = validate_timeout(min_delay, "min_delay")
        self._step = validate_timeout(step, "step")
        self._max = validate_timeout(max_delay, "max_delay")
        if self._max < self._min:
            raise ConfigError(f"max_delay ({max_delay}) must be >= min_delay ({min_delay})")

    def __call__(self, n: int) -> float:
        return min(self._max, self._min + (n - 1) * self._step)

    def __repr__(self) -> str:
        return f"linear_delays({self._min!r}, {self._step!r}, {self._max!r})"


@final
class _Exponential:
    __slots__ = ("_base", "_jitter", "_max", "_multiplier", "_random")

    def __init__(
        self,
        base: float,
        multiplier: float,
        max_delay: float,
        jitter: bool,
        random_fn: Callable[[], float],
    ) -> None:
        self._base = validate_timeout(base, "base")
        self._max = validate_timeout(max_delay, "max_delay")
        multiplier = validate_timeout(multiplier, "multiplier")
        if multiplier < 1.0:
            raise ConfigError(f"multiplier must be >= 1; got {multiplier!r}")
        self._multiplier = multiplier
        self._jitter = jitter
        self._random = random_fn

    def __call__(self, n: int) -> float:
        exponent = min(n - 1, 64)
        ceiling = min(self._max, self._base * self._multiplier**exponent)
        return ceiling * self._random() if self._jitter else ceiling

    def __repr__(self) -> str:
        return (
            f"exponential_delays({self._base!r}, multiplier={self._multiplier!r}, "
            f"max_delay={self._max!r}, jitter={self._jitter!r})"
        )
