"""``@circuit``: aiocircuitbreaker's decorator signature over aio_client's breaker and rules.

The README examples of aiocircuitbreaker 2.0 run with ``circuit`` imported
from here, under aio_client's rules: half-open admits exactly one probe (not
every caller), cancellation and non-matching exceptions do not count as
successes, a late success does not close an open breaker, the clock is
monotonic, and the default name is the function's (qualified) name.

For an exact drop-in (aiocircuitbreaker's constructor, ``State``,
``CircuitBreakerError(breaker)``, counting rules and properties) import from
:mod:`aio_client.compat.aiocircuitbreaker` instead.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, ParamSpec, TypeVar, overload

from .._errors import ConfigError
from .._validation import ExceptionTypes
from ._breaker import CircuitBreaker

__all__ = ["circuit"]

_P = ParamSpec("_P")
_T = TypeVar("_T")


@overload
def circuit(
    failure_threshold: Callable[_P, Awaitable[_T]],
) -> Callable[_P, Coroutine[Any, Any, _T]]: ...


@overload
def circuit(
    failure_threshold: int | None = None,
    recovery_timeout: float | None = None,
    expected_exception: ExceptionTypes | None = None,
    name: str | None = None,
    fallback_function: Callable[..., Any] | None = None,
    cls: type[CircuitBreaker] = CircuitBreaker,
) -> CircuitBreaker: ...


def circuit(
    failure_threshold: int | Callable[..., Awaitable[Any]] | None = None,
    recovery_timeout: float | None = None,
    expected_exception: ExceptionTypes | None = None,
    name: str | None = None,
    fallback_function: Callable[..., Any] | None = None,
    cls: type[CircuitBreaker] = CircuitBreaker,
) -> CircuitBreaker | Callable[..., Coroutine[Any, Any, Any]]:
    """Guard an async function with a consecutive-failure circuit breaker.

    ``@circuit`` uses the defaults (or ``cls``'s class attributes): open after
    5 failures in a row, probe after 30 seconds, count every ``Exception``.
    ``@circuit(failure_threshold=, recovery_timeout=, expected_exception=,
    name=, fallback_function=, cls=)`` overrides them; ``recovery_timeout`` is
    the breaker's ``break_duration`` in seconds. Without ``name`` the breaker
    is named after the decorated function's ``__qualname__``. When open, a
    ``fallback_function`` is called (awaited if async) with the same arguments
    instead of raising :class:`~aio_client.CircuitOpenError`.

    The parametrised form returns the :class:`CircuitBreaker` itself, so it
    can be kept and inspected (``breaker.state``, ``breaker.failure_count``).
    """
    if not (isinstance(cls, type) and issubclass(cls, CircuitBreaker)):
        raise ConfigError(f"cls must be a CircuitBreaker subclass; got {cls!r}")
    if callable(failure_threshold):
        # Bare ``@circuit``: the decorated function arrives as the first argument.
        return cls().decorate(failure_threshold)
    return cls(
        failure_threshold=failure_threshold,
        break_duration=recovery_timeout,
        expected_exception=expected_exception,
        name=name or None,
        fallback=fallback_function,
    )
