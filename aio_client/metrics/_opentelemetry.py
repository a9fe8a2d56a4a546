"""OpenTelemetry: HTTP semantic-convention metrics, resilience counters, spans, trace context.

Needs only ``opentelemetry-api``; what is recorded goes wherever the
application's SDK (or none) sends it. Nothing happens at import: each
:class:`OpenTelemetryInstrumentation` gets its meter and tracer from the
providers it is given, or from the global ones when constructed.

Spans of one call::

    GET users/{id}                    INTERNAL  one per client.request()
    ├── GET users/{id}                CLIENT    attempt 1 (first)
    └── GET users/{id}                CLIENT    attempt 2 (hedge): resend_count 1, won

Each attempt's headers carry its span's W3C trace context (``traceparent``,
through the globally configured propagator). Attempt spans end when their
attempt did, but are handed to the exporter when the call ends, once it is
known which attempt won.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Final, final

from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.propagate import inject
from opentelemetry.trace import SpanKind, Status, StatusCode

from .. import __version__
from .._attempts import AttemptKind
from .._errors import ConfigError
from .._events import CallWatcher, Observer, error_kind
from .._server_events import UNMATCHED_ROUTE, ServerOutcomeKind
from ._labels import (
    BREAKER_STATE_VALUES,
    DEFAULT_BUCKETS,
    NO_ENDPOINT,
    OTHER,
    BoundedValues,
    Endpoint,
    EndpointLabels,
    method_label,
    validate_limit,
)

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.metrics import Counter, Histogram, MeterProvider, UpDownCounter
    from opentelemetry.trace import Span, TracerProvider
    from opentelemetry.util.types import AttributeValue

    from .._events import (
        AddedHeaders,
        AttemptFinished,
        AttemptStarted,
        BreakerChanged,
        CallFinished,
        CallStarted,
        ExtraAttemptRefused,
    )
    from .._server_events import Admission, ServerOutcome

__all__ = ["OpenTelemetryInstrumentation", "OpenTelemetryServerObserver"]

_Attributes = dict[str, "AttributeValue"]

# Attribute names: the HTTP semantic conventions, and ours under "aio_client.".
METHOD: Final = "http.request.method"
STATUS_CODE: Final = "http.response.status_code"
ERROR_TYPE: Final = "error.type"
SERVER_ADDRESS: Final = "server.address"
SERVER_PORT: Final = "server.port"
URL_FULL: Final = "url.full"
URL_SCHEME: Final = "url.scheme"
URL_TEMPLATE: Final = "url.template"
HTTP_ROUTE: Final = "http.route"
RESEND_COUNT: Final = "http.request.resend_count"
ATTEMPT_KIND: Final = "aio_client.attempt.kind"
ATTEMPT_WON: Final = "aio_client.attempt.won"
ATTEMPT_CANCELLED: Final = "aio_client.attempt.cancelled"
CALL_ATTEMPTS: Final = "aio_client.call.attempts"
REQUEST_TIMEOUT: Final = "aio_client.request.timeout"
REQUEST_PRIORITY: Final = "aio_client.request.priority"
ENDPOINT: Final = "aio_client.endpoint"
HEDGE_RESULT: Final = "aio_client.hedge.result"
BREAKER_STATE: Final = "aio_client.breaker.state"
BREAKER_PREVIOUS_STATE: Final = "aio_client.breaker.previous_state"
SERVER_OUTCOME: Final = "aio_client.server.outcome"
INVALID_HEADER: Final = "aio_client.request.invalid_header"
DEADLINE_PHASE: Final = "aio_client.deadline.phase"
GUARD_REASON: Final = "aio_client.guard.reason"

_MAX_CACHED: Final = 10_000
_ERROR: Final = Status(StatusCode.ERROR)
# Endings that say nothing against the upstream: not span errors.
_NOT_FAILURES: Final = frozenset({"hedge_lost", "cancelled"})


@final
class OpenTelemetryInstrumentation(Observer):
    """Metrics and traces through the OpenTelemetry API, for clients and servers.

    ``OpenTelemetryInstrumentation(meter_provider=None, tracer_provider=None, *,
    max_label_values=200)``: ``None`` takes the global provider, looked up now
    (a global set later is still followed, through the API's proxies).
    ``max_label_values`` bounds the distinct routes and endpoints that become
    metric attributes (later ones read as ``<other>`` / are left out).

    Client: ``Client(..., observers=[otel])``. Server: pass
    :attr:`server_observer` as the middleware's ``observer=``; it records
    ``http.server.request.duration`` and the server counters, and puts the
    request's budget and priority on the server span that is current (the one
    your ASGI/aiohttp OpenTelemetry instrumentation opened).

    No ``Authorization``, ``Cookie`` or other header value, and no query
    string, ever becomes an attribute.
    """

    __slots__ = (
        "_breaker_state",
        "_breaker_transitions",
        "_budget_exhausted",
        "_call_attrs",
        "_call_duration",
        "_client_attrs",
        "_client_duration",
        "_endpoints",
        "_hedges",
        "_names",
        "_recorder",
        "_routes",
        "_server_observer",
        "_tracer",
        "_tracing",
    )

    def __init__(
        self,
        meter_provider: MeterProvider | None = None,
        tracer_provider: TracerProvider | None = None,
        *,
        max_label_values: int = 200,
    ) -> None:
        if meter_provider is not None and not callable(getattr(meter_provider, "get_meter", None)):
            raise ConfigError(f"meter_provider must be a MeterProvider; got {meter_provider!r}")
        if tracer_provider is not None and not callable(
            getattr(tracer_provider, "get_tracer", None)
        ):
            raise ConfigError(f"tracer_provider must be a TracerProvider; got {tracer_provider!r}")
        limit = validate_limit(max_label_values, "max_label_values")
        meter = metrics.get_meter("aio_client", __version__, meter_provider)
        self._tracer = trace.get_tracer("aio_client", __version__, tracer_provider)
        # A no-op tracer never records: calls are then watched for metrics only,
        # by one shared watcher. (The global proxy tracer may start recording later.)
        self._tracing = not isinstance(self._tracer, trace.NoOpTracer)
        self._recorder = _Recorder(self)
        self._endpoints = EndpointLabels(limit)
        self._routes = BoundedValues(limit)
        self._names: dict[tuple[str, str], str] = {}
        self._client_attrs: dict[tuple[object, ...], _Attributes] = {}
        self._call_attrs: dict[tuple[object, ...], _Attributes] = {}
        buckets = list(DEFAULT_BUCKETS)
        self._client_duration = meter.create_histogram(
            "http.client.request.duration",
            unit="s",
            description="Duration of HTTP client requests: one per physical attempt.",
            explicit_bucket_boundaries_advisory=buckets,
        )
        self._call_duration = meter.create_histogram(
            "aio_client.client.call.duration",
            unit="s",
            description="Duration of aio_client calls as their callers saw them, "
            "all attempts included.",
            explicit_bucket_boundaries_advisory=buckets,
        )
        self._hedges = meter.create_counter(
            "aio_client.client.hedges",
            unit="{attempt}",
            description="Hedged attempts by result: won (its answer was the call's) or lost.",
        )
        self._budget_exhausted = meter.create_counter(
            "aio_client.client.budget_exhausted",
            unit="{attempt}",
            description="Retries and hedges not sent because the retry budget was empty.",
        )
        self._breaker_transitions = meter.create_counter(
            "aio_client.client.breaker.transitions",
            unit="{transition}",
            description="Circuit breaker state changes per endpoint.",
        )
        self._breaker_state = meter.create_gauge(
            "aio_client.client.breaker.state",
            unit="1",
            description="Circuit breaker state per endpoint: 0 closed, 1 half-open, 2 open.",
        )
        self._server_observer = OpenTelemetryServerObserver(
            duration=meter.create_histogram(
                "http.server.request.duration",
                unit="s",
                description="Duration of HTTP server requests behind the deadline middleware.",
                explicit_bucket_boundaries_advisory=buckets,
            ),
            active=meter.create_up_down_counter(
                "http.server.active_requests",
                unit="{request}",
                description="Requests whose handler is running now.",
            ),
            deadline_exceeded=meter.create_counter(
                "aio_client.server.deadline_exceeded",
                unit="{request}",
                description="Requests whose deadline passed, on arrival or while handling.",
            ),
            disconnected=meter.create_counter(
                "aio_client.server.client_disconnected",
                unit="{request}",
                description="Requests whose client went away first (handler cancelled).",
            ),
            shed=meter.create_counter(
                "aio_client.server.shed",
                unit="{request}",
                description="Requests refused by the priority load shedder.",
            ),
            guard_refused=meter.create_counter(
                "aio_client.server.guard_refused",
                unit="{request}",
                description="Requests refused by a server guard (rate limit, bulkhead, breaker).",
            ),
            invalid_headers=meter.create_counter(
                "aio_client.server.invalid_headers",
                unit="{request}",
                description="Requests with a malformed deadline or priority header (ignored).",
            ),
            routes=BoundedValues(limit),
        )

    @property
    def server_observer(self) -> OpenTelemetryServerObserver:
        """Pass as the server middleware's ``observer=``."""
        return self._server_observer

    # -- the Observer hooks -------------------------------------------------------

    def call_started(self, event: CallStarted, /) -> CallWatcher:
        """Opens the call's span (when tracing) and watches the call."""
        if not self._tracing:
            return self._recorder
        route = self._route(event.route)
        attributes: _Attributes = {
            METHOD: method_label(event.method),
            REQUEST_TIMEOUT: event.timeout,
            REQUEST_PRIORITY: event.priority.value,
        }
        if route is not None:
            attributes[URL_TEMPLATE] = route
        span = self._tracer.start_span(
            self._span_name(event.method, route), kind=SpanKind.INTERNAL, attributes=attributes
        )
        return _TracedCall(self, span, route)

    def breaker_changed(self, event: BreakerChanged, /) -> None:
        """A breaker (named after its endpoint key) changed state."""
        endpoint = self._endpoints.key(event.name)
        old, new = event.old.value, event.new.value
        self._breaker_state.set(BREAKER_STATE_VALUES[event.new], {ENDPOINT: endpoint})
        self._breaker_transitions.add(
            1, {ENDPOINT: endpoint, BREAKER_PREVIOUS_STATE: old, BREAKER_STATE: new}
        )
        span = trace.get_current_span()
        if span.is_recording():
            span.add_event(
                "aio_client.breaker.state_change",
                {ENDPOINT: endpoint, BREAKER_PREVIOUS_STATE: old, BREAKER_STATE: new},
            )

    # -- recording (shared by both watchers) --------------------------------------

    def record_attempt(self, event: AttemptFinished) -> None:
        """``http.client.request.duration`` of one attempt."""
        outcome = _outcome(event.status, event.error, event.ending)
        self._client_duration.record(
            event.duration,
            self._client_attributes(event.method, event.endpoint, event.kind, outcome),
        )

    def record_call(self, event: CallFinished) -> None:
        """``aio_client.client.call.duration`` and the hedge results of one call."""
        outcome = _outcome(event.status, event.error, event.ending)
        self._call_duration.record(
            event.duration,
            self._call_attributes(event.method, event.route, event.endpoint, outcome),
        )
        attempts = event.attempts
        if len(attempts) > 1:
            winner = event.winner
            for record in attempts:
                if record.kind is AttemptKind.HEDGE:
                    self._hedges.add(
                        1,
                        {
                            ENDPOINT: self._endpoints(record.endpoint).key,
                            HEDGE_RESULT: "won" if record.number == winner else "lost",
                        },
                    )

    def record_refusal(self, event: ExtraAttemptRefused) -> None:
        """``aio_client.client.budget_exhausted``, and an event on the current span."""
        kind = event.kind.value
        attributes: _Attributes = {ATTEMPT_KIND: kind, METHOD: method_label(event.method)}
        route = self._route(event.route)
        if route is not None:
            attributes[URL_TEMPLATE] = route
        self._budget_exhausted.add(1, attributes)
        span = trace.get_current_span()
        if span.is_recording():
            span.add_event("aio_client.budget_exhausted", {ATTEMPT_KIND: kind})

    def start_attempt_span(
        self, event: AttemptStarted, route: str | None, parent: Context
    ) -> tuple[Span, Endpoint]:
        """The CLIENT span of one attempt, a child of the call's span."""
        endpoint = self._endpoints(event.endpoint)
        number = event.number
        # What samplers may look at: the conventions' attributes known at the start.
        attributes: _Attributes = {
            METHOD: method_label(event.method),
            SERVER_ADDRESS: endpoint.host,
            SERVER_PORT: endpoint.port,
            URL_FULL: endpoint.base + _path_of(event.url, event.endpoint),
            ATTEMPT_KIND: event.kind.value,
        }
        if route is not None:
            attributes[URL_TEMPLATE] = route
        if number > 1:
            attributes[RESEND_COUNT] = number - 1
        span = self._tracer.start_span(
            self._span_name(event.method, route),
            context=parent,
            kind=SpanKind.CLIENT,
            attributes=attributes,
        )
        return span, endpoint

    def _route(self, route: str) -> str | None:
        # A route past the limit (or none) is left out rather than folded:
        # "<other>" would say nothing a missing attribute does not.
        if not route:
            return None
        value = self._routes(route)
        return None if value is OTHER else value

    def _span_name(self, method: str, route: str | None) -> str:
        # Low-cardinality names, as the conventions ask: "{method} {template}".
        key = (method, route or "")
        name = self._names.get(key)
        if name is None:
            shown = method_label(method)
            name = f"{shown} {route}" if route else shown
            if len(self._names) < _MAX_CACHED:
                self._names[key] = name
        return name

    def _client_attributes(
        self, method: str, base: str, kind: AttemptKind, outcome: int | str
    ) -> _Attributes:
        # Cached by the events' raw values: a call pays one dict lookup.
        key = (method, base, kind, outcome)
        found = self._client_attrs.get(key)
        if found is not None:
            return found
        endpoint = self._endpoints(base)
        attributes: _Attributes = {METHOD: method_label(method)}
        _set_endpoint(attributes, endpoint)
        attributes[ATTEMPT_KIND] = kind.value
        _set_outcome(attributes, outcome)
        if len(self._client_attrs) < _MAX_CACHED:
            self._client_attrs[key] = attributes
        return attributes

    def _call_attributes(
        self, method: str, raw_route: str, base: str | None, outcome: int | str
    ) -> _Attributes:
        key = (method, raw_route, base, outcome)
        found = self._call_attrs.get(key)
        if found is not None:
            return found
        route = self._route(raw_route)
        endpoint = self._endpoints(base) if base else NO_ENDPOINT
        attributes: _Attributes = {METHOD: method_label(method)}
        if endpoint.host:
            _set_endpoint(attributes, endpoint)
        if route is not None:
            attributes[URL_TEMPLATE] = route
        _set_outcome(attributes, outcome)
        if len(self._call_attrs) < _MAX_CACHED:
            self._call_attrs[key] = attributes
        return attributes

    def __repr__(self) -> str:
        return f"OpenTelemetryInstrumentation(tracer={self._tracer!r})"


@final
class _Recorder(CallWatcher):
    """Watches calls for metrics only (no tracing): one, shared by every call."""

    __slots__ = ("_sink",)

    def __init__(self, sink: OpenTelemetryInstrumentation) -> None:
        self._sink = sink

    def attempt_finished(self, event: AttemptFinished, /) -> None:
        self._sink.record_attempt(event)

    def extra_attempt_refused(self, event: ExtraAttemptRefused, /) -> None:
        self._sink.record_refusal(event)

    def call_finished(self, event: CallFinished, /) -> None:
        self._sink.record_call(event)


@final
class _TracedCall(CallWatcher):
    """Watches one call: its span, its attempts' spans and trace context, and the metrics.

    Attempt spans end when their attempt did, but are handed to the exporter
    when the call ends, once it is known which attempt won.
    """

    __slots__ = ("_context", "_ended", "_route", "_running", "_sink", "_span", "_token")

    def __init__(self, sink: OpenTelemetryInstrumentation, span: Span, route: str | None) -> None:
        self._sink = sink
        self._span = span
        self._route = route
        self._context = trace.set_span_in_context(span)
        # Current while the call runs (in the caller's task: call_finished runs
        # there too); an invalid span (no SDK) must not hide the caller's span.
        self._token = (
            otel_context.attach(self._context) if span.get_span_context().is_valid else None
        )
        # Attempt number -> (span, context token), while the attempt runs.
        self._running: dict[int, tuple[Span, object | None]] = {}
        # (span, number, end time in ns) of each ended attempt.
        self._ended: list[tuple[Span, int, int]] = []

    def attempt_started(self, event: AttemptStarted, /) -> AddedHeaders | None:
        span, _ = self._sink.start_attempt_span(event, self._route, self._context)
        if not span.get_span_context().is_valid:
            self._running[event.number] = (span, None)
            return None
        span_context = trace.set_span_in_context(span)
        carrier: dict[str, str] = {}
        inject(carrier, context=span_context)
        # Current while the transport runs: an instrumented transport nests under it.
        self._running[event.number] = (span, otel_context.attach(span_context))
        return list(carrier.items())

    def attempt_finished(self, event: AttemptFinished, /) -> None:
        self._sink.record_attempt(event)
        running = self._running.pop(event.number, None)
        if running is None:
            return
        span, token = running
        if token is not None:
            otel_context.detach(token)  # type: ignore[arg-type]
        if span.is_recording():
            status = event.status
            if status is not None:
                if status < 400:
                    span.set_attribute(STATUS_CODE, status)
                else:
                    span.set_attributes({STATUS_CODE: status, ERROR_TYPE: str(status)})
                    span.set_status(_ERROR)
            else:
                outcome = str(_outcome(None, event.error, event.ending))
                if event.ending in _NOT_FAILURES:  # a lost hedge, or a caller giving up
                    span.set_attributes({ERROR_TYPE: outcome, ATTEMPT_CANCELLED: True})
                else:
                    span.set_attribute(ERROR_TYPE, outcome)
                    span.set_status(Status(StatusCode.ERROR, outcome))
        self._ended.append((span, event.number, time.time_ns()))

    def extra_attempt_refused(self, event: ExtraAttemptRefused, /) -> None:
        self._sink.record_refusal(event)

    def call_finished(self, event: CallFinished, /) -> None:
        winner = event.winner
        for attempt_span, number, ended_at in self._ended:
            attempt_span.set_attribute(ATTEMPT_WON, number == winner)
            attempt_span.end(end_time=ended_at)
        span = self._span
        if span.is_recording():
            attempts = len(event.attempts)
            status = event.status
            if status is not None:
                if status < 400:
                    span.set_attributes({STATUS_CODE: status, CALL_ATTEMPTS: attempts})
                else:
                    span.set_attributes(
                        {STATUS_CODE: status, CALL_ATTEMPTS: attempts, ERROR_TYPE: str(status)}
                    )
                    span.set_status(_ERROR)
            else:
                outcome = str(_outcome(None, event.error, event.ending))
                span.set_attributes({CALL_ATTEMPTS: attempts, ERROR_TYPE: outcome})
                if event.ending not in _NOT_FAILURES:
                    span.set_status(Status(StatusCode.ERROR, outcome))
        span.end()
        if self._token is not None:
            otel_context.detach(self._token)
        self._sink.record_call(event)


@final
class OpenTelemetryServerObserver:
    """The server half of :class:`OpenTelemetryInstrumentation`: the middleware's ``observer=``."""

    __slots__ = (
        "_active",
        "_attrs",
        "_deadline_exceeded",
        "_disconnected",
        "_duration",
        "_guard_refused",
        "_invalid_headers",
        "_routes",
        "_shed",
    )

    def __init__(
        self,
        *,
        duration: Histogram,
        active: UpDownCounter,
        deadline_exceeded: Counter,
        disconnected: Counter,
        shed: Counter,
        guard_refused: Counter,
        invalid_headers: Counter,
        routes: BoundedValues,
    ) -> None:
        self._guard_refused = guard_refused
        self._duration = duration
        self._active = active
        self._deadline_exceeded = deadline_exceeded
        self._disconnected = disconnected
        self._shed = shed
        self._invalid_headers = invalid_headers
        self._routes = routes
        self._attrs: dict[tuple[object, ...], _Attributes] = {}

    def request_started(self, admission: Admission, /) -> None:
        """An admitted request's handler starts: ``http.server.active_requests`` + 1."""
        self._active.add(1, self._active_attributes(admission.method, admission.scheme))

    def __call__(self, outcome: ServerOutcome, /) -> None:
        """A request ended: duration, counters, and attributes on the current server span."""
        method = outcome.method
        if outcome.handled:
            self._active.add(-1, self._active_attributes(method, outcome.scheme))
        kind = outcome.outcome
        self._duration.record(outcome.elapsed, self._duration_attributes(outcome))
        if kind is not ServerOutcomeKind.OK and kind is not ServerOutcomeKind.ERROR:
            self._count_refusal(outcome, kind)
        if outcome.invalid_header:
            self._invalid_headers.add(1, self._routed(outcome))
        span = trace.get_current_span()
        if span.is_recording():
            attributes: _Attributes = {
                REQUEST_TIMEOUT: outcome.budget,
                REQUEST_PRIORITY: outcome.priority.value,
                SERVER_OUTCOME: kind.value,
            }
            if outcome.invalid_header:
                attributes[INVALID_HEADER] = True
            span.set_attributes(attributes)

    def _count_refusal(self, outcome: ServerOutcome, kind: ServerOutcomeKind) -> None:
        if kind is ServerOutcomeKind.DEADLINE:
            attributes = self._routed(outcome)
            attributes[DEADLINE_PHASE] = "handling" if outcome.handled else "arrival"
            self._deadline_exceeded.add(1, attributes)
        elif kind is ServerOutcomeKind.DISCONNECTED:
            self._disconnected.add(1, self._routed(outcome))
        elif kind is ServerOutcomeKind.SHED:
            self._shed.add(1, self._routed(outcome))
        elif kind is ServerOutcomeKind.RATE_LIMITED or kind is ServerOutcomeKind.REFUSED:
            attributes = self._routed(outcome)
            attributes[GUARD_REASON] = kind.value
            self._guard_refused.add(1, attributes)

    def _routed(self, outcome: ServerOutcome) -> _Attributes:
        attributes: _Attributes = {
            METHOD: method_label(outcome.method),
            REQUEST_PRIORITY: outcome.priority.value,
        }
        route = self._route(outcome.route)
        if route is not None:
            attributes[HTTP_ROUTE] = route
        return attributes

    def _route(self, route: str) -> str | None:
        if route == UNMATCHED_ROUTE:
            return None  # the conventions: no http.route when nothing matched
        value = self._routes(route)
        return None if value is OTHER else value

    def _active_attributes(self, method: str, scheme: str) -> _Attributes:
        key = ("active", method, scheme)
        found = self._attrs.get(key)
        if found is None:
            found = {METHOD: method_label(method), URL_SCHEME: scheme}
            if method_label(method) == method and len(self._attrs) < _MAX_CACHED:
                self._attrs[key] = found
        return found

    def _duration_attributes(self, outcome: ServerOutcome) -> _Attributes:
        key = (
            outcome.method,
            outcome.route,
            outcome.status,
            outcome.scheme,
            outcome.outcome,
            outcome.priority,
        )
        found = self._attrs.get(key)
        if found is not None:
            return found
        method = method_label(outcome.method)
        attributes: _Attributes = {
            METHOD: method,
            URL_SCHEME: outcome.scheme,
            STATUS_CODE: outcome.status,
            REQUEST_PRIORITY: outcome.priority.value,
        }
        route = self._route(outcome.route)
        if route is not None:
            attributes[HTTP_ROUTE] = route
        kind = outcome.outcome
        if kind is ServerOutcomeKind.OK or kind is ServerOutcomeKind.ERROR:
            if outcome.status >= 500:
                attributes[ERROR_TYPE] = str(outcome.status)
        else:
            attributes[ERROR_TYPE] = kind.value
        if (
            method == outcome.method
            and (route is not None or outcome.route == UNMATCHED_ROUTE)
            and len(self._attrs) < _MAX_CACHED
        ):
            self._attrs[key] = attributes
        return attributes

    def __repr__(self) -> str:
        return "OpenTelemetryServerObserver()"


def _set_endpoint(attributes: _Attributes, endpoint: Endpoint) -> None:
    """``server.address`` and ``server.port`` of a metric; an endpoint past the
    ``max_label_values`` limit is ``<other>``, with no port (a port per endpoint
    would be as many attribute sets as endpoints)."""
    if endpoint.key is OTHER:
        attributes[SERVER_ADDRESS] = OTHER
    else:
        attributes[SERVER_ADDRESS] = endpoint.host
        attributes[SERVER_PORT] = endpoint.port


def _set_outcome(attributes: _Attributes, outcome: int | str) -> None:
    if isinstance(outcome, int):
        attributes[STATUS_CODE] = outcome
        if outcome >= 400:
            attributes[ERROR_TYPE] = str(outcome)
    else:
        attributes[ERROR_TYPE] = outcome


def _path_of(url: str, base: str) -> str:
    # The attempt's URL is its endpoint plus the request's path and query;
    # url.full keeps the path and drops the query and fragment.
    path = url[len(base) :] if url.startswith(base) else ""
    for mark in ("?", "#"):
        cut = path.find(mark)
        if cut >= 0:
            path = path[:cut]
    return path


def _outcome(status: int | None, error: BaseException | None, ending: str) -> int | str:
    # The status code; else the error's class name (the conventions' error.type),
    # or, for a cancellation, why it came: deadline_exceeded, hedge_lost, cancelled.
    if status is not None:
        return status
    if error is not None and error_kind(error) != "cancelled":
        return type(error).__qualname__
    return ending
