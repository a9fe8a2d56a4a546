"""Resilience policies: circuit breaker, bulkhead, rate limiter, timeout, fallback, retry.

Every policy works three ways: as a decorator on an async function
(``@policy``), as a client stage (:func:`as_stage`), and, for the breaker,
bulkhead, rate limiter and timeout, as ``async with policy:``. Every policy
also has ``await policy.call(func, *args, **kwargs)``.

Composition order
-----------------

Order is meaning. Decorators apply bottom-up: the one nearest ``def`` is
innermost and runs last before the function. The recommended order, from
outermost to innermost::

    @Fallback(cached_answer)        # 1. substitutes for any failure below,
                                    #    the refusals of 3-6 included
    @Timeout(2.0)                   # 2. one budget for all that follows,
                                    #    retries and their delays included
    @retry(on=ConnectionError)      # 3. each retry runs 4-6 again
    @breaker                        # 4. counts each attempt; refuses fast when open
    @RateLimiter("50/s")            # 5. only attempts the breaker lets through spend tokens
    @Bulkhead(10)                   # 6. a permit is held only while the call runs
    async def fetch(...): ...

A per-attempt timeout goes innermost instead (under the breaker), so a hung
attempt counts as a breaker failure. Leave :class:`CircuitOpenError` out of
``retry(on=...)``: retrying into an open breaker only spends the budget.

In a :class:`~aio_client.Client` the same order holds across its two stage
lists: ``stages=`` run once per call, outermost first (fallback, timeout, a
rate limiter or bulkhead per logical call); the strategy then retries or
hedges; ``attempt_stages=`` run once per physical attempt (the per-endpoint
:class:`CircuitBreakerStage`, a per-attempt bulkhead). Retries belong to the
client's strategy; ``as_stage(retry(...))`` in ``stages=`` would repeat whole
calls.

Concurrency: policies keep their state in plain attributes changed only
between ``await``s, so they are exact under any number of tasks on one event
loop, without locks; they are not thread-safe.
"""

from .._errors import CircuitOpenError
from ._breaker import BreakerTicket, CircuitBreaker, CircuitState, StateListener
from ._bulkhead import Bulkhead
from ._circuit import circuit
from ._errors import BulkheadFullError, RateLimitedError
from ._fallback import Fallback
from ._rate_limit import RateLimiter, parse_rate
from ._retry import Retry, retry
from ._stage import (
    CircuitBreakerStage,
    Policy,
    PolicyStage,
    as_stage,
    default_is_failure,
    endpoint_key,
)
from ._timeout import Timeout

#: aiocircuitbreaker's name for the error an open breaker raises.
CircuitBreakerError = CircuitOpenError

__all__ = [
    "BreakerTicket",
    "Bulkhead",
    "BulkheadFullError",
    "CircuitBreaker",
    "CircuitBreakerError",
    "CircuitBreakerStage",
    "CircuitOpenError",
    "CircuitState",
    "Fallback",
    "Policy",
    "PolicyStage",
    "RateLimitedError",
    "RateLimiter",
    "Retry",
    "StateListener",
    "Timeout",
    "as_stage",
    "circuit",
    "default_is_failure",
    "endpoint_key",
    "parse_rate",
    "retry",
]
