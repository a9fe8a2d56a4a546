"""FastAPI helpers: the request's token as a dependency, and a per-route maximum.

Both need :class:`~aio_client.server.DeadlineMiddleware` on the app. Neither
adds anything to the OpenAPI schema: they take no request parameters.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, params

from .._cancel import CancelToken, current_token
from .._deadline import Deadline, ambient
from .._errors import ConfigError
from .._validation import validate_timeout
from ._core import current_admission

__all__ = ["CancelTokenDep", "fastapi_max_timeout", "get_cancel_token"]

_MISSING = "no request token here: add aio_client.server.DeadlineMiddleware to the app"


async def get_cancel_token() -> CancelToken:
    """FastAPI dependency: the request's :class:`~aio_client.CancelToken`.

    In a WebSocket endpoint, the connection's token (a hang-up, shutdown or
    ``websocket_timeout`` fires it).

    ``async def`` so FastAPI runs it in the request's own task, where the
    middleware's context is.
    """
    token = current_token()
    if token is None:
        raise RuntimeError(_MISSING)
    return token


#: ``token: CancelTokenDep`` in an endpoint's parameters gives it the request's token
#: (a WebSocket endpoint's: its connection's).
CancelTokenDep = Annotated[CancelToken, Depends(get_cancel_token)]


def fastapi_max_timeout(seconds: float) -> params.Depends:
    """A route dependency capping the request's budget at ``seconds`` from arrival.

    ``@app.get("/report", dependencies=[fastapi_max_timeout(2.0)])``. A
    caller's shorter budget still wins; the handler, its token and the
    calls it makes all see the capped deadline.
    """
    limit = validate_timeout(seconds, "seconds")
    if limit == 0:
        raise ConfigError("seconds must be > 0")

    async def cap_deadline() -> AsyncIterator[None]:
        admission = current_admission()
        if admission is None:
            raise RuntimeError(_MISSING)
        deadline = Deadline(admission.arrived_at + limit)
        admission.token.tighten(deadline)
        with ambient(deadline=deadline):
            yield

    dependency: params.Depends = Depends(cap_deadline)
    return dependency
