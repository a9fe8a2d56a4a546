"""A rolling time window of call outcomes, split into buckets."""

from __future__ import annotations

from typing import final

__all__ = ["RollingWindow"]


@final
class RollingWindow:
    """Counts calls, failures and slow calls over the last ``duration`` seconds.

    The window is ``buckets`` slots of ``duration / buckets`` seconds each;
    when time moves past a slot, its counts drop out whole. So the window
    covers between ``duration - duration / buckets`` and ``duration`` seconds
    of history, and memory is fixed whatever the traffic. Totals are kept
    up to date incrementally: recording is O(1) while time moves forward by
    less than a slot.
    """

    __slots__ = (
        "_bucket_end",
        "_bucket_start",
        "_calls",
        "_failures",
        "_index",
        "_size",
        "_slow",
        "_width",
        "calls",
        "failures",
        "slow",
    )

    def __init__(self, duration: float, buckets: int, now: float) -> None:
        self._size = buckets
        self._width = duration / buckets
        self._calls = [0] * buckets
        self._failures = [0] * buckets
        self._slow = [0] * buckets
        #: Calls recorded in the window.
        self.calls = 0
        #: Of those, how many failed.
        self.failures = 0
        #: Of those, how many were slow.
        self.slow = 0
        self._index = 0
        self._bucket_start = now
        self._bucket_end = now + self._width

    def record(self, now: float, failed: bool, slow: bool) -> None:
        """Count one call that ended at ``now``."""
        if now >= self._bucket_end:
            self._advance(now)
        index = self._index
        self._calls[index] += 1
        self.calls += 1
        if failed:
            self._failures[index] += 1
            self.failures += 1
        if slow:
            self._slow[index] += 1
            self.slow += 1

    def reset(self, now: float) -> None:
        """Forget everything; the window starts again at ``now``."""
        size = self._size
        self._calls = [0] * size
        self._failures = [0] * size
        self._slow = [0] * size
        self.calls = self.failures = self.slow = 0
        self._index = 0
        self._bucket_start = now
        self._bucket_end = now + self._width

    def _advance(self, now: float) -> None:
        steps = int((now - self._bucket_start) // self._width)
        size = self._size
        index = self._index
        for _ in range(min(steps, size)):
            index = (index + 1) % size
            self.calls -= self._calls[index]
            self.failures -= self._failures[index]
            self.slow -= self._slow[index]
            self._calls[index] = self._failures[index] = self._slow[index] = 0
        # After a gap longer than the window every slot was cleared above; the
        # current slot's position only needs to stay consistent modulo ``size``.
        self._index = (self._index + steps) % size
        self._bucket_start += steps * self._width
        self._bucket_end = self._bucket_start + self._width
