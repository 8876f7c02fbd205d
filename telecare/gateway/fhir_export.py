"""A resident's stored observations as a FHIR R4 ``Bundle`` (type ``collection``).

Pure mapping, no I/O: ``build_bundle`` takes what the store returned (readings and NEWS2
scores) and returns the Bundle as plain JSON-ready dicts.

* Vital signs (category ``vital-signs``, LOINC, UCUM units): respiratory rate 9279-1,
  heart rate 8867-4, SpO2 coded with both 2708-6 and 59408-5 (pulse oximetry),
  temperature 8310-5, inhaled O2 flow 3151-8, and the blood pressure panel 85354-9 whose
  components are systolic 8480-6 and diastolic 8462-4 (one panel per device message).
  Metrics without a vital-signs code (MAP, perfusion index, battery, room temperature)
  are not exported.
* NEWS2 (there is no LOINC code): one Observation per stored score, SNOMED CT
  1104051000000101 with the total as ``valueInteger`` and each sub-score as a
  component with its SNOMED code (SpO2 scale 1 or scale 2 as scored).
* ACVPU (SNOMED 1104441000000107) with its SNOMED value, for scores that stored the level.

The Patient is referenced by an identifier, never by name: the NHS number (system
``https://fhir.nhs.uk/Id/nhs-number``) when one is stored, else the resident id under the
telecare resident system URI. No name, address or note of the resident is read.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, Final

from telecare.devices.model import Metric, Reading
from telecare.gateway.store.rows import News2Record

__all__ = [
    "NHS_NUMBER_SYSTEM",
    "RESIDENT_SYSTEM",
    "build_bundle",
    "patient_identifier",
]

LOINC: Final = "http://loinc.org"
SNOMED: Final = "http://snomed.info/sct"
UCUM: Final = "http://unitsofmeasure.org"
CATEGORY: Final = "http://terminology.hl7.org/CodeSystem/observation-category"
NHS_NUMBER_SYSTEM: Final = "https://fhir.nhs.uk/Id/nhs-number"
#: Default system URI of resident ids (``--identifier-system`` overrides it per install).
RESIDENT_SYSTEM: Final = "urn:telecare:resident"
DEVICE_SYSTEM: Final = "urn:telecare:device"
OBSERVATION_SYSTEM: Final = "urn:telecare:observation"
_NS: Final = uuid.UUID("6f1c1d8e-61a8-4f8e-9d52-2f8f0c6a7c11")

#: metric -> ((LOINC code, display), ...), UCUM unit.
_VITALS: Final[dict[Metric, tuple[tuple[tuple[str, str], ...], str]]] = {
    Metric.RESPIRATION_RATE: ((("9279-1", "Respiratory rate"),), "/min"),
    Metric.PULSE: ((("8867-4", "Heart rate"),), "/min"),
    Metric.SPO2: (
        (
            ("2708-6", "Oxygen saturation in Arterial blood"),
            ("59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry"),
        ),
        "%",
    ),
    Metric.TEMPERATURE: ((("8310-5", "Body temperature"),), "Cel"),
    Metric.O2_FLOW: ((("3151-8", "Inhaled oxygen flow rate"),), "L/min"),
}
_BP_PANEL: Final = ("85354-9", "Blood pressure panel with all children optional")
_BP_PARTS: Final = {
    Metric.SYSTOLIC_BP: ("8480-6", "Systolic blood pressure"),
    Metric.DIASTOLIC_BP: ("8462-4", "Diastolic blood pressure"),
}
_NEWS2_TOTAL: Final = (
    "1104051000000101",
    "Royal College of Physicians National Early Warning Score 2 (NEWS2) total score",
)
#: NEWS2 component name (as rules.news2 stores it) -> SNOMED code and display.
_NEWS2_PARTS: Final[dict[str, tuple[str, str]]] = {
    "respiration_rate": ("1104301000000104", "NEWS2 respiration rate score"),
    "air_or_oxygen": ("1104331000000105", "NEWS2 air or oxygen score"),
    "systolic_bp": ("1104341000000101", "NEWS2 systolic blood pressure score"),
    "pulse": ("1104351000000103", "NEWS2 pulse rate score"),
    "consciousness": ("1104361000000100", "NEWS2 consciousness score"),
    "temperature": ("1104371000000107", "NEWS2 temperature score"),
}
_NEWS2_SPO2: Final = {
    1: ("1104311000000102", "NEWS2 SpO2 scale 1 score"),
    2: ("1104321000000108", "NEWS2 SpO2 scale 2 score"),
}
_ACVPU: Final = ("1104441000000107", "ACVPU (Alert Confusion Voice Pain Unresponsive) scale")
_ACVPU_VALUES: Final = {
    "A": ("248234008", "Mentally alert"),
    "C": ("130987000", "Acute confusion"),
    "V": ("300202002", "Responds to voice"),
    "P": ("450847001", "Responds to pain"),
    "U": ("422768004", "Unresponsive"),
}


def patient_identifier(
    resident_id: str, nhs_number: str | None, system: str = RESIDENT_SYSTEM
) -> dict[str, str]:
    """The identifier the Observations reference the Patient by (no name, ever)."""
    if nhs_number:
        return {"system": NHS_NUMBER_SYSTEM, "value": nhs_number.replace(" ", "")}
    return {"system": system, "value": resident_id}


def build_bundle(
    *,
    subject: dict[str, str],
    readings: Iterable[Reading],
    scores: Iterable[News2Record],
    generated_at: datetime,
) -> dict[str, Any]:
    """The Bundle: vital-sign Observations (oldest first), then NEWS2 and ACVPU ones."""
    reference = {"type": "Patient", "identifier": subject}
    entries = _vital_observations(list(readings), reference)
    for score in scores:
        entries.extend(_news2_observations(score, reference))
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "timestamp": _ts(generated_at),
        "entry": [{"fullUrl": f"urn:uuid:{o['id']}", "resource": o} for o in entries],
    }


def _vital_observations(
    readings: Sequence[Reading], subject: dict[str, Any]
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    panels: dict[tuple[str, str, datetime], dict[Metric, Reading]] = {}
    for r in readings:
        if r.metric in _BP_PARTS:
            panels.setdefault((r.device_id, r.msg_id, r.ts), {})[r.metric] = r
            continue
        vital = _VITALS.get(r.metric)
        if vital is None:
            continue
        codes, unit = vital
        obs = _observation(
            f"{r.device_id}/{r.msg_id}/{r.metric.label}",
            "vital-signs",
            [_coding(LOINC, c, d) for c, d in codes],
            subject,
            r.ts,
            r.device_id,
        )
        obs["valueQuantity"] = _quantity(r.value, unit)
        out.append(obs)
    for (device_id, msg_id, ts), parts in panels.items():
        obs = _observation(
            f"{device_id}/{msg_id}/bp",
            "vital-signs",
            [_coding(LOINC, *_BP_PANEL)],
            subject,
            ts,
            device_id,
        )
        obs["component"] = [
            {
                "code": {"coding": [_coding(LOINC, *_BP_PARTS[m])]},
                "valueQuantity": _quantity(parts[m].value, "mm[Hg]"),
            }
            for m in (Metric.SYSTOLIC_BP, Metric.DIASTOLIC_BP)
            if m in parts
        ]
        out.append(obs)
    out.sort(key=lambda o: str(o["effectiveDateTime"]))
    return out


def _news2_observations(score: News2Record, subject: dict[str, Any]) -> list[dict[str, Any]]:
    key = f"{score.observation_id}/{_ts(score.ts)}"
    total = _observation(
        f"{key}/news2", "survey", [_coding(SNOMED, *_NEWS2_TOTAL)], subject, score.ts, None
    )
    total["valueInteger"] = score.total
    components = []
    for name, value in score.components.items():
        code = _NEWS2_SPO2.get(score.spo2_scale) if name == "spo2" else _NEWS2_PARTS.get(name)
        if code is None:
            continue
        components.append({"code": {"coding": [_coding(SNOMED, *code)]}, "valueInteger": value})
    if components:
        total["component"] = components
    out = [total]
    level = _ACVPU_VALUES.get(score.consciousness or "")
    if level is not None:
        acvpu = _observation(
            f"{key}/acvpu", "exam", [_coding(SNOMED, *_ACVPU)], subject, score.ts, None
        )
        acvpu["valueCodeableConcept"] = {"coding": [_coding(SNOMED, *level)]}
        out.append(acvpu)
    return out


def _observation(
    key: str,
    category: str,
    coding: list[dict[str, str]],
    subject: dict[str, Any],
    ts: datetime,
    device_id: str | None,
) -> dict[str, Any]:
    obs: dict[str, Any] = {
        "resourceType": "Observation",
        "id": str(uuid.uuid5(_NS, key)),
        "identifier": [{"system": OBSERVATION_SYSTEM, "value": key}],
        "status": "final",
        "category": [{"coding": [_coding(CATEGORY, category, _CATEGORY_DISPLAY[category])]}],
        "code": {"coding": coding, "text": coding[0]["display"]},
        "subject": subject,
        "effectiveDateTime": _ts(ts),
    }
    if device_id is not None:
        obs["device"] = {"identifier": {"system": DEVICE_SYSTEM, "value": device_id}}
    return obs


_CATEGORY_DISPLAY: Final = {"vital-signs": "Vital Signs", "survey": "Survey", "exam": "Exam"}


def _coding(system: str, code: str, display: str) -> dict[str, str]:
    return {"system": system, "code": code, "display": display}


def _quantity(value: float, unit: str) -> dict[str, Any]:
    number: float | int = int(value) if float(value).is_integer() else round(value, 3)
    return {"value": number, "unit": unit, "system": UCUM, "code": unit}


def _ts(ts: datetime) -> str:
    return ts.isoformat().replace("+00:00", "Z")
