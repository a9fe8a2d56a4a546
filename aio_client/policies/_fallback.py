"""The fallback policy: a substitute result when the guarded call fails."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Generic, ParamSpec, TypeVar, cast, final, overload

from .._validation import ExceptionTypes, exception_types

__all__ = ["Fallback"]

_P = ParamSpec("_P")
_T = TypeVar("_T")


@final
class Fallback(Generic[_T]):
    """Returns a substitute when the guarded call raises one of ``on``.

    ``value_or_callable`` is the substitute itself, or a function called with
    the same arguments as the guarded call (awaited if it returns an
    awaitable) to make one; to substitute a callable value, wrap it in a
    lambda. ``on`` (default ``Exception``) lists the exception classes that
    trigger it; cancellation never does, and other exceptions propagate. As
    a client stage the substitute must be a :class:`~aio_client.Response`
    (the callable receives the request).

    Use as ``@fallback``, :meth:`call`, or a client stage. It is outermost in
    a composition, so it also covers refusals by the policies inside it
    (``CircuitOpenError``, ``BulkheadFullError``, ``RateLimitedError``).
    """

    __slots__ = ("_call_it", "_on", "_value")

    # The substitute's type is inferred from what is passed: an async maker's
    # result, a sync maker's result, or the value itself.
    @overload
    def __init__(
        self, value_or_callable: Callable[..., Awaitable[_T]], *, on: ExceptionTypes = ...
    ) -> None: ...
    @overload
    def __init__(
        self, value_or_callable: Callable[..., _T], *, on: ExceptionTypes = ...
    ) -> None: ...
    @overload
    def __init__(
        self, value_or_callable: Callable[..., _T | Awaitable[_T]], *, on: ExceptionTypes = ...
    ) -> None: ...
    @overload
    def __init__(self, value_or_callable: _T, *, on: ExceptionTypes = ...) -> None: ...
    def __init__(
        self,
        value_or_callable: _T | Callable[..., _T | Awaitable[_T]],
        *,
        on: ExceptionTypes = Exception,
    ) -> None:
        self._value = value_or_callable
        self._call_it = callable(value_or_callable)
        self._on = exception_types(on, "on")

    async def call(
        self, func: Callable[_P, Awaitable[_T]], *args: _P.args, **kwargs: _P.kwargs
    ) -> _T:
        """``await func(*args, **kwargs)``, or the substitute if it raises one of ``on``."""
        try:
            return await func(*args, **kwargs)
        except self._on:
            if not self._call_it:
                return cast(_T, self._value)
            maker = cast(Callable[..., Any], self._value)
        result = maker(*args, **kwargs)
        if inspect.isawaitable(result):
            result = await result
        return cast(_T, result)

    def __call__(self, func: Callable[_P, Awaitable[_T]]) -> Callable[_P, Coroutine[Any, Any, _T]]:
        """``@fallback``: every call of ``func`` falls back on failure."""

        @functools.wraps(func)
        async def guarded(*args: _P.args, **kwargs: _P.kwargs) -> _T:
            return await self.call(func, *args, **kwargs)

        return guarded

    def __repr__(self) -> str:
        names = ", ".join(kind.__name__ for kind in self._on)
        return f"Fallback({self._value!r}, on=({names}))"
