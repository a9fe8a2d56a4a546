"""Observability: the observer interface, its events, and the sinks that implement it.

- :class:`Observer` and :class:`CallWatcher`: what a client's ``observers=[...]``
  accept, and the hooks they implement; the client computes each fact once
  and hands them immutable events (:class:`CallStarted`, :class:`AttemptStarted`,
  :class:`AttemptFinished`, :class:`ExtraAttemptRefused`, :class:`CallFinished`,
  :class:`BreakerChanged`).
- :class:`LoggingObserver`: one structured log line per call (standard ``logging``).
- :class:`PrometheusMetrics`: client and server metrics in a Prometheus registry
  (needs ``prometheus-client``: the ``prometheus`` extra).
- :class:`OpenTelemetryInstrumentation`: HTTP semantic-convention metrics,
  resilience counters, call and attempt spans, W3C trace context (needs
  ``opentelemetry-api``: the ``otel`` extra).

The sinks are imported on first use, so ``import aio_client.metrics`` needs
neither library, and nothing is registered until a sink is constructed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._events import (
    AttemptFinished,
    AttemptStarted,
    BreakerChanged,
    CallFinished,
    CallStarted,
    CallWatcher,
    ExtraAttemptRefused,
    Observer,
)
from .._lazy import lazy_names as _lazy_names
from ._logging import LoggingObserver

if TYPE_CHECKING:
    from ._labels import DEFAULT_BUCKETS
    from ._opentelemetry import OpenTelemetryInstrumentation, OpenTelemetryServerObserver
    from ._prometheus import PrometheusMetrics, PrometheusServerObserver

__all__ = [
    "DEFAULT_BUCKETS",
    "AttemptFinished",
    "AttemptStarted",
    "BreakerChanged",
    "CallFinished",
    "CallStarted",
    "CallWatcher",
    "ExtraAttemptRefused",
    "LoggingObserver",
    "Observer",
    "OpenTelemetryInstrumentation",
    "OpenTelemetryServerObserver",
    "PrometheusMetrics",
    "PrometheusServerObserver",
]

_LAZY = {
    "DEFAULT_BUCKETS": ("._labels", "DEFAULT_BUCKETS"),
    "OpenTelemetryInstrumentation": ("._opentelemetry", "OpenTelemetryInstrumentation"),
    "OpenTelemetryServerObserver": ("._opentelemetry", "OpenTelemetryServerObserver"),
    "PrometheusMetrics": ("._prometheus", "PrometheusMetrics"),
    "PrometheusServerObserver": ("._prometheus", "PrometheusServerObserver"),
}


__getattr__ = _lazy_names(__name__, _LAZY)
