"""Response-time figures per period, computed from the audit trail alone.

For each dispatch (bucketed by the time it was raised):

* **answered** = first ``acknowledged`` minus ``raised``; counted within 60 s and 180 s
  (TSA targets 97.5 % and 99 %). Alarms closed while still ``raised`` (a cancel or a
  restore before anyone answered) are *abandoned* and left out of the denominator; an
  alarm nobody ever acknowledged stays in it, as a miss.
* **attended** = first ``on_scene`` minus ``raised``, over the dispatches where a
  responder accepted; counted within 45 and 60 minutes (targets 90 % and 100 %).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields
from datetime import datetime, timedelta

from devices.model import DispatchState
from dispatch.records import AuditRecord
from dispatch.repository import DispatchRepository

__all__ = ["PeriodFigures", "build_report", "response_report"]

S = DispatchState


@dataclass(frozen=True, slots=True)
class PeriodFigures:
    start: datetime
    end: datetime
    alarms: int = 0
    abandoned: int = 0
    answered: int = 0
    answered_60s: int = 0
    answered_180s: int = 0
    needing_attendance: int = 0
    attended: int = 0
    attended_45m: int = 0
    attended_60m: int = 0

    @property
    def presented(self) -> int:
        return self.alarms - self.abandoned

    @property
    def pct_answered_60s(self) -> float | None:
        return _pct(self.answered_60s, self.presented)

    @property
    def pct_answered_180s(self) -> float | None:
        return _pct(self.answered_180s, self.presented)

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
    acknowledged: datetime | None = None
    accepted: bool = False
    on_scene: datetime | None = None
    abandoned: bool = False


def _lives(records: Iterable[AuditRecord]) -> dict[str, _Life]:
    lives: dict[str, _Life] = {}
    for r in records:
        life = lives.setdefault(r.dispatch_id, _Life())
        if r.from_state is None and r.to_state is S.RAISED:
            life.raised = r.at
        elif r.to_state is S.ACKNOWLEDGED and life.acknowledged is None:
            life.acknowledged = r.at
        elif r.to_state is S.ACCEPTED:
            life.accepted = True
        elif r.to_state is S.ON_SCENE and life.on_scene is None:
            life.on_scene = r.at
        if r.from_state is S.RAISED and not r.to_state.is_open:
            life.abandoned = True
    return lives


def response_report(
    records: Iterable[AuditRecord], start: datetime, end: datetime, period: timedelta
) -> list[PeriodFigures]:
    """Figures for each ``period`` from ``start`` to ``end`` (by raised time)."""
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
        if life.raised is None or not start <= life.raised < end:
            continue
        c = counts[int((life.raised - start) / period)]
        c["alarms"] += 1
        if life.abandoned:
            c["abandoned"] += 1
        elif life.acknowledged is not None:
            waited = life.acknowledged - life.raised
            c["answered"] += 1
            c["answered_60s"] += waited <= timedelta(seconds=60)
            c["answered_180s"] += waited <= timedelta(seconds=180)
        if life.accepted:
            c["needing_attendance"] += 1
            if life.on_scene is not None:
                took = life.on_scene - life.raised
                c["attended"] += 1
                c["attended_45m"] += took <= timedelta(minutes=45)
                c["attended_60m"] += took <= timedelta(minutes=60)
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
