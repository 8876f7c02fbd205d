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
* **attended, per route**: each dispatch is measured against the attend target of its
  route, stamped into its audit trail when it opened (and again when it was re-routed;
  :mod:`dispatch.attend`), so a site's shorter target and later configuration changes are
  honoured. *On scene* routes (wellbeing, urgent): the first ``on_scene`` minus
  *presented*, over the dispatches that needed a visit (a responder accepted, was en route
  or on scene). *Handover* routes (emergency): the handover to 999 (the ambulance accepted
  with the ambulance service's reference) minus *presented*, over the dispatches that were
  not abandoned, leaving out those closed as a false alarm / no action needed / technical
  fault without a handover. One :class:`RouteFigures` row per route and target.

Periods are bucketed by *presented* time.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Final

from telecare.devices.model import DispatchState
from telecare.dispatch.attend import AttendConfig, AttendTarget, Measure, plan_of, presented_at
from telecare.dispatch.cascades import Route
from telecare.dispatch.records import AuditRecord
from telecare.dispatch.repository import DispatchRepository

__all__ = [
    "ANSWER_TARGETS_S",
    "PeriodFigures",
    "RouteFigures",
    "build_report",
    "response_report",
]

S = DispatchState

#: Answer-time thresholds (s) reported.
ANSWER_TARGETS_S: Final = (60, 180)
#: Actors that are the gateway itself, not a person answering.
_MACHINE_ACTORS: Final = frozenset({"system", "timer", "device"})
_VISIT: Final = frozenset({S.ACCEPTED, S.EN_ROUTE, S.ON_SCENE})
#: Outcomes that mean no 999 call was needed after all.
_NO_999: Final = frozenset({"false_alarm", "no_action_needed", "technical_fixed"})
_ROUTE_ORDER: Final = {r.value: n for n, r in enumerate(Route)}


@dataclass(frozen=True, slots=True)
class RouteFigures:
    """One route (and target) in one period. ``needing``: dispatches measured;
    ``done``: those attended (on scene) or handed to 999; ``within_target`` /
    ``within_all``: done within ``target_min`` / ``all_within_min`` of presentation."""

    route: str
    measure: Measure
    target_min: int
    goal_pct: float | None = None
    all_within_min: int | None = None
    needing: int = 0
    done: int = 0
    within_target: int = 0
    within_all: int = 0

    @property
    def pct_within_target(self) -> float | None:
        return _pct(self.within_target, self.needing)

    @property
    def pct_within_all(self) -> float | None:
        return None if self.all_within_min is None else _pct(self.within_all, self.needing)

    @property
    def meets_goal(self) -> bool | None:
        """Whether the route met its own goal (``None``: no goal, or nothing measured)."""
        pct = self.pct_within_target
        if pct is None or self.goal_pct is None:
            return None
        met = pct >= self.goal_pct
        if self.all_within_min is not None:
            met = met and self.within_all == self.needing
        return met


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
    #: Attendance per route, each against its own target (see the module docstring).
    routes: tuple[RouteFigures, ...] = ()

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

    def route(self, route: str) -> list[RouteFigures]:
        """The rows of ``route`` (one per target in force during the period)."""
        return [r for r in self.routes if r.route == route]


_COUNTS = tuple(f.name for f in fields(PeriodFigures) if f.name not in ("start", "end", "routes"))


def _pct(part: int, whole: int) -> float | None:
    return None if whole == 0 else round(100.0 * part / whole, 2)


@dataclass(slots=True)
class _Life:
    raised: datetime | None = None
    presented: datetime | None = None
    answered: datetime | None = None
    visit: bool = False
    on_scene: datetime | None = None
    handover: datetime | None = None
    abandoned: datetime | None = None
    outcome: str | None = None
    #: "unrouted" (measured against the wellbeing target) when the trail names no route.
    route: str = "unrouted"
    target: AttendTarget | None = None


def _lives(records: Iterable[AuditRecord], attend: AttendConfig) -> dict[str, _Life]:
    trails: dict[str, list[AuditRecord]] = {}
    for r in records:
        trails.setdefault(r.dispatch_id, []).append(r)
    lives: dict[str, _Life] = {}
    for dispatch_id, trail in trails.items():
        life = lives[dispatch_id] = _Life()
        for r in trail:
            _follow(life, r)
        plan = plan_of(trail)
        if plan is not None:
            life.route, life.target = plan.route, plan.target
        else:  # opened before targets were stamped: today's target for its route
            known = life.route in _ROUTE_ORDER
            life.target = attend.target_for(Route(life.route) if known else Route.WELLBEING)
    return lives


def _follow(life: _Life, r: AuditRecord) -> None:
    if r.from_state is None and r.to_state is S.RAISED:
        life.raised = r.at
        life.presented = presented_at(r.detail, r.at)
        if isinstance(r.detail.get("route"), str):
            life.route = r.detail["route"]
        return
    if life.answered is None and (
        r.to_state is S.ACKNOWLEDGED
        or (r.to_state is S.RESPONDER_CONTACTED and r.actor not in _MACHINE_ACTORS)
    ):
        life.answered = r.at
    if r.to_state in _VISIT and r.from_state is not r.to_state:
        life.visit = True
    if r.to_state is S.ON_SCENE and life.on_scene is None:
        life.on_scene = r.at
    if r.to_state is S.ACCEPTED and r.detail.get("handover") and life.handover is None:
        life.handover = r.at
    if r.from_state is S.RAISED and not r.to_state.is_open:
        life.abandoned = r.at
    if isinstance(r.detail.get("outcome"), str):
        life.outcome = r.detail["outcome"]


_RouteKey = tuple[str, Measure, int, float | None, int | None]


def _route_row(rows: dict[_RouteKey, dict[str, int]], life: _Life, presented: datetime) -> None:
    t = life.target
    if t is None:
        return
    if t.measure is Measure.ON_SCENE:
        needed, done = life.visit, life.on_scene
    else:
        needed = life.abandoned is None and (
            life.handover is not None or life.outcome not in _NO_999
        )
        done = life.handover
    if not needed:
        return
    key = (life.route, t.measure, t.target_min, t.goal_pct, t.all_within_min)
    row = rows.setdefault(key, dict.fromkeys(("needing", "done", "within_target", "within_all"), 0))
    row["needing"] += 1
    if done is not None:
        took = done - presented
        row["done"] += 1
        row["within_target"] += took <= timedelta(minutes=t.target_min)
        if t.all_within_min is not None:
            row["within_all"] += took <= timedelta(minutes=t.all_within_min)


def _route_rows(rows: dict[_RouteKey, dict[str, int]]) -> tuple[RouteFigures, ...]:
    ordered = sorted(rows.items(), key=lambda kv: (_ROUTE_ORDER.get(kv[0][0], 99), kv[0]))
    return tuple(
        RouteFigures(
            route,
            measure,
            target_min,
            goal_pct,
            all_within,
            needing=c["needing"],
            done=c["done"],
            within_target=c["within_target"],
            within_all=c["within_all"],
        )
        for (route, measure, target_min, goal_pct, all_within), c in ordered
    )


def response_report(
    records: Iterable[AuditRecord],
    start: datetime,
    end: datetime,
    period: timedelta,
    attend: AttendConfig | None = None,
) -> list[PeriodFigures]:
    """Figures for each ``period`` from ``start`` to ``end`` (by presented time).

    ``attend`` gives the targets of dispatches whose audit trail does not name one
    (opened before targets were stamped); every other dispatch carries its own."""
    if period <= timedelta(0):
        raise ValueError("period must be positive")
    counts: list[dict[str, int]] = []
    routes: list[dict[_RouteKey, dict[str, int]]] = []
    edges: list[datetime] = []
    t = start
    while t < end:
        edges.append(t)
        counts.append(dict.fromkeys(_COUNTS, 0))
        routes.append({})
        t += period
    for life in _lives(records, attend or AttendConfig()).values():
        presented = life.presented
        if presented is None or not start <= presented < end:
            continue
        index = int((presented - start) / period)
        c = counts[index]
        _route_row(routes[index], life, presented)
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
            c["attended"] += life.on_scene is not None
    return [
        PeriodFigures(edge, min(edge + period, end), **c, routes=_route_rows(r))
        for edge, c, r in zip(edges, counts, routes, strict=True)
    ]


async def build_report(
    repo: DispatchRepository,
    start: datetime,
    end: datetime,
    period: timedelta = timedelta(days=1),
    attend: AttendConfig | None = None,
) -> list[PeriodFigures]:
    """Read the audit trail of dispatches raised in ``[start, end)`` and report on it."""
    return response_report(await repo.audit_between(start, end), start, end, period, attend)
