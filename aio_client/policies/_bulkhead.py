"""The bulkhead: a cap on concurrent calls, with a bounded, fair waiting room."""

from __future__ import annotations

import functools
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, final

import anyio

from .._errors import ConfigError
from .._validation import non_negative_int, positive_int, positive_seconds
from ._errors import BulkheadFullError

if TYPE_CHECKING:
    from types import TracebackType

__all__ = ["Bulkhead"]

_P = ParamSpec("_P")
_T = TypeVar("_T")


@final
class _Waiter:
    __slots__ = ("event", "granted")

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.granted = False


@final
class Bulkhead:
    """At most ``max_concurrent`` calls run at once; up to ``max_waiting`` wait.

    A call that finds every permit taken waits in a FIFO queue if there is
    room (``max_waiting``, default 0: no waiting), for at most
    ``wait_timeout`` seconds (``None``: as long as the caller's own deadline
    allows). Otherwise it is refused with
    :class:`~aio_client.policies.BulkheadFullError` and does not run.

    A permit is always given back, whatever ends the call: success, error or
    cancellation, including a cancellation that lands just as a waiter was
    handed a permit (the permit passes on to the next waiter). Permits go
    straight from a finishing call to the first waiter, so newcomers never
    overtake the queue.

    Use as ``@bulkhead``, ``async with bulkhead:``, :meth:`call`, or a client
    stage. One bulkhead per event loop (not thread-safe).
    """

    __slots__ = ("_active", "_max", "_max_waiting", "_name", "_wait_timeout", "_waiters")

    def __init__(
        self,
        max_concurrent: int,
        max_waiting: int = 0,
        wait_timeout: float | None = None,
        *,
        name: str = "",
    ) -> None:
        self._max = positive_int(max_concurrent, "max_concurrent")
        self._max_waiting = non_negative_int(max_waiting, "max_waiting")
        self._wait_timeout = (
            None if wait_timeout is None else positive_seconds(wait_timeout, "wait_timeout")
        )
        if not isinstance(name, str):
            raise ConfigError(f"name must be a str; got {name!r}")
        self._name = name
        self._active = 0
        self._waiters: deque[_Waiter] = deque()

    @property
    def active(self) -> int:
        """Permits held right now."""
        return self._active

    @property
    def waiting(self) -> int:
        """Calls waiting for a permit right now."""
        return len(self._waiters)

    @property
    def available(self) -> int:
        """Permits free right now."""
        return self._max - self._active

    async def acquire(self) -> None:
        """Take a permit, waiting if allowed; pair every success with :meth:`release`."""
        # Waiters exist only while every permit is held (release hands permits
        # straight over), so this test alone keeps newcomers behind the queue.
        if self._active < self._max:
            self._active += 1
            return
        await self._wait()

    def release(self) -> None:
        """Give a permit back: to the first waiter if any, else to the pool."""
        waiters = self._waiters
        if waiters:
            waiter = waiters.popleft()
            waiter.granted = True  # the permit changes hands; _active stays the same
            waiter.event.set()
            return
        if self._active <= 0:
            raise RuntimeError(f"{self!r} released more permits than were acquired")
        self._active -= 1

    async def _wait(self) -> None:
        if len(self._waiters) >= self._max_waiting:
            raise BulkheadFullError(self._full_message())
        waiter = _Waiter()
        self._waiters.append(waiter)
        try:
            if self._wait_timeout is None:
                await waiter.event.wait()
            else:
                with anyio.move_on_after(self._wait_timeout):
                    await waiter.event.wait()
        except BaseException:
            # Cancelled while waiting. If the permit reached us anyway, pass it on.
            if waiter.granted:
                self.release()
            else:
                self._waiters.remove(waiter)
            raise
        if not waiter.granted:
            self._waiters.remove(waiter)
            raise BulkheadFullError(
                f"{self._label()}: no permit within wait_timeout={self._wait_timeout} s"
            )

    def __call__(self, func: Callable[_P, Awaitable[_T]]) -> Callable[_P, Coroutine[Any, Any, _T]]:
        """``@bulkhead``: run every call of ``func`` under a permit."""

        @functools.wraps(func)
        async def guarded(*args: _P.args, **kwargs: _P.kwargs) -> _T:
            if self._active < self._max:
                self._active += 1
            else:
                await self._wait()
            try:
                return await func(*args, **kwargs)
            finally:
                self.release()

        return guarded

    async def call(
        self, func: Callable[_P, Awaitable[_T]], *args: _P.args, **kwargs: _P.kwargs
    ) -> _T:
        """Run ``await func(*args, **kwargs)`` under a permit."""
        await self.acquire()
        try:
            return await func(*args, **kwargs)
        finally:
            self.release()

    async def __aenter__(self) -> Bulkhead:
        await self.acquire()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def _label(self) -> str:
        return f"bulkhead {self._name!r}" if self._name else "bulkhead"

    def _full_message(self) -> str:
        return (
            f"{self._label()} is full: {self._active}/{self._max} running, "
            f"{len(self._waiters)}/{self._max_waiting} waiting"
        )

    def __repr__(self) -> str:
        return (
            f"Bulkhead({self._max}, max_waiting={self._max_waiting}, "
            f"wait_timeout={self._wait_timeout}, name={self._name!r})"
        )
