"""``@retry``: sequential retries of a plain async function, with the client's machinery."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, ParamSpec, TypeVar, final

import anyio

from .._deadline import current_deadline
from .._errors import ConfigError, DeadlineExceededError
from .._validation import ExceptionTypes, exception_types, positive_int, validate_timeout
from ..strategies._budget import RetryBudget
from ..strategies._delays import Delays, exponential_delays

__all__ = ["Retry", "retry"]

_P = ParamSpec("_P")
_T = TypeVar("_T")


@final
class Retry:
    """Retries a call that raised one of ``on``; see :func:`retry`."""

    __slots__ = ("_attempts", "_budget", "_delays", "_low_timeout", "_on")

    def __init__(
        self,
        on: ExceptionTypes,
        attempts: int,
        delays: Delays,
        budget: RetryBudget | None,
        low_timeout: float,
    ) -> None:
        self._on = exception_types(on, "on")
        self._attempts = positive_int(attempts, "attempts", maximum=100)
        if not callable(delays):
            raise ConfigError(f"delays must be a delay provider; got {delays!r}")
        self._delays = delays
        if budget is not None and not isinstance(budget, RetryBudget):
            raise ConfigError(f"budget must be a RetryBudget; got {budget!r}")
        self._budget = budget
        self._low_timeout = validate_timeout(low_timeout, "low_timeout")

    async def call(
        self, func: Callable[_P, Awaitable[_T]], *args: _P.args, **kwargs: _P.kwargs
    ) -> _T:
        """``await func(*args, **kwargs)``, again after a delay while it raises one of ``on``."""
        if not self._room_for(0.0):
            raise DeadlineExceededError(
                f"not run: less than {self._low_timeout * 1000:.1f} ms left of the deadline",
                may_have_reached_server=False,
            )
        budget = self._budget
        if budget is not None:
            budget.deposit()
        number = 1
        while True:
            try:
                return await func(*args, **kwargs)
            except self._on:
                # ``on`` holds only Exception subclasses: cancellation is never retried.
                if number >= self._attempts:
                    raise
                delay = self._delays(number)
                if not self._room_for(delay):
                    raise
                if budget is not None and not budget.try_withdraw():
                    raise
            if delay > 0.0:
                await anyio.sleep(delay)
            number += 1

    def _room_for(self, delay: float) -> bool:
        deadline = current_deadline()
        return deadline is None or deadline.remaining() - delay >= self._low_timeout

    def __call__(self, func: Callable[_P, Awaitable[_T]]) -> Callable[_P, Coroutine[Any, Any, _T]]:
        """``@retry(...)``: every call of ``func`` is retried."""

        @functools.wraps(func)
        async def retried(*args: _P.args, **kwargs: _P.kwargs) -> _T:
            return await self.call(func, *args, **kwargs)

        return retried

    def __repr__(self) -> str:
        names = ", ".join(kind.__name__ for kind in self._on)
        return (
            f"retry(on=({names}), attempts={self._attempts}, delays={self._delays!r}, "
            f"budget={self._budget!r}, low_timeout={self._low_timeout})"
        )


def retry(
    *,
    on: ExceptionTypes,
    attempts: int = 3,
    delays: Delays | None = None,
    budget: RetryBudget | None = None,
    low_timeout: float = 0.005,
) -> Retry:
    """Retry a plain async function while it raises one of ``on``.

    - ``on``: the exception classes worth another attempt (required, like
      stamina: retrying everything hides bugs). Cancellation never is.
    - ``attempts``: most attempts in all, 1 to 100 (default 3).
    - ``delays``: seconds before retry ``n``; default
      :class:`~aio_client.exponential_delays` (full jitter, 50 ms base, 2 s cap).
    - ``budget``: a :class:`~aio_client.RetryBudget`; each call deposits and each
      retry withdraws, so retries stop when the budget is empty.
    - ``low_timeout``: no retry is started when, after its delay, less than
      this many seconds (5 ms) would be left of the ambient deadline
      (:func:`aio_client.current_deadline`); nor the first attempt, which then
      raises :class:`~aio_client.DeadlineExceededError` without running.

    The last error is raised as it was. Use as ``@retry(on=...)``,
    ``retry(on=...).call(func, ...)``, or as a client stage.
    """
    return Retry(
        on, attempts, delays if delays is not None else exponential_delays(), budget, low_timeout
    )
