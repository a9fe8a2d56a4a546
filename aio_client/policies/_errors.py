"""The errors a policy raises when it refuses to run a call.

They extend the tree in :mod:`aio_client._errors`::

    AioClientError
    ├── CircuitOpenError                          (core) a breaker refused the call
    ├── BulkheadFullError (RuntimeError)          no permit free, no room or time to wait
    └── RateLimitedError (RuntimeError)           no token now, nor within the allowed wait

A refused call never ran, so ``may_have_reached_server`` is ``False``. Python
has no builtin for "refused by local policy"; ``RuntimeError`` is the closest
that does not mislead: ``ConnectionError`` or ``TimeoutError`` would make
code that retries network failures retry these too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._errors import AioClientError

if TYPE_CHECKING:
    from .._attempts import AttemptRecord

__all__ = ["BulkheadFullError", "RateLimitedError"]


class BulkheadFullError(AioClientError, RuntimeError):
    """A bulkhead had no free permit and no room (or no time) to wait for one."""

    may_have_reached_server = False

    def __init__(self, message: str, *, attempts: tuple[AttemptRecord, ...] = ()) -> None:
        super().__init__(message, may_have_reached_server=False, attempts=attempts)


class RateLimitedError(AioClientError, RuntimeError):
    """A rate limiter had no token, and waiting for one was not allowed."""

    may_have_reached_server = False

    def __init__(
        self,
        message: str,
        *,
        retry_after: float,
        attempts: tuple[AttemptRecord, ...] = (),
    ) -> None:
        super().__init__(message, may_have_reached_server=False, attempts=attempts)
        #: Seconds until a token will be available (for this key).
        self.retry_after = retry_after
