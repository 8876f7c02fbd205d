"""Which responders to try, in which order, for how long: routing and cascades.

An alert is first given a :class:`Route` by the first matching :class:`RouteRule`
(alert kind, event type, NEWS2 score, injury). Each route has a cascade of
:class:`StepTemplate` s (defaults, overridable per site and per resident). A template
names either ``"resident"`` (the resident's own responders, in their order: keyholders,
family) or a :class:`~devices.model.ResponderKind` (the on-call responders of that kind
covering the site's area). :func:`resolve_cascade` expands the templates into the fixed
list of :class:`~dispatch.records.CascadeEntry` a dispatch walks through.

Defaults (``DEFAULT_RULES``), first match wins:

=====================================================  ==========
NEWS2 >= 7                                             emergency
fall / pendant / post-fall inactivity with injury      emergency
smoke, carbon monoxide                                 emergency
fall, post-fall inactivity (no injury reported)        urgent
NEWS2 5-6                                              urgent
NEWS2 red score (a single 3, also in a partial set)    urgent
technical (mains, battery, tamper, jamming, ...)       technical
anything else (pendant, inactivity, door exit, ...)    wellbeing
=====================================================  ==========

Default cascades (``DEFAULT_TEMPLATES``) follow the brief's order keyholder -> warden ->
firefighter / rapid response -> 999, and every responder route ends in 999; after the
last step the dispatch escalates to the supervisors (``docs/dispatch.md``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Final

from telecare.devices.model import Alert, AlertKind, EventType, Resident, ResponderKind
from telecare.dispatch.errors import CascadeConfigError
from telecare.dispatch.records import CascadeEntry
from telecare.dispatch.responders import ResponderDirectory

__all__ = [
    "DEFAULT_RULES",
    "DEFAULT_TEMPLATES",
    "CascadeConfig",
    "Route",
    "RouteRule",
    "StepTemplate",
    "resolve_cascade",
]

RESIDENT: Final = "resident"


class Route(StrEnum):
    EMERGENCY = "emergency"  # 999 first
    URGENT = "urgent"  # rapid response / firefighter responder
    WELLBEING = "wellbeing"  # keyholder first
    TECHNICAL = "technical"  # no responder: operator and maintenance


@dataclass(frozen=True, slots=True)
class RouteRule:
    """Matches when every condition given matches. ``news2`` is read from
    ``alert.detail["news2"]``, ``injury`` from ``alert.detail["injury"]`` and
    ``red_flag`` from ``alert.detail["red_flag"]``."""

    route: Route
    kinds: frozenset[AlertKind] = frozenset()
    event_types: frozenset[EventType] = frozenset()
    min_news2: int | None = None
    injury: bool | None = None
    red_flag: bool | None = None

    def matches(self, alert: Alert) -> bool:
        if self.kinds and alert.kind not in self.kinds:
            return False
        if self.event_types and alert.event_type not in self.event_types:
            return False
        if self.min_news2 is not None:
            # A partial set has no total, only a lower bound (``news2_at_least``).
            score = alert.detail.get("news2", alert.detail.get("news2_at_least"))
            if not isinstance(score, int | float) or score < self.min_news2:
                return False
        if self.red_flag is not None and bool(alert.detail.get("red_flag")) is not self.red_flag:
            return False
        return self.injury is None or bool(alert.detail.get("injury")) is self.injury


@dataclass(frozen=True, slots=True)
class StepTemplate:
    """``source`` is ``"resident"`` or a responder kind; ``take`` how many of that kind."""

    source: str
    timeout_s: int = 300
    skills: tuple[str, ...] = ()
    take: int = 1

    def __post_init__(self) -> None:
        if self.source != RESIDENT and self.source not in set(ResponderKind):
            kinds = ", ".join([RESIDENT, *ResponderKind])
            raise CascadeConfigError("cascade.source", self.source, f"Use one of: {kinds}.")
        if self.timeout_s <= 0:
            raise CascadeConfigError("cascade.timeout_s", self.timeout_s, "Must be > 0 seconds.")


_FALLS: Final = frozenset({EventType.FALL, EventType.POST_FALL_INACTIVITY})
_TECHNICAL: Final = frozenset(
    {
        EventType.MAINS_FAIL,
        EventType.LOW_BATTERY,
        EventType.SENSOR_LOW_BATTERY,
        EventType.TAMPER,
        EventType.JAMMING,
        EventType.SUPERVISION,
        EventType.HEARTBEAT_MISSED,
    }
)

DEFAULT_RULES: Final = (
    RouteRule(Route.EMERGENCY, kinds=frozenset({AlertKind.NEWS2}), min_news2=7),
    RouteRule(Route.EMERGENCY, event_types=_FALLS | {EventType.PENDANT}, injury=True),
    RouteRule(Route.EMERGENCY, event_types=frozenset({EventType.SMOKE, EventType.CO})),
    RouteRule(Route.URGENT, event_types=_FALLS),
    RouteRule(Route.URGENT, kinds=frozenset({AlertKind.NEWS2}), min_news2=5),
    RouteRule(Route.URGENT, kinds=frozenset({AlertKind.NEWS2}), red_flag=True),
    RouteRule(Route.TECHNICAL, kinds=frozenset({AlertKind.TECHNICAL})),
    RouteRule(Route.TECHNICAL, event_types=_TECHNICAL),
    RouteRule(Route.WELLBEING),
)

#: keyholder -> warden -> firefighter / rapid response -> 999 (the brief's order); the
#: emergency route calls 999 first and then the people who can let the crew in.
DEFAULT_TEMPLATES: Final[Mapping[Route, tuple[StepTemplate, ...]]] = {
    Route.EMERGENCY: (
        StepTemplate(ResponderKind.AMBULANCE, 120),
        StepTemplate(RESIDENT, 300),
        StepTemplate(ResponderKind.MOBILE_WARDEN, 300),
    ),
    Route.URGENT: (
        StepTemplate(RESIDENT, 180),
        StepTemplate(ResponderKind.MOBILE_WARDEN, 300),
        StepTemplate(ResponderKind.RAPID_RESPONSE, 300),
        StepTemplate(ResponderKind.FIREFIGHTER, 300),
        StepTemplate(ResponderKind.AMBULANCE, 120),
    ),
    Route.WELLBEING: (
        StepTemplate(RESIDENT, 300),
        StepTemplate(ResponderKind.MOBILE_WARDEN, 300),
        StepTemplate(ResponderKind.FIREFIGHTER, 300),
        StepTemplate(ResponderKind.RAPID_RESPONSE, 300),
        StepTemplate(ResponderKind.AMBULANCE, 120),
    ),
    Route.TECHNICAL: (),
}


@dataclass(frozen=True, slots=True)
class CascadeConfig:
    rules: tuple[RouteRule, ...] = DEFAULT_RULES
    templates: Mapping[Route, tuple[StepTemplate, ...]] = field(
        default_factory=lambda: dict(DEFAULT_TEMPLATES)
    )
    #: site_id -> route -> templates (per-site defaults)
    sites: Mapping[str, Mapping[Route, tuple[StepTemplate, ...]]] = field(default_factory=dict)
    #: resident_id -> route -> templates (per-resident cascades)
    residents: Mapping[str, Mapping[Route, tuple[StepTemplate, ...]]] = field(default_factory=dict)
    max_steps: int = 8

    def route_for(self, alert: Alert) -> Route:
        for rule in self.rules:
            if rule.matches(alert):
                return rule.route
        return Route.WELLBEING

    def templates_for(
        self, route: Route, site_id: str | None, resident_id: str | None
    ) -> tuple[StepTemplate, ...]:
        """Resident override, else site override, else the default for the route."""
        for scope, key in ((self.residents, resident_id), (self.sites, site_id)):
            if key is not None and route in scope.get(key, {}):
                return scope[key][route]
        return self.templates.get(route, ())

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> CascadeConfig:
        """From the ``[dispatch]`` TOML table: ``rules`` (list of ``{route, kinds,
        event_types, min_news2, injury, red_flag}``; replaces the defaults when given),
        ``cascades.<route>`` (list of ``{source, timeout_s, skills, take}``),
        ``sites.<site_id>.<route>`` and ``residents.<resident_id>.<route>``."""
        rules: tuple[RouteRule, ...] = DEFAULT_RULES
        if "rules" in data:
            rules = tuple(_rule(r) for r in data["rules"])
        templates = dict(DEFAULT_TEMPLATES)
        templates.update(_routes(data.get("cascades", {})))
        sites = {k: _routes(v) for k, v in dict(data.get("sites", {})).items()}
        residents = {k: _routes(v) for k, v in dict(data.get("residents", {})).items()}
        return cls(rules, templates, sites, residents, int(data.get("max_steps", 8)))


def _route(value: object) -> Route:
    try:
        return Route(str(value))
    except ValueError:
        raise CascadeConfigError("route", value, f"Use one of: {', '.join(Route)}.") from None


def _rule(r: Mapping[str, Any]) -> RouteRule:
    return RouteRule(
        _route(r["route"]),
        frozenset(AlertKind(k) for k in r.get("kinds", ())),
        frozenset(EventType(e) for e in r.get("event_types", ())),
        r.get("min_news2"),
        r.get("injury"),
        r.get("red_flag"),
    )


def _routes(data: Mapping[str, Any]) -> dict[Route, tuple[StepTemplate, ...]]:
    return {
        _route(name): tuple(
            StepTemplate(
                s["source"],
                int(s.get("timeout_s", 300)),
                tuple(s.get("skills", ())),
                s.get("take", 1),
            )
            for s in steps
        )
        for name, steps in data.items()
    }


def resolve_cascade(
    templates: Sequence[StepTemplate],
    *,
    resident: Resident | None,
    area: str,
    directory: ResponderDirectory,
    at: datetime,
    max_steps: int = 8,
) -> list[CascadeEntry]:
    """Expand templates into responders, skipping anyone off call or already listed.

    A resident's own responders are used even without a profile (the operator phones
    them); a profile with on-call windows that exclude ``at`` removes them.
    """
    out: list[CascadeEntry] = []
    seen: set[str] = set()

    def add(responder_id: str, timeout_s: int) -> None:
        if responder_id not in seen and len(out) < max_steps:
            seen.add(responder_id)
            out.append(CascadeEntry(len(out), responder_id, timeout_s))

    for t in templates:
        if t.source == RESIDENT:
            for rid in resident.responders if resident else ():
                profile = directory.get(rid)
                if profile is None or profile.available(at):
                    add(rid, t.timeout_s)
            continue
        found = directory.candidates(ResponderKind(t.source), area, at, t.skills)
        for p in [p for p in found if p.responder_id not in seen][: t.take]:
            add(p.responder_id, t.timeout_s)
    return out
