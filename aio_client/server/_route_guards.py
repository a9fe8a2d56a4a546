"""Guards on one route: the app-wide ``guards=`` machinery, attached to a handler.

``@guarded(RateLimiter("5/s"), Bulkhead(10))`` on a FastAPI/Starlette endpoint,
an aiohttp handler or a Sanic handler runs those guards after the app-wide
ones (the middleware's) and before the handler, with the same answers (429 /
503 + ``Retry-After``), the same client identity, and permits given back on
every path. The decorated handler keeps its signature (``functools.wraps``),
so FastAPI's dependency injection and OpenAPI schema are unchanged.
:func:`guard_dependency` is the same as a FastAPI dependency (``yield``: the
permits are held until the response is sent).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Hashable
from typing import Any, ParamSpec, TypeVar

from .._deadline import ambient
from .._errors import ConfigError
from .._priority import Priority
from ._core import current_admission
from ._guards import ClientInfo, Guard, GuardRefusal, Passage, RouteRefusedError, ServerGuards
from ._shedding import PriorityLoadShedder

__all__ = ["guard_dependency", "guarded"]

_P = ParamSpec("_P")
_T = TypeVar("_T")


def guarded(
    *guards: Guard,
    client_key: Callable[[ClientInfo], Hashable] | None = None,
    load_shedder: PriorityLoadShedder | None = None,
    priority: Priority | str | None = None,
) -> Callable[[Callable[_P, Awaitable[_T]]], Callable[_P, Coroutine[Any, Any, _T]]]:
    """Run ``guards`` (rate limiters, bulkheads, circuit breakers), in order, before the handler.

    The client identity a keyed rate limiter sees is the one the middleware
    found (its ``client_key``, ``forwarded_header``), or ``client_key`` here.
    A breaker counts the handler's 5xx answers and exceptions as failures.

    - ``priority``: the route's own priority, whatever the caller's header
      says: what ``load_shedder`` judges it by, and the ambient priority of
      the calls the handler makes (a batch export marked ``"low"`` is shed
      first, a checkout marked ``"high"`` last).
    - ``load_shedder``: a :class:`PriorityLoadShedder` for this route (or
      shared by several): a request it refuses gets 503 + ``Retry-After``;
      without ``priority`` it judges the request's own (trusted) priority.
    """
    route = ServerGuards(list(guards), client_key=client_key)
    marked = None if priority is None else Priority.coerce(priority)
    if load_shedder is not None and not isinstance(load_shedder, PriorityLoadShedder):
        raise ConfigError(f"load_shedder must be a PriorityLoadShedder; got {load_shedder!r}")

    def decorate(handler: Callable[_P, Awaitable[_T]]) -> Callable[_P, Coroutine[Any, Any, _T]]:
        if not inspect.iscoroutinefunction(handler):
            raise ConfigError(f"@guarded needs an async def handler; got {handler!r}")

        @functools.wraps(handler)
        async def run(*args: _P.args, **kwargs: _P.kwargs) -> _T:
            shed = load_shedder
            if shed is not None:
                admission = current_admission()
                judged = marked or (admission.priority if admission is not None else None)
                if not shed.try_acquire(judged or Priority.NORMAL):
                    raise RouteRefusedError(
                        GuardRefusal(503, shed.retry_after, b"overloaded; retry later\n")
                    )
            try:
                passage = await _enter(route)
                failed: bool | None = None
                try:
                    if marked is None:
                        result = await handler(*args, **kwargs)
                    else:
                        with ambient(priority=marked):
                            result = await handler(*args, **kwargs)
                    failed = (_status_of(result) or 200) >= 500
                    return result
                except Exception as exc:
                    failed = _failed_by(exc)
                    raise
                finally:
                    if passage.close(failed):
                        await passage.settle()
            finally:
                if shed is not None:
                    shed.release()

        return run

    return decorate


def guard_dependency(
    *guards: Guard, client_key: Callable[[ClientInfo], Hashable] | None = None
) -> Callable[[], AsyncIterator[None]]:
    """:func:`guarded` as a FastAPI dependency: ``dependencies=[Depends(guard_dependency(...))]``.

    The permits are held until the response has been sent. A breaker counts
    the handler's exceptions as failures (an HTTP error under 500 it raises
    is an answer, not a failure), and a cancelled request as neither; a
    dependency does not see the response, so a 5xx the handler *returns* is
    not counted: use :func:`guarded` for that.
    """
    route = ServerGuards(list(guards), client_key=client_key)

    async def dependency() -> AsyncIterator[None]:
        passage = await _enter(route)
        # Neither unless the handler ended: a cancelled request (deadline, hang-up)
        # says nothing about the route's health.
        failed: bool | None = None
        try:
            yield
            failed = False
        except Exception as exc:
            failed = _failed_by(exc)
            raise
        finally:
            if passage.close(failed):
                await passage.settle()

    return dependency


async def _enter(route: ServerGuards) -> Passage:
    admission = current_admission()
    client = admission.client if admission is not None else None
    entry = await route.enter(client or ClientInfo(None))
    if isinstance(entry, GuardRefusal):
        raise RouteRefusedError(entry)
    return entry


def _failed_by(exc: Exception) -> bool:
    """Whether a handler's exception counts as a breaker failure: not an HTTP error
    under 500 (Starlette's and aiohttp's ``HTTPException``: an answer given on
    purpose), nor a refusal by a guard further in."""
    if isinstance(exc, RouteRefusedError):
        return False
    status = _status_of(exc, None)
    return status is None or status >= 500


def _status_of(result: Any, default: int | None = 200) -> int | None:
    # aiohttp and Sanic responses (and aiohttp's HTTP exceptions) have .status,
    # Starlette's (and its HTTPException) .status_code; anything else (a FastAPI
    # endpoint's dict) is ``default``.
    for name in ("status_code", "status"):
        status = getattr(result, name, None)
        if isinstance(status, int) and not isinstance(status, bool):
            return status
    return default
