"""Duration histograms that cost a call little, exposed as Prometheus histograms and counters.

prometheus_client's ``Histogram.observe`` takes two locks and walks the
buckets in Python: about 10,000 instructions per observation
(``benchmarks/instructions.py --metrics``), half of what the Prometheus sink
cost a call. A :class:`DurationHistogram` series finds the bucket with
``bisect`` and updates its counts under one lock. At scrape time it is the
same exposition: ``<name>_bucket{le=...}``, ``<name>_count``, ``<name>_sum``,
and, when asked, the count again as a counter ``<counter>_total`` (the
requests counter is the request histogram's count: one observation serves both).
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Callable, Sequence
from typing import cast, final

from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

__all__ = ["DurationHistogram", "DurationSeries"]

# How prometheus_client writes a bucket bound in ``le`` (untyped upstream).
_go_float = cast(Callable[[float], str], floatToGoString)


@final
class DurationSeries:
    """One label set's histogram: :meth:`observe` is all a call pays."""

    __slots__ = ("_bounds", "_counts", "_lock", "_sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self._bounds = bounds
        # counts[i]: observations in (bounds[i-1], bounds[i]]; the last is +Inf's.
        self._counts = [0] * (len(bounds) + 1)
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe(self, seconds: float) -> None:
        """Count one observation of ``seconds``."""
        index = bisect_left(self._bounds, seconds)
        with self._lock:
            self._counts[index] += 1
            self._sum += seconds

    def snapshot(self) -> tuple[list[int], float]:
        """The per-bucket counts (not cumulative) and the sum, read together."""
        with self._lock:
            return list(self._counts), self._sum


@final
class DurationHistogram(Collector):
    """Histograms of seconds per label set, registered as one collector.

    ``counter`` (a name without ``_total``) also exposes each label set's
    count as a counter of that name.
    """

    def __init__(
        self,
        name: str,
        documentation: str,
        labels: Sequence[str],
        bounds: Sequence[float],
        *,
        counter: str | None = None,
        counter_documentation: str = "",
    ) -> None:
        self._name = name
        self._documentation = documentation
        self._labels = tuple(labels)
        self._bounds = tuple(bounds)
        self._counter = counter
        self._counter_documentation = counter_documentation
        self._series: dict[tuple[str, ...], DurationSeries] = {}
        self._lock = threading.Lock()

    def labels(self, *values: str) -> DurationSeries:
        """The series of one label set (made on first use)."""
        series = self._series.get(values)
        if series is None:
            if len(values) != len(self._labels):
                raise ValueError(f"{self._name} takes labels {self._labels}; got {values!r}")
            with self._lock:
                series = self._series.setdefault(values, DurationSeries(self._bounds))
        return series

    def describe(self) -> list[Metric]:
        families: list[Metric] = [
            HistogramMetricFamily(self._name, self._documentation, labels=self._labels)
        ]
        if self._counter is not None:
            families.append(
                CounterMetricFamily(self._counter, self._counter_documentation, labels=self._labels)
            )
        return families

    def collect(self) -> list[Metric]:
        histogram = HistogramMetricFamily(self._name, self._documentation, labels=self._labels)
        counter = (
            CounterMetricFamily(self._counter, self._counter_documentation, labels=self._labels)
            if self._counter is not None
            else None
        )
        edges = [_go_float(bound) for bound in self._bounds] + ["+Inf"]
        with self._lock:
            series = list(self._series.items())
        for values, one in series:
            counts, total = one.snapshot()
            cumulative = 0
            buckets: list[tuple[str, float]] = []
            for edge, count in zip(edges, counts, strict=True):
                cumulative += count
                buckets.append((edge, float(cumulative)))
            histogram.add_metric(list(values), buckets, total)
            if counter is not None:
                counter.add_metric(list(values), float(cumulative))
        return [histogram] if counter is None else [histogram, counter]
