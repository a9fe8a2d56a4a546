"""The rate limiter: a token bucket, shared or one per key."""

from __future__ import annotations

import functools
import re
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine, Hashable
from typing import TYPE_CHECKING, Any, Final, ParamSpec, TypeVar, final

import anyio

from .. import _clock
from .._deadline import current_deadline
from .._errors import ConfigError
from .._validation import positive_int, positive_seconds, validate_timeout
from ._errors import RateLimitedError

if TYPE_CHECKING:
    from types import TracebackType

__all__ = ["RateLimiter", "parse_rate"]

_P = ParamSpec("_P")
_T = TypeVar("_T")

_RATE: Final = re.compile(
    r"\s*(\d{1,12})\s*/\s*(second|minute|hour|day|s|m|h|d)\s*", re.ASCII | re.IGNORECASE
)
_UNITS: Final = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
# The most a rate's count (or a burst) may be: what the string form allows (12 digits).
_MAX_COUNT: Final = 999_999_999_999


def parse_rate(rate: str | tuple[int, float]) -> tuple[int, float]:
    """``(count, period_seconds)`` from ``"100/minute"`` (or ``"100/m"``) or a pair.

    Units: ``second``, ``minute``, ``hour``, ``day`` or ``s``, ``m``, ``h``,
    ``d``. Anything else is a :class:`~aio_client.ConfigError`, never a silent
    "no limit".
    """
    if isinstance(rate, str):
        match = _RATE.fullmatch(rate)
        if match is None:
            raise ConfigError(
                f"rate must look like '100/minute' (units second|minute|hour|day or "
                f"s|m|h|d); got {rate!r}"
            )
        count = positive_int(int(match.group(1)), "rate count")
        return count, _UNITS[match.group(2)[0].lower()]
    if isinstance(rate, tuple) and len(rate) == 2:
        count = positive_int(rate[0], "rate count", maximum=_MAX_COUNT)
        return count, positive_seconds(rate[1], "rate period")
    raise ConfigError(
        f"rate must be a string such as '100/minute' or a (count, period_seconds) pair; "
        f"got {rate!r}"
    )


@final
class _Bucket:
    __slots__ = ("tokens", "updated")

    def __init__(self, tokens: float, updated: float) -> None:
        # May go below zero: each waiting caller holds a reservation.
        self.tokens = tokens
        self.updated = updated


@final
class RateLimiter:
    """Allows ``rate`` calls per period, with bursts up to ``burst``.

    ``rate`` is ``"100/minute"``-style (see :func:`parse_rate`) or
    ``(count, period_seconds)``. A token bucket holding ``burst`` tokens
    (default: ``count``) refills at ``count / period`` tokens per second; each
    call takes one. A call that finds none waits for its token when the wait is
    at most ``max_wait`` seconds (default 0: never waits) and fits in the
    ambient deadline; otherwise it is refused with
    :class:`~aio_client.policies.RateLimitedError` carrying ``retry_after``.
    A waiter that is cancelled gives its reserved token back.

    With ``key`` (a function of the guarded call's arguments; for a client
    stage, of the request), each key has its own bucket. At most ``max_keys``
    buckets are kept; the least recently used is dropped beyond that (and that
    key starts again with a full bucket). ``clock`` (seconds, monotonic)
    defaults to the event loop's; waiting sleeps on the event loop.

    Use as ``@limiter``, ``async with limiter:`` (shared bucket only),
    :meth:`acquire`, :meth:`call`, or a client stage. One per event loop.
    """

    __slots__ = (
        "_buckets",
        "_capacity",
        "_clock",
        "_count",
        "_key",
        "_max_keys",
        "_max_wait",
        "_name",
        "_per_second",
        "_period",
    )

    def __init__(
        self,
        rate: str | tuple[int, float],
        *,
        burst: int | None = None,
        max_wait: float = 0.0,
        key: Callable[..., Hashable] | None = None,
        max_keys: int = 10_000,
        name: str = "",
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._count, self._period = parse_rate(rate)
        self._per_second = self._count / self._period
        self._capacity = float(
            self._count if burst is None else positive_int(burst, "burst", maximum=_MAX_COUNT)
        )
        self._max_wait = validate_timeout(max_wait, "max_wait")
        if key is not None and not callable(key):
            raise ConfigError(f"key must be a function of the call's arguments; got {key!r}")
        self._key = key
        self._max_keys = positive_int(max_keys, "max_keys")
        if not isinstance(name, str):
            raise ConfigError(f"name must be a str; got {name!r}")
        self._name = name
        if clock is not None and not callable(clock):
            raise ConfigError(f"clock must be callable; got {clock!r}")
        self._clock = clock if clock is not None else _clock.now
        self._buckets: OrderedDict[Hashable, _Bucket] = OrderedDict()

    @property
    def rate(self) -> tuple[int, float]:
        """``(count, period_seconds)``."""
        return self._count, self._period

    def available(self, key: Hashable = None) -> float:
        """Tokens in ``key``'s bucket right now (negative while callers wait)."""
        bucket = self._buckets.get(key)
        if bucket is None:
            return self._capacity
        return min(
            self._capacity, bucket.tokens + (self._clock() - bucket.updated) * self._per_second
        )

    def try_acquire(self, key: Hashable = None) -> float:
        """Take a token if one is there (returns ``0.0``); else the seconds until one is."""
        bucket = self._bucket(key)
        now = self._clock()
        tokens = bucket.tokens + (now - bucket.updated) * self._per_second
        if tokens > self._capacity:
            tokens = self._capacity
        bucket.updated = now
        if tokens >= 1.0:
            bucket.tokens = tokens - 1.0
            return 0.0
        bucket.tokens = tokens
        return (1.0 - tokens) / self._per_second

    async def acquire(self, key: Hashable = None) -> None:
        """Take a token for ``key``, waiting if allowed; raise :class:`RateLimitedError` if not."""
        wait = self.try_acquire(key)
        if wait == 0.0:
            return
        deadline = current_deadline()
        if wait > self._max_wait or (deadline is not None and wait > deadline.remaining()):
            label = f"rate limiter {self._name!r}" if self._name else "rate limiter"
            which = "" if key is None else f" for key {key!r}"
            raise RateLimitedError(
                f"{label}: {self._count} per {self._period:g} s exceeded{which}; "
                f"next token in {wait:.3f} s",
                retry_after=wait,
            )
        bucket = self._bucket(key)
        bucket.tokens -= 1.0  # reserve our token; later callers queue behind it
        try:
            await anyio.sleep(wait)
        except BaseException:
            bucket.tokens = min(bucket.tokens + 1.0, self._capacity)
            raise

    def _bucket(self, key: Hashable) -> _Bucket:
        buckets = self._buckets
        bucket = buckets.get(key)
        if bucket is None:
            bucket = buckets[key] = _Bucket(self._capacity, self._clock())
            if len(buckets) > self._max_keys:
                buckets.popitem(last=False)
        elif key is not None:
            buckets.move_to_end(key)
        return bucket

    def __call__(self, func: Callable[_P, Awaitable[_T]]) -> Callable[_P, Coroutine[Any, Any, _T]]:
        """``@limiter``: every call of ``func`` takes a token first."""

        @functools.wraps(func)
        async def limited(*args: _P.args, **kwargs: _P.kwargs) -> _T:
            key = None if self._key is None else self._key(*args, **kwargs)
            await self.acquire(key)
            return await func(*args, **kwargs)

        return limited

    async def call(
        self, func: Callable[_P, Awaitable[_T]], *args: _P.args, **kwargs: _P.kwargs
    ) -> _T:
        """Take a token (for ``key(*args, **kwargs)`` if keyed), then run ``func``."""
        key = None if self._key is None else self._key(*args, **kwargs)
        await self.acquire(key)
        return await func(*args, **kwargs)

    async def __aenter__(self) -> RateLimiter:
        if self._key is not None:
            raise TypeError("this RateLimiter is keyed; use 'await limiter.acquire(key)'")
        await self.acquire()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    def __repr__(self) -> str:
        return (
            f"RateLimiter(({self._count}, {self._period:g}), burst={self._capacity:g}, "
            f"max_wait={self._max_wait}, keyed={self._key is not None}, name={self._name!r})"
        )
