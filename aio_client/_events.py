"""Observability as events: what the client tells its observers, computed once.

The client computes each fact of a call once, where it happens (the call's
duration and outcome in the client, each attempt's in :class:`~aio_client._call.Call`),
and hands observers immutable events. Sinks (Prometheus, OpenTelemetry,
logging, yours) implement a few small hooks and never rebuild call state.

An :class:`Observer` is told that a call starts and may answer with a
:class:`CallWatcher`, which hears the rest of that call: each attempt's start
and end, extra attempts the retry budget refused, and the call's end. An
observer with nothing to keep per call returns one shared watcher (often
itself); one that keeps state (a span) returns a fresh one.

Defined outside ``aio_client.metrics`` so that the client, the strategies and
the sinks depend on this module, and not on each other. ``aio_client.metrics``
is the public home of these names.

Events are named tuples: immutable, without a ``__dict__``, and the cheapest
immutable object Python builds (a call with a Prometheus sink makes two).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final, NamedTuple

from ._attempts import AttemptKind, AttemptRecord
from ._cancel import CancelReason
from ._errors import AioClientError

if TYPE_CHECKING:
    from ._circuit_state import CircuitState
    from ._priority import Priority

__all__ = [
    "RESPONSE",
    "AttemptFinished",
    "AttemptStarted",
    "BreakerChanged",
    "CallFinished",
    "CallStarted",
    "CallWatcher",
    "ExtraAttemptRefused",
    "Observer",
    "ending_of",
    "error_kind",
]

_log = logging.getLogger("aio_client")

#: Headers an attempt hook adds to its attempt (lower-case names).
AddedHeaders = Sequence[tuple[str, str]]
#: How an attempt or call that got a response ended (see ``ending``).
RESPONSE: Final = "response"
# Error kinds worded for a dashboard; other aio_client errors get their class
# name in snake case, and exceptions from outside the library read as "error".
_ERROR_KINDS: Final = {
    "DeadlineExceededError": "deadline_exceeded",
    "CircuitOpenError": "circuit_open",
    "BulkheadFullError": "bulkhead_full",
    "RateLimitedError": "rate_limited",
    "InvalidRequestError": "invalid_request",
}
_CAMEL: Final = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_kinds: dict[type[BaseException], str] = {}


class CallStarted(NamedTuple):
    """A call starts: ``client.request(...)`` got its deadline and priority."""

    #: The request method.
    method: str
    #: The route template (``"users/{id}"``), or ``""`` when built without one.
    route: str
    #: Seconds of budget the call has.
    timeout: float
    #: The call's effective priority.
    priority: Priority


class AttemptStarted(NamedTuple):
    """A physical attempt is about to be sent."""

    #: 1-based attempt number, as sent in ``X-Request-Attempt``.
    number: int
    #: Why it is sent: first, retry or hedge.
    kind: AttemptKind
    #: The request method.
    method: str
    #: The route template, or ``""``.
    route: str
    #: The base URL (endpoint) the attempt goes to.
    endpoint: str
    #: The absolute URL it goes to (path and query; keep it out of labels).
    url: str
    #: Seconds of budget the attempt has (what ``X-Request-Timeout`` says).
    timeout: float


class AttemptFinished(NamedTuple):
    """A physical attempt ended: a response, an error, or cancellation.

    An attempt that lost the race of a hedged call is cancelled: ``error``
    is then the cancellation exception, whose message (on asyncio) is
    :attr:`CancelReason.HEDGE_LOST <aio_client.CancelReason.HEDGE_LOST>`.
    Attempts refused by the circuit breaker end here too
    (:class:`~aio_client.CircuitOpenError`).
    """

    #: 1-based attempt number.
    number: int
    #: Why it was sent.
    kind: AttemptKind
    #: The request method.
    method: str
    #: The route template, or ``""``.
    route: str
    #: The base URL the attempt went to.
    endpoint: str
    #: Seconds from its start to its end.
    duration: float
    #: The response status, when a response arrived.
    status: int | None
    #: What it failed with, when no response arrived.
    error: BaseException | None
    #: Why it ended, in one word: ``"response"``, ``"deadline_exceeded"`` (its
    #: deadline passed, whoever delivered the cancellation), ``"hedge_lost"``,
    #: ``"cancelled"`` (the caller gave up), or the error's kind
    #: (``"connect_error"``, ``"circuit_open"``...; see :func:`ending_of`).
    ending: str


class ExtraAttemptRefused(NamedTuple):
    """A retry or hedge was not sent: the client's retry budget was empty."""

    #: What was refused: a retry or a hedge.
    kind: AttemptKind
    #: The request method.
    method: str
    #: The route template, or ``""``.
    route: str
    #: The base URL of the call's first attempt.
    endpoint: str


class CallFinished(NamedTuple):
    """A call ended, as its caller saw it: one response, or one error."""

    #: The request method.
    method: str
    #: The route template, or ``""``.
    route: str
    #: The base URL of the call's first attempt (sent or not), or ``None``
    #: when the call ended before choosing one.
    endpoint: str | None
    #: Seconds from the call's start to its end, all attempts included.
    duration: float
    #: The status of the response the caller got, or ``None``.
    status: int | None
    #: The error the caller got (a deadline, a refusal, cancellation...), or ``None``.
    error: BaseException | None
    #: Every attempt, in start order.
    attempts: tuple[AttemptRecord, ...]
    #: The number of the attempt whose response the caller got; 0 when none.
    winner: int
    #: Why the call ended, in one word (as :attr:`AttemptFinished.ending`): a call
    #: cut by a deadline, its own or one inherited from its caller, reads
    #: ``"deadline_exceeded"`` even when the cancellation came from the caller's scope.
    ending: str


class BreakerChanged(NamedTuple):
    """A circuit breaker changed state."""

    #: The breaker's name: its endpoint key (``scheme://host:port``) for a client's breakers.
    name: str
    #: The state it left.
    old: CircuitState
    #: The state it entered.
    new: CircuitState


class CallWatcher:
    """Hears one call's events; returned by :meth:`Observer.call_started`.

    Override the hooks you need; the others cost nothing (the client skips
    hooks left as they are here). A hook that raises is logged and ignored:
    observing never changes a call's outcome.

    ``attempt_started`` and ``attempt_finished`` of one attempt run in the
    same task and context, so a context attached in one may be detached in
    the other. Attempts of a hedged call run concurrently, each in its own task.
    """

    __slots__ = ()

    def attempt_started(self, event: AttemptStarted, /) -> AddedHeaders | None:
        """An attempt is about to be sent; return headers to add to it, or ``None``.

        What a tracing sink needs: the attempt's trace context (``traceparent``).
        """
        return None

    def attempt_finished(self, event: AttemptFinished, /) -> None:
        """An attempt ended."""

    def extra_attempt_refused(self, event: ExtraAttemptRefused, /) -> None:
        """A retry or hedge of this call was refused by the retry budget."""

    def call_finished(self, event: CallFinished, /) -> None:
        """The call ended; no further event of this call follows."""


class Observer:
    """A client-side sink: metrics, traces, logs. Pass it in ``Client(observers=[...])``.

    Override :meth:`call_started` to watch calls and :meth:`breaker_changed`
    to hear of circuit breaker state changes. Server-side sinks are separate
    objects (the middleware's ``observer=``).
    """

    __slots__ = ()

    def call_started(self, event: CallStarted, /) -> CallWatcher | None:
        """A call starts; return the watcher of its further events, or ``None`` to skip it."""
        return None

    def breaker_changed(self, event: BreakerChanged, /) -> None:
        """One of the client's circuit breakers changed state."""


def ending_of(error: BaseException, deadline_passed: bool) -> str:
    """Why an attempt or call that raised ``error`` ended, in one bounded word.

    A cancellation is ``"deadline_exceeded"`` when the deadline had passed
    (the deadline's cancellation, whoever delivered it), ``"hedge_lost"`` when
    a hedged call's race cancelled it, else ``"cancelled"``; any other error
    reads as its :func:`error_kind`.
    """
    kind = error_kind(error)
    if kind != "cancelled":
        return kind
    if deadline_passed:
        return "deadline_exceeded"
    if error.args and error.args[0] == CancelReason.HEDGE_LOST:
        return "hedge_lost"
    return kind


def error_kind(exc: BaseException) -> str:
    """A short, bounded word for an exception.

    ``"cancelled"`` for cancellation, ``"deadline_exceeded"``,
    ``"connect_error"``, ``"circuit_open"``... for the library's errors,
    ``"error"`` for anything else (a bug in a stage).
    """
    cls = type(exc)
    kind = _kinds.get(cls)
    if kind is None:
        kind = _kinds[cls] = _kind_of(cls)
    return kind


def _kind_of(cls: type[BaseException]) -> str:
    if issubclass(cls, asyncio.CancelledError) or (
        cls.__name__ == "Cancelled" and cls.__module__.startswith("trio")
    ):
        return "cancelled"
    if not issubclass(cls, AioClientError):
        return "error"
    name = cls.__name__
    return _ERROR_KINDS.get(name) or _CAMEL.sub("_", name).lower()


def overrides(obj: object, base: type, name: str) -> bool:
    """Whether ``obj``'s class replaces ``base``'s hook ``name`` (else it is skipped)."""
    return getattr(type(obj), name, None) is not getattr(base, name)


def hook_failed(hook: object) -> None:
    """Log the exception an observer hook raised; the call goes on unaffected."""
    _log.exception("observer hook %r raised; the call is unaffected", hook)
