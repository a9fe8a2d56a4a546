"""The timeout policy: a budget for a block, inside the ambient deadline model."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, cast, final

import anyio

from .. import _clock
from .._deadline import Deadline, ambient
from .._errors import DeadlineExceededError
from .._validation import positive_seconds
from ._entries import pop_entry, push_entry

if TYPE_CHECKING:
    from types import TracebackType

__all__ = ["Timeout"]

_P = ParamSpec("_P")
_T = TypeVar("_T")


@final
class Timeout:
    """Gives the guarded call at most ``seconds`` (float), and never more than it inherited.

    The call's deadline is the nearest of ``now + seconds`` and the ambient
    deadline (:func:`aio_client.current_deadline`). It becomes the ambient
    deadline inside the call, so client calls made there inherit it and
    propagate it, and it is enforced by an anyio cancel scope: when it passes,
    the call is cancelled and :class:`~aio_client.DeadlineExceededError` is
    raised instead. A deadline already past on entry raises at once, without
    running the call.

    Use as ``@timeout``, ``async with timeout:``, :meth:`call`, or a client
    stage.
    """

    __slots__ = ("_seconds",)

    def __init__(self, seconds: float) -> None:
        self._seconds = positive_seconds(seconds, "seconds")

    @property
    def seconds(self) -> float:
        """The budget, in seconds."""
        return self._seconds

    async def call(
        self, func: Callable[_P, Awaitable[_T]], *args: _P.args, **kwargs: _P.kwargs
    ) -> _T:
        """Run ``await func(*args, **kwargs)`` within the budget."""
        own_at = _clock.now() + self._seconds
        with ambient(timeout=self._seconds) as deadline:
            assert deadline is not None
            if deadline.expired:
                raise self._error(deadline, own_at, ran=False)
            with anyio.CancelScope(deadline=deadline.at) as scope:
                return await func(*args, **kwargs)
        if scope.cancelled_caught:  # pragma: no branch - the scope only exits early this way
            raise self._error(deadline, own_at, ran=True)
        raise AssertionError("unreachable")  # pragma: no cover

    def __call__(self, func: Callable[_P, Awaitable[_T]]) -> Callable[_P, Coroutine[Any, Any, _T]]:
        """``@timeout``: every call of ``func`` gets the budget."""

        @functools.wraps(func)
        async def bounded(*args: _P.args, **kwargs: _P.kwargs) -> _T:
            return await self.call(func, *args, **kwargs)

        return bounded

    async def __aenter__(self) -> Deadline:
        own_at = _clock.now() + self._seconds
        scope_of_ambient = ambient(timeout=self._seconds)
        deadline = scope_of_ambient.__enter__()
        assert deadline is not None
        if deadline.expired:
            scope_of_ambient.__exit__(None, None, None)
            raise self._error(deadline, own_at, ran=False)
        scope = anyio.CancelScope(deadline=deadline.at)
        scope.__enter__()
        push_entry(self, (scope_of_ambient, scope, deadline, own_at))
        return deadline

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        scope_of_ambient, scope, deadline, own_at = cast(
            tuple[AbstractContextManager[Deadline | None], anyio.CancelScope, Deadline, float],
            pop_entry(self),
        )
        try:
            scope.__exit__(exc_type, exc, tb)
        finally:
            scope_of_ambient.__exit__(None, None, None)
        # The scope swallows only its own cancellation; that becomes our error.
        if scope.cancelled_caught:
            raise self._error(deadline, own_at, ran=True)

    def _error(self, deadline: Deadline, own_at: float, *, ran: bool) -> DeadlineExceededError:
        whose = (
            f"its {self._seconds:g} s timeout"
            if deadline.at >= own_at
            else "the deadline it inherited"
        )
        if ran:
            return DeadlineExceededError(f"cancelled: the call ran past {whose}")
        return DeadlineExceededError(
            f"not run: {whose} had already passed", may_have_reached_server=False
        )

    def __repr__(self) -> str:
        return f"Timeout({self._seconds!r})"
