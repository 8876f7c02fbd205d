"""Attend targets per route: how soon someone must be there, and what the report measures.

One global 45-minute timer fits telecare responders only. Each route has its own
:class:`AttendTarget` (defaults below, service-wide overrides, and per-site overrides
that may only shorten a target); :meth:`AttendConfig.target_for` picks the one for a
dispatch when it opens. The chosen target is stamped into the dispatch's audit trail
(:func:`stamp`): the escalation timer and the response-time report read it back from
there (:func:`plan_of`), so a dispatch is always judged against the target that was in
force for its site when it was presented, across restarts and later configuration
changes.

========== =========== ======================================= ===========================
route      measure     report target                           not-on-scene timer
========== =========== ======================================= ===========================
wellbeing  on scene    90 % within 45 min, all within 60 min   presented + 45 min
           (TSA code of practice, telecare responders)
urgent     on scene    70 % within 2 h (urgent community       presented + 2 h
           response two-hour standard; areas may set 2-4 h)
emergency  handed to   within 3 min (60 s answer + the         presented + 40 min
           999         ambulance step's 120 s), with the       (Category 2 90th centile:
                       ambulance service's reference           call back, chase 999)
========== =========== ======================================= ===========================

Any other route (technical: no responder by default) uses the wellbeing target when an
operator sends someone.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Final

from telecare.dispatch.cascades import Route
from telecare.dispatch.errors import CascadeConfigError
from telecare.dispatch.records import AuditRecord

__all__ = [
    "DEFAULT_TARGETS",
    "MAX_MINUTES",
    "AttendConfig",
    "AttendTarget",
    "Measure",
    "Plan",
    "plan_of",
    "presented_at",
    "stamp",
]


class Measure(StrEnum):
    #: Presented -> the first responder on scene.
    ON_SCENE = "on_scene"
    #: Presented -> handed to 999: the ambulance service took the call (with its reference).
    HANDOVER = "handover"


@dataclass(frozen=True, slots=True)
class AttendTarget:
    """``target_min``: the report's target for ``measure`` (``goal_pct`` of dispatches
    within it, when there is a stated goal); ``all_within_min``: a second threshold every
    dispatch should meet; ``escalate_min``: the not-on-scene timer, from presentation."""

    measure: Measure
    target_min: int
    escalate_min: int
    goal_pct: float | None = None
    all_within_min: int | None = None


DEFAULT_TARGETS: Final[Mapping[Route, AttendTarget]] = {
    Route.WELLBEING: AttendTarget(Measure.ON_SCENE, 45, 45, 90.0, 60),
    Route.URGENT: AttendTarget(Measure.ON_SCENE, 120, 120, 70.0),
    Route.EMERGENCY: AttendTarget(Measure.HANDOVER, 3, 40),
}

#: The longest any minute value of a route may be set to, service-wide: TSA "all within
#: 60 min" for telecare responders; urgent community response 2 h, 4 h in some areas;
#: an ambulance not on scene after an hour is always chased.
MAX_MINUTES: Final[Mapping[Route, int]] = {
    Route.WELLBEING: 60,
    Route.URGENT: 240,
    Route.EMERGENCY: 60,
}

_KEYS: Final = ("target_min", "escalate_min", "goal_pct", "all_within_min")


@dataclass(frozen=True, slots=True)
class AttendConfig:
    routes: Mapping[Route, AttendTarget] = field(default_factory=lambda: dict(DEFAULT_TARGETS))
    #: site_id -> route -> target (each value no longer than the service-wide one)
    sites: Mapping[str, Mapping[Route, AttendTarget]] = field(default_factory=dict)

    def target_for(self, route: Route, site_id: str | None = None) -> AttendTarget:
        """The site's target for ``route``, else the service-wide one; a route without
        one (technical) uses the wellbeing target."""
        if site_id is not None and route in self.sites.get(site_id, {}):
            return self.sites[site_id][route]
        return self.routes.get(route) or self.routes[Route.WELLBEING]

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> AttendConfig:
        """From the ``[dispatch.attend]`` table: ``<route>`` tables with ``target_min``,
        ``escalate_min``, ``goal_pct``, ``all_within_min`` (service-wide, each minute value
        at most :data:`MAX_MINUTES`), and ``sites.<site_id>.<route>`` with the same keys,
        which may only shorten (or, for ``goal_pct``, raise) the service-wide values."""
        routes = dict(DEFAULT_TARGETS)
        for name, values in data.items():
            if name == "sites":
                continue
            route = _route(name, "dispatch.attend")
            target = _target(routes[route], values, f"dispatch.attend.{name}")
            for key in ("target_min", "escalate_min", "all_within_min"):
                minutes = getattr(target, key)
                if minutes is not None and minutes > MAX_MINUTES[route]:
                    raise CascadeConfigError(
                        f"dispatch.attend.{name}.{key}",
                        minutes,
                        f"The {name} route allows at most {MAX_MINUTES[route]} min.",
                    )
            routes[route] = target
        sites: dict[str, dict[Route, AttendTarget]] = {}
        for site_id, per_route in _table(data.get("sites", {}), "dispatch.attend.sites").items():
            where = f"dispatch.attend.sites.{site_id}"
            for name, values in _table(per_route, where).items():
                route = _route(name, where)
                base = routes[route]
                target = _target(base, values, f"{where}.{name}")
                _only_shorter(base, target, f"{where}.{name}")
                sites.setdefault(site_id, {})[route] = target
        return cls(routes, sites)


def _table(value: object, key: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise CascadeConfigError(key, value, "Must be a table.")
    return value


def _route(name: str, where: str) -> Route:
    if name not in DEFAULT_TARGETS:
        known = ", ".join(str(r) for r in DEFAULT_TARGETS)
        raise CascadeConfigError(f"{where}.{name}", name, f"Attend targets exist for: {known}.")
    return Route(name)


def _target(base: AttendTarget, values: object, key: str) -> AttendTarget:
    table = _table(values, key)
    unknown = sorted(set(table) - set(_KEYS))
    if unknown:
        raise CascadeConfigError(f"{key}.{unknown[0]}", table[unknown[0]], f"Known: {_KEYS}.")
    changes: dict[str, Any] = {}
    for name, value in table.items():
        ok = isinstance(value, int | float) and not isinstance(value, bool) and value > 0
        if name != "goal_pct":
            ok = ok and isinstance(value, int)
        elif ok and value > 100:
            ok = False
        if not ok:
            why = "A percentage in (0, 100]." if name == "goal_pct" else "Whole minutes > 0."
            raise CascadeConfigError(f"{key}.{name}", value, why)
        changes[name] = float(value) if name == "goal_pct" else value
    target = replace(base, **changes)
    if target.all_within_min is not None and target.all_within_min < target.target_min:
        raise CascadeConfigError(
            f"{key}.all_within_min",
            target.all_within_min,
            f"Must not be shorter than target_min ({target.target_min}).",
        )
    return target


def _only_shorter(base: AttendTarget, target: AttendTarget, key: str) -> None:
    for name in ("target_min", "escalate_min", "all_within_min"):
        mine, theirs = getattr(target, name), getattr(base, name)
        if theirs is not None and mine is not None and mine > theirs:
            raise CascadeConfigError(
                f"{key}.{name}",
                mine,
                f"A site may only shorten the service-wide value ({theirs} min).",
            )
    if base.goal_pct is not None and (target.goal_pct or 0) < base.goal_pct:
        raise CascadeConfigError(
            f"{key}.goal_pct",
            target.goal_pct,
            f"A site may only raise the service-wide goal ({base.goal_pct} %).",
        )


# -- the plan stamped into the audit trail ---------------------------------------------------
@dataclass(frozen=True, slots=True)
class Plan:
    """What a dispatch is judged against: its route, target and not-on-scene deadline."""

    route: str
    target: AttendTarget
    attend_by: datetime


def presented_at(detail: Mapping[str, Any], at: datetime) -> datetime:
    """``presented_at`` from an opening audit row's detail; ``at`` when absent or later."""
    value = detail.get("presented_at")
    if isinstance(value, str):
        try:
            when = datetime.fromisoformat(value)
        except ValueError:
            return at
        if when.tzinfo is not None and when <= at:
            return when
    return at


def stamp(route: Route, target: AttendTarget, presented: datetime) -> dict[str, Any]:
    """The audit detail recording ``route`` and its target (JSON-safe)."""
    attend_by = presented + timedelta(minutes=target.escalate_min)
    return {
        "route": route.value,
        "attend": {
            "measure": target.measure.value,
            "target_min": target.target_min,
            "goal_pct": target.goal_pct,
            "all_within_min": target.all_within_min,
            "escalate_min": target.escalate_min,
            "by": attend_by.isoformat(),
        },
    }


def plan_of(records: Iterable[AuditRecord]) -> Plan | None:
    """The plan of the latest audit row that stamped one (a re-route stamps again);
    ``None`` for a dispatch opened before targets were stamped."""
    found: Plan | None = None
    for r in records:
        raw = r.detail.get("attend")
        if not isinstance(raw, Mapping):
            continue
        try:
            target = AttendTarget(
                Measure(raw["measure"]),
                int(raw["target_min"]),
                int(raw["escalate_min"]),
                None if raw.get("goal_pct") is None else float(raw["goal_pct"]),
                None if raw.get("all_within_min") is None else int(raw["all_within_min"]),
            )
            found = Plan(str(r.detail.get("route", "")), target, datetime.fromisoformat(raw["by"]))
        except (KeyError, TypeError, ValueError):
            continue
    return found
