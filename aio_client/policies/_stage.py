"""Policies as client stages: ``async (request, call_next) -> Response``.

- :func:`as_stage` adapts any policy; a breaker becomes a
  :class:`CircuitBreakerStage`.
- :class:`CircuitBreakerStage` keeps one breaker state per endpoint. Put it
  in ``attempt_stages`` so it sees each physical attempt with its absolute
  URL: an open breaker on one endpoint then refuses only attempts to that
  endpoint, and a retry or hedge may still go to another.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import final

from .._deadline import current_deadline
from .._endpoints import format_endpoint, split_endpoint
from .._errors import ConfigError, DeadlineExceededError, TransportError
from .._models import Request, Response
from .._pipeline import Handler, Stage
from .._validation import positive_int
from ._breaker import CircuitBreaker
from ._bulkhead import Bulkhead
from ._fallback import Fallback
from ._rate_limit import RateLimiter
from ._retry import Retry
from ._timeout import Timeout

__all__ = [
    "CircuitBreakerStage",
    "Policy",
    "PolicyStage",
    "as_stage",
    "default_is_failure",
    "endpoint_key",
]

#: Anything :func:`as_stage` accepts.
Policy = CircuitBreaker | Bulkhead | RateLimiter | Timeout | Fallback[Response] | Retry


def endpoint_key(request: Request) -> str:
    """``scheme://host:port`` of the request's absolute URL (``""`` for a relative one).

    An invalid port reads as none (the scheme's default).
    """
    scheme, host, port, _, has_netloc, _ = split_endpoint(request.url)
    if not scheme or not has_netloc:
        return ""
    return format_endpoint(scheme, host, port)


def default_is_failure(outcome: Response | Exception, /) -> bool:
    """5xx responses, transport errors and attempt timeouts are failures; 4xx are not."""
    if isinstance(outcome, Response):
        return outcome.status >= 500
    return isinstance(outcome, (TransportError, DeadlineExceededError))


@final
class CircuitBreakerStage:
    """One circuit breaker state per endpoint, as an attempt stage.

    ``breaker`` is the template: each endpoint (by ``key(request)``, default
    :func:`endpoint_key`) gets its own breaker with the template's settings
    and listeners, named after the key; the template's own state is unused.
    ``is_failure(outcome)`` decides what counts (default
    :func:`default_is_failure`): a response it rejects is a failure and any
    other response a success; an exception it rejects counts as neither (the
    template's ``expected_exception`` does not apply here). An attempt
    cancelled because its deadline passed is a failure (the endpoint was too
    slow); any other cancellation counts as neither. Either counts only when
    the attempt had at least the breaker's ``min_deadline_budget``: a caller's
    short budget running out is not the endpoint's fault. An open breaker raises
    :class:`~aio_client.CircuitOpenError` with ``retry_after``, and nothing is
    sent. At most ``max_endpoints`` states are kept (least recently used
    dropped).
    """

    __slots__ = ("_breakers", "_is_failure", "_key", "_max_endpoints", "_template")

    def __init__(
        self,
        breaker: CircuitBreaker,
        *,
        key: Callable[[Request], str] = endpoint_key,
        is_failure: Callable[[Response | Exception], bool] = default_is_failure,
        max_endpoints: int = 1024,
    ) -> None:
        if not isinstance(breaker, CircuitBreaker):
            raise ConfigError(f"breaker must be a CircuitBreaker; got {breaker!r}")
        if not callable(key):
            raise ConfigError(f"key must be a function of the request; got {key!r}")
        if not callable(is_failure):
            raise ConfigError(f"is_failure must be callable; got {is_failure!r}")
        self._template = breaker
        self._key = key
        self._is_failure = is_failure
        self._max_endpoints = positive_int(max_endpoints, "max_endpoints")
        self._breakers: OrderedDict[str, CircuitBreaker] = OrderedDict()

    @property
    def breakers(self) -> Mapping[str, CircuitBreaker]:
        """A snapshot of the breaker of every endpoint seen, by key."""
        return dict(self._breakers)

    def breaker_for(self, key: str) -> CircuitBreaker:
        """The breaker of endpoint ``key`` (made on first use)."""
        breakers = self._breakers
        breaker = breakers.get(key)
        if breaker is None:
            breaker = breakers[key] = self._template._spawn(key)
            if len(breakers) > self._max_endpoints:
                breakers.popitem(last=False)
        else:
            breakers.move_to_end(key)
        return breaker

    async def __call__(self, request: Request, call_next: Handler) -> Response:
        ticket = self.breaker_for(self._key(request)).admit()
        try:
            if ticket.waiting:
                await ticket.notify()
            response = await call_next(request)
        except Exception as exc:
            if not self._is_failure(exc):
                ticket.released()
            elif ticket.failed(exc):  # a DeadlineExceededError counts by the budget rule
                await ticket.notify()
            raise
        except BaseException:
            # Cancelled. Only the attempt's own deadline passing says anything
            # about the endpoint, and only when the budget was worth the name;
            # a lost hedge or a caller giving up does not.
            deadline = current_deadline()
            if deadline is not None and deadline.expired:
                ticket.timed_out()  # listeners: the next caller tells them
            else:
                ticket.released()
            raise
        notify = ticket.failed() if self._is_failure(response) else ticket.succeeded()
        if notify:
            await ticket.notify()
        return response

    def __repr__(self) -> str:
        return f"CircuitBreakerStage({self._template!r}, endpoints={len(self._breakers)})"


@final
class PolicyStage:
    """A stage running ``call_next`` through a policy's ``call``; see :func:`as_stage`."""

    __slots__ = ("_call", "_policy")

    def __init__(self, policy: Bulkhead | RateLimiter | Timeout | Fallback[Response] | Retry):
        self._policy = policy
        self._call = policy.call

    async def __call__(self, request: Request, call_next: Handler) -> Response:
        return await self._call(call_next, request)

    def __repr__(self) -> str:
        return f"as_stage({self._policy!r})"


def as_stage(policy: Policy) -> Stage:
    """``policy`` as a client stage.

    A :class:`CircuitBreaker` becomes a :class:`CircuitBreakerStage` (one state
    per endpoint; use that class directly for its options). A keyed
    :class:`RateLimiter` gets the request as its key function's argument; a
    :class:`Fallback` must substitute a :class:`~aio_client.Response`.
    """
    if isinstance(policy, CircuitBreaker):
        return CircuitBreakerStage(policy)
    if isinstance(policy, (Bulkhead, RateLimiter, Timeout, Fallback, Retry)):
        return PolicyStage(policy)
    raise ConfigError(f"not a policy: {policy!r}")
