"""The one core every server adapter shares.

``admit`` turns the request's headers into a budget, a priority and a
:class:`~aio_client.CancelToken` (or an immediate 504/503); ``run`` runs the
handler inside the token's scope with the ambient deadline and priority set,
and decides how it ended: an :class:`~aio_client.server._outcomes.Ending`, whose
row in :data:`~aio_client.server._outcomes.OUTCOMES` gives the status, the
counter, the observer's label and the log line (the table is in ``_outcomes.py``).
A deadline passing after the response started breaks the connection (never a
clean EOF); a client that went away is recorded as 499.

Adapters (ASGI, aiohttp, Sanic) only translate requests and responses: they
pass :meth:`ServerCore.admit` the headers it reads (:attr:`ServerCore.header_names`),
the request's method, scheme and how to find its route template (for the
``observer``), and answer the core's questions about the exchange through one
small object per request (:class:`Exchange`). The handler runs in a
:class:`~aio_client.server._request_scope.RequestScope` on asyncio (one
deadline timer per event loop), in the token's anyio scope elsewhere.
"""

from __future__ import annotations

import asyncio
import logging
from asyncio import _get_running_loop
from collections.abc import Awaitable, Callable, Iterable
from threading import get_ident
from typing import Any, Final, Protocol, TypeVar, Unpack, final

import anyio

from .. import _clock
from .._cancel import CancelReason, CancelToken, _request_token
from .._deadline import (
    ENVOY_TIMEOUT_HEADER,
    GRPC_TIMEOUT_HEADER,
    TIMEOUT_HEADER,
    Deadline,
    _Ambient,
    _ambient,
    parse_envoy_timeout,
    parse_grpc_timeout,
    parse_timeout_header,
)
from .._errors import AioClientError, ConfigError, DeadlineExceededError
from .._priority import PRIORITY_HEADER, Priority, parse_priority_header
from .._server_events import (
    UNMATCHED_ROUTE,
    Admission,
    ClientInfo,
    RouteResolver,
    ServerOutcome,
    ServerOutcomeKind,
    new_outcome,
)
from .._timer import DeadlineTimer
from .._validation import validate_timeout
from ._guards import GuardRefusal, Passage, RouteRefusedError, ServerGuards, forwarded_address
from ._observers import combine_observers, notify
from ._options import OPTION_NAMES, ServerOptions, TrustedPeers
from ._outcomes import (
    OUTCOMES,
    Ending,
    Rejection,
    Row,
    ServerStats,
    answer_error,
    count,
    ending_of,
    refused,
    rejection,
)
from ._request_scope import RequestScope
from ._shedding import PriorityLoadShedder

__all__ = [
    "DEFAULT_MAX_TIMEOUT",
    "UNMATCHED_ROUTE",
    "Admission",
    "Exchange",
    "Rejection",
    "RouteResolver",
    "ServerCore",
    "ServerOutcome",
    "ServerOutcomeKind",
    "ServerStats",
    "current_admission",
]

T = TypeVar("T")

_log: Final = logging.getLogger("aio_client.server")
#: The ceiling on a request's budget when the server sets no ``max_timeout``
#: (seconds): a caller's header cannot hold a handler longer than this.
DEFAULT_MAX_TIMEOUT: Final = 60.0
_TIMEOUT_PARSERS: Final[dict[str, Callable[[str | None], float | None]]] = {
    TIMEOUT_HEADER: parse_timeout_header,
    GRPC_TIMEOUT_HEADER: parse_grpc_timeout,
    ENVOY_TIMEOUT_HEADER: parse_envoy_timeout,
}
# Seconds a WebSocket connection upgraded from a request may last without
# websocket_timeout: a year, for a token that needs some deadline.
_CONNECTION_CEILING: Final = 365 * 86400.0
_COMPLETED: Final = OUTCOMES[Ending.COMPLETED]
_ANSWERED_ERROR: Final = OUTCOMES[Ending.ANSWERED_ERROR]
_FAILED: Final = OUTCOMES[Ending.FAILED]
_RANK: Final = {Priority.LOW: 0, Priority.NORMAL: 1, Priority.HIGH: 2}
_new_object: Final = object.__new__


def current_admission() -> Admission | None:
    """The admission of the request being handled here, or ``None``.

    It travels with the ambient deadline (one context variable per request,
    not two), through every nested ``ambient()`` block and outgoing call.
    """
    origin = _ambient.get().origin
    return origin if isinstance(origin, Admission) else None


class Exchange(Protocol[T]):
    """What the core asks an adapter about one request's exchange with its client.

    One small object per request (often the adapter's own wrapper of the
    request) instead of a closure per question: with many requests in flight,
    each object a request keeps alive while it runs brings the next garbage
    collection nearer.
    """

    def call(self) -> Awaitable[T]:
        """Run the handler (or the app) once."""
        ...

    @property
    def started(self) -> bool:
        """Whether the response has started (its head is on its way)."""
        ...

    @property
    def disconnected(self) -> bool:
        """Whether the client is known to have gone away."""
        ...

    def status_of(self, value: T, /) -> int:
        """The status the handler's return value answers with."""
        ...

    def status_of_error(self, exc: Exception, /) -> int | None:
        """The status a framework answers ``exc`` with (``raise HTTPNotFound``); ``None``: 500."""
        ...


@final
class ServerCore:
    """Parses, admits, runs and maps requests; one per app (see the module docstring).

    Takes the keyword options of :class:`~aio_client.server.ServerOptions`
    (an unknown name is a :class:`~aio_client.ConfigError`). The effective
    budget is ``min(header or timeout, max_timeout, route maximum)``; ``max_timeout``
    defaults to 60 s (or ``timeout`` when longer): an inbound header may shorten a
    request's budget freely, and lengthen it only up to that ceiling.
    """

    __slots__ = (
        "_connections",
        "_forwarded",
        "_in_flight",
        "_needs_client",
        "_shutting_down",
        "_started",
        "_timer",
        "error_status",
        "guards",
        "header_names",
        "load_shedder",
        "low_timeout",
        "max_timeout",
        "observer",
        "priority",
        "stats",
        "stream_timeout",
        "timeout",
        "trust_priority",
        "wants_all_headers",
        "wants_peer",
        "websocket_timeout",
    )

    def __init__(self, **options: Unpack[ServerOptions]) -> None:
        unknown = options.keys() - OPTION_NAMES
        if unknown:
            raise ConfigError(
                f"unknown server option(s) {sorted(unknown)}; "
                f"the options are {sorted(OPTION_NAMES)}"
            )
        self.timeout = validate_timeout(options.get("timeout", 20.0), "timeout")
        if self.timeout == 0:
            raise ConfigError("timeout must be > 0 seconds")
        max_timeout = options.get("max_timeout")
        self.max_timeout = (
            max(DEFAULT_MAX_TIMEOUT, self.timeout)
            if max_timeout is None
            else validate_timeout(max_timeout, "max_timeout")
        )
        if self.max_timeout == 0:
            raise ConfigError("max_timeout must be > 0 seconds or None")
        self.low_timeout = validate_timeout(options.get("low_timeout", 0.005), "low_timeout")
        self.priority = Priority.coerce(options.get("priority", Priority.NORMAL))
        trust = options.get("trust_priority")
        if trust is not None and not callable(trust):
            raise ConfigError(
                f"trust_priority must be a function of a ClientInfo (trusted_peers(...)) "
                f"or None; got {trust!r}"
            )
        #: Who may raise a request's priority (``None``: nobody).
        self.trust_priority = trust
        error_status = options.get("error_status")
        if error_status is not None and not callable(error_status):
            raise ConfigError(
                f"error_status must be a function of an exception returning a status or None; "
                f"got {error_status!r}"
            )
        #: The app's own mapping of errors escaping handlers to statuses, asked first.
        self.error_status = error_status
        #: What bounds a response once started (``None``: the request's deadline).
        self.stream_timeout = _positive_or_none(options.get("stream_timeout"), "stream_timeout")
        #: The longest a WebSocket connection lasts (``None``: no limit).
        self.websocket_timeout = _positive_or_none(
            options.get("websocket_timeout"), "websocket_timeout"
        )
        load_shedder = options.get("load_shedder")
        if load_shedder is not None and not isinstance(load_shedder, PriorityLoadShedder):
            raise ConfigError(f"load_shedder must be a PriorityLoadShedder; got {load_shedder!r}")
        self.load_shedder = load_shedder
        observer = combine_observers(options.get("observer"))
        #: The observer (several given are combined into one), or ``None``.
        self.observer = observer
        checked = ServerGuards(
            options.get("guards", ()),
            client_key=options.get("client_key"),
            forwarded_header=options.get("forwarded_header"),
        )
        #: The guards and client identity (``None`` without guards).
        self.guards = checked if checked.guards else None
        self._forwarded = checked.forwarded_header
        # Who sent a request matters to the guards and to the priority trust.
        self._needs_client = self.guards is not None or trust is not None
        names = {*_TIMEOUT_PARSERS, PRIORITY_HEADER}
        if self._needs_client and self._forwarded is not None:
            names.add(self._forwarded)
        #: The (lower-case) headers :meth:`admit` reads: adapters may pass only these.
        self.header_names = frozenset(names)
        #: Whether :meth:`admit` needs every header (a custom ``client_key`` or
        #: ``trust_priority`` may read them).
        self.wants_all_headers = (self.guards is not None and checked.needs_headers) or (
            trust is not None and not isinstance(trust, TrustedPeers)
        )
        #: Whether :meth:`admit` needs the peer address (otherwise pass ``None``).
        self.wants_peer = self._needs_client
        started = getattr(observer, "request_started", None)
        if started is not None and not callable(started):
            raise ConfigError(f"observer.request_started must be callable; got {started!r}")
        self._started: Callable[[Admission], object] | None = started
        #: Running counts.
        self.stats = ServerStats()
        self._in_flight: set[CancelToken] = set()
        self._connections: set[CancelToken] = set()
        self._shutting_down = False
        # One deadline timer per event loop for every request (see _request_scope.py).
        self._timer: DeadlineTimer | None = None

    # -- arrival -----------------------------------------------------------------

    def admit(
        self,
        headers: Iterable[tuple[str, str]],
        *,
        route_max: float | None = None,
        method: str = "",
        scheme: str = "http",
        route: RouteResolver | None = None,
        peer: str | None = None,
        arrived_at: float | None = None,
    ) -> Admission | Rejection:
        """Decide what a request gets from its headers; never raises on header content.

        ``headers`` may be all of the request's, or only those named in
        :attr:`header_names`. ``method``, ``scheme`` and ``route`` only feed
        the observer's :class:`ServerOutcome`; ``route`` is called at most
        once, when the outcome is built (after the app ran, for adapters that
        route inside it). ``peer`` is the transport peer's address, the
        default client identity (needed only when :attr:`wants_peer`).
        ``arrived_at`` is when the request's head arrived (the loop's clock),
        for servers that read the whole body before the adapter sees the
        request: the budget runs from then (default: now).
        """
        loop = _get_running_loop()
        now = _clock.now() if loop is None else loop.time()
        if arrived_at is None or arrived_at > now:
            arrived_at = now
        stats = self.stats
        stats.requests += 1
        budget: float | None = None
        priority: Priority | None = None
        invalid = False
        needs_client = self._needs_client
        trusted: str | None = None
        forwarded: str | None = None
        kept: list[tuple[str, str]] | None = None
        if needs_client:
            trusted = self._forwarded
            if self.wants_all_headers:
                kept = []
        parsers = _TIMEOUT_PARSERS
        names = self.header_names
        for name, value in headers:
            # Adapters mostly pass the names read here, lower-case already.
            key = name if name in names else name.lower()
            if kept is not None:
                kept.append((key, value))
            parser = parsers.get(key)
            if parser is not None:
                seconds = parser(value)
                if seconds is None:
                    stats.malformed_headers += 1
                    invalid = True
                elif budget is None or seconds < budget:
                    budget = seconds
            elif key == PRIORITY_HEADER:
                parsed = parse_priority_header(value)
                if parsed is None:
                    stats.malformed_headers += 1
                    invalid = True
                elif priority is None:
                    priority = parsed
            elif key == trusted and forwarded is None:
                forwarded = value
        if budget is None:
            budget = self.timeout
        if self.max_timeout < budget:
            budget = self.max_timeout
        if route_max is not None and route_max < budget:
            budget = route_max
        client = None
        if needs_client:
            client = ClientInfo(
                peer or None,
                None
                if trusted is None or forwarded is None
                else forwarded_address(trusted, forwarded),
                () if kept is None else tuple(kept),
            )
        default = self.priority
        if priority is None:
            priority = default
        elif priority is not default and _RANK[priority] > _RANK[default]:
            # A priority above the default is a privilege: only trusted clients get it.
            trust = self.trust_priority
            if trust is None or client is None or not self._trusts(trust, client):
                stats.untrusted_priority += 1
                priority = default
        shedder = self.load_shedder
        if (
            self._shutting_down
            or budget <= 0.0
            or arrived_at + budget - now < self.low_timeout
            or (shedder is not None and not shedder.try_acquire(priority))
        ):
            return self._refuse(budget, priority, arrived_at, method, scheme, route, invalid)
        deadline = Deadline._trusted(arrived_at + budget)
        # Admission(...) field by field: the dataclass's __init__ costs a call more.
        admission: Admission = _new_object(Admission)
        admission.token = _request_token(deadline, loop, None if loop is None else get_ident())
        admission.deadline = deadline
        admission.priority = priority
        admission.budget = budget
        admission.arrived_at = arrived_at
        admission.holds_slot = shedder is not None
        admission.method = method
        admission.scheme = scheme
        admission.route = route
        admission.invalid_header = invalid
        admission.client = client
        return admission

    @staticmethod
    def _trusts(trust: Callable[[ClientInfo], bool], client: ClientInfo) -> bool:
        try:
            return bool(trust(client))
        except Exception:
            _log.exception("trust_priority raised; the request gets the default priority")
            return False

    def _refuse(
        self,
        budget: float,
        priority: Priority,
        arrived_at: float,
        method: str,
        scheme: str,
        route: RouteResolver | None,
        invalid: bool,
    ) -> Rejection:
        retry_after: float | None = None
        reason: CancelReason | None = None
        loop = _get_running_loop()
        now = _clock.now() if loop is None else loop.time()
        if self._shutting_down:
            ending, reason = Ending.SHUTDOWN, CancelReason.SHUTDOWN
        elif budget <= 0.0 or arrived_at + budget - now < self.low_timeout:
            ending, reason = Ending.EXPIRED_ON_ARRIVAL, CancelReason.DEADLINE
        else:
            ending = Ending.SHED
            shedder = self.load_shedder
            retry_after = None if shedder is None else shedder.retry_after
        row = OUTCOMES[ending]
        count(self.stats, row)
        answer = rejection(row, retry_after=retry_after)
        observer = self.observer
        if observer is not None:
            notify(
                observer,
                new_outcome(
                    answer.status,
                    reason,
                    budget,
                    max(0.0, _clock.now() - arrived_at),
                    priority,
                    False,
                    row.kind,
                    method,
                    _resolve_route(route),
                    scheme,
                    invalid,
                ),
            )
        return answer

    # -- handling ----------------------------------------------------------------

    async def run(self, admission: Admission, exchange: Exchange[T]) -> T | Rejection:
        """Run ``exchange.call()`` under the admission's token, deadline and priority.

        Returns the handler's value when it completes (its token stays
        uncancelled), or a :class:`Rejection` when the token ended it.
        Cancellation from outside (the server cancelling the task) is
        recorded (``exchange.disconnected`` tells a client hang-up from a
        shutdown) and propagates unchanged. ``exchange`` also tells the
        observer the status of the handler's value or error.

        With guards, they run first, under the token's scope (so a wait for a
        permit ends with the deadline or a disconnect); a refusal comes back
        as a deliverable :class:`Rejection` and the handler never runs.
        """
        token = admission.token
        self._in_flight.add(token)
        # _Ambient(deadline, priority, admission) field by field: its __init__
        # costs a call more (the test of _Ambient's slots pins the fields).
        values: _Ambient = _new_object(_Ambient)
        values.deadline = admission.deadline
        values.priority = admission.priority
        values.origin = admission
        # Put back with set(), not reset(token): the token would be one more object
        # kept alive while the request runs.
        previous = _ambient.get()
        _ambient.set(values)
        status = 500
        row = _FAILED
        handled = False
        passage: Passage | None = None
        # The guarding breakers' verdict: None (neither) unless the handler answered.
        failed: bool | None = None
        settle = False
        timer = self._timer
        loop = token._loop  # the loop the request was admitted on, which runs it
        if loop is None:
            loop = asyncio._get_running_loop()
        if timer is None or timer.loop is not loop:
            timer = self.loop_timer()
        task = None if loop is None else asyncio.current_task(loop)
        scope = token.scope() if timer is None or task is None else RequestScope(token, timer, task)
        try:
            try:
                returned = False
                refusal: GuardRefusal | None = None
                # The scope's block, spelled out: a with statement would keep the
                # scope's bound __exit__ alive while the request runs.
                scope.__enter__()
                try:
                    guards = self.guards
                    entry = (
                        None
                        if guards is None
                        else await guards.enter(admission.client or ClientInfo(None))
                    )
                    if isinstance(entry, GuardRefusal):
                        refusal = entry
                    else:
                        passage = entry
                        handled = True
                        if self._started is not None:
                            self._notify_started(admission)
                        value = await exchange.call()
                        returned = True
                except BaseException as exc:
                    if not scope.__exit__(type(exc), exc, exc.__traceback__):
                        raise
                else:
                    scope.__exit__(None, None, None)
                if refusal is not None:
                    answer, row = refused(
                        self.stats, refusal.status, refusal.retry_after, refusal.body
                    )
                    status = answer.status
                    return answer
                # Out of the scope first: finishing the token then has no scope to move.
                if returned:
                    reason = token._reason
                    if reason is not None:
                        # The handler returned after its token fired: its client left
                        # (a task group of its own took the cancellation for its own,
                        # as Starlette's stream does), or it swallowed the
                        # cancellation and answered late. The answer is the token's
                        # all the same (499, 504, 503), never a late one of its own.
                        row = OUTCOMES[ending_of(reason)]
                        count(self.stats, row)
                        answer = rejection(
                            row, started=exchange.started, gone=exchange.disconnected
                        )
                        status, settle = answer.status, True
                        return answer
                    if not token._finished:  # an adapter may have seen the response end
                        token._finish()
                    status = exchange.status_of(value)
                    row = _COMPLETED
                    # count(self.stats, row), inline on the most common path (a test
                    # pins the row: its counter, no log line).
                    self.stats.completed += 1
                    failed, settle = status >= 500, True
                    return value
            except Exception as exc:
                if token.reason is None and not self._spent(exc, admission):
                    mapped = self._answer_error(exc, exchange)
                    if mapped is not None:
                        answer, row = mapped
                        status = answer.status
                        # A route's own guard refusing is no failure of the app.
                        failed = None if isinstance(exc, RouteRefusedError) else status >= 500
                        settle = True
                        return answer
                    status = exchange.status_of_error(exc) or 500
                    # An HTTP error under 500 is an answer given on purpose.
                    row = _ANSWERED_ERROR if status < 500 else _FAILED
                    count(self.stats, row)
                    failed, settle = status >= 500, True
                    raise
                # The handler turned the cancellation into an error of its own: an
                # outgoing call reporting the shared deadline (expected), or
                # cleanup failing (worth a warning).
                # A connection error after a hang-up is the hang-up itself.
                level = (
                    logging.DEBUG
                    if isinstance(exc, (AioClientError, ConnectionError))
                    else logging.WARNING
                )
                _log.log(level, "the handler raised after its token fired", exc_info=True)
                if token.reason is None:
                    token.cancel(CancelReason.DEADLINE, "the deadline passed")
            # The scope ends early only when the token fired; DEADLINE covers a
            # scope deadline that beat a just-completed response.
            row = OUTCOMES[ending_of(token.reason or CancelReason.DEADLINE)]
            count(self.stats, row)
            answer = rejection(row, started=exchange.started, gone=exchange.disconnected)
            status = answer.status
            settle = True
            return answer
        except anyio.get_cancelled_exc_class():
            if token.reason is None:
                reason = (
                    token.hang_up_reason()
                    if exchange.disconnected and not self._shutting_down
                    else CancelReason.SHUTDOWN
                )
                token.cancel(reason, "the server cancelled the handler")
            row = OUTCOMES[ending_of(token.reason)]
            count(self.stats, row)
            status = 500 if row.status is None else row.status
            raise
        finally:
            _ambient.set(previous)
            self._in_flight.discard(token)
            if admission.holds_slot and self.load_shedder is not None:
                self.load_shedder.release()
            # Permits go back whatever ended the request; async breaker listeners
            # are awaited only off the cancellation path (the next request tells them).
            if passage is not None and passage.close(failed) and settle:
                await passage.settle()
            observer = self.observer
            if observer is not None:
                notify(
                    observer,
                    new_outcome(
                        status,
                        token._reason,
                        admission.budget,
                        max(0.0, _clock.now() - admission.arrived_at),
                        admission.priority,
                        handled,
                        row.kind,
                        admission.method,
                        _resolve_route(admission.route),
                        admission.scheme,
                        admission.invalid_header,
                    ),
                )
                # Done with the resolver, often the adapter's whole exchange. A
                # context captured during the request (a task the handler started, a
                # server's timer: uvicorn's keep-alive timer did, see _asgi.py) keeps
                # the admission alive after it, and must not keep the exchange too.
                # Measured: it made servers with an observer collect garbage all the time.
                admission.route = None

    # -- streams -----------------------------------------------------------------

    def response_started(self, token: CancelToken) -> None:
        """The response has started: from now on ``stream_timeout`` bounds it, when set.

        Adapters call it once per request, as the response's head goes out
        (or as soon as they notice it did).
        """
        stream_timeout = self.stream_timeout
        if stream_timeout is not None:
            token._move_deadline(Deadline._trusted(_clock.now() + stream_timeout))

    # -- the event loop's timer ---------------------------------------------------

    def loop_timer(self) -> DeadlineTimer | None:
        """The deadline timer of the running event loop, or ``None`` when it is not asyncio's."""
        loop = asyncio._get_running_loop()
        if loop is None:
            return None
        timer = self._timer
        if timer is None or timer.loop is not loop:
            timer = self._timer = DeadlineTimer(loop)
        return timer

    # -- shutdown -----------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        """Requests being handled now."""
        return len(self._in_flight)

    @property
    def shutting_down(self) -> bool:
        """Whether :meth:`shutdown` was called."""
        return self._shutting_down

    def shutdown(self, message: str = "the server is shutting down") -> int:
        """Cancel every request in flight with ``SHUTDOWN`` (503) and refuse new ones.

        WebSocket connections are cancelled too (closed with 1001). Returns
        how many requests and connections were cancelled.
        """
        self._shutting_down = True
        tokens = [*self._in_flight, *self._connections]
        return sum(token.cancel(CancelReason.SHUTDOWN, message) for token in tokens)

    # -- WebSocket connections ---------------------------------------------------

    @property
    def connections(self) -> int:
        """WebSocket connections open now."""
        return len(self._connections)

    def open_connection(self) -> CancelToken | None:
        """A token for a new WebSocket connection, or ``None`` when shutting down.

        The token's deadline is ``websocket_timeout`` from now (none without
        it); :meth:`shutdown` fires it. Hand it back with :meth:`close_connection`.
        """
        if self._shutting_down:
            return None
        limit = self.websocket_timeout
        token = CancelToken(
            deadline=None if limit is None else Deadline._trusted(_clock.now() + limit)
        )
        self._connections.add(token)
        return token

    def close_connection(self, token: CancelToken) -> None:
        """The connection of ``token`` has ended."""
        self._connections.discard(token)

    def connection_upgraded(self, token: CancelToken) -> Deadline | None:
        """A request became a WebSocket connection (aiohttp): move its deadline.

        From now on ``websocket_timeout`` bounds it (without it, nothing but
        the far-off ceiling below); returns the deadline calls should inherit
        (``None``: none).
        """
        limit = self.websocket_timeout
        token._move_deadline(
            Deadline._trusted(_clock.now() + (_CONNECTION_CEILING if limit is None else limit))
        )
        return None if limit is None else token.deadline

    # -- how a request ended -----------------------------------------------------

    def _answer_error(
        self, exc: Exception, exchange: Exchange[Any]
    ) -> tuple[Rejection, Row] | None:
        """The answer to one of our errors escaping the handler, or ``None`` (the framework's)."""
        started, gone = exchange.started, exchange.disconnected
        if isinstance(exc, RouteRefusedError):  # a route's own guards: as the app-wide ones answer
            refusal = exc.refusal
            answer, row = refused(self.stats, refusal.status, refusal.retry_after, refusal.body)
            if started or gone:
                return Rejection(answer.status, started=started, peer_gone=gone), row
            return answer, row
        return answer_error(exc, self.stats, self.error_status, started=started, gone=gone)

    def _spent(self, exc: Exception, admission: Admission) -> bool:
        # An outgoing call refused for lack of budget means the request's own
        # budget is gone too, even if the token's timer has not fired yet.
        return (
            isinstance(exc, DeadlineExceededError)
            and admission.deadline.remaining() <= self.low_timeout
        )

    def _notify_started(self, admission: Admission) -> None:
        if self._started is None:  # pragma: no cover - callers check first
            return
        try:
            self._started(admission)
        except Exception:
            _log.exception("the server observer raised; the response is unaffected")


def _positive_or_none(value: float | None, name: str) -> float | None:
    """An optional option in seconds: ``None``, or a finite number > 0."""
    if value is None:
        return None
    seconds = validate_timeout(value, name)
    if seconds == 0:
        raise ConfigError(f"{name} must be > 0 seconds or None")
    return seconds


def _resolve_route(resolver: RouteResolver | None) -> str:
    if resolver is None:
        return UNMATCHED_ROUTE
    try:
        route = resolver()
    except Exception:
        # A framework that cannot say which route matched must not cost a response.
        _log.debug("could not find the request's route template", exc_info=True)
        return UNMATCHED_ROUTE
    return route if isinstance(route, str) and route else UNMATCHED_ROUTE
