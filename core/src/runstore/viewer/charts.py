"""Charts drawn on the server as inline SVG: a value across runs, and a step timeline.

No script and no inline style (the pages' policy allows neither): shapes
carry classes the stylesheet colours. Every label that comes from a store
(run ids, step names, metric names) goes through :func:`markupsafe.escape`;
everything else written into the markup is a number formatted here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final
from urllib.parse import quote

from markupsafe import Markup, escape

__all__ = ["Bar", "Point", "step_bars", "timeline_svg", "trend_svg"]

WIDTH: Final = 760
LEFT: Final = 70
"""Room for the value axis' labels."""
RIGHT: Final = 20
MAX_BAR_LABEL: Final = 60
"""Step names are cut to this many characters in the timeline."""


@dataclass(frozen=True)
class Point:
    """One run's value in a trend chart."""

    run_id: str
    created_at: datetime
    value: float | None


def _href(run_id: str) -> str:
    return "/runs/" + quote(run_id, safe="")


def _nice_top(high: float) -> float:
    """A round number at or above ``high`` for the top of an axis."""
    if high <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(high))
    for step in (1, 2, 2.5, 5, 10):
        if step * power >= high:
            return float(step * power)
    return float(10 * power)  # pragma: no cover - the loop always returns


def trend_svg(
    points: Sequence[Point],
    *,
    title: str,
    fmt: Callable[[float], str],
    top: float | None = None,
    css: str = "",
) -> Markup:
    """A line across runs (oldest left), one dot per run linking to its page.

    Runs without a value are gaps in the line, marked on the axis. ``top`` fixes
    the axis' upper end (1.0 for a pass rate); else a round number above the
    largest value.
    """
    height, upper, lower = 220, 16, 44
    plot_h = height - upper - lower
    plot_w = WIDTH - LEFT - RIGHT
    values = [p.value for p in points if p.value is not None and math.isfinite(p.value)]
    low = min(0.0, *values) if values else 0.0
    high = top if top is not None else _nice_top(max(values, default=0.0))
    span = (high - low) or 1.0
    step = plot_w / max(len(points) - 1, 1)

    def x_of(index: int) -> float:
        return LEFT + (index * step if len(points) > 1 else plot_w / 2)

    def y_of(value: float) -> float:
        return upper + plot_h - (value - low) / span * plot_h

    parts = [
        f'<svg class="trend {escape(css)}" role="img" viewBox="0 0 {WIDTH} {height}" '
        f'width="{WIDTH}" height="{height}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
    ]
    for fraction in (0.0, 0.5, 1.0):  # grid lines and their values
        value = low + fraction * span
        y = y_of(value)
        parts.append(
            f'<line class="grid" x1="{LEFT}" y1="{y:.1f}" x2="{WIDTH - RIGHT}" y2="{y:.1f}"/>'
        )
        parts.append(
            f'<text class="axis" x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">'
            f"{escape(fmt(value))}</text>"
        )
    segment: list[str] = []
    segments: list[list[str]] = []
    for index, point in enumerate(points):
        if point.value is None or not math.isfinite(point.value):
            if segment:
                segments.append(segment)
            segment = []
            continue
        segment.append(f"{x_of(index):.1f},{y_of(point.value):.1f}")
    if segment:
        segments.append(segment)
    parts += [f'<polyline class="line" points="{" ".join(s)}"/>' for s in segments if len(s) > 1]
    for index, point in enumerate(points):
        x = x_of(index)
        label = f"{point.run_id} · {point.created_at:%Y-%m-%d %H:%M}"
        if point.value is None or not math.isfinite(point.value):
            parts.append(
                f'<a href="{escape(_href(point.run_id))}"><circle class="none" cx="{x:.1f}" '
                f'cy="{upper + plot_h:.1f}" r="3"><title>{escape(label)}: no value</title>'
                "</circle></a>"
            )
            continue
        parts.append(
            f'<a href="{escape(_href(point.run_id))}"><circle class="dot" cx="{x:.1f}" '
            f'cy="{y_of(point.value):.1f}" r="4"><title>{escape(label)}: '
            f"{escape(fmt(point.value))}</title></circle></a>"
        )
    if points:  # the first and last run's dates under the axis
        first, last = points[0], points[-1]
        base = height - lower + 18
        parts.append(
            f'<text class="axis" x="{x_of(0):.1f}" y="{base}" text-anchor="start">'
            f"{escape(f'{first.created_at:%Y-%m-%d %H:%M}')}</text>"
        )
        if len(points) > 1:
            parts.append(
                f'<text class="axis" x="{x_of(len(points) - 1):.1f}" y="{base}" '
                f'text-anchor="end">{escape(f"{last.created_at:%Y-%m-%d %H:%M}")}</text>'
            )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - numbers and escaped labels only


@dataclass(frozen=True)
class Bar:
    """One step in the timeline: where it starts and how long it took (ms)."""

    label: str
    start: float
    duration: float
    failed: bool = False


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) and value >= 0 else None


_DURATION_KEYS: Final = ("duration_ms", "latency_ms", "elapsed_step_ms")


def _duration_of(record: dict[str, Any]) -> float | None:
    for where in (record, record.get("observation"), record.get("metrics")):
        if isinstance(where, dict):
            for key in _DURATION_KEYS:
                found = _number(where.get(key))
                if found is not None:
                    return found
    return None


def step_bars(steps: Sequence[tuple[str, dict[str, Any], bool]]) -> list[Bar]:
    """The timeline of ``(label, step record, failed)``: each step's duration and start.

    A step's duration is its ``duration_ms`` or ``latency_ms`` (at the top or in
    its ``observation``/``metrics``), else the growth of ``elapsed_ms`` since the
    step before. It starts at ``elapsed_ms`` minus its duration when it has an
    ``elapsed_ms`` (the time since the instance began when it ended), else where
    the step before ended. A step with no duration at all is a zero-length mark.
    """
    bars: list[Bar] = []
    end = 0.0
    for label, record, failed in steps:
        elapsed = _number(record.get("elapsed_ms"))
        duration = _duration_of(record)
        if duration is None and elapsed is not None:
            duration = max(elapsed - end, 0.0)
        duration = duration or 0.0
        start = max(elapsed - duration, 0.0) if elapsed is not None else end
        bars.append(Bar(label, start, duration, failed))
        end = max(end, start + duration)
    return bars


def _ms(value: float) -> str:
    return f"{value / 1000:.2f} s" if value >= 1000 else f"{value:.0f} ms"


def timeline_svg(bars: Sequence[Bar]) -> Markup | None:
    """A duration waterfall of an instance's steps, or ``None`` if no step took time."""
    total = max((b.start + b.duration for b in bars), default=0.0)
    if not bars or total <= 0:
        return None
    row, gap, label_w = 20, 6, 200
    height = len(bars) * (row + gap) + gap + 20
    plot_w = WIDTH - label_w - 80
    parts = [
        f'<svg class="timeline" role="img" viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" '
        f'height="{height}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>step timeline, {escape(_ms(total))} in all</title>",
    ]
    for index, bar in enumerate(bars):
        y = gap + index * (row + gap)
        x = label_w + bar.start / total * plot_w
        w = max(bar.duration / total * plot_w, 1.5)
        label = bar.label if len(bar.label) <= MAX_BAR_LABEL else bar.label[:MAX_BAR_LABEL] + "…"
        kind = "failed" if bar.failed else "passed"
        parts.append(
            f'<text class="label" x="{label_w - 8}" y="{y + row - 5}" text-anchor="end">'
            f"{escape(label)}</text>"
        )
        parts.append(
            f'<a href="#step-{index + 1}"><rect class="{kind}" x="{x:.1f}" y="{y}" '
            f'width="{w:.1f}" height="{row}"><title>{escape(label)}: '
            f"{escape(_ms(bar.duration))} from {escape(_ms(bar.start))}</title></rect></a>"
        )
        parts.append(
            f'<text class="value" x="{x + w + 6:.1f}" y="{y + row - 5}">'
            f"{escape(_ms(bar.duration))}</text>"
        )
    axis_y = height - 6
    parts.append(f'<text class="axis" x="{label_w}" y="{axis_y}">0</text>')
    parts.append(
        f'<text class="axis" x="{label_w + plot_w:.1f}" y="{axis_y}" text-anchor="end">'
        f"{escape(_ms(total))}</text>"
    )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - numbers and escaped labels only
