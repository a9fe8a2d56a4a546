"""DurationHistogram: the same exposition as prometheus_client's Histogram, for less."""

from __future__ import annotations

import threading

import pytest
from prometheus_client import CollectorRegistry, Histogram

from aio_client.metrics._histogram import DurationHistogram
from aio_client.metrics._labels import DEFAULT_BUCKETS

VALUES = [0.0, 0.0005, 0.001, 0.0011, 0.05, 0.3, 2.5, 29.9, 30.0, 31.0, 1e9]


def _samples(registry: CollectorRegistry, prefix: str) -> dict[tuple[str, str, str], float]:
    return {
        (sample.name.removeprefix(prefix), sample.labels.get("le", ""), sample.labels["a"]): (
            sample.value
        )
        for family in registry.collect()
        for sample in family.samples
        if not sample.name.endswith("_created")
    }


def test_buckets_count_and_sum_match_prometheus_client() -> None:
    """The same observations give the same buckets (bounds inclusive), count and sum."""
    ours_registry, theirs_registry = CollectorRegistry(), CollectorRegistry()
    ours = DurationHistogram("ours", "d", ["a"], DEFAULT_BUCKETS)
    ours_registry.register(ours)
    theirs = Histogram("theirs", "d", ["a"], buckets=DEFAULT_BUCKETS, registry=theirs_registry)
    for value in VALUES:
        ours.labels("x").observe(value)
        theirs.labels("x").observe(value)
    assert _samples(ours_registry, "ours") == _samples(theirs_registry, "theirs")


def test_the_count_is_also_a_counter() -> None:
    """With counter=, each label set's count is exposed as <counter>_total."""
    registry = CollectorRegistry()
    histogram = DurationHistogram("d_seconds", "d", ["a"], (0.1, 1.0), counter="calls")
    registry.register(histogram)
    for _ in range(3):
        histogram.labels("x").observe(0.5)
    assert registry.get_sample_value("calls_total", {"a": "x"}) == 3.0
    assert registry.get_sample_value("d_seconds_bucket", {"a": "x", "le": "0.1"}) == 0.0
    assert registry.get_sample_value("d_seconds_bucket", {"a": "x", "le": "1.0"}) == 3.0


def test_observations_from_threads_are_all_counted() -> None:
    """Observations from several threads at once are never lost."""
    histogram = DurationHistogram("d", "d", [], (1.0,))
    series = histogram.labels()

    def work() -> None:
        for _ in range(20_000):
            series.observe(0.5)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    counts, total = series.snapshot()
    assert counts == [80_000, 0]
    assert total == pytest.approx(40_000.0)


def test_a_wrong_number_of_labels_is_refused() -> None:
    """labels() with the wrong arity is a ValueError naming the metric."""
    with pytest.raises(ValueError, match="d_seconds"):
        DurationHistogram("d_seconds", "d", ["a", "b"], (1.0,)).labels("x")
