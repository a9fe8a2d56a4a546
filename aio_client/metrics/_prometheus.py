"""Prometheus metrics for calls, attempts, hedges, budgets, breakers and the server side.

Nothing is registered when this module is imported: each
:class:`PrometheusMetrics` registers its metrics in the registry it is given
(prometheus_client's global ``REGISTRY`` only when constructed with
``registry=None``). Label children are looked up once per distinct label
tuple and cached, so a call pays a few dict lookups and the observations.

The ``*_requests_total`` and ``attempts_total`` counters are read from their
duration histograms' counts when scraped (they are the same numbers), so a
call pays for one histogram observation per call and per attempt, not for a
histogram and a counter each.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Sequence
from contextvars import ContextVar
from typing import TYPE_CHECKING, Final, TypeVar, final

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics_core import CounterMetricFamily
from prometheus_client.registry import Collector

from .. import _clock
from .._attempts import AttemptKind
from .._call import current_attempt
from .._errors import AioClientError, ConfigError
from .._server_events import ServerOutcomeKind
from ._labels import (
    BREAKER_STATE_VALUES,
    DEFAULT_BUCKETS,
    NO_ENDPOINT,
    NONE,
    OTHER,
    BoundedValues,
    EndpointLabels,
    error_kind,
    method_label,
    status_class,
    validate_limit,
)

if TYPE_CHECKING:
    from .._circuit_state import CircuitState, NamedBreaker
    from .._models import Request, Response
    from .._pipeline import Handler, Stage
    from .._server_events import Admission, ServerOutcome

__all__ = ["PrometheusMetrics", "PrometheusServerObserver"]

_NAME: Final = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
# Label children cached per raw label tuple; past this many tuples the
# lookups still work, just through prometheus_client's own (slower) path.
_MAX_CACHED_TUPLES: Final = 10_000

_M = TypeVar("_M", Counter, Gauge, Histogram)


@final
class _CallState:
    """What the attempt stage tells the call stage about one call."""

    __slots__ = ("endpoint", "hedges")

    def __init__(self) -> None:
        # Endpoint key of the call's first attempt.
        self.endpoint: str | None = None
        # (number, endpoint key) of each hedge sent.
        self.hedges: list[tuple[int, str]] | None = None


@final
class PrometheusMetrics:
    """Client and server metrics in a Prometheus registry.

    ``PrometheusMetrics(registry=None, *, namespace="aio_client", buckets=...,
    max_label_values=200)``:

    - ``registry``: a ``prometheus_client.CollectorRegistry``; ``None`` uses the
      global ``REGISTRY`` (looked up now, not at import).
    - ``namespace``: prefix of every metric name.
    - ``buckets``: histogram bounds in seconds (1 ms to 30 s by default).
    - ``max_label_values``: distinct routes, and distinct endpoints, each label
      admits; later ones read as ``<other>``.

    Client side: pass it in ``Client(..., observers=[metrics])``. Server side:
    pass :attr:`server_observer` as the middleware's ``observer=``. One
    instance may serve many clients and servers of one process; a second
    instance in the same registry and namespace is a :class:`ConfigError`.
    Every metric name, type and label is listed in the README's "Metrics
    reference".
    """

    __slots__ = (
        "_attempt_cache",
        "_attempt_duration",
        "_breaker_state",
        "_breaker_transitions",
        "_budget_exhausted",
        "_call_cache",
        "_endpoints",
        "_hedges",
        "_request_duration",
        "_routes",
        "_server_observer",
        "_state",
        "registry",
    )

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        namespace: str = "aio_client",
        buckets: Sequence[float] = DEFAULT_BUCKETS,
        max_label_values: int = 200,
    ) -> None:
        if registry is None:
            registry = REGISTRY
        if not isinstance(registry, CollectorRegistry):
            raise ConfigError(
                f"registry must be a prometheus_client CollectorRegistry; got {registry!r}"
            )
        if not isinstance(namespace, str) or not _NAME.fullmatch(namespace):
            raise ConfigError(
                f"namespace must be a Prometheus metric name prefix ([a-zA-Z_:][a-zA-Z0-9_:]*); "
                f"got {namespace!r}"
            )
        bounds = _validate_buckets(buckets)
        limit = validate_limit(max_label_values, "max_label_values")
        #: The registry the metrics live in.
        self.registry = registry
        self._endpoints = EndpointLabels(limit)
        self._routes = BoundedValues(limit)
        self._state: ContextVar[_CallState | None] = ContextVar(
            "aio_client_prometheus_call", default=None
        )
        self._call_cache: dict[tuple[str, str, str, str], Histogram] = {}
        self._attempt_cache: dict[tuple[str, str, str, str, str], Histogram] = {}
        with _Registration(registry, namespace) as add:
            call_labels = ("endpoint", "method", "route", "status")
            attempt_labels = ("endpoint", "method", "route", "kind", "status")
            self._request_duration = add(
                Histogram,
                "request_duration_seconds",
                "Seconds each call took as its caller saw it, all attempts included.",
                call_labels,
                buckets=bounds,
            )
            add.count_of(
                self._request_duration,
                "requests",
                "Calls made through aio_client clients (one per client.request()), "
                "by the status class or error kind the caller got.",
                call_labels,
            )
            self._attempt_duration = add(
                Histogram,
                "attempt_duration_seconds",
                "Seconds each physical attempt took, until its response, error or cancellation.",
                attempt_labels,
                buckets=bounds,
            )
            add.count_of(
                self._attempt_duration,
                "attempts",
                "Physical attempts sent, by kind (first, retry, hedge) and outcome.",
                attempt_labels,
            )
            self._hedges = add(
                Counter,
                "hedges",
                "Hedged attempts by result: won (its answer was the call's) or lost.",
                ("endpoint", "method", "route", "result"),
            )
            self._budget_exhausted = add(
                Counter,
                "budget_exhausted",
                "Retries and hedges not sent because the retry budget was empty.",
                ("endpoint", "method", "route", "kind"),
            )
            self._breaker_state = add(
                Gauge,
                "breaker_state",
                "Circuit breaker state per endpoint: 0 closed, 1 half-open, 2 open "
                "(appears at the endpoint's first state change).",
                ("endpoint",),
            )
            self._breaker_transitions = add(
                Counter,
                "breaker_transitions",
                "Circuit breaker state changes per endpoint.",
                ("endpoint", "from_state", "to_state"),
            )
            server_labels = ("method", "route", "status", "priority")
            routed = ("method", "route", "priority")
            server_duration = add(
                Histogram,
                "server_request_duration_seconds",
                "Seconds from a request's arrival to the end of its handling.",
                server_labels,
                buckets=bounds,
            )
            add.count_of(
                server_duration,
                "server_requests",
                "Requests seen by the deadline middleware (handled or refused), by route template.",
                server_labels,
            )
            self._server_observer = PrometheusServerObserver(
                duration=server_duration,
                deadline_exceeded=add(
                    Counter,
                    "server_deadline_exceeded",
                    "Requests whose deadline passed: on arrival (handler not run, 504) "
                    "or while handling (handler cancelled).",
                    (*routed, "phase"),
                ),
                disconnected=add(
                    Counter,
                    "server_client_disconnected",
                    "Requests whose client went away first; the handler was cancelled (499).",
                    routed,
                ),
                shed=add(
                    Counter,
                    "server_shed",
                    "Requests refused by the priority load shedder (503).",
                    routed,
                ),
                invalid_headers=add(
                    Counter,
                    "server_invalid_headers",
                    "Requests with a malformed, negative or absurd deadline or priority "
                    "header (ignored; the request ran with the defaults).",
                    ("method", "route"),
                ),
                in_flight=add(
                    Gauge,
                    "server_in_flight_requests",
                    "Requests whose handler is running now.",
                    (),
                ),
                routes=BoundedValues(limit),
            )

    # -- the Observer protocol ------------------------------------------------

    @property
    def call_stage(self) -> Stage:
        """Runs once per call: the requests counter and duration, hedge results."""
        return self._observe_call

    @property
    def attempt_stage(self) -> Stage:
        """Runs once per physical attempt: the attempts counter and duration."""
        return self._observe_attempt

    @property
    def server_observer(self) -> PrometheusServerObserver:
        """Pass as the server middleware's ``observer=``."""
        return self._server_observer

    def extra_attempt_refused(self, request: Request, kind: AttemptKind, /) -> None:
        """A retry or hedge was not sent: the budget was empty."""
        state = self._state.get()
        endpoint = state.endpoint if state is not None and state.endpoint else NONE
        self._budget_exhausted.labels(
            endpoint, method_label(request.method), self._route(request.route), kind.value
        ).inc()

    def breaker_state_changed(
        self, breaker: NamedBreaker, old: CircuitState, new: CircuitState, /
    ) -> None:
        """A breaker (named after its endpoint key) changed state."""
        endpoint = self._endpoints.key(breaker.name)
        self._breaker_state.labels(endpoint).set(BREAKER_STATE_VALUES[new])
        self._breaker_transitions.labels(endpoint, old.value, new.value).inc()

    # -- stages ------------------------------------------------------------------

    async def _observe_call(self, request: Request, call_next: Handler) -> Response:
        state = _CallState()
        token = self._state.set(state)
        start = _clock.now()
        try:
            response = await call_next(request)
        except BaseException as exc:
            self._call_done(request, state, _clock.now() - start, error_kind(exc), None, exc)
            raise
        finally:
            self._state.reset(token)
        self._call_done(
            request, state, _clock.now() - start, status_class(response.status), response, None
        )
        return response

    async def _observe_attempt(self, request: Request, call_next: Handler) -> Response:
        info = current_attempt()
        if info is None:  # an attempt stage run outside a client: nothing to say
            return await call_next(request)
        endpoint = self._endpoints(info.endpoint).key
        kind = info.kind
        state = self._state.get()
        if state is not None:
            if state.endpoint is None:
                state.endpoint = endpoint
            if kind is AttemptKind.HEDGE:
                if state.hedges is None:
                    state.hedges = []
                state.hedges.append((info.number, endpoint))
        start = _clock.now()
        try:
            response = await call_next(request)
        except BaseException as exc:
            self._attempt_child(
                endpoint, request.method, request.route, kind.value, error_kind(exc)
            ).observe(_clock.now() - start)
            raise
        self._attempt_child(
            endpoint, request.method, request.route, kind.value, status_class(response.status)
        ).observe(_clock.now() - start)
        return response

    # -- recording ---------------------------------------------------------------

    def _call_done(
        self,
        request: Request,
        state: _CallState,
        elapsed: float,
        status: str,
        response: Response | None,
        error: BaseException | None,
    ) -> None:
        endpoint = state.endpoint
        if endpoint is None:
            endpoint = self._endpoint_of_error(error)
        self._call_child(endpoint, request.method, request.route, status).observe(elapsed)
        hedges = state.hedges
        if hedges:
            winner = response.attempt if response is not None else 0
            method = method_label(request.method)
            route = self._route(request.route)
            for number, hedge_endpoint in hedges:
                result = "won" if number == winner else "lost"
                self._hedges.labels(hedge_endpoint, method, route, result).inc()

    def _endpoint_of_error(self, error: BaseException | None) -> str:
        # No attempt reached the attempt stage (too little budget to send one):
        # the first recorded attempt still says where the call was going.
        if isinstance(error, AioClientError) and error.attempts:
            return self._endpoints.of_url(error.attempts[0].url).key
        return NO_ENDPOINT.key

    def _route(self, route: str) -> str:
        return self._routes(route) if route else NONE

    def _call_child(self, endpoint: str, method: str, route: str, status: str) -> Histogram:
        key = (endpoint, method, route, status)
        child = self._call_cache.get(key)
        if child is None:
            method_value = method_label(method)
            route_value = self._route(route)
            child = self._request_duration.labels(endpoint, method_value, route_value, status)
            if _cacheable(method, method_value, route_value, len(self._call_cache)):
                self._call_cache[key] = child
        return child

    def _attempt_child(
        self, endpoint: str, method: str, route: str, kind: str, status: str
    ) -> Histogram:
        key = (endpoint, method, route, kind, status)
        child = self._attempt_cache.get(key)
        if child is None:
            method_value = method_label(method)
            route_value = self._route(route)
            child = self._attempt_duration.labels(endpoint, method_value, route_value, kind, status)
            if _cacheable(method, method_value, route_value, len(self._attempt_cache)):
                self._attempt_cache[key] = child
        return child

    def __repr__(self) -> str:
        return f"PrometheusMetrics(registry={self.registry!r})"


@final
class PrometheusServerObserver:
    """The server half of :class:`PrometheusMetrics`: the middleware's ``observer=``.

    Called with each request's :class:`~aio_client.server.ServerOutcome`; its
    ``request_started`` keeps the in-flight gauge.
    """

    __slots__ = (
        "_cache",
        "_deadline_exceeded",
        "_disconnected",
        "_duration",
        "_in_flight",
        "_invalid_headers",
        "_routes",
        "_shed",
    )

    def __init__(
        self,
        *,
        duration: Histogram,
        deadline_exceeded: Counter,
        disconnected: Counter,
        shed: Counter,
        invalid_headers: Counter,
        in_flight: Gauge,
        routes: BoundedValues,
    ) -> None:
        self._duration = duration
        self._deadline_exceeded = deadline_exceeded
        self._disconnected = disconnected
        self._shed = shed
        self._invalid_headers = invalid_headers
        self._in_flight = in_flight
        self._routes = routes
        self._cache: dict[tuple[str, str, int, str], Histogram] = {}

    def request_started(self, admission: Admission, /) -> None:
        """An admitted request's handler starts."""
        self._in_flight.inc()

    def __call__(self, outcome: ServerOutcome, /) -> None:
        """A request ended (handled or refused)."""
        if outcome.handled:
            self._in_flight.dec()
        priority = outcome.priority.value
        key = (outcome.method, outcome.route, outcome.status, priority)
        child = self._cache.get(key)
        if child is None:
            method = method_label(outcome.method)
            route = self._routes(outcome.route)
            child = self._duration.labels(method, route, status_class(outcome.status), priority)
            if _cacheable(outcome.method, method, route, len(self._cache)):
                self._cache[key] = child
        child.observe(outcome.elapsed)
        kind = outcome.outcome
        if kind is not ServerOutcomeKind.OK and kind is not ServerOutcomeKind.ERROR:
            self._count_refusal(outcome, kind, priority)
        if outcome.invalid_header:
            self._invalid_headers.labels(
                method_label(outcome.method), self._routes(outcome.route)
            ).inc()

    def _count_refusal(
        self, outcome: ServerOutcome, kind: ServerOutcomeKind, priority: str
    ) -> None:
        method = method_label(outcome.method)
        route = self._routes(outcome.route)
        if kind is ServerOutcomeKind.DEADLINE:
            phase = "handling" if outcome.handled else "arrival"
            self._deadline_exceeded.labels(method, route, priority, phase).inc()
        elif kind is ServerOutcomeKind.DISCONNECTED:
            self._disconnected.labels(method, route, priority).inc()
        elif kind is ServerOutcomeKind.SHED:
            self._shed.labels(method, route, priority).inc()

    def __repr__(self) -> str:
        return "PrometheusServerObserver()"


def _cacheable(method: str, method_value: str, route_value: str, cached: int) -> bool:
    # Only raw tuples that map to themselves are remembered: folded ones
    # (unknown methods, routes past the limit) would grow the cache forever.
    return method_value == method and route_value != OTHER and cached < _MAX_CACHED_TUPLES


def _validate_buckets(buckets: Sequence[float]) -> tuple[float, ...]:
    try:
        bounds = tuple(float(b) for b in buckets)
    except (TypeError, ValueError):
        raise ConfigError(f"buckets must be a sequence of seconds; got {buckets!r}") from None
    if (
        not bounds
        or any(not math.isfinite(b) or b <= 0 for b in bounds)
        or any(a >= b for a, b in itertools.pairwise(bounds))
    ):
        raise ConfigError(
            f"buckets must be finite, > 0 seconds and strictly increasing; got {buckets!r}"
        )
    return bounds


@final
class _Registration:
    """Registers metrics; on any failure unregisters the ones already added."""

    __slots__ = ("_added", "_namespace", "_registry")

    def __init__(self, registry: CollectorRegistry, namespace: str) -> None:
        self._registry = registry
        self._namespace = namespace
        self._added: list[Collector] = []

    def __enter__(self) -> _Registration:
        return self

    def __call__(
        self,
        kind: type[_M],
        name: str,
        documentation: str,
        labels: Sequence[str],
        **options: object,
    ) -> _M:
        try:
            metric = kind(
                name,
                documentation,
                labelnames=labels,
                namespace=self._namespace,
                registry=self._registry,
                **options,  # type: ignore[arg-type]
            )
        except ValueError as exc:
            raise ConfigError(
                f"registry already has {self._namespace}_{name}: one PrometheusMetrics per "
                f"registry and namespace (pass another namespace or registry) ({exc})"
            ) from None
        self._added.append(metric)
        return metric

    def count_of(
        self, histogram: Histogram, name: str, documentation: str, labels: Sequence[str]
    ) -> None:
        """Register counter ``name`` whose values are ``histogram``'s counts."""
        counter = _CountOf(f"{self._namespace}_{name}", documentation, labels, histogram)
        try:
            self._registry.register(counter)
        except ValueError as exc:
            raise ConfigError(
                f"registry already has {self._namespace}_{name}_total: one PrometheusMetrics "
                f"per registry and namespace (pass another namespace or registry) ({exc})"
            ) from None
        self._added.append(counter)

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None:
            for metric in self._added:
                self._registry.unregister(metric)


@final
class _CountOf(Collector):
    """A counter read, at scrape time, from a histogram's per-label counts."""

    def __init__(
        self, name: str, documentation: str, labels: Sequence[str], histogram: Histogram
    ) -> None:
        self._name = name
        self._documentation = documentation
        self._labels = tuple(labels)
        self._histogram = histogram

    def describe(self) -> list[CounterMetricFamily]:
        return [CounterMetricFamily(self._name, self._documentation, labels=self._labels)]

    def collect(self) -> list[CounterMetricFamily]:
        family = CounterMetricFamily(self._name, self._documentation, labels=self._labels)
        counts: dict[tuple[str, ...], float] = {}
        created: dict[tuple[str, ...], float] = {}
        for metric in self._histogram.collect():
            for sample in metric.samples:
                if sample.name.endswith("_count"):
                    counts[tuple(sample.labels[k] for k in self._labels)] = sample.value
                elif sample.name.endswith("_created"):
                    created[tuple(sample.labels[k] for k in self._labels)] = sample.value
        for key, value in counts.items():
            family.add_metric(key, value, created.get(key))
        return [family]
