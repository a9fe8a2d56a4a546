"""Terminal output (progress bars, tables) and the self-contained HTML report."""

from __future__ import annotations

import html
import math
import sys
from typing import TextIO

from ._phases import PhaseResult

__all__ = ["ProgressBar", "render_html", "render_table"]


class ProgressBar:
    """One line per phase: redrawn in place on a terminal, printed once per step otherwise."""

    def __init__(self, stream: TextIO = sys.stdout, width: int = 30) -> None:
        self._stream = stream
        self._width = width
        self._tty = stream.isatty()
        self._phase = ""
        self._label = ""

    def start(self, phase: str) -> None:
        self._phase = phase
        self._label = ""

    def __call__(self, fraction: float, label: str) -> None:
        if self._tty:
            filled = int(self._width * fraction)
            bar = "#" * filled + "." * (self._width - filled)
            self._stream.write(f"\r  [{bar}] {self._phase}: {label:<24} {fraction:4.0%}")
            self._stream.flush()
        elif label != self._label:
            self._stream.write(f"  - {self._phase}: {label}\n")
            self._stream.flush()
        self._label = label

    def finish(self) -> None:
        if self._tty:
            self._stream.write("\n")
            self._stream.flush()


def render_table(result: PhaseResult) -> str:
    """The phase's table as aligned plain text, notes below."""
    rows = [result.columns, *result.rows]
    widths = [max(len(row[i]) for row in rows) for i in range(len(result.columns))]
    lines = [result.title]
    for index, row in enumerate(rows):
        lines.append("  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
        if index == 0:
            lines.append("  " + "  ".join("-" * w for w in widths))
    lines.extend(f"  * {note}" for note in result.notes)
    return "\n".join(line.rstrip() for line in lines)


_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e")
#: Percentiles marked on the tail axis, as fractions.
_MARKED = (0.5, 0.9, 0.99, 0.999)


def _tail_x(fraction: float) -> float:
    """Position of a percentile on the tail axis: log10(1 / (1 - p)); p99 is 2, p99.9 is 3."""
    return math.log10(1.0 / (1.0 - fraction))


def _tail_svg(series: dict[str, list[float]], width: int = 820, height: int = 400) -> str:
    """Latency by percentile as inline SVG, the tail spread out.

    x is the percentile on a log scale of 1 / (1 - p) (p50, p90, p99 and p99.9 marked, each
    step to the right ten times rarer than the one before); y is the latency, log scale. The
    legend sits to the right of the plot, never on a curve.
    """
    values = [v for samples in series.values() for v in samples if v > 0]
    if not values:
        return "<p>no latency samples</p>"
    left, right, top, bottom = 64, width - 230, 16, height - 56
    longest = max(len(samples) for samples in series.values())
    x_max = max(3.0, math.log10(max(longest, 1)))
    # The y range runs between the 1-2-5 ticks around the samples.
    ticks = [step * 10.0**decade for decade in range(-2, 6) for step in (1, 2, 5)]
    low_ms = max([t for t in ticks if t <= max(min(values), ticks[0])])
    high_ms = min([t for t in ticks if t >= min(max(values), ticks[-1]) and t > low_ms])
    lo, hi = math.log10(low_ms), math.log10(high_ms)

    def x(tail: float) -> float:
        return left + tail / x_max * (right - left)

    def y(ms: float) -> float:
        return bottom - (math.log10(min(max(ms, low_ms), high_ms)) - lo) / (hi - lo) * (
            bottom - top
        )

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        'font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
    ]
    for ms in ticks:
        if low_ms <= ms <= high_ms:
            colour = "#ccc" if math.log10(ms).is_integer() else "#eee"
            parts.append(
                f'<line x1="{left}" y1="{y(ms):.1f}" x2="{right}" y2="{y(ms):.1f}" '
                f'stroke="{colour}"/><text x="{left - 6}" y="{y(ms) + 4:.1f}" '
                f'text-anchor="end">{ms:g}</text>'
            )
    for fraction in (0.0, *_MARKED):
        at = x(_tail_x(fraction))
        parts.append(
            f'<line x1="{at:.1f}" y1="{top}" x2="{at:.1f}" y2="{bottom}" stroke="#ccc"/>'
            f'<text x="{at:.1f}" y="{bottom + 16}" text-anchor="middle">'
            f"{'p0' if fraction == 0.0 else f'p{fraction * 100:g}'}</text>"
        )
    parts.append(
        f'<text x="{(left + right) / 2:.0f}" y="{height - 14}" text-anchor="middle">'
        "percentile (each mark to the right is ten times rarer)</text>"
        f'<text x="16" y="{(top + bottom) / 2:.0f}" text-anchor="middle" '
        f'transform="rotate(-90 16 {(top + bottom) / 2:.0f})">latency, ms (log scale)</text>'
        f'<rect x="{left}" y="{top}" width="{right - left}" height="{bottom - top}" '
        'fill="none" stroke="#888"/>'
    )
    for index, (name, samples) in enumerate(series.items()):
        ordered = sorted(samples)
        if not ordered:
            continue
        colour = _COLOURS[index % len(_COLOURS)]
        points: list[str] = []
        last = -1.0
        for i, value in enumerate(ordered):
            tail = _tail_x(i / len(ordered))
            # Thin the crowded head of the curve; keep every point of the tail.
            if tail - last >= 0.004 or i == len(ordered) - 1:
                points.append(f"{x(tail):.1f},{y(value):.1f}")
                last = tail
        parts.append(
            f'<polyline fill="none" stroke="{colour}" stroke-width="1.8" '
            f'points="{" ".join(points)}"/>'
        )
        entry_y = top + 10 + 40 * index
        p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
        parts.append(
            f'<line x1="{right + 16}" y1="{entry_y}" x2="{right + 40}" y2="{entry_y}" '
            f'stroke="{colour}" stroke-width="3"/>'
            f'<text x="{right + 46}" y="{entry_y + 4}">{html.escape(name)}</text>'
            f'<text x="{right + 46}" y="{entry_y + 20}" fill="#555">'
            f"p99 {p99:.1f} ms, {len(ordered)} calls</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def render_html(results: list[PhaseResult], seconds: float) -> str:
    """A self-contained page: latency by percentile and every phase's table."""
    body = [
        "<h1>aio_client demo</h1>",
        f"<p>Measured on 127.0.0.1 over real sockets in {seconds:.1f} s.</p>",
    ]
    for result in results:
        body.append(f"<h2>{html.escape(result.title)}</h2>")
        if result.latencies:
            body.append(
                "<p>Latency by percentile: read a curve at p99 for the latency one call in a "
                "hundred exceeds. The curves end at the rarest percentile their calls can show."
                "</p>" + _tail_svg(result.latencies)
            )
        head = "".join(f"<th>{html.escape(c)}</th>" for c in result.columns)
        rows = "".join(
            "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>"
            for row in result.rows
        )
        body.append(f"<table><tr>{head}</tr>{rows}</table>")
        body.extend(f"<p>{html.escape(note)}</p>" for note in result.notes)
    style = (
        "body{font-family:sans-serif;max-width:960px;margin:2em auto}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;"
        "text-align:right}th{background:#f4f4f4}"
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>aio_client demo</title>"
        f"<style>{style}</style></head><body>{''.join(body)}</body></html>"
    )
