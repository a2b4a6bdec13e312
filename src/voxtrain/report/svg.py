"""Line plots as inline SVG: no script, font or stylesheet from outside the page.

The page carries its plots as markup so it opens offline and stays readable when printed;
every number is computed here, so the browser only draws. Each data series is one
`<g class="series" data-n=N>` with one polyline (and markers when the points are few), which
the page's render check counts.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass

Point = tuple[float, float]

WIDTH, HEIGHT = 600, 250
LEFT, RIGHT, TOP, BOTTOM = 58, 18, 12, 34
# A train-loss history can hold a record per step; more points than the plot has pixels only
# make the page heavier, so longer series are averaged in buckets down to this many.
MAX_POINTS = 600
# Markers on every point while they stay legible; a long series is a plain line.
MARKER_LIMIT = 80
PALETTE = ("#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed", "#0891b2")


@dataclass(frozen=True)
class Series:
    label: str
    points: Sequence[Point]
    color: str = PALETTE[0]


@dataclass(frozen=True)
class Threshold:
    """A target drawn as a dashed horizontal line."""

    value: float
    label: str


@dataclass(frozen=True)
class Band:
    """A forecast: the step interval where the metric crosses its target, and its median."""

    low: float
    high: float | None  # None: beyond the forecast horizon
    mid: float


def thin(points: Sequence[Point], limit: int = MAX_POINTS) -> list[Point]:
    """At most `limit` points: consecutive buckets averaged (x and y), the last point kept as is
    so the plot ends at the newest value."""
    points = list(points)
    if len(points) <= limit or limit < 2:
        return points
    size = math.ceil((len(points) - 1) / (limit - 1))
    out = []
    for i in range(0, len(points) - 1, size):
        chunk = points[i : min(i + size, len(points) - 1)]
        out.append((sum(p[0] for p in chunk) / len(chunk), sum(p[1] for p in chunk) / len(chunk)))
    out.append(points[-1])
    return out


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values (1, 2 or 5 times a power of ten apart) inside [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo] if math.isfinite(lo) else []
    raw = (hi - lo) / max(count, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    ticks = []
    k = 0
    while first + k * step <= hi + step * 1e-9:
        ticks.append(round(first + k * step, 12))
        k += 1
    return ticks


def log_ticks(lo: float, hi: float) -> list[float]:
    """Tick values for a log axis whose ends are log10 values: 1, 2 and 5 times powers of ten,
    or linear ticks when the range is too narrow to hold three of those."""
    ticks = [m * 10.0**k for k in range(math.floor(lo) - 1, math.ceil(hi) + 1) for m in (1, 2, 5)]
    ticks = [t for t in ticks if lo - 1e-9 <= math.log10(t) <= hi + 1e-9]
    if len(ticks) >= 3:
        return ticks
    return [t for t in nice_ticks(10**lo, 10**hi) if t > 0]


def fmt_step(x: float) -> str:
    """Compact step numbers for axis labels: 500, 2.5k, 200k, 1.2M."""
    for div, unit in ((1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.3g}{unit}"
    return f"{x:.0f}"


def fmt_value(x: float) -> str:
    return f"{x:.3g}"


def tick_labels(ticks: list[float]) -> list[str]:
    """Labels that tell neighbouring ticks apart: three significant digits, more where the
    ticks are closer than that (3.245, 3.25, 3.255 rather than 3.25 three times)."""
    labels = [fmt_value(t) for t in ticks]
    if len(ticks) < 2 or len(set(labels)) == len(labels):
        return labels
    step = min(abs(b - a) for a, b in zip(ticks, ticks[1:]))
    decimals = max(0, -math.floor(math.log10(step))) if step > 0 else 3
    return [f"{t:.{decimals}f}" for t in ticks]


def _domain(values: list[float], pad: float) -> tuple[float, float]:
    lo, hi = min(values), max(values)
    if hi - lo < 1e-12:
        spread = abs(lo) * 0.1 or 1.0
        return lo - spread, hi + spread
    return lo - (hi - lo) * pad, hi + (hi - lo) * pad


def line_plot(series: Sequence[Series], *, plot_id: str, threshold: Threshold | None = None,
              band: Band | None = None, x_label: str = "step", log_ratio: float | None = None) -> str:
    """One plot as an `<svg>` element; empty series are skipped, no series at all gives a note.
    `log_ratio`: a log y axis once the largest value is that many times the smallest (a loss
    that starts high would otherwise flatten the rest of its curve into the bottom pixels)."""
    drawn = [Series(s.label, thin(s.points), s.color) for s in series if s.points]
    if not drawn:
        return '<p class="empty">no data yet</p>'
    xs = [p[0] for s in drawn for p in s.points]
    ys = [p[1] for s in drawn for p in s.points] + ([threshold.value] if threshold else [])
    log = log_ratio is not None and min(ys) > 0 and max(ys) >= log_ratio * min(ys)
    if log:
        ys = [math.log10(y) for y in ys]
    x0, x1 = min(xs), max(xs)
    if band is not None:
        # Show where the forecast lands, but never squash the history into a sliver.
        reach = band.high if band.high is not None else band.mid
        x1 = max(x1, min(reach, x1 + 3 * max(x1 - x0, 1.0)))
    if x1 - x0 < 1e-9:
        x0, x1 = x0 - 1, x1 + 1
    y0, y1 = _domain(ys, 0.08)
    pw, ph = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def sx(x: float) -> float:
        return LEFT + (x - x0) / (x1 - x0) * pw

    def sy(y: float) -> float:
        if log:
            y = math.log10(y)
        return TOP + (y1 - y) / (y1 - y0) * ph

    parts = [f'<svg class="plot" id="{html.escape(plot_id)}" viewBox="0 0 {WIDTH} {HEIGHT}" '
             f'role="img" xmlns="http://www.w3.org/2000/svg">']
    y_ticks = log_ticks(y0, y1) if log else nice_ticks(y0, y1)
    parts += _axes(x0, x1, y_ticks, sx, sy, x_label)
    if band is not None:
        parts.append(_band(band, x1, sx))
    if threshold is not None:
        y = sy(threshold.value)
        # Named in the legend: a label inside the plot would sit on the newest points.
        parts.append(f'<line class="target" x1="{LEFT}" x2="{LEFT + pw}" y1="{y:.1f}" y2="{y:.1f}">'
                     f"<title>{html.escape(threshold.label)}</title></line>")
    for s, original in zip(drawn, [s for s in series if s.points]):
        parts.append(_series(s, len(original.points), sx, sy))
    parts.append("</svg>")
    return "".join(parts)


def _axes(x0: float, x1: float, y_ticks: list[float], sx, sy, x_label: str) -> list[str]:
    bottom, right = HEIGHT - BOTTOM, WIDTH - RIGHT
    out = [f'<rect class="frame" x="{LEFT}" y="{TOP}" width="{right - LEFT}" height="{bottom - TOP}"/>']
    for t, label in zip(y_ticks, tick_labels(y_ticks), strict=True):
        y = sy(t)
        out.append(f'<line class="grid" x1="{LEFT}" x2="{right}" y1="{y:.1f}" y2="{y:.1f}"/>'
                   f'<text class="tick" x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{label}</text>')
    for t in nice_ticks(x0, x1, 6):
        x = sx(t)
        out.append(f'<line class="grid" x1="{x:.1f}" x2="{x:.1f}" y1="{TOP}" y2="{bottom}"/>'
                   f'<text class="tick" x="{x:.1f}" y="{bottom + 15}" text-anchor="middle">{fmt_step(t)}</text>')
    out.append(f'<text class="axis-label" x="{right}" y="{HEIGHT - 3}" text-anchor="end">'
               f"{html.escape(x_label)}</text>")
    return out


def _band(band: Band, x_end: float, sx) -> str:
    lo = sx(band.low)
    hi = sx(min(band.high, x_end) if band.high is not None else x_end)
    mid = sx(min(band.mid, x_end))
    bottom = HEIGHT - BOTTOM
    return (f'<rect class="forecast" x="{lo:.1f}" y="{TOP}" width="{max(hi - lo, 1.0):.1f}" height="{bottom - TOP}"/>'
            f'<line class="forecast-mid" x1="{mid:.1f}" x2="{mid:.1f}" y1="{TOP}" y2="{bottom}"/>')


def _series(s: Series, n: int, sx, sy) -> str:
    coords = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in s.points)
    out = [f'<g class="series" data-label="{html.escape(s.label)}" data-n="{n}" data-drawn="{len(s.points)}">',
           f'<polyline points="{coords}" stroke="{s.color}"/>']
    if len(s.points) <= MARKER_LIMIT:
        out += [f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="{s.color}"/>' for x, y in s.points]
    out.append("</g>")
    return "".join(out)
