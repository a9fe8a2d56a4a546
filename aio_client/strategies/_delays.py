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


@final
class constant_delays:  # noqa: N801 - a factory-style name, like aio-request's
    """The same delay before every retry."""

    __slots__ = ("_delay",)

    def __init__(self, delay: float = 0.05) -> None:
        self._delay = validate_timeout(delay, "delay")

    def __call__(self, n: int) -> float:
        return self._delay

    def __repr__(self) -> str:
        return f"constant_delays({self._delay!r})"


@final
class linear_delays:  # noqa: N801
    """``min_delay + (n - 1) * step``, capped at ``max_delay``."""

    __slots__ = ("_max", "_min", "_step")

    def __init__(self, min_delay: float = 0.05, step: float = 0.05, max_delay: float = 5.0) -> None:
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
class exponential_delays:  # noqa: N801
    """Exponential backoff with full jitter: uniform in ``[0, min(max_delay, base * 2**(n-1))]``.

    Full jitter spreads retries of many clients apart, which is what keeps a
    recovering server from being hit by synchronised waves. ``jitter=False``
    gives the capped exponential itself.
    """

    __slots__ = ("_base", "_jitter", "_max", "_multiplier", "_random")

    def __init__(
        self,
        base: float = 0.05,
        *,
        multiplier: float = 2.0,
        max_delay: float = 2.0,
        jitter: bool = True,
        random_fn: Callable[[], float] = random.random,
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
