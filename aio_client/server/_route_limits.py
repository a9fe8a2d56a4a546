"""Per-route budget caps: the :func:`max_timeout` handler decorator and its reader."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, Final, TypeVar, cast

from .._deadline import Deadline, ambient
from .._errors import ConfigError
from .._validation import validate_timeout
from ._core import current_admission

__all__ = ["MAX_TIMEOUT_ATTRIBUTE", "max_timeout", "route_max_timeout"]

F = TypeVar("F", bound=Callable[..., Any])

#: Attribute :func:`max_timeout` sets on a handler.
MAX_TIMEOUT_ATTRIBUTE: Final = "__aio_client_max_timeout__"


def max_timeout(seconds: float) -> Callable[[F], F]:
    """Handler decorator: this route's requests get at most ``seconds`` of budget.

    For aiohttp handlers (functions or ``web.View`` methods) and Sanic
    handlers, whose adapters cap the budget on arrival; on a FastAPI or
    Starlette endpoint (``async def``) the cap is applied when the endpoint
    runs (``fastapi_max_timeout`` does it as a dependency, before the others).
    A caller's shorter budget still wins. Returns a new handler, so one
    function can serve several routes with different caps.
    """
    limit = validate_timeout(seconds, "seconds")
    if limit == 0:
        raise ConfigError("seconds must be > 0")

    def mark(handler: F) -> F:
        if inspect.iscoroutinefunction(handler):

            @functools.wraps(handler)
            async def capped(*args: Any, **kwargs: Any) -> Any:
                admission = current_admission()
                if admission is not None:
                    at = admission.arrived_at + limit
                    if at < admission.deadline.at:
                        # An adapter that does not read the mark (ASGI): cap it here.
                        deadline = Deadline(at)
                        admission.token.tighten(deadline)
                        with ambient(deadline=deadline):
                            return await handler(*args, **kwargs)
                return await handler(*args, **kwargs)

        else:

            @functools.wraps(handler)
            def capped(*args: Any, **kwargs: Any) -> Any:
                return handler(*args, **kwargs)

        setattr(capped, MAX_TIMEOUT_ATTRIBUTE, limit)
        return cast(F, capped)

    return mark


def route_max_timeout(handler: object) -> float | None:
    """The maximum :func:`max_timeout` set on ``handler``, or ``None``."""
    value = getattr(handler, MAX_TIMEOUT_ATTRIBUTE, None)
    return value if isinstance(value, float) else None
