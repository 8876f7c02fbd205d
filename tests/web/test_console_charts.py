"""The banner's SVG charts: the time axis labels."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from telecare.gateway.web.console_charts import Series, line_chart

T = datetime(2026, 12, 2, 9, 30, tzinfo=UTC)


def _axis_times(svg: str) -> list[str]:
    return re.findall(r'class="ax">(\d\d \w{3} \d\d:\d\d)</text>', svg)


def test_a_period_is_labelled_with_its_first_and_last_time() -> None:
    points = [(T, 95.0), (T + timedelta(hours=2), 93.0)]
    svg = line_chart("SpO2", "%", [Series("SpO2", points)], y_range=(88, 100))
    assert _axis_times(svg) == ["02 Dec 09:30", "02 Dec 11:30"]


def test_a_single_reading_time_is_labelled_once_at_its_point() -> None:
    svg = line_chart("SpO2", "%", [Series("SpO2", [(T, 95.0)])], y_range=(88, 100))
    assert _axis_times(svg) == ["02 Dec 09:30"]
    assert 'text-anchor="end" class="ax">02 Dec 09:30' in svg  # right end, where the point is
