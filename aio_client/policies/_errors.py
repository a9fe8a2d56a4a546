"""The errors a policy raises when it refuses to run a call.

They extend the tree in :mod:`aio_client._errors`::

    AioClientError
    └── RefusedError                              (core) a local policy refused the call
        ├── CircuitOpenError                      (core) a breaker refused the call
        ├── BulkheadFullError (RuntimeError)      no permit free, no room or time to wait
        └── RateLimitedError (RuntimeError)       no token now, nor within the allowed wait

A refused call never ran, so ``may_have_reached_server`` is ``False``. Python
has no builtin for "refused by local policy"; ``RuntimeError`` is the closest
that does not mislead: ``ConnectionError`` or ``TimeoutError`` would make
code that retries network failures retry these too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._errors import RefusedError

if TYPE_CHECKING:
    from .._attempts import AttemptRecord

__all__ = ["BulkheadFullError", "RateLimitedError"]


class BulkheadFullError(RefusedError, RuntimeError):
    """A bulkhead had no free permit and no room (or no time) to wait for one.

    :attr:`retry_after` is ``0.0``: a permit may come free at any moment.
    """

    def __init__(
        self,
        message: str,
        *,
        retry_after: float = 0.0,
        attempts: tuple[AttemptRecord, ...] = (),
    ) -> None:
        super().__init__(message, retry_after=retry_after, attempts=attempts)


class RateLimitedError(RefusedError, RuntimeError):
    """A rate limiter had no token, and waiting for one was not allowed.

    :attr:`retry_after` is the seconds until a token will be available (for this key).
    """
