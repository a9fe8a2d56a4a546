"""How a served request ended: one table from an ending to its status, counter and log line.

Every way a request can end is an :class:`Ending`; :data:`OUTCOMES` gives
each one its :class:`ServerOutcomeKind` (the metrics label), the status the
client gets (``None``: the app's or the framework's own), the
:class:`ServerStats` field that counts it and the line logged about it. The
core decides the ending; everything else (the response, the count, the
observer's outcome) is read from the row, so the three can never disagree.

=====================  ======================  ======  =======================
ending                 kind                    status  counted in
=====================  ======================  ======  =======================
``COMPLETED``          ``ok``                  app's   ``completed``
``ANSWERED_ERROR``     ``ok``                  app's   ``failed`` (a 4xx the
                                                       handler raised on purpose)
``FAILED``             ``error``               500     ``failed``
``EXPIRED_ON_ARRIVAL`` ``deadline``            504     ``expired_on_arrival``
``DEADLINE``           ``deadline``            504     ``deadline_exceeded``
``DISCONNECTED``       ``disconnected``        499     ``client_disconnected``
``SHUTDOWN``           ``shutdown``            503     ``shutdown``
``CANCELLED``          ``cancelled``           503     ``cancelled``
``SHED``               ``shed``                503     ``shed``
``RATE_LIMITED``       ``rate_limited``        429     ``rate_limited``
``REFUSED``            ``refused``             503     ``refused``
``UPSTREAM_FAILED``    ``error``               502     ``failed``
=====================  ======================  ======  =======================

A 504 always carries ``X-Do-Not-Retry: 1`` (the caller's budget is spent);
429 and 503 refusals carry ``Retry-After`` when the refusing policy knows when
to come back.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, final

from .._cancel import CancelReason
from .._classifier import DO_NOT_RETRY_HEADER
from .._errors import (
    AioClientError,
    CircuitOpenError,
    DeadlineExceededError,
    HTTPStatusError,
    RefusedError,
    TransportError,
)
from .._retry_after import RETRY_AFTER_HEADER, format_retry_after
from .._server_events import ServerOutcomeKind
from ..policies._errors import RateLimitedError

__all__ = [
    "OUTCOMES",
    "Ending",
    "Rejection",
    "Row",
    "ServerStats",
    "answer_error",
    "count",
    "ending_of",
    "refused",
    "rejection",
    "status_of_refusal",
]

_log: Final = logging.getLogger("aio_client.server")
_TEXT: Final = ("content-type", "text/plain; charset=utf-8")


@final
@dataclass(slots=True)
class ServerStats:
    """Running counts of what the middleware did (read them; do not write)."""

    #: Requests seen.
    requests: int = 0
    #: Handlers that returned normally.
    completed: int = 0
    #: Deadline or priority header values that were malformed, negative or absurd.
    malformed_headers: int = 0
    #: 504 on arrival: the budget was already under ``low_timeout``.
    expired_on_arrival: int = 0
    #: Handlers cancelled because the deadline passed.
    deadline_exceeded: int = 0
    #: Handlers cancelled because the client went away (recorded as 499).
    client_disconnected: int = 0
    #: Requests cancelled or refused because the server is shutting down (503).
    shutdown: int = 0
    #: Handlers whose token application code cancelled (503).
    cancelled: int = 0
    #: Requests refused by the load shedder (503).
    shed: int = 0
    #: Handlers that raised (the framework answers those, usually 500), an
    #: upstream failure answered 502 among them.
    failed: int = 0
    #: Requests refused by a rate-limit guard (429).
    rate_limited: int = 0
    #: Requests refused by a bulkhead or circuit-breaker guard (503).
    refused: int = 0
    #: Priority headers asking for more than the default from a client not
    #: trusted with it (``trust_priority``); those requests got the default.
    untrusted_priority: int = 0


@final
@dataclass(frozen=True, slots=True)
class Rejection:
    """A response the core decided on instead of the app's.

    The adapter sends it when :attr:`deliverable`. Otherwise, when
    ``started`` the app's response had begun and the adapter must break the
    connection (a truncated body must never look complete); else the client
    is gone and there is no one to answer.
    """

    status: int
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    started: bool = False
    peer_gone: bool = False

    @property
    def deliverable(self) -> bool:
        """Whether the adapter should send this response."""
        return not (self.started or self.peer_gone)


class Ending(enum.Enum):
    """Every way a served request can end (see the module's table)."""

    COMPLETED = enum.auto()
    ANSWERED_ERROR = enum.auto()
    FAILED = enum.auto()
    EXPIRED_ON_ARRIVAL = enum.auto()
    DEADLINE = enum.auto()
    DISCONNECTED = enum.auto()
    SHUTDOWN = enum.auto()
    CANCELLED = enum.auto()
    SHED = enum.auto()
    RATE_LIMITED = enum.auto()
    REFUSED = enum.auto()
    UPSTREAM_FAILED = enum.auto()


@final
@dataclass(frozen=True, slots=True)
class Row:
    """What one :class:`Ending` means: its label, status, counter, body and log line."""

    kind: ServerOutcomeKind
    #: The status sent (499: recorded only, the client is gone); ``None``: the app's.
    status: int | None
    #: The :class:`ServerStats` field counting it.
    counter: str
    #: The body of the response the core sends for it.
    body: bytes = b""
    #: A line logged at INFO when it happens (``None``: nothing logged).
    log: str | None = None


#: The table (read-only). Every :class:`Ending` has one row; a test pins that
#: each row's counter is a :class:`ServerStats` field.
OUTCOMES: Final[Mapping[Ending, Row]] = MappingProxyType(
    {
        Ending.COMPLETED: Row(ServerOutcomeKind.OK, None, "completed"),
        Ending.ANSWERED_ERROR: Row(ServerOutcomeKind.OK, None, "failed"),
        Ending.FAILED: Row(ServerOutcomeKind.ERROR, None, "failed"),
        Ending.EXPIRED_ON_ARRIVAL: Row(
            ServerOutcomeKind.DEADLINE,
            504,
            "expired_on_arrival",
            b"deadline exceeded: the request's budget was spent before it arrived\n",
        ),
        Ending.DEADLINE: Row(
            ServerOutcomeKind.DEADLINE,
            504,
            "deadline_exceeded",
            b"deadline exceeded: the request's deadline passed while it was handled\n",
        ),
        Ending.DISCONNECTED: Row(
            ServerOutcomeKind.DISCONNECTED,
            499,
            "client_disconnected",
            log="the client went away; its handler was cancelled (499)",
        ),
        Ending.SHUTDOWN: Row(
            ServerOutcomeKind.SHUTDOWN, 503, "shutdown", b"the server is shutting down\n"
        ),
        Ending.CANCELLED: Row(
            ServerOutcomeKind.CANCELLED, 503, "cancelled", b"the request was cancelled\n"
        ),
        Ending.SHED: Row(ServerOutcomeKind.SHED, 503, "shed", b"overloaded; retry later\n"),
        Ending.RATE_LIMITED: Row(
            ServerOutcomeKind.RATE_LIMITED, 429, "rate_limited", b"too many requests\n"
        ),
        Ending.REFUSED: Row(ServerOutcomeKind.REFUSED, 503, "refused", b"service unavailable\n"),
        Ending.UPSTREAM_FAILED: Row(
            ServerOutcomeKind.ERROR, 502, "failed", b"bad gateway: an upstream call failed\n"
        ),
    }
)

# The body of an app-chosen status (error_status) that no row of the table has.
_BODIES: Final = {503: b"service unavailable\n"}
_OF_REASON: Final = {
    CancelReason.DEADLINE: Ending.DEADLINE,
    CancelReason.CLIENT_DISCONNECTED: Ending.DISCONNECTED,
    CancelReason.SHUTDOWN: Ending.SHUTDOWN,
}


def ending_of(reason: CancelReason | None) -> Ending:
    """The ending of a handler its token stopped for ``reason``.

    No reason (a token already finished, cancelled from outside) reads as
    shutdown: only the server stops a request that way.
    """
    if reason is None:
        return Ending.SHUTDOWN
    return _OF_REASON.get(reason, Ending.CANCELLED)


def count(stats: ServerStats, row: Row) -> None:
    """Count one request ending as ``row`` says, and log its line."""
    name = row.counter
    setattr(stats, name, getattr(stats, name) + 1)
    if row.log is not None:
        _log.info(row.log)


def rejection(
    row: Row,
    *,
    started: bool = False,
    gone: bool = False,
    retry_after: float | None = None,
    body: bytes = b"",
) -> Rejection:
    """The response for ``row`` (``started``/``gone``: there is no one to answer)."""
    status = 500 if row.status is None else row.status
    if row.kind is ServerOutcomeKind.DISCONNECTED:
        gone = True  # recorded as 499: there is no one to answer
    if started or gone:
        return Rejection(status, started=started, peer_gone=gone)
    headers: tuple[tuple[str, str], ...] = (_TEXT,)
    if retry_after is not None:
        headers += ((RETRY_AFTER_HEADER, format_retry_after(retry_after)),)
    if status == 504:
        headers += ((DO_NOT_RETRY_HEADER, "1"),)
    return Rejection(status, headers, body or row.body)


def refused(
    stats: ServerStats, status: int, retry_after: float | None, body: bytes = b""
) -> tuple[Rejection, Row]:
    """A guard's refusal (429: rate limit, else a bulkhead or breaker's 503), counted."""
    row = OUTCOMES[Ending.RATE_LIMITED if status == 429 else Ending.REFUSED]
    count(stats, row)
    return rejection(row, retry_after=retry_after, body=body), row


def answer_error(
    exc: Exception,
    stats: ServerStats,
    error_status: Callable[[Exception], int | None] | None,
    *,
    started: bool,
    gone: bool,
) -> tuple[Rejection, Row] | None:
    """The answer to one of our errors escaping a handler, counted; ``None``: the framework's.

    The app's ``error_status`` is asked first, then :func:`status_of_refusal`.
    Nothing is logged as a traceback: these are answers, not crashes.
    """
    status: int | None = None
    if error_status is not None:
        try:
            status = error_status(exc)
        except Exception:
            _log.exception("error_status raised; the default mapping applies")
    answer = status_of_refusal(exc) if status is None else (status, None, b"")
    if answer is None:
        return None
    status, retry_after, body = answer
    if status == 429:
        row = OUTCOMES[Ending.RATE_LIMITED]
    elif status == 504:
        row = OUTCOMES[Ending.DEADLINE]
    elif status == 503 and isinstance(exc, RefusedError):
        row = OUTCOMES[Ending.REFUSED]
    elif status == 502:
        row = OUTCOMES[Ending.UPSTREAM_FAILED]
    else:
        # The app's own choice of status for an error: counted as failed, and
        # labelled as an answer when under 500.
        base = OUTCOMES[Ending.ANSWERED_ERROR if status < 500 else Ending.FAILED]
        row = Row(base.kind, status, base.counter, _BODIES.get(status, b""))
    count(stats, row)
    return rejection(row, started=started, gone=gone, retry_after=retry_after, body=body), row


def status_of_refusal(exc: BaseException) -> tuple[int, float | None, bytes] | None:
    """How a handler's escaping aio_client error is answered: ``(status, retry_after, body)``.

    ======================================================  ==============================
    a local policy on the route (no attempts recorded)
    ``RateLimitedError``                                    429 + ``Retry-After``
    ``BulkheadFullError``, ``CircuitOpenError``              503 (+ ``Retry-After``)
    ``DeadlineExceededError`` (``Timeout``, the deadline)   504 + ``X-Do-Not-Retry``
    an outgoing call (attempts recorded)
    ``DeadlineExceededError``                               504 + ``X-Do-Not-Retry``: the
                                                            request's own budget ran out
    ``CircuitOpenError`` (every endpoint's breaker open)   503 (+ ``Retry-After``)
    ``TransportError``, 5xx ``HTTPStatusError``             502 Bad Gateway
    anything else                                           ``None``: the framework's 500
    ======================================================  ==============================
    """
    if not isinstance(exc, AioClientError):
        return None
    if isinstance(exc, DeadlineExceededError):
        return 504, None, b""
    if exc.attempts:
        if isinstance(exc, CircuitOpenError):  # the upstream is being given a rest
            return 503, exc.retry_after or None, b""
        if isinstance(exc, TransportError):
            return 502, None, b""
        if isinstance(exc, HTTPStatusError) and exc.response.status >= 500:
            return 502, None, b""
        return None
    if isinstance(exc, RateLimitedError):
        return 429, exc.retry_after, b""
    if isinstance(exc, RefusedError):
        return 503, exc.retry_after or None, b""
    return None
