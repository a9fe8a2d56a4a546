"""Stages and how they are folded into one handler.

A stage is ``async (request, call_next) -> Response``. The client folds its
stages once, at construction, so a request pays one Python call per stage and
nothing else. The first stage in a list is the outermost: it sees the request
first and the response last.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from ._models import Request, Response

__all__ = ["Handler", "Stage", "compose"]

#: The rest of the pipeline, as seen from a stage.
Handler = Callable[[Request], Awaitable[Response]]
#: A pipeline stage: may derive a new request, call ``call_next`` zero or more times,
#: and return or raise.
Stage = Callable[[Request, Handler], Awaitable[Response]]


def compose(stages: Sequence[Stage], innermost: Handler) -> Handler:
    """Fold ``stages`` around ``innermost``; ``stages[0]`` runs first."""
    handler = innermost
    for stage in reversed(stages):
        if not callable(stage):
            raise TypeError(f"a stage must be callable; got {stage!r}")
        handler = _bind(stage, handler)
    return handler


def _bind(stage: Stage, call_next: Handler) -> Handler:
    async def handler(request: Request) -> Response:
        return await stage(request, call_next)

    return handler
