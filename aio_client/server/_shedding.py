"""Priority-aware load shedding: when saturated, refuse LOW first and HIGH last."""

from __future__ import annotations

import math
from typing import final

from .._errors import ConfigError
from .._priority import Priority

__all__ = ["PriorityLoadShedder"]


@final
class PriorityLoadShedder:
    """Caps requests in flight, keeping headroom for the more important ones.

    A ``HIGH`` request is admitted while fewer than ``max_in_flight`` run; a
    ``NORMAL`` one while fewer than ``normal_share * max_in_flight`` run; a
    ``LOW`` one while fewer than ``low_share * max_in_flight`` run (each limit
    at least 1). So as load rises LOW is refused first, then NORMAL, and
    HIGH last. Refused requests get 503 with ``Retry-After: retry_after``
    (seconds, rounded up).

    One shedder may guard several apps of one event loop; it is not
    thread-safe. :attr:`shed` counts refusals by priority.
    """

    __slots__ = ("_in_flight", "_limits", "max_in_flight", "retry_after", "shed")

    def __init__(
        self,
        *,
        max_in_flight: int,
        normal_share: float = 0.9,
        low_share: float = 0.7,
        retry_after: float = 1.0,
    ) -> None:
        if isinstance(max_in_flight, bool) or not isinstance(max_in_flight, int):
            raise ConfigError(f"max_in_flight must be an int >= 1; got {max_in_flight!r}")
        if max_in_flight < 1:
            raise ConfigError(f"max_in_flight must be an int >= 1; got {max_in_flight!r}")
        for name, share in (("normal_share", normal_share), ("low_share", low_share)):
            if (
                isinstance(share, bool)
                or not isinstance(share, (int, float))
                or not 0.0 < share <= 1.0
            ):
                raise ConfigError(f"{name} must be in (0, 1]; got {share!r}")
        if low_share > normal_share:
            raise ConfigError(
                f"low_share must be <= normal_share; got {low_share!r} > {normal_share!r}"
            )
        if (
            isinstance(retry_after, bool)
            or not isinstance(retry_after, (int, float))
            or not math.isfinite(retry_after)
            or retry_after < 0
        ):
            raise ConfigError(f"retry_after must be finite and >= 0 seconds; got {retry_after!r}")
        #: The most requests that may run at once (HIGH may use all of it).
        self.max_in_flight = max_in_flight
        #: Seconds a refused client is told to wait.
        self.retry_after = float(retry_after)
        #: Requests refused so far, by priority.
        self.shed: dict[Priority, int] = dict.fromkeys(Priority, 0)
        self._limits = {
            Priority.HIGH: max_in_flight,
            Priority.NORMAL: max(1, math.floor(max_in_flight * normal_share)),
            Priority.LOW: max(1, math.floor(max_in_flight * low_share)),
        }
        self._in_flight = 0

    @property
    def in_flight(self) -> int:
        """Requests admitted and not yet released."""
        return self._in_flight

    def limit(self, priority: Priority) -> int:
        """How many requests may be in flight for one of ``priority`` to be admitted."""
        return self._limits[priority]

    def try_acquire(self, priority: Priority) -> bool:
        """Admit a request of ``priority`` (then :meth:`release` it) or count it shed."""
        if self._in_flight >= self._limits[priority]:
            self.shed[priority] += 1
            return False
        self._in_flight += 1
        return True

    def release(self) -> None:
        """Give back the slot of a request admitted by :meth:`try_acquire`."""
        if self._in_flight <= 0:
            raise RuntimeError("release() without a matching try_acquire()")
        self._in_flight -= 1

    def __repr__(self) -> str:
        return (
            f"PriorityLoadShedder(in_flight={self._in_flight}, "
            f"limits={{high: {self._limits[Priority.HIGH]}, "
            f"normal: {self._limits[Priority.NORMAL]}, low: {self._limits[Priority.LOW]}}})"
        )
