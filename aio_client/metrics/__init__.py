"""Observability: the observer interface and its Prometheus and OpenTelemetry sinks."""

from ._observer import Observer

__all__ = ["Observer"]
