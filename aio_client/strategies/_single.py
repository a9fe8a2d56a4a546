"""One attempt, no retries."""

from __future__ import annotations

from typing import final

from .._attempts import AttemptKind
from .._call import Call
from .._models import Response
from ._base import Strategy

__all__ = ["SingleAttemptStrategy", "single_attempt_strategy"]


@final
class SingleAttemptStrategy:
    """Sends exactly one attempt."""

    __slots__ = ()

    async def execute(self, call: Call, /) -> Response:
        """Send the one attempt and finish the call with its outcome."""
        return call.result(await call.attempt(1, AttemptKind.FIRST))

    def __repr__(self) -> str:
        return "single_attempt_strategy()"


def single_attempt_strategy() -> Strategy:
    """A strategy that sends one attempt."""
    return SingleAttemptStrategy()
