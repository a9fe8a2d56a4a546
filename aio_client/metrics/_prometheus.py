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
from typing import TYPE_CHECKING, Final, TypeVar, final

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge
from prometheus_client.registry import Collector

from .._attempts import AttemptKind
from .._errors import ConfigError
from .._events import CallWatcher, Observer
from .._server_events import ServerOutcomeKind
from ._histogram import DurationHistogram, DurationSeries
from ._labels import (
    BREAKER_STATE_VALUES,
    DEFAULT_BUCKETS,
    NONE,
    OTHER,
    BoundedValues,
    EndpointLabels,
    method_label,
    outcome_label,
    status_class,
    validate_limit,
)

if TYPE_CHECKING:
    from .._events import (
        AttemptFinished,
        BreakerChanged,
        CallFinished,
        CallStarted,
        ExtraAttemptRefused,
    )
    from .._server_events import Admission, ServerOutcome

__all__ = ["PrometheusMetrics", "PrometheusServerObserver"]

_NAME: Final = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
# Label children cached per raw label tuple; past this many tuples the
# lookups still work, just through prometheus_client's own (slower) path.
_MAX_CACHED_TUPLES: Final = 10_000

_M = TypeVar("_M", Counter, Gauge)


@final
class PrometheusMetrics(Observer, CallWatcher):
    """Client and server metrics in a Prometheus registry.

    ``PrometheusMetrics(registry=None, *, namespace="aio_client", buckets=...,
    max_label_values=200)``:

    - ``registry``: a ``prometheus_client.CollectorRegistry``; ``None`` uses the
      global ``REGISTRY`` (looked up now, not at import).
    - ``namespace``: prefix of every metric name.
    - ``buckets``: histogram bounds in seconds (1 ms to 30 s by default).
    - ``max_label_values``: distinct routes, and distinct endpoints, each label
      admits; later ones read as ``<other>``.

    Client side: pass it in ``Client(..., observers=[metrics])``; it hears
    each call's end and each attempt's end (see :class:`~aio_client.metrics.Observer`).
    Server side:
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
        # Label children by the events' raw values (endpoint base URL, method,
        # route, [kind,] status or error class): a call pays a dict lookup each.
        self._call_cache: dict[tuple[object, ...], DurationSeries] = {}
        self._attempt_cache: dict[tuple[object, ...], DurationSeries] = {}
        with _Registration(registry, namespace) as add:
            call_labels = ("endpoint", "method", "route", "status")
            attempt_labels = ("endpoint", "method", "route", "kind", "status")
            self._request_duration = add.durations(
                "request_duration_seconds",
                "Seconds each call took as its caller saw it, all attempts included.",
                call_labels,
                bounds,
                "requests",
                "Calls made through aio_client clients (one per client.request()), "
                "by the status class or why the call ended.",
            )
            self._attempt_duration = add.durations(
                "attempt_duration_seconds",
                "Seconds each physical attempt took, until its response, error or cancellation.",
                attempt_labels,
                bounds,
                "attempts",
                "Physical attempts sent, by kind (first, retry, hedge) and outcome.",
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
            server_duration = add.durations(
                "server_request_duration_seconds",
                "Seconds from a request's arrival to the end of its handling.",
                server_labels,
                bounds,
                "server_requests",
                "Requests seen by the deadline middleware (handled or refused), by route template.",
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
                guard_refused=add(
                    Counter,
                    "server_guard_refused",
                    "Requests refused by a server guard: rate_limited (429) or refused "
                    "(a bulkhead or circuit breaker, 503).",
                    (*routed, "reason"),
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

    # -- the Observer hooks -------------------------------------------------------

    @property
    def server_observer(self) -> PrometheusServerObserver:
        """Pass as the server middleware's ``observer=``."""
        return self._server_observer

    def call_started(self, event: CallStarted, /) -> PrometheusMetrics:
        """Every call is watched, by this object itself: it keeps nothing per call."""
        return self

    def attempt_finished(self, event: AttemptFinished, /) -> None:
        """The attempts counter and duration."""
        status = event.status
        key = (
            event.endpoint,
            event.method,
            event.route,
            event.kind,
            status if status is not None else event.ending,
        )
        child = self._attempt_cache.get(key)
        if child is None:
            child = self._child(
                self._attempt_duration,
                self._attempt_cache,
                key,
                event.endpoint,
                event.kind.value,
                outcome_label(status, event.ending),
            )
        child.observe(event.duration)

    def call_finished(self, event: CallFinished, /) -> None:
        """The requests counter and duration, and each hedge's result."""
        status = event.status
        key = (
            event.endpoint,
            event.method,
            event.route,
            status if status is not None else event.ending,
        )
        child = self._call_cache.get(key)
        if child is None:
            child = self._child(
                self._request_duration,
                self._call_cache,
                key,
                event.endpoint,
                outcome_label(status, event.ending),
            )
        child.observe(event.duration)
        attempts = event.attempts
        if len(attempts) > 1:
            winner = event.winner
            method = method_label(event.method)
            route = self._route(event.route)
            for record in attempts:
                if record.kind is AttemptKind.HEDGE:
                    result = "won" if record.number == winner else "lost"
                    self._hedges.labels(
                        self._endpoints(record.endpoint).key, method, route, result
                    ).inc()

    def extra_attempt_refused(self, event: ExtraAttemptRefused, /) -> None:
        """A retry or hedge was not sent: the budget was empty."""
        self._budget_exhausted.labels(
            self._endpoints(event.endpoint).key,
            method_label(event.method),
            self._route(event.route),
            event.kind.value,
        ).inc()

    def breaker_changed(self, event: BreakerChanged, /) -> None:
        """A breaker (named after its endpoint key) changed state."""
        endpoint = self._endpoints.key(event.name)
        self._breaker_state.labels(endpoint).set(BREAKER_STATE_VALUES[event.new])
        self._breaker_transitions.labels(endpoint, event.old.value, event.new.value).inc()

    # -- recording ---------------------------------------------------------------

    def _route(self, route: str) -> str:
        return self._routes(route) if route else NONE

    def _child(
        self,
        histogram: DurationHistogram,
        cache: dict[tuple[object, ...], DurationSeries],
        key: tuple[object, ...],
        endpoint: str | None,
        *last: str,
    ) -> DurationSeries:
        # key = (endpoint, method, route, ...): the labels are worked out once per key.
        method, route = str(key[1]), str(key[2])
        method_value = method_label(method)
        route_value = self._route(route)
        endpoint_value = self._endpoints(endpoint).key if endpoint else NONE
        child = histogram.labels(endpoint_value, method_value, route_value, *last)
        if _cacheable(method, method_value, route_value, len(cache)):
            cache[key] = child
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
        "_guard_refused",
        "_invalid_headers",
        "_routes",
        "_running",
        "_shed",
    )

    def __init__(
        self,
        *,
        duration: DurationHistogram,
        deadline_exceeded: Counter,
        disconnected: Counter,
        shed: Counter,
        guard_refused: Counter,
        invalid_headers: Counter,
        in_flight: Gauge,
        routes: BoundedValues,
    ) -> None:
        self._duration = duration
        self._deadline_exceeded = deadline_exceeded
        self._disconnected = disconnected
        self._shed = shed
        self._guard_refused = guard_refused
        self._invalid_headers = invalid_headers
        # Counted here and read by the gauge when scraped: an increment per
        # request instead of two locked gauge updates.
        self._running = 0
        in_flight.set_function(self._read_running)
        self._routes = routes
        self._cache: dict[tuple[str, str, int, str], DurationSeries] = {}

    def request_started(self, admission: Admission, /) -> None:
        """An admitted request's handler starts."""
        self._running += 1

    def _read_running(self) -> float:
        return float(self._running)

    def __call__(self, outcome: ServerOutcome, /) -> None:
        """A request ended (handled or refused)."""
        if outcome.handled:
            self._running -= 1
        # A StrEnum member is its own label (str() gives its value) and hashes as a
        # str: no call to the enum's value property on every request.
        priority: str = outcome.priority
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
        elif kind is ServerOutcomeKind.RATE_LIMITED or kind is ServerOutcomeKind.REFUSED:
            self._guard_refused.labels(method, route, priority, kind.value).inc()

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

    def durations(
        self,
        name: str,
        documentation: str,
        labels: Sequence[str],
        bounds: Sequence[float],
        counter: str,
        counter_documentation: str,
    ) -> DurationHistogram:
        """Register histogram ``name`` whose counts are also counter ``counter``."""
        histogram = DurationHistogram(
            f"{self._namespace}_{name}",
            documentation,
            labels,
            bounds,
            counter=f"{self._namespace}_{counter}",
            counter_documentation=counter_documentation,
        )
        try:
            self._registry.register(histogram)
        except ValueError as exc:
            raise ConfigError(
                f"registry already has {self._namespace}_{name} or {self._namespace}_"
                f"{counter}_total: one PrometheusMetrics per registry and namespace (pass "
                f"another namespace or registry) ({exc})"
            ) from None
        self._added.append(histogram)
        return histogram

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None:
            for metric in self._added:
                self._registry.unregister(metric)
