"""The dashboard's charts, drawn on the server as inline SVG.

The dashboard has no JavaScript and its Content-Security-Policy loads nothing from anywhere
(`default-src 'none'`), so the charts are plain SVG elements in the page: no script, no CDN,
nothing to vendor, and they print and work on a phone like the rest. Every number comes from
service/store/charts.py; the drawing here only scales it.

Each bar carries its bucket and value as data attributes and a <title> (the browser's tooltip),
which is also what the browser tests read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from markupsafe import Markup, escape

from service.store import Bucket, Series, Window

WIDTH, HEIGHT = 360, 150
LEFT, RIGHT, TOP, BOTTOM = 40, 6, 10, 22  # the plot's margins: axis labels live there
COMPLETED, FAILED, WAIT, WAIT_HIGH = "#1a7f37", "#cf222e", "#0969da", "#9a6700"


@dataclass(frozen=True)
class Bar:
    """One bar: its segments bottom up as (value, colour, what it counts)."""

    start: datetime
    segments: Sequence[tuple[float, str, str]]
    marker: float | None = None  # a second value drawn as a tick (the wait's p95)


def _label(moment: datetime, window: Window) -> str:
    return moment.astimezone(UTC).strftime("%H:%M" if window is Window.HOUR else "%d %H:00")


def _number(value: float, unit: str) -> str:
    if unit == "s":
        return f"{value:.2f}s" if value < 10 else f"{value:.0f}s"
    return f"{value:g}" if value == int(value) else f"{value:.1f}"


def _ceiling(value: float) -> float:
    """A round top for the axis, at or above the largest value (1, 2, 5, 10, 20, ...)."""
    if value <= 0:
        return 1.0
    step = 10 ** len(str(int(value))) / 100 if value >= 1 else 0.01
    while True:
        for factor in (1, 2, 5):
            if step * factor >= value:
                return step * factor
        step *= 10


def draw(name: str, title: str, bars: list[Bar], window: Window, unit: str = "") -> Markup:
    """An SVG bar chart of `bars` (oldest first), its y axis from 0 to a round top."""
    tops = [sum(v for v, _, _ in bar.segments) for bar in bars]
    tops += [bar.marker for bar in bars if bar.marker is not None]
    top = _ceiling(max(tops, default=0.0))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_w / max(len(bars), 1)
    parts = [
        f'<svg class="chart" data-chart="{escape(name)}" data-window="{window}" role="img" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" '
        f'xmlns="http://www.w3.org/2000/svg" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
        f'<line x1="{LEFT}" y1="{TOP + plot_h}" x2="{WIDTH - RIGHT}" y2="{TOP + plot_h}" '
        'stroke="#d8dee4"/>',
        f'<line x1="{LEFT}" y1="{TOP}" x2="{WIDTH - RIGHT}" y2="{TOP}" stroke="#eef1f4"/>',
        f'<text x="{LEFT - 4}" y="{TOP + 4}" text-anchor="end" font-size="10" fill="#656d76">'
        f"{_number(top, unit)}</text>",
        f'<text x="{LEFT - 4}" y="{TOP + plot_h}" text-anchor="end" font-size="10" '
        'fill="#656d76">0</text>',
    ]
    for i, bar in enumerate(bars):
        x = LEFT + i * slot + slot * 0.12
        w = slot * 0.76
        y: float = TOP + plot_h
        total = sum(v for v, _, _ in bar.segments)
        what = ", ".join(f"{label} {_number(v, unit)}" for v, _, label in bar.segments)
        parts.append(
            f'<g class="bar" data-bucket="{bar.start.isoformat()}" data-value="{total:g}">'
            f"<title>{_label(bar.start, window)}: {escape(what)}"
            + (f", p95 {_number(bar.marker, unit)}" if bar.marker is not None else "")
            + "</title>"
        )
        for value, colour, _ in bar.segments:
            h = plot_h * value / top
            y -= h
            if h > 0:
                parts.append(
                    f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" '
                    f'fill="{colour}"/>'
                )
        if bar.marker is not None:
            my = TOP + plot_h - plot_h * bar.marker / top
            parts.append(
                f'<line x1="{x:.1f}" y1="{my:.1f}" x2="{x + w:.1f}" y2="{my:.1f}" '
                f'stroke="{WAIT_HIGH}" stroke-width="2"/>'
            )
        parts.append("</g>")
    ends = {0: "start", len(bars) // 2: "middle", len(bars) - 1: "end"} if bars else {}
    for i, anchor in ends.items():  # the first and last labels kept inside the picture
        x = LEFT + i * slot + (slot * 0.12 if anchor == "start" else slot / 2)
        x = x + slot * 0.38 if anchor == "end" else x
        parts.append(
            f'<text x="{x:.1f}" y="{HEIGHT - 6}" text-anchor="{anchor}" font-size="10" '
            f'fill="#656d76">{_label(bars[i].start, window)}</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def throughput(series: Series) -> Markup:
    """Jobs finished per bucket, completed below failed."""
    bars = [
        Bar(b.start, [(b.completed, COMPLETED, "completed"), (b.failed, FAILED, "failed")])
        for b in series.buckets
    ]
    return draw("throughput", "Jobs finished", bars, series.window)


def failures(series: Series) -> Markup:
    """Jobs that ended failed per bucket (after their last attempt, or cancelled)."""
    bars = [Bar(b.start, [(b.failed, FAILED, "failed")]) for b in series.buckets]
    return draw("failures", "Jobs failed", bars, series.window)


def waits(series: Series) -> Markup:
    """Median wait from created to started of the jobs created in each bucket, p95 as a tick."""

    def bar(b: Bucket) -> Bar:
        return Bar(b.start, [(b.wait_p50 or 0.0, WAIT, "median wait")], b.wait_p95)

    return draw("wait", "Wait, created to started", [bar(b) for b in series.buckets],
                series.window, "s")  # fmt: skip
