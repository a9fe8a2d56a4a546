"""One logical call, as a strategy sees it.

A :class:`Call` is made per ``client.request(...)`` and dropped when it
returns; it is the strategy's only handle on the client. Strategies decide
*when* and *how many*; :meth:`Call.attempt` does everything an attempt needs
(endpoint choice, propagation headers, the attempt's budget, error capture,
history), so every strategy gets the same behaviour for free.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Final, Protocol, final

import anyio

from . import _clock
from ._attempts import AttemptKind, AttemptRecord
from ._classifier import Verdict
from ._deadline import (
    TIMEOUT_HEADER,
    Deadline,
    format_timeout_header,
    reset_ambient,
    set_ambient,
)
from ._errors import AioClientError, CircuitOpenError, DeadlineExceededError
from ._events import (
    RESPONSE,
    AttemptFinished,
    AttemptStarted,
    CallWatcher,
    ExtraAttemptRefused,
    ending_of,
    error_kind,
    hook_failed,
)
from ._models import Request, Response
from ._priority import PRIORITY_HEADER, Priority
from ._redaction import redacted_url

if TYPE_CHECKING:
    import asyncio

    from ._classifier import Classifier
    from ._pipeline import Handler
    from ._siblings import Siblings
    from ._timer import DeadlineTimer
    from .strategies._budget import RetryBudget

__all__ = ["ATTEMPT_HEADER", "AttemptInfo", "Call", "CallSettings", "Outcome", "current_attempt"]

#: Header carrying the 1-based attempt number, so servers can spot duplicates.
ATTEMPT_HEADER: Final = "x-request-attempt"

#: What an attempt ends with: a response or the error it failed with.
Outcome = Response | AioClientError


@final
class AttemptInfo:
    """Which physical attempt is running: for attempt stages and observers."""

    # _unsent: set (only) by a transport's pool gate when the attempt was cancelled
    # while it waited for a connection: nothing of it was sent (read with getattr).
    __slots__ = ("_unsent", "deadline", "endpoint", "kind", "max_response_size", "number")

    def __init__(
        self,
        number: int,
        kind: AttemptKind,
        endpoint: str,
        deadline: Deadline,
        max_response_size: int | None = None,
    ) -> None:
        #: 1-based attempt number (as in ``X-Request-Attempt``).
        self.number = number
        #: Why it was sent: first, retry or hedge.
        self.kind = kind
        #: The base URL it goes to.
        self.endpoint = endpoint
        #: When the client cancels the attempt: the call's deadline, or the
        #: attempt's share of it when the strategy splits the budget.
        self.deadline = deadline
        #: The most body bytes (decoded) the transport may read; ``None``: no limit.
        self.max_response_size = max_response_size
        self._unsent: bool  # see __slots__: left unset on the common path

    def __repr__(self) -> str:
        return f"AttemptInfo({self.number}, {self.kind.value!r}, {self.endpoint!r})"


def _record(
    fields: tuple[int, AttemptKind, str, float, int | None, str | None, bool, str],
) -> AttemptRecord:
    # AttemptRecord(...) without the named tuple's Python-level __new__: every
    # successful call makes one, all eight fields are given here anyway, and the
    # difference shows in benchmarks/instructions.py.
    return _tuple_new(AttemptRecord, fields)


_tuple_new = tuple.__new__
_set_attempts = Response.__dict__["attempts"].__set__

_ATTEMPT: ContextVar[AttemptInfo | None] = ContextVar("aio_client_attempt", default=None)


class HearsQueued(Protocol):
    """A hedged call's strategy, told when the call's attempts wait for a connection."""

    @property
    def call(self) -> Call: ...

    def queued(self, number: int, waiting: bool) -> None:
        """Attempt ``number`` started (``True``) or stopped (``False``) waiting for a
        connection in a transport's pool."""


#: The hedged calls running now, by ``id()`` of their Deadline. A pool gate finds an
#: attempt's call by the deadline its AttemptInfo carries (every call has a Deadline
#: of its own, which a hedging strategy never splits), so no other call pays for it:
#: a context variable, set for each hedged call, cost it about 4,000 instructions.
_HEDGED: dict[int, HearsQueued] = {}


def current_attempt() -> AttemptInfo | None:
    """The attempt being sent, inside an attempt stage or transport; else ``None``."""
    return _ATTEMPT.get()


@final
class CallSettings:
    """What every call of one client shares: made once, when the client is built."""

    __slots__ = ("budget", "classifier", "low_timeout", "max_response_size", "send")

    def __init__(
        self,
        send: Handler,
        classifier: Classifier,
        budget: RetryBudget,
        low_timeout: float,
        max_response_size: int | None = None,
    ) -> None:
        #: The folded attempt stages over the transport.
        self.send = send
        #: Decides what each outcome means.
        self.classifier = classifier
        #: The client's shared retry/hedge budget.
        self.budget = budget
        #: Below this many seconds left, no attempt is sent.
        self.low_timeout = low_timeout
        #: The client's response size limit (bytes of decoded body); ``None``: no limit.
        self.max_response_size = max_response_size


@final
class Call:
    """The state of one logical call; made by the client, driven by a strategy."""

    __slots__ = (
        "_endpoints",
        "_offset",
        "_refused",
        "_settings",
        "_starts",
        "budget",
        "classifier",
        "clock",
        "deadline",
        "history",
        "low_timeout",
        "max_response_size",
        "priority",
        "request",
        "retries_allowed",
        "siblings",
        "task",
        "timer",
        "watchers",
    )

    def __init__(
        self,
        request: Request,
        deadline: Deadline,
        priority: Priority,
        endpoints: tuple[str, ...],
        offset: int,
        retries_allowed: bool,
        settings: CallSettings,
        now: Callable[[], float] = _clock.now,
    ) -> None:
        #: The request as the call stages left it (relative URL).
        self.request = request
        #: The call's effective deadline.
        self.deadline = deadline
        #: The call's effective priority.
        self.priority = priority
        #: Whether the request may be repeated (idempotent, or opted in).
        self.retries_allowed = retries_allowed
        #: Decides what each outcome means.
        self.classifier = settings.classifier
        #: The client's shared retry/hedge budget.
        self.budget = settings.budget
        #: Below this many seconds left, no attempt is sent.
        self.low_timeout = settings.low_timeout
        #: The most body bytes (decoded) an attempt may read; ``None``: no limit.
        self.max_response_size = settings.max_response_size
        #: Every attempt so far, in start order.
        self.history: list[AttemptRecord] = []
        #: The observers' watchers of this call (see :mod:`aio_client._events`).
        self.watchers: tuple[CallWatcher, ...] = ()
        # Those of them that hear attempts start.
        self._starts: tuple[CallWatcher, ...] = ()
        self._endpoints = endpoints
        self._offset = offset
        # Endpoints whose circuit breaker refused an attempt of this call.
        self._refused: set[str] | None = None
        # Read at each attempt: a client closed meanwhile refuses further attempts.
        self._settings = settings
        #: The clock the call is timed with (the event loop's, on asyncio).
        self.clock = now
        #: On asyncio: the task running the call, and the client's loop timer,
        #: on which strategies schedule their own timers. ``None`` elsewhere.
        self.task: asyncio.Task[object] | None = None
        self.timer: DeadlineTimer | None = None
        #: The other calls of the fan-out this call is part of (hedging
        #: strategies hedge stragglers sooner); ``None`` outside a fan-out.
        self.siblings: Siblings | None = None

    def watch(self, watchers: tuple[CallWatcher, ...]) -> None:
        """Hand this call's attempt events to ``watchers``."""
        self.watchers = watchers
        starts = []
        for watcher in watchers:
            if type(watcher).attempt_started is not CallWatcher.attempt_started:
                starts.append(watcher)
        if starts:
            self._starts = tuple(starts)

    def classify(self, outcome: Outcome) -> Verdict:
        """The classifier's verdict on ``outcome``.

        A breaker's refusal is final once every endpoint of the call has refused:
        trying the same open breaker again cannot help.
        """
        refused = self._refused
        if (
            isinstance(outcome, CircuitOpenError)
            and refused is not None
            and refused.issuperset(self._endpoints)
        ):
            return Verdict.FAIL
        return self.classifier(outcome)

    def remaining(self) -> float:
        """Seconds left in the call's budget."""
        return self.deadline.remaining()

    @property
    def endpoints(self) -> tuple[str, ...]:
        """The base URLs this call may use, in rotation order; endpoints whose
        breaker refused this call come last."""
        endpoints = self._endpoints
        shift = self._offset % len(endpoints)
        ordered = endpoints[shift:] + endpoints[:shift]
        refused = self._refused
        if refused:
            ordered = tuple(e for e in ordered if e not in refused) + tuple(
                e for e in ordered if e in refused
            )
        return ordered

    def endpoint_for(self, number: int) -> str:
        """The base URL attempt ``number`` goes to by default: attempts rotate,
        skipping endpoints whose breaker refused this call."""
        endpoints = self._endpoints
        count = len(endpoints)
        refused = self._refused
        for step in range(count):
            endpoint = endpoints[(self._offset + number - 1 + step) % count]
            if not refused or endpoint not in refused:
                return endpoint
        return endpoints[(self._offset + number - 1) % count]

    async def attempt(
        self,
        number: int,
        kind: AttemptKind,
        *,
        share: float | None = None,
        endpoint: str | None = None,
    ) -> Outcome:
        """Send attempt ``number`` and return its outcome; only cancellation raises.

        ``share`` (seconds) caps this attempt below the call's remaining budget;
        ``endpoint`` overrides the rotation (see :meth:`endpoint_for`). An
        attempt that would have less than ``low_timeout`` seconds is not sent.
        """
        # The hot path of every call: no work here that a plain attempt does not need.
        now = self.clock
        start = now()
        call_at = self.deadline.at
        attempt_at = call_at
        if share is not None and share < call_at - start:
            attempt_at = start + share
        budget = attempt_at - start
        base = endpoint or self.endpoint_for(number)
        request = self.request
        url = _join(base, request.url)
        # Records are logged and shown in errors: no query values in them.
        shown = url if "?" not in url else redacted_url(url)
        history = self.history
        if budget < self.low_timeout:
            error = DeadlineExceededError(
                f"attempt {number} not sent: {max(budget, 0.0) * 1000:.1f} ms left",
                may_have_reached_server=False,
            )
            history.append(
                AttemptRecord(number, kind, shown, 0.0, None, "DeadlineExceededError", False, base)
            )
            return error
        stamped: tuple[tuple[str, str], ...] = (
            (TIMEOUT_HEADER, format_timeout_header(budget)),
            (PRIORITY_HEADER, str(self.priority)),
            (ATTEMPT_HEADER, str(number)),
        )
        watchers = self.watchers
        if self._starts:
            stamped += self._attempt_started(number, kind, base, url, budget)
        bound = request._bound(url, request.headers._with(stamped))
        outcome: Outcome
        if attempt_at < call_at:
            capped = Deadline._trusted(attempt_at)
            attempt_token = _ATTEMPT.set(
                AttemptInfo(number, kind, base, capped, self.max_response_size)
            )
        else:
            capped = None
            attempt_token = _ATTEMPT.set(
                AttemptInfo(number, kind, base, self.deadline, self.max_response_size)
            )
        try:
            if capped is not None:
                outcome = await self._send_capped(bound, capped, number)
            else:
                outcome = await self._settings.send(bound)
        except AioClientError as exc:
            outcome = exc
        except BaseException as exc:
            # Cancelled (or a bug): record the attempt, never swallow.
            elapsed = now() - start
            # Cancelled while waiting for a connection, it provably was not sent.
            sent = not getattr(_ATTEMPT.get(), "_unsent", False)
            history.append(
                AttemptRecord(number, kind, shown, elapsed, None, type(exc).__name__, sent, base)
            )
            if watchers:
                ending = ending_of(exc, start + elapsed >= attempt_at)
                self._attempt_finished(number, kind, base, elapsed, None, exc, ending)
            raise
        finally:
            _ATTEMPT.reset(attempt_token)
        elapsed = now() - start
        if type(outcome) is Response:
            outcome = outcome.with_attempt(number, elapsed, url)
            history.append(
                _record((number, kind, shown, elapsed, outcome.status, None, True, base))
            )
            if watchers:
                self._attempt_finished(number, kind, base, elapsed, outcome.status, None, RESPONSE)
            return outcome
        if isinstance(outcome, CircuitOpenError):
            if self._refused is None:
                self._refused = set()
            self._refused.add(base)
        if not isinstance(outcome, AioClientError):
            raise TypeError(
                f"the transport or an attempt stage returned {outcome!r}; expected a Response"
            )
        history.append(
            AttemptRecord(
                number,
                kind,
                shown,
                elapsed,
                None,
                type(outcome).__name__,
                outcome.may_have_reached_server,
                base,
            )
        )
        if watchers:
            self._attempt_finished(number, kind, base, elapsed, None, outcome, error_kind(outcome))
        return outcome

    def _attempt_started(
        self, number: int, kind: AttemptKind, endpoint: str, url: str, budget: float
    ) -> tuple[tuple[str, str], ...]:
        request = self.request
        event = AttemptStarted(number, kind, request.method, request.route, endpoint, url, budget)
        added: tuple[tuple[str, str], ...] = ()
        for watcher in self._starts:
            try:
                headers = watcher.attempt_started(event)
            except Exception:
                hook_failed(watcher.attempt_started)
                continue
            if headers:
                added += tuple((name.lower(), value) for name, value in headers)
        return added

    def _attempt_finished(
        self,
        number: int,
        kind: AttemptKind,
        endpoint: str,
        elapsed: float,
        status: int | None,
        error: BaseException | None,
        ending: str,
    ) -> None:
        request = self.request
        # AttemptFinished(...) without its Python-level __new__, as _record() does:
        # every attempt of an observed call makes one (benchmarks/instructions.py).
        event: AttemptFinished = _tuple_new(
            AttemptFinished,
            (number, kind, request.method, request.route, endpoint, elapsed, status, error, ending),
        )
        for watcher in self.watchers:
            try:
                watcher.attempt_finished(event)
            except Exception:
                hook_failed(watcher.attempt_finished)

    async def _send_capped(self, request: Request, deadline: Deadline, number: int) -> Outcome:
        token = set_ambient(deadline, self.priority)
        try:
            with anyio.CancelScope(deadline=deadline.at) as scope:
                return await self._settings.send(request)
        finally:
            reset_ambient(token)
        if scope.cancelled_caught:  # pragma: no branch - the scope only exits early this way
            return DeadlineExceededError(f"attempt {number} ran out of its share of the budget")
        raise AssertionError("unreachable")  # pragma: no cover

    def try_extra_attempt(self, kind: AttemptKind) -> bool:
        """Take a retry-budget token for one more attempt (a retry or a hedge).

        ``False`` when the budget is empty; observers hear of every refusal.
        """
        if self.budget.try_withdraw():
            return True
        if self.watchers:
            request = self.request
            history = self.history
            # An inline first attempt is recorded when it ends: it may still run.
            first = history[0].endpoint if history else self.endpoint_for(1)
            event = ExtraAttemptRefused(kind, request.method, request.route, first)
            for watcher in self.watchers:
                try:
                    watcher.extra_attempt_refused(event)
                except Exception:
                    hook_failed(watcher.extra_attempt_refused)
        return False

    def result(self, outcome: Outcome) -> Response:
        """Finish the call: return a response, or raise the error with the history."""
        if isinstance(outcome, Response):
            # For HTTPStatusError.attempts, should the caller raise_for_status().
            _set_attempts(outcome, tuple(self.history))
            return outcome
        raise outcome.with_attempts(tuple(self.history))

    def deadline_error(self) -> DeadlineExceededError:
        """The error for a call whose own deadline passed, carrying the history."""
        sent = any(record.may_have_reached_server for record in self.history)
        error = DeadlineExceededError(
            f"deadline exceeded after {len(self.history)} attempt(s)",
            may_have_reached_server=sent,
        )
        error.attempts = tuple(self.history)
        return error


def _join(endpoint: str, url: str) -> str:
    return f"{endpoint}/{url.lstrip('/')}" if url else endpoint
