"""Response-time figures per period: the one definition and the one implementation.

The store only supplies rows (the audit trail, :meth:`DispatchRepository.audit_between`);
every figure is computed here. Definitions (TSA code of practice; ``docs/dispatch.md``):

* **presented**: when the gateway presented the alarm to the monitoring centre: the
  ``presented_at`` the pipeline stamps on the alert when it stores it, copied into the
  dispatch's first audit row. A dispatch opened later (storm queue, orphan sweeper after
  a database outage) does not reset it. Rows without it (dispatches opened directly)
  use the dispatch's ``raised`` time.
* **answered**: the first ``acknowledged`` (or, after an escalation, the first responder
  contacted by a person) minus *presented*. Answered within 60 s / 180 s (targets 97.5 %
  and 99 %).
* **abandoned**: closed while still ``raised`` (a cancel or restore before anyone
  answered). For each threshold T an alarm abandoned within T of being presented is left
  out of that threshold's denominator (nobody could have answered it in time); one
  abandoned after T counts as not answered within T. An alarm nobody ever answered stays
  in the denominator, as a miss.
* **attended**: the first ``on_scene`` minus *presented*, over the dispatches that needed
  a visit (a responder accepted, was en route or on scene); within 45 and 60 minutes
  (targets 90 % and 100 %).

Periods are bucketed by *presented* time.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Final

from devices.model import DispatchState
from dispatch.records import AuditRecord
from dispatch.repository import DispatchRepository

__all__ = [
    "ANSWER_TARGETS_S",
    "ATTEND_TARGETS_MIN",
    "PeriodFigures",
    "build_report",
    "response_report",
]

S = DispatchState

#: Answer-time thresholds (s) and attendance thresholds (min) reported.
ANSWER_TARGETS_S: Final = (60, 180)
ATTEND_TARGETS_MIN: Final = (45, 60)
#: Actors that are the gateway itself, not a person answering.
_MACHINE_ACTORS: Final = frozenset({"system", "timer", "device"})
_VISIT: Final = frozenset({S.ACCEPTED, S.EN_ROUTE, S.ON_SCENE})


@dataclass(frozen=True, slots=True)
class PeriodFigures:
    start: datetime
    end: datetime
    alarms: int = 0
    abandoned: int = 0
    abandoned_60s: int = 0
    abandoned_180s: int = 0
    answered: int = 0
    answered_60s: int = 0
    answered_180s: int = 0
    needing_attendance: int = 0
    attended: int = 0
    attended_45m: int = 0
    attended_60m: int = 0

    @property
    def presented(self) -> int:
        """Alarms that were still waiting when they could have been answered."""
        return self.alarms - self.abandoned

    @property
    def pct_answered_60s(self) -> float | None:
        return _pct(self.answered_60s, self.alarms - self.abandoned_60s)

    @property
    def pct_answered_180s(self) -> float | None:
        return _pct(self.answered_180s, self.alarms - self.abandoned_180s)

    @property
    def pct_attended_45m(self) -> float | None:
        return _pct(self.attended_45m, self.needing_attendance)

    @property
    def pct_attended_60m(self) -> float | None:
        return _pct(self.attended_60m, self.needing_attendance)


_COUNTS = tuple(f.name for f in fields(PeriodFigures))[2:]


def _pct(part: int, whole: int) -> float | None:
    return None if whole == 0 else round(100.0 * part / whole, 2)


@dataclass(slots=True)
class _Life:
    raised: datetime | None = None
    presented: datetime | None = None
    answered: datetime | None = None
    visit: bool = False
    on_scene: datetime | None = None
    abandoned: datetime | None = None


def _presented_at(record: AuditRecord) -> datetime:
    """``presented_at`` from a dispatch's first audit row; its time when absent."""
    value = record.detail.get("presented_at")
    if isinstance(value, str):
        try:
            when = datetime.fromisoformat(value)
        except ValueError:
            return record.at
        if when.tzinfo is not None and when <= record.at:
            return when
    return record.at


def _lives(records: Iterable[AuditRecord]) -> dict[str, _Life]:
    lives: dict[str, _Life] = {}
    for r in records:
        life = lives.setdefault(r.dispatch_id, _Life())
        if r.from_state is None and r.to_state is S.RAISED:
            life.raised = r.at
            life.presented = _presented_at(r)
            continue
        if life.answered is None and (
            r.to_state is S.ACKNOWLEDGED
            or (r.to_state is S.RESPONDER_CONTACTED and r.actor not in _MACHINE_ACTORS)
        ):
            life.answered = r.at
        if r.to_state in _VISIT and r.from_state is not r.to_state:
            life.visit = True
        if r.to_state is S.ON_SCENE and life.on_scene is None:
            life.on_scene = r.at
        if r.from_state is S.RAISED and not r.to_state.is_open:
            life.abandoned = r.at
    return lives


def response_report(
    records: Iterable[AuditRecord], start: datetime, end: datetime, period: timedelta
) -> list[PeriodFigures]:
    """Figures for each ``period`` from ``start`` to ``end`` (by presented time)."""
    if period <= timedelta(0):
        raise ValueError("period must be positive")
    counts: list[dict[str, int]] = []
    edges: list[datetime] = []
    t = start
    while t < end:
        edges.append(t)
        counts.append(dict.fromkeys(_COUNTS, 0))
        t += period
    for life in _lives(records).values():
        presented = life.presented
        if presented is None or not start <= presented < end:
            continue
        c = counts[int((presented - start) / period)]
        c["alarms"] += 1
        if life.abandoned is not None:
            c["abandoned"] += 1
            waited = life.abandoned - presented
            for limit in ANSWER_TARGETS_S:
                c[f"abandoned_{limit}s"] += waited <= timedelta(seconds=limit)
        elif life.answered is not None:
            waited = life.answered - presented
            c["answered"] += 1
            for limit in ANSWER_TARGETS_S:
                c[f"answered_{limit}s"] += waited <= timedelta(seconds=limit)
        if life.visit:
            c["needing_attendance"] += 1
            if life.on_scene is not None:
                took = life.on_scene - presented
                c["attended"] += 1
                for minutes in ATTEND_TARGETS_MIN:
                    c[f"attended_{minutes}m"] += took <= timedelta(minutes=minutes)
    return [
        PeriodFigures(edge, min(edge + period, end), **c)
        for edge, c in zip(edges, counts, strict=True)
    ]


async def build_report(
    repo: DispatchRepository,
    start: datetime,
    end: datetime,
    period: timedelta = timedelta(days=1),
) -> list[PeriodFigures]:
    """Read the audit trail of dispatches raised in ``[start, end)`` and report on it."""
    return response_report(await repo.audit_between(start, end), start, end, period)
