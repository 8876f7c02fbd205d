"""Server-rendered SVG charts for the resident banner: NEWS2, SpO2, pulse and blood
pressure over time. No JavaScript, no library: a polyline per series over shaded bands
(the NEWS2 risk bands, or the chart's normal range), with the first and last time and
the axis range written as text, and a ``<title>``/``<desc>`` so a screen reader gets
the latest value and the trend in words.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from html import escape
from typing import Final

__all__ = ["Band", "Series", "line_chart"]

_W: Final = 320
_H: Final = 96
_PAD_L: Final = 30
_PAD_R: Final = 6
_PAD_T: Final = 8
_PAD_B: Final = 16


@dataclass(frozen=True, slots=True)
class Series:
    label: str
    points: Sequence[tuple[datetime, float]]
    colour: str = "#0b5cad"


@dataclass(frozen=True, slots=True)
class Band:
    """A shaded horizontal band ``[low, high)`` (a risk band or the normal range)."""

    low: float
    high: float
    colour: str


def _fmt(v: float) -> str:
    return f"{v:.0f}" if abs(v - round(v)) < 0.05 else f"{v:.1f}"


def line_chart(
    title: str,
    unit: str,
    series: Sequence[Series],
    *,
    y_range: tuple[float, float],
    bands: Sequence[Band] = (),
) -> str:
    """An accessible SVG line chart (a string of markup, safe to embed)."""
    points = [p for s in series for p in s.points]
    lo, hi = y_range
    if points:
        lo = min(lo, min(v for _, v in points))
        hi = max(hi, max(v for _, v in points))
    span = (hi - lo) or 1.0
    plot_w, plot_h = _W - _PAD_L - _PAD_R, _H - _PAD_T - _PAD_B
    times = [t for t, _ in points]
    t0, t1 = (min(times), max(times)) if times else (None, None)
    t_span = (t1 - t0).total_seconds() if t0 and t1 and t1 > t0 else 1.0

    def x(t: datetime) -> float:
        if t0 is None:
            return _PAD_L
        return _PAD_L + plot_w * ((t - t0).total_seconds() / t_span if t1 != t0 else 1.0)

    def y(v: float) -> float:
        return _PAD_T + plot_h * (1 - (v - lo) / span)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_W} {_H}" class="chart"'
        f' role="img" aria-labelledby="t-{_id(title)} d-{_id(title)}">',
        f'<title id="t-{_id(title)}">{escape(title)}</title>',
        f'<desc id="d-{_id(title)}">{escape(_describe(title, unit, series))}</desc>',
    ]
    for b in bands:
        top, bottom = y(min(b.high, hi)), y(max(b.low, lo))
        if bottom > top:
            parts.append(
                f'<rect x="{_PAD_L}" y="{top:.1f}" width="{plot_w}" height="{bottom - top:.1f}"'
                f' fill="{b.colour}"/>'
            )
    parts.append(
        f'<rect x="{_PAD_L}" y="{_PAD_T}" width="{plot_w}" height="{plot_h}" fill="none"'
        ' stroke="#8a949e" stroke-width="0.5"/>'
    )
    for v in (lo, hi):
        parts.append(
            f'<text x="{_PAD_L - 3}" y="{y(v) + 3:.1f}" text-anchor="end" class="ax">'
            f"{_fmt(v)}</text>"
        )
    if t0 is not None and t1 is not None:
        if t1 != t0:  # one reading time: only the right end, where its point is drawn
            parts.append(f'<text x="{_PAD_L}" y="{_H - 3}" class="ax">{t0:%d %b %H:%M}</text>')
        parts.append(
            f'<text x="{_W - _PAD_R}" y="{_H - 3}" text-anchor="end" class="ax">'
            f"{t1:%d %b %H:%M}</text>"
        )
    else:
        parts.append(
            f'<text x="{_PAD_L + plot_w / 2}" y="{_PAD_T + plot_h / 2 + 4}"'
            ' text-anchor="middle" class="ax">no data in this period</text>'
        )
    for s in series:
        if not s.points:
            continue
        coords = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in s.points)
        parts.append(
            f'<polyline points="{coords}" fill="none" stroke="{s.colour}" stroke-width="1.8"/>'
        )
        lt, lv = s.points[-1]
        parts.append(f'<circle cx="{x(lt):.1f}" cy="{y(lv):.1f}" r="2.6" fill="{s.colour}"/>')
    parts.append(
        f'<text x="{_PAD_L + 3}" y="{_PAD_T + 9}" class="ct">{escape(title)}'
        f"{' (' + escape(unit) + ')' if unit else ''}</text>"
    )
    parts.append("</svg>")
    return "".join(parts)


def _id(title: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in title.lower())


def _describe(title: str, unit: str, series: Sequence[Series]) -> str:
    said = []
    for s in series:
        if not s.points:
            said.append(f"{s.label}: no data")
            continue
        first, last = s.points[0][1], s.points[-1][1]
        trend = "rising" if last > first else "falling" if last < first else "steady"
        said.append(f"{s.label} latest {_fmt(last)} {unit}, {trend} over {len(s.points)} points")
    return f"{title}. " + "; ".join(said)
