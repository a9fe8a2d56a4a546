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


def _cdf_svg(series: dict[str, list[float]], width: int = 640, height: int = 320) -> str:
    """Latency CDF, log-scale x axis, as inline SVG."""
    values = [v for samples in series.values() for v in samples if v > 0]
    if not values:
        return "<p>no latency samples</p>"
    lo = math.log10(max(min(values), 0.1))
    hi = math.log10(max(values)) + 0.05
    pad = 40

    def x(ms: float) -> float:
        return pad + (math.log10(max(ms, 0.1)) - lo) / (hi - lo) * (width - 2 * pad)

    def y(fraction: float) -> float:
        return height - pad - fraction * (height - 2 * pad)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}">']
    parts.append(f'<rect width="{width}" height="{height}" fill="white"/>')
    for decade in range(math.floor(lo), math.ceil(hi) + 1):
        ms = 10.0**decade
        if lo <= decade <= hi:
            parts.append(
                f'<line x1="{x(ms):.1f}" y1="{pad}" x2="{x(ms):.1f}" y2="{height - pad}" '
                'stroke="#ddd"/>'
                f'<text x="{x(ms):.1f}" y="{height - pad + 15}" font-size="11" '
                f'text-anchor="middle">{ms:g} ms</text>'
            )
    for fraction in (0.5, 0.9, 0.99):
        parts.append(
            f'<line x1="{pad}" y1="{y(fraction):.1f}" x2="{width - pad}" y2="{y(fraction):.1f}" '
            f'stroke="#eee"/><text x="4" y="{y(fraction) + 4:.1f}" font-size="11">'
            f"p{fraction * 100:g}</text>"
        )
    for index, (name, samples) in enumerate(series.items()):
        ordered = sorted(samples)
        if not ordered:
            continue
        step = max(1, len(ordered) // 400)
        points = [
            f"{x(v):.1f},{y((i + 1) / len(ordered)):.1f}"
            for i, v in enumerate(ordered)
            if i % step == 0 or i == len(ordered) - 1
        ]
        colour = _COLOURS[index % len(_COLOURS)]
        parts.append(
            f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" '
            f'points="{" ".join(points)}"/>'
            f'<text x="{pad + 10}" y="{pad + 15 * (index + 1)}" font-size="12" '
            f'fill="{colour}">{html.escape(name)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def render_html(results: list[PhaseResult], seconds: float) -> str:
    """A self-contained page: the latency CDF and every phase's table."""
    body = [
        "<h1>aio_client demo</h1>",
        f"<p>Measured on 127.0.0.1 over real sockets in {seconds:.1f} s.</p>",
    ]
    for result in results:
        body.append(f"<h2>{html.escape(result.title)}</h2>")
        if result.latencies:
            body.append("<p>Latency CDF (log scale):</p>" + _cdf_svg(result.latencies))
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
