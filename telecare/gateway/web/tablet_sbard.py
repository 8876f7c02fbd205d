"""RESTORE2 soft signs and the SBARD handover a carer reads to the nurse practitioner or
NHS 111, built from one observation set and its NEWS2 result.

RESTORE2 (Wessex, used in English care homes) asks carers to record *soft signs* of
deterioration alongside the NEWS2 observations: changes a resident's carers notice before
the numbers move. :data:`SOFT_SIGNS` is the list the tablet page offers (codes are
stored, labels shown). SBARD (Situation, Background, Assessment, Recommendation,
Decision) is the structure RESTORE2 uses for the call: :func:`sbard` fills in what the
gateway knows and leaves the decision for the carer to note during the call.

Pure functions, no I/O: the tablet router (``web/tablet.py``) hands in the resident, the
result (``tablet_reply.observation_result``) and the previous score. ``name`` is whatever
the page may show (the resident's name on the care-home page); the copy that travels with
a teletriage request names the resident by id only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["SOFT_SIGNS", "SbardSection", "describe_values", "local", "sbard", "sbard_text"]


def _uk() -> tzinfo:
    try:
        return ZoneInfo("Europe/London")
    except ZoneInfoNotFoundError:  # no time zone database: UTC, and say so
        return UTC


#: Care homes read clock times in UK time (GMT/BST); UTC where there is no tz database.
LOCAL_TZ: Final = _uk()


def local(ts: datetime) -> datetime:
    """``ts`` on the care home's clock (:data:`LOCAL_TZ`)."""
    return ts.astimezone(LOCAL_TZ)


#: RESTORE2 soft signs of deterioration: code -> label shown to the carer.
SOFT_SIGNS: Final[dict[str, str]] = {
    "confusion": "New or increased confusion or agitation",
    "drowsy": "More sleepy or drowsy than usual",
    "behaviour": "Behaving differently, 'not themselves'",
    "not_eating": "Not eating or drinking as usual",
    "urine": "Passing less urine, or none",
    "vomiting": "Vomiting or diarrhoea",
    "pain": "New or increased pain",
    "mobility": "Less mobile than usual, or a new fall",
    "breathing": "Breathing looks different, or a new cough",
    "skin": "Skin colour change (pale, mottled, blue-grey)",
    "temperature": "Feels hot or cold, or shivering",
    "concern": "Family or staff are worried",
}

_LABELS: Final = {
    "respiration_rate": ("Respiration rate", "/min"),
    "spo2": ("SpO2", "%"),
    "on_oxygen": ("Air or oxygen", ""),
    "systolic_bp": ("Systolic BP", "mmHg"),
    "pulse": ("Pulse", "/min"),
    "consciousness": ("Consciousness", ""),
    "temperature": ("Temperature", "°C"),
}
_ACVPU: Final = {
    "A": "Alert",
    "C": "new Confusion",
    "V": "responds to Voice",
    "P": "responds to Pain",
    "U": "Unresponsive",
}
#: Sub-score keys of ``News2Result.components`` for each observation field.
_COMPONENT: Final = {"on_oxygen": "air_or_oxygen"}


@dataclass(frozen=True, slots=True)
class SbardSection:
    letter: str
    heading: str
    text: str


def _value_text(name: str, value: Any) -> str:
    label, unit = _LABELS[name]
    if name == "on_oxygen":
        return f"{label}: {'oxygen' if value else 'air'}"
    if name == "consciousness":
        return f"{label}: {_ACVPU.get(str(value), str(value))}"
    shown = f"{value:g}" if isinstance(value, float) else str(value)
    return f"{label} {shown} {unit}".rstrip()


def describe_values(values: Mapping[str, Any], components: Mapping[str, int]) -> list[str]:
    """Each observation with its NEWS2 sub-score, in chart order (``Pulse 95 /min (1)``)."""
    out = []
    for name in _LABELS:
        if values.get(name) is None:
            continue
        points = components.get(_COMPONENT.get(name, name))
        suffix = f" (scores {points})" if points is not None else ""
        out.append(_value_text(name, values[name]) + suffix)
    return out


def sbard(
    *,
    name: str,
    site_name: str,
    values: Mapping[str, Any],
    result: Mapping[str, Any],
    soft_signs: Sequence[str],
    taken_at: datetime,
    previous: tuple[int, str, datetime] | None = None,
    baseline: Sequence[str] = (),
    carer: str = "",
) -> list[SbardSection]:
    """The SBARD handover for one set. ``result``: ``tablet_reply.observation_result``;
    ``previous``: the resident's score before this one ``(total, risk, ts)``;
    ``baseline``: what is usual for the resident (chronic confusion, SpO2 scale 2)."""
    signs = [SOFT_SIGNS[s] for s in soft_signs if s in SOFT_SIGNS]
    at = local(taken_at).strftime("%H:%M")
    caller = f"This is {carer} at {site_name}" if carer else f"I am calling from {site_name}"
    news2 = result["news2"]
    if news2.get("complete"):
        score = f"NEWS2 is {news2['total']} ({news2['risk']} risk)"
        if news2.get("red_flag"):
            score += ", with a single parameter scoring 3"
    else:
        missing = ", ".join(_LABELS[m][0] for m in news2.get("missing", ()) if m in _LABELS)
        score = f"a partial set, not a NEWS2 ({missing} not taken)"
    situation = f"{caller} about {name}. Observations taken at {at}: {score}."
    if signs:
        situation += " Soft signs: " + "; ".join(s.lower() for s in signs) + "."

    background = []
    if previous is not None:
        total, risk, ts = previous
        background.append(
            f"Previous NEWS2 {total} ({risk}) at {local(ts).strftime('%d %b %H:%M')}."
        )
    else:
        background.append("No earlier NEWS2 on record.")
    background += [f"Usual for them: {b}." for b in baseline]

    assessment = "; ".join(describe_values(values, news2.get("sub_scores", {}))) + "."
    if news2.get("monitoring"):
        assessment += f" Monitoring: {news2['monitoring']}."

    advice = result.get("advice") or "Follow your escalation plan."
    recommendation = f"Our escalation advice says: {advice} I am asking for your assessment."
    decision = (
        "Write down what is agreed (who does what, and by when) and when the next "
        "observations are due; read it back to the clinician."
    )
    return [
        SbardSection("S", "Situation", situation),
        SbardSection("B", "Background", " ".join(background)),
        SbardSection("A", "Assessment", assessment),
        SbardSection("R", "Recommendation", recommendation),
        SbardSection("D", "Decision", decision),
    ]


def sbard_text(sections: Sequence[SbardSection]) -> str:
    """The handover as plain text, one section a paragraph."""
    return "\n".join(f"{s.letter} - {s.heading}: {s.text}" for s in sections)
