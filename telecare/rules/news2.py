"""NEWS2 (RCP 2017, chart 1): the scalar scorer and a vectorised numpy batch scorer.

The score is fixed by the Royal College of Physicians; only the advice a site gives for
each band is configurable (``rules.config``). Both scorers share one set of lookup
tables and one rounding formula, so ``score_batch`` is identical to ``score`` on every
input (a Hypothesis test checks it element by element).

Rounding (values between bands, e.g. 38.05 degC or SpO2 95.5 %)
    Every value is rounded half-up to the chart's precision before scoring:
    temperature to 0.1 degC, every other parameter to a whole number. The formula is
    ``floor(x * k + 0.5 + 1e-9)`` with ``k = 10`` for temperature and ``k = 1`` otherwise.
    The ``1e-9`` (far below any device's resolution) absorbs binary floating point:
    ``38.05 * 10`` is ``380.49999999999994`` in IEEE doubles, and must round to 38.1.

Impossible values
    A value outside what a living person (or the sensor) can have raises
    :class:`News2ValueError` naming the field; it is never scored. The bounds are the
    canonical model's plausibility ranges (``devices.model.Metric.bounds``):
    respiration rate 0..100 /min, SpO2 0..100 %, systolic BP 20..300 mmHg,
    pulse 0..350 /min, temperature 25..45 degC. NaN and infinities are rejected too;
    consciousness must be one of ``A C V P U``; ``spo2_scale`` must be 1 or 2.

Incomplete sets
    A set with any of the seven parameters missing (``None``) is not a NEWS2.
    :func:`score` then returns a :class:`News2Result` with ``complete=False``,
    ``missing`` naming the absent :class:`Observation` fields, ``total``, ``risk``,
    ``monitoring`` and ``response`` all ``None``; ``components`` holds the sub-scores of
    the parameters that are present (for display) and ``red_flag`` says whether one of
    them scored 3. On SpO2 scale 2 the SpO2 sub-score needs ``on_oxygen``.

Batch codes
    :func:`score_batch` returns ``total`` (int16, ``-1`` for an incomplete set),
    ``red_flag`` (bool) and ``risk`` (int8 codes: ``-1`` incomplete, ``0`` low,
    ``1`` low-medium, ``2`` medium, ``3`` high; :data:`RISK_LABELS` and
    :func:`risk_labels` turn them into the strings :func:`score` uses). A missing value
    is ``NaN`` in a numeric array and ``""`` (or ``None`` in an object array) for
    consciousness; ``on_oxygen`` is a bool array and is never missing in a batch.

How the batch scorer is fast
    Each numeric parameter is rounded with the shared formula, converted to an integer
    index and looked up in a small uint8 table. Each table entry is ``score + 32`` when
    the score is 3, so the sum of the seven entries (at most 20 + 7 * 32 = 244) fits a
    uint8: its low five bits are the total, ``>= 32`` means a red flag, and one
    256-entry table maps the sum straight to the risk code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Final, NamedTuple

import numpy as np
import numpy.typing as npt

from telecare.devices.model import NEWS2_PARAMETERS, Metric, ModelError

__all__ = [
    "BANDS",
    "INCOMPLETE",
    "PARAMETERS",
    "RISK_LABELS",
    "RISK_ORDER",
    "BatchResult",
    "News2Result",
    "News2ValueError",
    "Observation",
    "monitoring_for",
    "response_for",
    "risk_for",
    "risk_labels",
    "round_half_up",
    "score",
    "score_batch",
]

#: The seven NEWS2 parameters, as :class:`Observation` field names (chart order).
PARAMETERS: Final = NEWS2_PARAMETERS

#: Risk bands from least to most urgent; a batch risk code is an index into this tuple.
RISK_LABELS: Final = ("low", "low-medium", "medium", "high")
RISK_ORDER: Final = {label: i for i, label in enumerate(RISK_LABELS)}
#: Batch code for an incomplete set (in ``total`` and ``risk``).
INCOMPLETE: Final = -1

_HALF: Final = 0.5 + 1e-9  # half-up, with a margin for binary floating point (see above)
_FLAG: Final = 32  # added to a table entry whose score is 3 (red flag marker)
_MISSING_ENTRY: Final = 0  # a missing parameter contributes nothing to the sum

#: Band edges on the rounded value: ``(upper bound inclusive or None, score)`` in order.
#: Temperature is in tenths of a degree. SpO2 scale 2 has one table on air and one on O2.
BANDS: Final[dict[str, tuple[tuple[int | None, int], ...]]] = {
    "respiration_rate": ((8, 3), (11, 1), (20, 0), (24, 2), (None, 3)),
    "spo2_scale1": ((91, 3), (93, 2), (95, 1), (None, 0)),
    "spo2_scale2_air": ((83, 3), (85, 2), (87, 1), (None, 0)),
    "spo2_scale2_oxygen": ((83, 3), (85, 2), (87, 1), (92, 0), (94, 1), (96, 2), (None, 3)),
    "systolic_bp": ((90, 3), (100, 2), (110, 1), (219, 0), (None, 3)),
    "pulse": ((40, 3), (50, 1), (90, 0), (110, 1), (130, 2), (None, 3)),
    "temperature": ((350, 3), (360, 1), (380, 0), (390, 1), (None, 2)),
}

_METRIC: Final = {
    "respiration_rate": Metric.RESPIRATION_RATE,
    "spo2": Metric.SPO2,
    "systolic_bp": Metric.SYSTOLIC_BP,
    "pulse": Metric.PULSE,
    "temperature": Metric.TEMPERATURE,
}
_SCALE: Final = {"temperature": 10}  # chart precision: 0.1 degC; everything else integers

_CONSCIOUSNESS: Final = ("A", "C", "V", "P", "U")

_MONITORING: Final = {
    "zero": ("minimum 12-hourly", timedelta(hours=12)),
    "low": ("minimum 4-6-hourly", timedelta(hours=4)),
    "low-medium": ("minimum 1-hourly", timedelta(hours=1)),
    "medium": ("minimum 1-hourly", timedelta(hours=1)),
    "high": ("continuous monitoring of vital signs", timedelta(0)),
}

_RESPONSE: Final = {
    "zero": "Continue routine NEWS2 monitoring.",
    "low": (
        "Inform a registered nurse, who must assess the patient and decide whether "
        "increased frequency of monitoring or escalation of care is required."
    ),
    "low-medium": (
        "Urgent ward-based response: a registered nurse informs the medical team caring "
        "for the patient, who will review and decide whether escalation of care is necessary."
    ),
    "medium": (
        "Urgent response: a registered nurse immediately informs the medical team caring "
        "for the patient and requests urgent assessment by a clinician or team with core "
        "competencies in the care of acutely ill patients (within 1 hour)."
    ),
    "high": (
        "Emergency response: a registered nurse immediately informs the medical team "
        "(at least specialist registrar level); emergency assessment by a team with "
        "critical-care competencies (within 30 minutes); consider transfer to a "
        "higher-dependency unit or ICU."
    ),
}


class News2ValueError(ModelError):
    """An observation value is impossible or of the wrong type. ``field`` names it."""


@dataclass(frozen=True, slots=True)
class Observation:
    """One set of NEWS2 observations. A ``None`` parameter is missing.

    ``spo2_scale`` is 2 only for a resident whose clinician prescribed a target of
    88-92 % (the caller takes it from the resident's settings, never from a reading).
    """

    respiration_rate: float | None = None
    spo2: float | None = None
    on_oxygen: bool | None = None
    systolic_bp: float | None = None
    pulse: float | None = None
    consciousness: str | None = None
    temperature: float | None = None
    spo2_scale: int = 1


@dataclass(frozen=True, slots=True)
class News2Result:
    """The outcome of :func:`score`. See the module docstring for incomplete sets."""

    total: int | None
    components: dict[str, int]
    red_flag: bool
    risk: str | None
    #: RCP minimum monitoring frequency, e.g. ``"minimum 1-hourly"``.
    monitoring: str | None
    #: Longest interval before the next set is due (``timedelta(0)`` = continuous).
    monitoring_interval: timedelta | None
    #: RCP clinical response wording for the band (sites add their own advice).
    response: str | None
    complete: bool = True
    missing: tuple[str, ...] = ()
    spo2_scale: int = 1
    #: The rounded values that were scored (temperature in degC, others integers).
    rounded: dict[str, float] = field(default_factory=dict)


class BatchResult(NamedTuple):
    """Arrays from :func:`score_batch` (codes explained in the module docstring)."""

    total: npt.NDArray[np.int16]
    red_flag: npt.NDArray[np.bool_]
    risk: npt.NDArray[np.int8]


# --------------------------------------------------------------------------- tables


def _table(bands: tuple[tuple[int | None, int], ...], size: int) -> npt.NDArray[np.uint8]:
    """uint8 lookup table over rounded values 0..size-1, red-flag marker included."""
    out = np.empty(size, dtype=np.uint8)
    lo = 0
    for upper, points in bands:
        hi = size - 1 if upper is None else upper
        out[lo : hi + 1] = points + (_FLAG if points == 3 else 0)
        lo = hi + 1
    return out


def _index_bounds(name: str) -> tuple[int, int]:
    """Rounded-index range of a numeric parameter (inclusive), from its metric bounds."""
    lo, hi = _METRIC[name].bounds
    k = _SCALE.get(name, 1)
    return math.floor(lo * k + _HALF), math.floor(hi * k + _HALF)


def _offset_table(band_key: str, name: str) -> tuple[int, npt.NDArray[np.uint8]]:
    lo, hi = _index_bounds(name)
    return lo, _table(BANDS[band_key], hi + 1)[lo:].copy()


_TABLES: Final = {
    "respiration_rate": _offset_table("respiration_rate", "respiration_rate"),
    "systolic_bp": _offset_table("systolic_bp", "systolic_bp"),
    "pulse": _offset_table("pulse", "pulse"),
    "temperature": _offset_table("temperature", "temperature"),
}
#: The same tables as Python tuples for the scalar path (numpy scalar indexing is slow).
_PY_TABLES: Final = {k: (off, tuple(t.tolist())) for k, (off, t) in _TABLES.items()}
_SPO2_SIZE: Final = _index_bounds("spo2")[1] + 1  # 0..100 -> 101 entries
#: SpO2 blocks: 0 scale 1 on air, 1 scale 1 on O2, 2 scale 2 on air, 3 scale 2 on O2.
_SPO2_TABLE: Final = np.concatenate(
    [
        _table(BANDS["spo2_scale1"], _SPO2_SIZE),
        _table(BANDS["spo2_scale1"], _SPO2_SIZE),
        _table(BANDS["spo2_scale2_air"], _SPO2_SIZE),
        _table(BANDS["spo2_scale2_oxygen"], _SPO2_SIZE),
    ]
)
#: Consciousness by code point: 0 alert, 3 (+flag) for C/V/P/U, 255 invalid, 254 missing.
_INVALID: Final = 255
_ABSENT: Final = 254
_SPO2_PY: Final = tuple(_SPO2_TABLE.tolist())
_ACVPU_TABLE: Final = np.full(128, _INVALID, dtype=np.uint8)
_ACVPU_TABLE[ord("A")] = 0
for _letter in "CVPU":
    _ACVPU_TABLE[ord(_letter)] = 3 + _FLAG
_ACVPU_TABLE[0] = _ABSENT  # "" in a fixed-width string array


def _risk_code(total: int, red_flag: bool) -> int:
    if total >= 7:
        return 3
    if total >= 5:
        return 2
    if red_flag:
        return 1
    return 0


#: Sum of table entries (low 5 bits total, high bits count of 3s) -> risk code.
_RISK_BY_SUM: Final = np.array([_risk_code(s & 31, s >= _FLAG) for s in range(256)], dtype=np.int8)


# --------------------------------------------------------------------------- scalar


def round_half_up(value: float, name: str) -> int:
    """The chart-precision integer index of ``value`` (tenths of a degree for temperature)."""
    return math.floor(value * _SCALE.get(name, 1) + _HALF)


def _check_number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise News2ValueError(name, f"{value!r} is not a number")
    x = float(value)
    lo, hi = _METRIC[name].bounds
    unit = _METRIC[name].unit
    if not math.isfinite(x):
        raise News2ValueError(name, f"{x!r} is not a finite number")
    if not lo <= x <= hi:
        raise News2ValueError(
            name, f"{x:g} {unit} is impossible (accepted range {lo:g}..{hi:g} {unit})"
        )
    return x


def _lookup(name: str, value: float) -> tuple[int, float]:
    idx = round_half_up(value, name)
    offset, table = _PY_TABLES[name]
    k = _SCALE.get(name, 1)
    return table[idx - offset] & 31, (idx / k if k != 1 else idx)


def risk_for(total: int, red_flag: bool) -> str:
    """The RCP risk band of an aggregate score."""
    return RISK_LABELS[_risk_code(total, red_flag)]


def monitoring_for(total: int, red_flag: bool) -> tuple[str, timedelta]:
    """RCP minimum monitoring frequency: wording and the longest interval between sets."""
    return _MONITORING[_band_key(total, red_flag)]


def response_for(total: int, red_flag: bool) -> str:
    """RCP clinical response wording for an aggregate score."""
    return _RESPONSE[_band_key(total, red_flag)]


def _band_key(total: int, red_flag: bool) -> str:
    risk = risk_for(total, red_flag)
    if risk == "low" and total == 0:
        return "zero"
    return risk


def score(obs: Observation) -> News2Result:
    """Score one observation set (see the module docstring for rounding and validation).

    Raises :class:`News2ValueError` for an impossible value; returns an incomplete
    result (``complete=False``, ``total=None``) when a parameter is missing.
    """
    scale = obs.spo2_scale
    if isinstance(scale, bool) or scale not in (1, 2):
        raise News2ValueError("spo2_scale", f"{scale!r} must be 1 or 2")
    components: dict[str, int] = {}
    rounded: dict[str, float] = {}
    missing: list[str] = []

    for name in ("respiration_rate", "systolic_bp", "pulse", "temperature"):
        raw = getattr(obs, name)
        if raw is None:
            missing.append(name)
            continue
        components[name], rounded[name] = _lookup(name, _check_number(name, raw))

    on_oxygen = obs.on_oxygen
    if on_oxygen is None:
        missing.append("on_oxygen")
    elif not isinstance(on_oxygen, bool | np.bool_):
        raise News2ValueError("on_oxygen", f"{on_oxygen!r} must be true or false")
    else:
        components["air_or_oxygen"] = 2 if on_oxygen else 0

    if obs.spo2 is None:
        missing.append("spo2")
    else:
        idx = round_half_up(_check_number("spo2", obs.spo2), "spo2")
        rounded["spo2"] = idx
        if scale == 1:
            components["spo2"] = _SPO2_PY[idx] & 31
        elif on_oxygen is not None:
            block = 3 if on_oxygen else 2
            components["spo2"] = _SPO2_PY[block * _SPO2_SIZE + idx] & 31

    acvpu = obs.consciousness
    if acvpu is None:
        missing.append("consciousness")
    elif not isinstance(acvpu, str) or acvpu not in _CONSCIOUSNESS:
        raise News2ValueError("consciousness", f"{acvpu!r} is not one of A, C, V, P, U")
    else:
        components["consciousness"] = 0 if acvpu == "A" else 3

    red_flag = any(points == 3 for points in components.values())
    ordered: dict[str, int] = {k: components[k] for k in _COMPONENT_ORDER if k in components}
    if missing:
        return News2Result(
            total=None,
            components=ordered,
            red_flag=red_flag,
            risk=None,
            monitoring=None,
            monitoring_interval=None,
            response=None,
            complete=False,
            missing=tuple(p for p in PARAMETERS if p in missing),
            spo2_scale=scale,
            rounded=rounded,
        )
    total = sum(ordered.values())
    monitoring, interval = monitoring_for(total, red_flag)
    return News2Result(
        total=total,
        components=ordered,
        red_flag=red_flag,
        risk=risk_for(total, red_flag),
        monitoring=monitoring,
        monitoring_interval=interval,
        response=response_for(total, red_flag),
        spo2_scale=scale,
        rounded=rounded,
    )


_COMPONENT_ORDER: Final = (
    "respiration_rate",
    "spo2",
    "air_or_oxygen",
    "systolic_bp",
    "pulse",
    "consciousness",
    "temperature",
)


# --------------------------------------------------------------------------- batch


def _first_bad(name: str, values: npt.NDArray[Any], bad: npt.NDArray[np.bool_]) -> None:
    i = int(np.flatnonzero(bad)[0])
    try:
        _check_number(name, values[i])
    except News2ValueError as exc:
        raise News2ValueError(f"{name}[{i}]", exc.reason) from None
    raise News2ValueError(f"{name}[{i}]", f"{values[i]!r} is invalid")  # pragma: no cover


def _batch_index(
    name: str, values: npt.ArrayLike, n: int
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.bool_] | None]:
    """Rounded integer indexes (offset removed) and the missing mask (``None`` if none)."""
    arr = np.asarray(values)
    if arr.shape != (n,):
        raise News2ValueError(name, f"shape {arr.shape} does not match ({n},)")
    if arr.dtype.kind not in "iuf":
        raise News2ValueError(name, f"dtype {arr.dtype} is not numeric")
    x = arr.astype(np.float64, copy=False)
    lo, hi = _METRIC[name].bounds
    missing: npt.NDArray[np.bool_] | None = None
    if n and not (lo <= x.min() and x.max() <= hi):  # also false when any value is NaN
        nan = np.isnan(x)
        bad = ~nan & ~((x >= lo) & (x <= hi))
        if bad.any():
            _first_bad(name, x, bad)
        missing = nan
        x = np.where(nan, lo, x)
    k = _SCALE.get(name, 1)
    offset = _TABLES[name][0] if name in _TABLES else 0
    # Same arithmetic as round_half_up; values are >= 0 here, so truncation == floor.
    scaled = x * k if k != 1 else x
    idx = (scaled + _HALF).astype(np.intp)
    if offset:
        idx -= offset
    return idx, missing


def _batch_consciousness(values: npt.ArrayLike, n: int) -> npt.NDArray[np.uint8]:
    """Table entries (0, 35 or 254 for missing) for an ACVPU string array."""
    arr = np.asarray(values)
    if arr.shape != (n,):
        raise News2ValueError("consciousness", f"shape {arr.shape} does not match ({n},)")
    if arr.dtype.kind == "U" and arr.dtype.itemsize == 4:
        codes = arr.astype("=U1", copy=False).view(np.uint32)
    elif arr.dtype.kind == "S" and arr.dtype.itemsize == 1:
        codes = arr.view(np.uint8).astype(np.uint32)
    else:  # object arrays or wider strings: compare letter by letter
        codes = np.full(n, 0x7F, dtype=np.uint32)  # 0x7F is invalid in the table
        for letter in (*_CONSCIOUSNESS, ""):
            codes[arr == letter] = ord(letter) if letter else 0
        if arr.dtype.kind == "O":
            codes[np.equal(arr, np.array(None, dtype=object))] = 0
    if n and codes.max() >= 128:
        codes = np.where(codes >= 128, 0x7F, codes)
    entries = _ACVPU_TABLE[codes]
    if n and entries.max() == _INVALID:
        i = int(np.flatnonzero(entries == _INVALID)[0])
        raise News2ValueError(f"consciousness[{i}]", f"{arr[i]!r} is not one of A, C, V, P, U")
    return entries


def score_batch(
    respiration_rate: npt.ArrayLike,
    spo2: npt.ArrayLike,
    on_oxygen: npt.ArrayLike,
    systolic_bp: npt.ArrayLike,
    pulse: npt.ArrayLike,
    consciousness: npt.ArrayLike,
    temperature: npt.ArrayLike,
    spo2_scale: npt.ArrayLike | int = 1,
) -> BatchResult:
    """Score many sets at once; element ``i`` equals ``score(Observation(...[i]))``.

    All arrays are one-dimensional and the same length (``spo2_scale`` may be a scalar).
    Raises :class:`News2ValueError` naming the field and the first bad index.
    """
    o2 = np.asarray(on_oxygen)
    n = o2.shape[0] if o2.ndim == 1 else -1
    if o2.ndim != 1 or o2.dtype != np.bool_:
        raise News2ValueError("on_oxygen", f"must be a 1-D bool array, got {o2.dtype} {o2.shape}")
    o2_u8 = o2.view(np.uint8)

    acc = np.zeros(n, dtype=np.uint8)
    missing = np.zeros(n, dtype=np.bool_)
    any_missing = False
    for name, values in (
        ("respiration_rate", respiration_rate),
        ("systolic_bp", systolic_bp),
        ("pulse", pulse),
        ("temperature", temperature),
    ):
        idx, miss = _batch_index(name, values, n)
        entries = _TABLES[name][1].take(idx)
        if miss is not None:
            entries[miss] = _MISSING_ENTRY
            missing |= miss
            any_missing = True
        acc += entries

    idx, miss = _batch_index("spo2", spo2, n)
    scale = np.asarray(spo2_scale)
    if scale.ndim == 0:
        scale = np.broadcast_to(scale, (n,))
    if scale.shape != (n,) or scale.dtype.kind not in "iuf":
        raise News2ValueError("spo2_scale", f"must be 1 or 2 for each set, got {scale.dtype}")
    if n and (scale.min() != 1 or scale.max() != 1):
        ok = (scale == 1) | (scale == 2)
        if not ok.all():
            i = int(np.flatnonzero(~ok)[0])
            raise News2ValueError(f"spo2_scale[{i}]", f"{scale[i]!r} must be 1 or 2")
        s2 = (scale == 2).view(np.uint8)
        idx += (s2 * (2 + o2_u8)).astype(np.intp) * _SPO2_SIZE
    entries = _SPO2_TABLE.take(idx)
    if miss is not None:
        entries[miss] = _MISSING_ENTRY
        missing |= miss
        any_missing = True
    acc += entries

    acc += o2_u8 << 1  # air 0, oxygen 2

    entries = _batch_consciousness(consciousness, n)
    if n and entries.max() == _ABSENT:
        absent = entries == _ABSENT
        entries[absent] = _MISSING_ENTRY
        missing |= absent
        any_missing = True
    acc += entries

    total = (acc & 31).astype(np.int16)
    red_flag = acc >= _FLAG
    risk = _RISK_BY_SUM.take(acc)
    if any_missing:
        total[missing] = INCOMPLETE
        risk[missing] = INCOMPLETE
    return BatchResult(total=total, red_flag=red_flag, risk=risk)


def risk_labels(codes: npt.ArrayLike) -> npt.NDArray[np.str_]:
    """Risk codes from :func:`score_batch` as strings (``""`` for an incomplete set)."""
    labels = np.array(("", *RISK_LABELS))
    return labels.take(np.asarray(codes, dtype=np.intp) + 1)
