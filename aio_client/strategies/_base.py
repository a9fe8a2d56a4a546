"""The strategy protocol, and the outcome facts every strategy reads the same way."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from .._errors import AioClientError, DeadlineExceededError
from .._models import Response
from .._retry_after import RETRY_AFTER_HEADER, parse_retry_after

if TYPE_CHECKING:
    from .._call import Call, Outcome

__all__ = ["Strategy", "provably_unsent", "requested_wait"]


class Strategy(Protocol):
    """Decides when attempts go out and how many; see :class:`aio_client.Call`.

    ``execute`` returns the call's final response or raises its error (via
    :meth:`Call.result`); it must not leave attempts running when it returns.
    """

    async def execute(self, call: Call, /) -> Response: ...


def provably_unsent(outcome: Outcome) -> bool:
    """Whether the attempt never left the process.

    Such a request may be sent once more even when it is not idempotent:
    repeating it cannot repeat its effects.
    """
    return (
        isinstance(outcome, AioClientError)
        and not outcome.may_have_reached_server
        and not isinstance(outcome, DeadlineExceededError)
    )


def requested_wait(outcome: Outcome) -> float | None:
    """Seconds a response's ``Retry-After`` asks for (seconds or HTTP date), else ``None``."""
    if isinstance(outcome, Response):
        return parse_retry_after(outcome.headers.get(RETRY_AFTER_HEADER))
    return None
