"""NEWS2 against the RCP 2017 chart: every band edge, scale 2, rounding, validation, batch."""

from __future__ import annotations

import dataclasses
import math
from datetime import timedelta
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from telecare.devices.model import ModelError
from telecare.rules.news2 import (
    INCOMPLETE,
    PARAMETERS,
    News2ValueError,
    Observation,
    risk_labels,
    score,
    score_batch,
)

NORMAL = Observation(
    respiration_rate=16,
    spo2=98,
    on_oxygen=False,
    systolic_bp=120,
    pulse=70,
    consciousness="A",
    temperature=37.0,
)


def _with(**changes: Any) -> Observation:
    return dataclasses.replace(NORMAL, **changes)


COMPONENT = {
    "respiration_rate": "respiration_rate",
    "spo2": "spo2",
    "systolic_bp": "systolic_bp",
    "pulse": "pulse",
    "temperature": "temperature",
}

# (field, value, expected sub-score): both sides of every edge of chart 1, written out
# by hand from the chart rather than derived from the implementation's tables.
EDGES = [
    ("respiration_rate", 0, 3),
    ("respiration_rate", 8, 3),
    ("respiration_rate", 9, 1),
    ("respiration_rate", 11, 1),
    ("respiration_rate", 12, 0),
    ("respiration_rate", 20, 0),
    ("respiration_rate", 21, 2),
    ("respiration_rate", 24, 2),
    ("respiration_rate", 25, 3),
    ("respiration_rate", 100, 3),
    ("spo2", 0, 3),
    ("spo2", 91, 3),
    ("spo2", 92, 2),
    ("spo2", 93, 2),
    ("spo2", 94, 1),
    ("spo2", 95, 1),
    ("spo2", 96, 0),
    ("spo2", 100, 0),
    ("systolic_bp", 20, 3),
    ("systolic_bp", 90, 3),
    ("systolic_bp", 91, 2),
    ("systolic_bp", 100, 2),
    ("systolic_bp", 101, 1),
    ("systolic_bp", 110, 1),
    ("systolic_bp", 111, 0),
    ("systolic_bp", 219, 0),
    ("systolic_bp", 220, 3),
    ("systolic_bp", 300, 3),
    ("pulse", 0, 3),
    ("pulse", 40, 3),
    ("pulse", 41, 1),
    ("pulse", 50, 1),
    ("pulse", 51, 0),
    ("pulse", 90, 0),
    ("pulse", 91, 1),
    ("pulse", 110, 1),
    ("pulse", 111, 2),
    ("pulse", 127, 2),
    ("pulse", 128, 2),
    ("pulse", 130, 2),
    ("pulse", 131, 3),
    ("pulse", 350, 3),
    ("temperature", 25.0, 3),
    ("temperature", 35.0, 3),
    ("temperature", 35.1, 1),
    ("temperature", 36.0, 1),
    ("temperature", 36.1, 0),
    ("temperature", 38.0, 0),
    ("temperature", 38.1, 1),
    ("temperature", 39.0, 1),
    ("temperature", 39.1, 2),
    ("temperature", 45.0, 2),
]


@pytest.mark.parametrize(("name", "value", "expected"), EDGES)
def test_band_edges(name: str, value: float, expected: int) -> None:
    result = score(_with(**{name: value}))
    assert result.complete
    assert result.components[COMPONENT[name]] == expected
    assert result.total == expected
    assert result.red_flag is (expected == 3)


@pytest.mark.parametrize(
    ("spo2", "on_oxygen", "expected"),
    [
        (0, False, 3),
        (83, False, 3),
        (84, False, 2),
        (85, False, 2),
        (86, False, 1),
        (87, False, 1),
        (88, False, 0),
        (92, False, 0),
        (93, False, 0),
        (97, False, 0),
        (100, False, 0),
        (83, True, 3),
        (84, True, 2),
        (85, True, 2),
        (86, True, 1),
        (87, True, 1),
        (88, True, 0),
        (92, True, 0),
        (93, True, 1),
        (94, True, 1),
        (95, True, 2),
        (96, True, 2),
        (97, True, 3),
        (100, True, 3),
    ],
)
def test_spo2_scale_2(spo2: int, on_oxygen: bool, expected: int) -> None:
    obs = dataclasses.replace(NORMAL, spo2=spo2, on_oxygen=on_oxygen, spo2_scale=2)
    result = score(obs)
    assert result.components["spo2"] == expected
    assert result.components["air_or_oxygen"] == (2 if on_oxygen else 0)
    assert result.total == expected + (2 if on_oxygen else 0)


def test_scale_1_on_oxygen_scores_spo2_as_on_air() -> None:
    result = score(dataclasses.replace(NORMAL, spo2=97, on_oxygen=True))
    assert result.components["spo2"] == 0
    assert result.components["air_or_oxygen"] == 2
    assert result.total == 2


@pytest.mark.parametrize(("level", "expected"), [("A", 0), ("C", 3), ("V", 3), ("P", 3), ("U", 3)])
def test_consciousness(level: str, expected: int) -> None:
    result = score(dataclasses.replace(NORMAL, consciousness=level))
    assert result.components["consciousness"] == expected
    assert result.red_flag is (expected == 3)


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("temperature", 38.05, 1),  # 38.05 * 10 == 380.49999999999994 in binary
        ("temperature", 38.04, 0),
        ("temperature", 35.05, 1),
        ("temperature", 35.04, 3),
        ("temperature", 36.05, 0),
        ("temperature", 39.05, 2),
        ("temperature", 39.049, 1),
        ("spo2", 95.5, 0),
        ("spo2", 95.49, 1),
        ("spo2", 91.5, 2),
        ("respiration_rate", 20.5, 2),
        ("respiration_rate", 20.4, 0),
        ("respiration_rate", 8.5, 1),
        ("pulse", 130.5, 3),
        ("pulse", 90.49, 0),
        ("systolic_bp", 219.5, 3),
        ("systolic_bp", 90.5, 2),
    ],
)
def test_rounding_half_up(name: str, value: float, expected: int) -> None:
    assert score(_with(**{name: value})).components[name] == expected


def test_rounded_values_are_reported() -> None:
    result = score(dataclasses.replace(NORMAL, temperature=38.05, spo2=95.5))
    assert result.rounded["temperature"] == pytest.approx(38.1)
    assert result.rounded["spo2"] == 96


def test_maximum_is_20_and_high() -> None:
    worst = Observation(8, 91, True, 90, 131, "U", 35.0)
    result = score(worst)
    assert result.total == 20
    assert set(result.components.values()) == {2, 3}
    assert result.risk == "high"
    assert result.monitoring_interval == timedelta(0)


def test_components_keys() -> None:
    assert list(score(NORMAL).components) == [
        "respiration_rate",
        "spo2",
        "air_or_oxygen",
        "systolic_bp",
        "pulse",
        "consciousness",
        "temperature",
    ]


@pytest.mark.parametrize(
    ("changes", "total", "risk", "red_flag", "monitoring"),
    [
        ({}, 0, "low", False, timedelta(hours=12)),
        ({"pulse": 95}, 1, "low", False, timedelta(hours=4)),
        ({"pulse": 95, "respiration_rate": 22, "temperature": 38.5}, 4, "low", False, None),
        ({"consciousness": "C"}, 3, "low-medium", True, timedelta(hours=1)),
        ({"consciousness": "C", "pulse": 95}, 4, "low-medium", True, timedelta(hours=1)),
        ({"respiration_rate": 22, "pulse": 95, "temperature": 39.5}, 5, "medium", False, None),
        ({"consciousness": "V", "respiration_rate": 22}, 5, "medium", True, None),
        ({"respiration_rate": 22, "pulse": 115, "on_oxygen": True}, 6, "medium", False, None),
        ({"respiration_rate": 25, "pulse": 115, "on_oxygen": True}, 7, "high", True, None),
    ],
)
def test_risk_bands(
    changes: dict[str, object],
    total: int,
    risk: str,
    red_flag: bool,
    monitoring: timedelta | None,
) -> None:
    result = score(_with(**changes))
    assert (result.total, result.risk, result.red_flag) == (total, risk, red_flag)
    assert result.response
    if monitoring is not None:
        assert result.monitoring_interval == monitoring


def test_single_three_is_not_high() -> None:
    result = score(dataclasses.replace(NORMAL, systolic_bp=85))
    assert result.total == 3
    assert result.risk == "low-medium"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("spo2", 100.01),
        ("spo2", 101),
        ("spo2", -1),
        ("respiration_rate", -0.5),
        ("respiration_rate", 101),
        ("pulse", -1),
        ("pulse", 351),
        ("systolic_bp", 19),
        ("systolic_bp", 301),
        ("temperature", 24.9),
        ("temperature", 45.1),
        ("temperature", math.nan),
        ("pulse", math.inf),
        ("pulse", "80"),
        ("pulse", True),
    ],
)
def test_impossible_values_raise_naming_the_field(name: str, value: object) -> None:
    with pytest.raises(News2ValueError) as info:
        score(_with(**{name: value}))
    assert info.value.field == name
    assert isinstance(info.value, ModelError)
    assert name in str(info.value)


@pytest.mark.parametrize(
    ("name", "value"),
    [("consciousness", "X"), ("consciousness", "a"), ("on_oxygen", 1), ("spo2_scale", 3)],
)
def test_bad_categorical_values_raise(name: str, value: object) -> None:
    with pytest.raises(News2ValueError) as info:
        score(_with(**{name: value}))
    assert info.value.field == name


@pytest.mark.parametrize("name", PARAMETERS)
def test_missing_parameter_is_not_a_news2(name: str) -> None:
    result = score(_with(**{name: None}))
    assert not result.complete
    assert result.missing == (name,)
    assert result.total is None
    assert result.risk is None
    assert result.monitoring is None


def test_missing_reports_every_absent_field_and_present_components() -> None:
    result = score(Observation(respiration_rate=7, consciousness="A"))
    assert result.missing == ("spo2", "on_oxygen", "systolic_bp", "pulse", "temperature")
    assert result.components == {"respiration_rate": 3, "consciousness": 0}
    assert result.red_flag


def test_scale_2_without_oxygen_flag_cannot_score_spo2() -> None:
    result = score(dataclasses.replace(NORMAL, spo2_scale=2, on_oxygen=None))
    assert result.missing == ("on_oxygen",)
    assert "spo2" not in result.components


# --------------------------------------------------------------------------- batch


def _batch_args(rows: list[Observation]) -> dict[str, Any]:
    def num(name: str) -> np.ndarray:
        vals = [getattr(o, name) for o in rows]
        return np.array([math.nan if v is None else v for v in vals], dtype=np.float64)

    return {
        "respiration_rate": num("respiration_rate"),
        "spo2": num("spo2"),
        "on_oxygen": np.array([bool(o.on_oxygen) for o in rows], dtype=bool),
        "systolic_bp": num("systolic_bp"),
        "pulse": num("pulse"),
        "consciousness": np.array([o.consciousness or "" for o in rows], dtype="U1"),
        "temperature": num("temperature"),
        "spo2_scale": np.array([o.spo2_scale for o in rows], dtype=np.int8),
    }


def _assert_batch_matches(rows: list[Observation]) -> None:
    out = score_batch(**_batch_args(rows))
    labels = risk_labels(out.risk)
    for i, obs in enumerate(rows):
        one = score(obs)
        assert out.red_flag[i] == one.red_flag, obs
        if one.complete:
            assert out.total[i] == one.total, obs
            assert labels[i] == one.risk, obs
        else:
            assert out.total[i] == INCOMPLETE, obs
            assert out.risk[i] == INCOMPLETE, obs


def test_batch_on_every_edge() -> None:
    rows = [_with(**{n: v}) for n, v, _ in EDGES]
    rows += [
        dataclasses.replace(NORMAL, spo2=s, on_oxygen=o2, spo2_scale=2)
        for s in range(80, 101)
        for o2 in (False, True)
    ]
    rows.append(Observation(8, 91, True, 90, 131, "U", 35.0))
    _assert_batch_matches(rows)
    assert score_batch(**_batch_args(rows[-1:])).total[0] == 20


def test_batch_rounding_38_05() -> None:
    out = score_batch(
        np.array([16.0]),
        np.array([95.5]),
        np.array([False]),
        np.array([120]),
        np.array([70]),
        np.array(["A"]),
        np.array([38.05]),
    )
    assert out.total[0] == 1


def test_batch_accepts_object_and_bytes_consciousness() -> None:
    base = _batch_args([NORMAL, NORMAL, NORMAL])
    for acvpu in (
        np.array(["A", "V", None], dtype=object),
        np.array([b"A", b"V", b""], dtype="S1"),
        np.array(["A", "V", ""], dtype="U5"),
    ):
        out = score_batch(**{**base, "consciousness": acvpu})
        assert out.total.tolist() == [0, 3, INCOMPLETE]
        assert risk_labels(out.risk).tolist() == ["low", "low-medium", ""]


@pytest.mark.parametrize(
    ("name", "bad", "field"),
    [
        ("spo2", 101.0, "spo2[1]"),
        ("temperature", 50.0, "temperature[1]"),
        ("respiration_rate", -1.0, "respiration_rate[1]"),
        ("consciousness", "X", "consciousness[1]"),
        ("spo2_scale", 3, "spo2_scale[1]"),
    ],
)
def test_batch_rejects_impossible_values_naming_field_and_index(
    name: str, bad: object, field: str
) -> None:
    args = _batch_args([NORMAL, NORMAL, NORMAL])
    arr = np.array(args[name], copy=True)
    arr[1] = bad
    args[name] = arr
    with pytest.raises(News2ValueError) as info:
        score_batch(**args)
    assert info.value.field == field


def test_batch_empty() -> None:
    out = score_batch(**_batch_args([]))
    assert out.total.shape == (0,)


def _value(lo: int, hi: int, step: float) -> st.SearchStrategy[float | None]:
    """Values in range, biased towards exact band edges and half-way points."""
    grid = st.integers(int(lo / step), int(hi / step)).map(lambda k: k * step)
    halves = st.integers(int(lo / step), int(hi / step) - 1).map(lambda k: k * step + step / 2)
    return st.one_of(grid, halves, st.floats(lo, hi), st.none())


observations = st.builds(
    Observation,
    respiration_rate=_value(0, 100, 1),
    spo2=_value(0, 100, 1),
    on_oxygen=st.booleans(),
    systolic_bp=_value(20, 300, 1),
    pulse=_value(0, 350, 1),
    consciousness=st.sampled_from(["A", "C", "V", "P", "U", None]),
    temperature=_value(25, 45, 0.1).filter(lambda t: t is None or 25 <= t <= 45),
    spo2_scale=st.sampled_from([1, 2]),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(observations, min_size=1, max_size=40))
def test_batch_equals_scalar(rows: list[Observation]) -> None:
    _assert_batch_matches(rows)
