"""The demo's report and explanations: a readable tail, a legend off the curves, and a line
for each number a newcomer would read as a fault."""

from __future__ import annotations

import random
import xml.etree.ElementTree as ET

from aio_client._demo._output import _tail_svg, render_html
from aio_client._demo._phases import PhaseResult, _explain_strategies, _Measured
from aio_client._demo._services import STRATEGIES

SVG = "{http://www.w3.org/2000/svg}"


def _samples(seed: int, n: int = 2000) -> list[float]:
    rng = random.Random(seed)
    return [rng.uniform(100, 300) if rng.random() < 0.04 else rng.uniform(2, 6) for _ in range(n)]


def test_the_tail_axis_marks_p50_to_p99_9() -> None:
    """The x axis is labelled p0, p50, p90, p99 and p99.9, spread as log(1 / (1 - p))."""
    svg = ET.fromstring(_tail_svg({"single": _samples(1)}))
    labels = {text.text: float(text.get("x", "nan")) for text in svg.iter(f"{SVG}text")}
    marks = [labels[name] for name in ("p0", "p50", "p90", "p99", "p99.9")]
    assert marks == sorted(marks)
    # p90, p99 and p99.9 are one decade of rarity apart: equally spaced.
    assert abs((marks[3] - marks[2]) - (marks[4] - marks[3])) < 0.5
    assert abs((marks[2] - marks[0]) - (marks[3] - marks[2])) < 0.5


def test_the_legend_stays_off_the_curves() -> None:
    """Every legend entry lies right of every curve point: no label covers a curve."""
    series = {name: _samples(seed) for seed, name in enumerate(STRATEGIES)}
    svg = ET.fromstring(_tail_svg(series))
    curve_xs = [
        float(point.split(",")[0])
        for line in svg.iter(f"{SVG}polyline")
        for point in line.get("points", "").split()
    ]
    legend_xs = [
        float(text.get("x", "nan"))
        for text in svg.iter(f"{SVG}text")
        if text.text and any(text.text.startswith(s) for s in (*STRATEGIES, "p99 "))
    ]
    assert len(legend_xs) == 2 * len(STRATEGIES)
    assert max(curve_xs) < min(legend_xs)


def test_the_report_holds_the_plot_and_tables() -> None:
    """The page is self-contained: the percentile plot and each phase's table."""
    result = PhaseResult("1. strategies", ("strategy", "p99 ms"), [("single attempt", "250.0")])
    result.latencies = {"single attempt": _samples(2)}
    page = render_html([result], 12.0)
    assert page.startswith("<!doctype html>")
    assert "<svg" in page
    assert "Latency by percentile" in page
    assert "<td>250.0</td>" in page


def _measured(p50: float, p99: float, errors: float = 0.0, extra: float = 0.0) -> _Measured:
    return _Measured(p50=p50, p99=p99, errors=errors, extra=extra)


def test_numbers_that_look_wrong_get_a_line_each() -> None:
    """Extra load, a single attempt's errors, retries' high p99 and a hedged p50 above
    single's are each explained in one line."""
    notes = _explain_strategies(
        {
            STRATEGIES[0]: _measured(7.0, 250.0, errors=1.0),
            STRATEGIES[1]: _measured(7.0, 245.0, extra=1.0),
            STRATEGIES[2]: _measured(7.5, 30.0, extra=6.0),
            STRATEGIES[3]: _measured(15.0, 25.0, extra=9.0),
        }
    )
    assert len(notes) == 4
    assert notes[0].startswith("extra load = upstream requests beyond one per call")
    assert notes[1].startswith("single attempt's errors are the upstream's 503s")
    assert notes[2].startswith("sequential retries keep a high p99")
    assert notes[3].startswith(f"{STRATEGIES[3]}: p50 above single's")


def test_nothing_odd_needs_no_explanation() -> None:
    """When no number looks wrong, no explanation is printed."""
    notes = _explain_strategies(
        {
            STRATEGIES[0]: _measured(7.0, 20.0),
            STRATEGIES[1]: _measured(7.0, 9.0),
            STRATEGIES[2]: _measured(7.5, 8.0),
            STRATEGIES[3]: _measured(7.0, 8.0),
        }
    )
    assert notes == []
