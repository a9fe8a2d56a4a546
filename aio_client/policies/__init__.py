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

from .._lazy import lazy_names as _lazy_names
from ._breaker import BreakerTicket, StateListener
from ._rate_limit import parse_rate
from ._stage import (
    CircuitBreakerStage,
    Policy,
    PolicyStage,
    as_stage,
    default_is_failure,
    endpoint_key,
)

__all__ = [
    "BreakerTicket",
    "CircuitBreakerStage",
    "Policy",
    "PolicyStage",
    "StateListener",
    "as_stage",
    "default_is_failure",
    "endpoint_key",
    "parse_rate",
]

# The everyday policy names have their one home in ``aio_client``
# (``aio_client.CircuitBreaker``...), and aiocircuitbreaker's in
# ``aio_client.compat.aiocircuitbreaker``; ``__all__`` above lists what lives
# only here. Code that imports them from here still finds them (name ->
# module, attribute).
_ELSEWHERE = {
    "Bulkhead": ("._bulkhead", "Bulkhead"),
    "BulkheadFullError": ("._errors", "BulkheadFullError"),
    "CircuitBreaker": ("._breaker", "CircuitBreaker"),
    "CircuitBreakerError": ("aio_client._errors", "CircuitOpenError"),
    "CircuitOpenError": ("aio_client._errors", "CircuitOpenError"),
    "CircuitState": ("aio_client._circuit_state", "CircuitState"),
    "Fallback": ("._fallback", "Fallback"),
    "RateLimitedError": ("._errors", "RateLimitedError"),
    "RateLimiter": ("._rate_limit", "RateLimiter"),
    "Retry": ("._retry", "Retry"),
    "Timeout": ("._timeout", "Timeout"),
    "circuit": ("._circuit", "circuit"),
    "retry": ("._retry", "retry"),
}


__getattr__ = _lazy_names(__name__, _ELSEWHERE)
