"""What the server core tells an observer of a request: its sender, admission and outcome.

Defined here, outside ``aio_client.server``, so the metrics sinks can read
these values without importing the server adapters; ``aio_client.server``
re-exports the public ones.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Final, final

from ._cancel import CancelReason, CancelToken
from ._deadline import Deadline
from ._priority import Priority

__all__ = [
    "UNMATCHED_ROUTE",
    "Admission",
    "ClientInfo",
    "RouteResolver",
    "ServerOutcome",
    "ServerOutcomeKind",
]

#: The route of a request that matched no route (or was refused before routing
#: and matches none): every such request shares this one value, so a scan of
#: random paths cannot grow metrics without bound.
UNMATCHED_ROUTE: Final = "<unmatched>"
#: Finds the matched route's template (``"/users/{id}"``) once it is known, or
#: ``None``; called at most once per request, and only when there is an observer.
RouteResolver = Callable[[], "str | None"]


@final
@dataclass(frozen=True, slots=True)
class ClientInfo:
    """Who sent a request, as far as the server can tell (what ``client_key`` gets)."""

    #: The transport peer's address (``None``: unknown, e.g. a Unix socket).
    peer: str | None
    #: The left-most address of the forwarding header the app chose to trust,
    #: or ``None`` (no such header configured, absent, or not an address).
    forwarded: str | None = None
    #: The request's headers (lower-case names); filled only for a custom ``client_key``.
    headers: tuple[tuple[str, str], ...] = ()

    @property
    def address(self) -> str | None:
        """The trusted forwarded address if any, else the peer address."""
        return self.forwarded if self.forwarded is not None else self.peer


class ServerOutcomeKind(enum.StrEnum):
    """How a request ended, in one word (a bounded metrics label)."""

    #: The handler answered (any status, including an HTTP error it raised on purpose).
    OK = "ok"
    #: The handler raised; the framework answers it (usually 500).
    ERROR = "error"
    #: The deadline passed, on arrival or while handling (504).
    DEADLINE = "deadline"
    #: The client went away first (recorded as 499).
    DISCONNECTED = "disconnected"
    #: Refused by the load shedder (503).
    SHED = "shed"
    #: Refused by a rate-limit guard (429).
    RATE_LIMITED = "rate_limited"
    #: Refused by a bulkhead or circuit-breaker guard (503).
    REFUSED = "refused"
    #: Refused or cancelled because the server is shutting down (503).
    SHUTDOWN = "shutdown"
    #: Application code cancelled the request's token (503).
    CANCELLED = "cancelled"


@final
@dataclass(frozen=True, slots=True)
class ServerOutcome:
    """How one request ended, for an ``observer`` (metrics, logs).

    Holds no raw path, query or header value: ``route`` is the matched
    route's template, so it is safe as a metrics label.
    """

    #: Status sent, or 499 when the client went away first.
    status: int
    #: Why the request's token fired, or ``None``.
    reason: CancelReason | None
    #: Seconds of budget the request was granted on arrival.
    budget: float
    #: Seconds from arrival to the end of handling.
    elapsed: float
    #: The request's effective priority.
    priority: Priority
    #: Whether the handler ran at all.
    handled: bool
    #: How the request ended, in one word.
    outcome: ServerOutcomeKind = ServerOutcomeKind.OK
    #: The request method as received (upper-case for well-behaved clients;
    #: sinks fold unknown methods into one value).
    method: str = ""
    #: The matched route's template (``"/users/{id}"``), or :data:`UNMATCHED_ROUTE`.
    route: str = UNMATCHED_ROUTE
    #: ``"http"`` or ``"https"``.
    scheme: str = "http"
    #: Whether a deadline or priority header was malformed, negative or absurd
    #: (and therefore ignored). Orthogonal to ``outcome``: such a request still runs.
    invalid_header: bool = False


@final
@dataclass(slots=True)
class Admission:
    """A request let in by the server core's ``admit``: its budget, priority and token.

    Read its fields; do not write them. (Not frozen: a frozen dataclass's
    ``__init__`` sets each field through ``object.__setattr__``, which cost
    every request about 5,000 instructions more.)
    """

    #: The request's cancellation token.
    token: CancelToken
    #: Arrival + budget, on the loop clock.
    deadline: Deadline
    #: The effective priority.
    priority: Priority
    #: Seconds granted on arrival.
    budget: float
    #: Loop time of arrival.
    arrived_at: float
    #: Whether a load-shedder slot must be released.
    holds_slot: bool
    #: The request method as received.
    method: str = ""
    #: ``"http"`` or ``"https"``.
    scheme: str = "http"
    #: Finds the route template for the observer (``None``: unknown).
    route: RouteResolver | None = None
    #: Whether a deadline or priority header was malformed and ignored.
    invalid_header: bool = False
    #: Who sent the request (only when the core has guards).
    client: ClientInfo | None = None


# Hot-path constructor for the server core: a frozen dataclass's own __init__
# goes through object.__setattr__ per field, which costs a request about a
# microsecond more than the slots' setters (see benchmarks/README.md).
_new: Final = object.__new__
(
    _o_status,
    _o_reason,
    _o_budget,
    _o_elapsed,
    _o_priority,
    _o_handled,
    _o_outcome,
    _o_method,
    _o_route,
    _o_scheme,
    _o_invalid_header,
) = (ServerOutcome.__dict__[field.name].__set__ for field in fields(ServerOutcome))


def new_outcome(
    status: int,
    reason: CancelReason | None,
    budget: float,
    elapsed: float,
    priority: Priority,
    handled: bool,
    outcome: ServerOutcomeKind,
    method: str,
    route: str,
    scheme: str,
    invalid_header: bool,
) -> ServerOutcome:
    """``ServerOutcome(...)`` with every field, positionally, for the server core's hot path."""
    value: ServerOutcome = _new(ServerOutcome)
    _o_status(value, status)
    _o_reason(value, reason)
    _o_budget(value, budget)
    _o_elapsed(value, elapsed)
    _o_priority(value, priority)
    _o_handled(value, handled)
    _o_outcome(value, outcome)
    _o_method(value, method)
    _o_route(value, route)
    _o_scheme(value, scheme)
    _o_invalid_header(value, invalid_header)
    return value
