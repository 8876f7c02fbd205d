"""Reduction of high-rate oximeter streams."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from telecare.devices.codecs.oximetry import OximeterSample
from telecare.devices.model import Metric, Reading
from telecare.devices.reduce import SIGNIFICANT_CHANGE, OximeterReducer
from tests.devices.conftest import T0


def reducer() -> OximeterReducer:
    return OximeterReducer(device_id="ox1", msg_prefix="cms50d", resident_id="r1", site_id="s1")


def at(ms: int) -> datetime:
    return T0 + timedelta(milliseconds=ms)


def by_metric(readings: list[Reading], metric: Metric) -> list[tuple[int, float]]:
    return [
        (round((r.ts - T0).total_seconds() * 1000), r.value) for r in readings if r.metric == metric
    ]


def run(samples: list[tuple[int, OximeterSample]]) -> list[Reading]:
    red = reducer()
    return [r for ms, s in samples for r in red.push(s, at(ms))]


def test_steady_60hz_stream_gives_one_reading_per_metric_per_second() -> None:
    # 60 Hz for 3 s: 180 samples (timestamps in whole ms, 16-17 ms apart)
    samples = [(i * 1000 // 60, OximeterSample(spo2=97, pulse=72)) for i in range(180)]
    out = run(samples)
    assert by_metric(out, Metric.SPO2) == [(0, 97.0), (1000, 97.0), (2000, 97.0)]
    assert by_metric(out, Metric.PULSE) == [(0, 72.0), (1000, 72.0), (2000, 72.0)]
    assert all(r.resident_id == "r1" and r.site_id == "s1" for r in out)


def test_significant_change_is_emitted_at_once() -> None:
    samples = [
        (0, OximeterSample(spo2=97, pulse=72)),
        (300, OximeterSample(spo2=96, pulse=81)),  # below both thresholds: held
        (400, OximeterSample(spo2=95, pulse=82)),  # SpO2 -2 and pulse +10: at once
    ]
    out = run(samples)
    assert by_metric(out, Metric.SPO2) == [(0, 97.0), (400, 95.0)]
    assert by_metric(out, Metric.PULSE) == [(0, 72.0), (400, 82.0)]


def test_flapping_value_is_limited_by_min_gap() -> None:
    samples = [(i * 50, OximeterSample(spo2=95 if i % 2 else 97, pulse=70)) for i in range(20)]
    spo2 = by_metric(run(samples), Metric.SPO2)
    times = [ms for ms, _ in spo2]
    assert all(b - a >= 250 for a, b in itertools.pairwise(times))
    assert len(spo2) <= 4  # 1 s of samples at 20 Hz


def test_gap_resets_so_return_is_emitted_at_once() -> None:
    samples = [
        (0, OximeterSample(spo2=97, pulse=72)),
        (100, OximeterSample(spo2=None, pulse=None, finger_out=True)),
        (200, OximeterSample(spo2=97, pulse=72)),
    ]
    out = run(samples)
    assert by_metric(out, Metric.SPO2) == [(0, 97.0), (200, 97.0)]


def test_no_value_never_becomes_a_reading() -> None:
    samples = [(i * 100, OximeterSample(spo2=None, pulse=None, finger_out=True)) for i in range(30)]
    assert run(samples) == []


def test_msg_ids_are_deterministic() -> None:
    samples = [(i * 100, OximeterSample(spo2=90 + i % 5, pulse=60 + i)) for i in range(50)]
    first = run(samples)
    second = run(samples)
    assert [(r.msg_id, r.metric) for r in first] == [(r.msg_id, r.metric) for r in second]
    keys = [(r.msg_id, r.metric) for r in first]
    assert len(keys) == len(set(keys))  # the store's idempotency key is unique


def test_perfusion_index_reduced_too() -> None:
    samples = [(i * 200, OximeterSample(spo2=97, pulse=70, perfusion_index=3.6)) for i in range(10)]
    assert by_metric(run(samples), Metric.PERFUSION_INDEX) == [(0, 3.6), (1000, 3.6)]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(1, 200),  # ms since the previous sample
            st.one_of(st.none(), st.integers(70, 100)),
            st.one_of(st.none(), st.integers(30, 200)),
        ),
        max_size=200,
    )
)
def test_policy_holds_for_any_stream(steps: list[tuple[int, int | None, int | None]]) -> None:
    red = reducer()
    ms = 0
    last: dict[Metric, tuple[int, float]] = {}
    for dt, spo2, pulse in steps:
        ms += dt
        present = {Metric.SPO2: spo2, Metric.PULSE: pulse}
        for r in red.push(OximeterSample(spo2=spo2, pulse=pulse), at(ms)):
            prev = last.get(r.metric)
            if prev is not None:
                gap = ms - prev[0]
                big = abs(r.value - prev[1]) >= SIGNIFICANT_CHANGE[r.metric]
                assert gap >= 1000 or (big and gap >= 250)
            last[r.metric] = (ms, r.value)
        for metric, value in present.items():
            if value is None:
                last.pop(metric, None)
    assert red.emitted <= 2 * red.samples
