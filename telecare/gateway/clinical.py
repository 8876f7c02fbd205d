"""Clinical settings of a resident (SpO2 scale, consciousness baseline) and their history.

Only ``Store.set_clinical`` changes them (``telecare resident clinical``, and later the
API); ``upsert_resident`` never does. Every change appends one :class:`ClinicalRecord`
per setting it names, with who recorded it, when, and the previous value. What a change
means (the rules below) is decided here; the store only records it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from telecare.devices.model import Consciousness, ModelError

__all__ = ["ClinicalChange", "ClinicalRecord", "ClinicalState", "plan_clinical"]


@dataclass(frozen=True, slots=True)
class ClinicalChange:
    """A request to set one or both settings. ``None`` leaves a setting as it is.

    Scale 2 needs the prescribing clinician and the date prescribed (``ModelError``
    otherwise); ``recorded_by`` is the person entering it.
    """

    resident_id: str
    recorded_by: str
    recorded_at: datetime
    spo2_scale: int | None = None
    prescribed_by: str | None = None
    prescribed_at: datetime | None = None
    baseline: Consciousness | None = None
    reason: str = ""

    def __post_init__(self) -> None:
        if not self.recorded_by.strip():
            raise ModelError("recorded_by", "name the person recording the change")
        if self.spo2_scale is None and self.baseline is None:
            raise ModelError("spo2_scale", "give a SpO2 scale, a baseline, or both")
        if self.spo2_scale not in (None, 1, 2):
            raise ModelError("spo2_scale", f"{self.spo2_scale!r} must be 1 or 2")
        if self.spo2_scale == 2 and not (
            self.prescribed_by and self.prescribed_by.strip() and self.prescribed_at
        ):
            raise ModelError(
                "spo2_scale", "scale 2 needs the prescribing clinician and the date prescribed"
            )
        if self.baseline is not None and self.baseline not in (
            Consciousness.ALERT,
            Consciousness.CONFUSION,
        ):
            raise ModelError(
                "baseline", "a baseline is A (alert) or C (chronic confusion); V/P/U are never one"
            )


@dataclass(frozen=True, slots=True)
class ClinicalState:
    """The stored current settings (``None`` = never set)."""

    spo2_scale: int | None = None
    spo2_scale_set_by: str | None = None
    spo2_scale_set_at: datetime | None = None
    baseline: Consciousness | None = None


@dataclass(frozen=True, slots=True)
class ClinicalRecord:
    """One history row: ``setting`` became ``value`` (was ``previous``)."""

    resident_id: str
    setting: str  # "spo2_scale" or "baseline_consciousness"
    value: str
    previous: str | None
    prescribed_by: str | None
    prescribed_at: datetime | None
    recorded_by: str
    recorded_at: datetime
    reason: str = ""


def plan_clinical(
    current: ClinicalState, change: ClinicalChange
) -> tuple[ClinicalState, list[ClinicalRecord]]:
    """The new state and the history rows to append for ``change``."""
    new = current
    records: list[ClinicalRecord] = []
    c = change
    if c.spo2_scale is not None:
        new = ClinicalState(
            c.spo2_scale,
            c.prescribed_by if c.prescribed_by else None,
            c.prescribed_at if c.prescribed_at else None,
            new.baseline,
        )
        records.append(
            ClinicalRecord(
                c.resident_id,
                "spo2_scale",
                str(c.spo2_scale),
                None if current.spo2_scale is None else str(current.spo2_scale),
                new.spo2_scale_set_by,
                new.spo2_scale_set_at,
                c.recorded_by,
                c.recorded_at,
                c.reason,
            )
        )
    if c.baseline is not None:
        new = ClinicalState(
            new.spo2_scale, new.spo2_scale_set_by, new.spo2_scale_set_at, c.baseline
        )
        records.append(
            ClinicalRecord(
                c.resident_id,
                "baseline_consciousness",
                c.baseline.value,
                None if current.baseline is None else current.baseline.value,
                None,
                None,
                c.recorded_by,
                c.recorded_at,
                c.reason,
            )
        )
    return new, records
