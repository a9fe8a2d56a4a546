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
from contextvars import ContextVar
from typing import TYPE_CHECKING, Final, final

from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.propagate import inject
from opentelemetry.trace import SpanKind, Status, StatusCode

from .. import __version__, _clock
from .._attempts import AttemptKind
from .._call import current_attempt
from .._deadline import current_deadline, current_priority
from .._errors import AioClientError, ConfigError
from .._models import Request
from .._server_events import UNMATCHED_ROUTE, ServerOutcomeKind
from ._labels import (
    BREAKER_STATE_VALUES,
    DEFAULT_BUCKETS,
    NO_ENDPOINT,
    OTHER,
    BoundedValues,
    Endpoint,
    EndpointLabels,
    error_kind,
    method_label,
    validate_limit,
)

if TYPE_CHECKING:
    from opentelemetry.metrics import Counter, Histogram, MeterProvider, UpDownCounter
    from opentelemetry.trace import Span, TracerProvider
    from opentelemetry.util.types import AttributeValue

    from .._circuit_state import CircuitState, NamedBreaker
    from .._models import Response
    from .._pipeline import Handler, Stage
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

_MAX_CACHED: Final = 10_000
_ERROR: Final = Status(StatusCode.ERROR)


@final
class _CallState:
    """What the attempt stage hands the call stage about one call."""

    __slots__ = ("attempts", "endpoint")

    def __init__(self) -> None:
        self.endpoint: Endpoint | None = None
        # (span, number, kind, endpoint, end time in ns), in the order they ended.
        self.attempts: list[tuple[Span, int, AttemptKind, Endpoint, int]] = []


@final
class OpenTelemetryInstrumentation:
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
        "_routes",
        "_server_observer",
        "_state",
        "_tracer",
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
        self._endpoints = EndpointLabels(limit)
        self._routes = BoundedValues(limit)
        self._state: ContextVar[_CallState | None] = ContextVar(
            "aio_client_otel_call", default=None
        )
        self._names: dict[tuple[str, str], str] = {}
        self._client_attrs: dict[tuple[str, str, str, object], _Attributes] = {}
        self._call_attrs: dict[tuple[str, str, str, object], _Attributes] = {}
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
            invalid_headers=meter.create_counter(
                "aio_client.server.invalid_headers",
                unit="{request}",
                description="Requests with a malformed deadline or priority header (ignored).",
            ),
            routes=BoundedValues(limit),
        )

    # -- the Observer protocol ------------------------------------------------

    @property
    def call_stage(self) -> Stage:
        """Runs once per call: the call span and ``aio_client.client.call.duration``."""
        return self._observe_call

    @property
    def attempt_stage(self) -> Stage:
        """Runs once per attempt: its CLIENT span and ``traceparent``, the request duration."""
        return self._observe_attempt

    @property
    def server_observer(self) -> OpenTelemetryServerObserver:
        """Pass as the server middleware's ``observer=``."""
        return self._server_observer

    def extra_attempt_refused(self, request: Request, kind: AttemptKind, /) -> None:
        """A retry or hedge was not sent: the budget was empty."""
        attributes: _Attributes = {
            ATTEMPT_KIND: kind.value,
            METHOD: method_label(request.method),
        }
        route = self._route(request.route)
        if route is not None:
            attributes[URL_TEMPLATE] = route
        self._budget_exhausted.add(1, attributes)
        span = trace.get_current_span()
        if span.is_recording():
            span.add_event("aio_client.budget_exhausted", {ATTEMPT_KIND: kind.value})

    def breaker_state_changed(
        self, breaker: NamedBreaker, old: CircuitState, new: CircuitState, /
    ) -> None:
        """A breaker (named after its endpoint key) changed state."""
        endpoint = self._endpoints.key(breaker.name)
        self._breaker_state.set(BREAKER_STATE_VALUES[new], {ENDPOINT: endpoint})
        self._breaker_transitions.add(
            1, {ENDPOINT: endpoint, BREAKER_PREVIOUS_STATE: old.value, BREAKER_STATE: new.value}
        )
        span = trace.get_current_span()
        if span.is_recording():
            span.add_event(
                "aio_client.breaker.state_change",
                {ENDPOINT: endpoint, BREAKER_PREVIOUS_STATE: old.value, BREAKER_STATE: new.value},
            )

    # -- stages ----------------------------------------------------------------

    async def _observe_call(self, request: Request, call_next: Handler) -> Response:
        method = request.method
        route = self._route(request.route)
        attributes: _Attributes = {METHOD: method_label(method)}
        if route is not None:
            attributes[URL_TEMPLATE] = route
        deadline = current_deadline()
        if deadline is not None:
            attributes[REQUEST_TIMEOUT] = deadline.remaining()
        priority = current_priority()
        if priority is not None:
            attributes[REQUEST_PRIORITY] = priority.value
        span = self._tracer.start_span(
            self._span_name(method, route), kind=SpanKind.INTERNAL, attributes=attributes
        )
        state = _CallState()
        state_token = self._state.set(state)
        # An invalid span (no SDK) must not hide the caller's current span.
        context_token = (
            otel_context.attach(trace.set_span_in_context(span))
            if span.get_span_context().is_valid
            else None
        )
        start = _clock.now()
        try:
            response = await call_next(request)
        except BaseException as exc:
            self._call_done(span, state, request, route, _clock.now() - start, None, exc)
            raise
        finally:
            if context_token is not None:
                otel_context.detach(context_token)
            self._state.reset(state_token)
        self._call_done(span, state, request, route, _clock.now() - start, response, None)
        return response

    async def _observe_attempt(self, request: Request, call_next: Handler) -> Response:
        info = current_attempt()
        if info is None:  # an attempt stage run outside a client: nothing to say
            return await call_next(request)
        endpoint = self._endpoints(info.endpoint)
        state = self._state.get()
        if state is not None and state.endpoint is None:
            state.endpoint = endpoint
        number = info.number
        kind = info.kind
        method = request.method
        route = self._route(request.route)
        # What samplers may look at: the conventions' attributes known at the start.
        attributes: _Attributes = {
            METHOD: method_label(method),
            SERVER_ADDRESS: endpoint.host,
            SERVER_PORT: endpoint.port,
            URL_FULL: endpoint.base + _path_of(request.url, info.endpoint),
            ATTEMPT_KIND: kind.value,
        }
        if route is not None:
            attributes[URL_TEMPLATE] = route
        if number > 1:
            attributes[RESEND_COUNT] = number - 1
        span = self._tracer.start_span(
            self._span_name(method, route), kind=SpanKind.CLIENT, attributes=attributes
        )
        context_token = None
        if span.get_span_context().is_valid:
            span_context = trace.set_span_in_context(span)
            carrier: dict[str, str] = {}
            inject(carrier, context=span_context)
            if carrier:
                request = Request(
                    method,
                    request.url,
                    request.headers.replace({k.lower(): v for k, v in carrier.items()}),
                    request.content,
                    request.route,
                )
            # Current while the transport runs: an instrumented transport nests under it.
            context_token = otel_context.attach(span_context)
        start = _clock.now()
        try:
            response = await call_next(request)
        except BaseException as exc:
            elapsed = _clock.now() - start
            if context_token is not None:
                otel_context.detach(context_token)
            outcome = type(exc).__qualname__
            cancelled = _is_cancellation(exc)
            if span.is_recording():
                if cancelled:  # a lost hedge, or a caller giving up: not an error
                    span.set_attributes({ERROR_TYPE: outcome, ATTEMPT_CANCELLED: True})
                else:
                    span.set_attribute(ERROR_TYPE, outcome)
                    span.set_status(Status(StatusCode.ERROR, outcome))
            self._client_duration.record(
                elapsed, self._client_attributes(method, endpoint, kind, outcome)
            )
            self._attempt_done(state, span, number, kind, endpoint)
            raise
        elapsed = _clock.now() - start
        if context_token is not None:
            otel_context.detach(context_token)
        status = response.status
        if span.is_recording():
            if status < 400:
                span.set_attribute(STATUS_CODE, status)
            else:
                span.set_attributes({STATUS_CODE: status, ERROR_TYPE: str(status)})
                span.set_status(_ERROR)
        self._client_duration.record(
            elapsed, self._client_attributes(method, endpoint, kind, status)
        )
        self._attempt_done(state, span, number, kind, endpoint)
        return response

    # -- recording ---------------------------------------------------------------

    @staticmethod
    def _attempt_done(
        state: _CallState | None, span: Span, number: int, kind: AttemptKind, endpoint: Endpoint
    ) -> None:
        if state is None:
            span.end()
        else:
            # Ended by the call stage once it knows which attempt won.
            state.attempts.append((span, number, kind, endpoint, time.time_ns()))

    def _call_done(
        self,
        span: Span,
        state: _CallState,
        request: Request,
        route: str | None,
        elapsed: float,
        response: Response | None,
        error: BaseException | None,
    ) -> None:
        winner = response.attempt if response is not None else 0
        for attempt_span, number, kind, endpoint, ended_at in state.attempts:
            won = number == winner
            attempt_span.set_attribute(ATTEMPT_WON, won)
            attempt_span.end(end_time=ended_at)
            if kind is AttemptKind.HEDGE:
                self._hedges.add(
                    1, {ENDPOINT: endpoint.key, HEDGE_RESULT: "won" if won else "lost"}
                )
        endpoint = state.endpoint or self._endpoint_of_error(error)
        outcome: int | str
        if response is not None:
            outcome = status = response.status
            if span.is_recording():
                if status < 400:
                    span.set_attributes({STATUS_CODE: status, CALL_ATTEMPTS: len(state.attempts)})
                else:
                    span.set_attributes(
                        {
                            STATUS_CODE: status,
                            CALL_ATTEMPTS: len(state.attempts),
                            ERROR_TYPE: str(status),
                        }
                    )
                    span.set_status(_ERROR)
        else:
            assert error is not None
            outcome = type(error).__qualname__
            if span.is_recording():
                attempts = error.attempts if isinstance(error, AioClientError) else ()
                span.set_attributes(
                    {CALL_ATTEMPTS: len(attempts) or len(state.attempts), ERROR_TYPE: outcome}
                )
                if not _is_cancellation(error):
                    span.set_status(Status(StatusCode.ERROR, outcome))
        span.end()
        self._call_duration.record(
            elapsed, self._call_attributes(request.method, route, endpoint, outcome)
        )

    def _endpoint_of_error(self, error: BaseException | None) -> Endpoint:
        if isinstance(error, AioClientError) and error.attempts:
            return self._endpoints.of_url(error.attempts[0].url)
        return NO_ENDPOINT

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
        self, method: str, endpoint: Endpoint, kind: AttemptKind, outcome: int | str
    ) -> _Attributes:
        key = (method, endpoint.key, kind.value, outcome)
        found = self._client_attrs.get(key)
        if found is not None:
            return found
        attributes: _Attributes = {
            METHOD: method_label(method),
            SERVER_ADDRESS: endpoint.host if endpoint.key is not OTHER else OTHER,
            SERVER_PORT: endpoint.port,
            ATTEMPT_KIND: kind.value,
        }
        _set_outcome(attributes, outcome)
        if len(self._client_attrs) < _MAX_CACHED:
            self._client_attrs[key] = attributes
        return attributes

    def _call_attributes(
        self, method: str, route: str | None, endpoint: Endpoint, outcome: int | str
    ) -> _Attributes:
        key = (method, route or "", endpoint.key, outcome)
        found = self._call_attrs.get(key)
        if found is not None:
            return found
        attributes: _Attributes = {METHOD: method_label(method)}
        if endpoint.host:
            attributes[SERVER_ADDRESS] = endpoint.host if endpoint.key is not OTHER else OTHER
            attributes[SERVER_PORT] = endpoint.port
        if route is not None:
            attributes[URL_TEMPLATE] = route
        _set_outcome(attributes, outcome)
        if len(self._call_attrs) < _MAX_CACHED:
            self._call_attrs[key] = attributes
        return attributes

    def __repr__(self) -> str:
        return f"OpenTelemetryInstrumentation(tracer={self._tracer!r})"


@final
class OpenTelemetryServerObserver:
    """The server half of :class:`OpenTelemetryInstrumentation`: the middleware's ``observer=``."""

    __slots__ = (
        "_active",
        "_attrs",
        "_deadline_exceeded",
        "_disconnected",
        "_duration",
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
        invalid_headers: Counter,
        routes: BoundedValues,
    ) -> None:
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


def _is_cancellation(exc: BaseException) -> bool:
    return error_kind(exc) == "cancelled"
