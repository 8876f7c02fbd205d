"""What the console shows, computed without I/O: the queue's order, grouping and
timer colours, the action list's steps and its "do next", the dispatch board's
attend timers and each device's health. The routes (``console.py``) load rows and
render these.

Device health (:func:`device_state`): a device is "last heard" at the newest of its
heartbeat, its last alarm event and the time it last came online: any of them proves
it alive, as do the readings of a measuring device (oximeter, cuff, thermometer). A
device with test calls that has not been heard for two intervals has
**missed test calls**. A dropped connection is shown **OFFLINE** only when the device
has not been heard for :data:`OFFLINE_GRACE` (or two test-call intervals, if longer):
a pendant or alarm unit that connects to raise an alarm and then closes its connection
is doing what it should, and must not look dead right after its alarm.

Queue order: priority (1 first) then age (oldest first); rows are grouped per resident
(an alarm without a resident is its own group); a group sorts by its most urgent row,
so a resident with a new priority-1 alarm rises with all of their alarms.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final

from telecare.devices.model import (
    DeviceKind,
    Dispatch,
    DispatchState,
    Metric,
    ResponderKind,
    SiteKind,
)
from telecare.dispatch.records import AuditRecord, CascadeEntry
from telecare.gateway.store.reports import AlarmRow, DeviceHealth
from telecare.gateway.web.console_store import Notice, Owner, TimerRow

__all__ = [
    "ANSWER_TARGET_S",
    "CONTACT_OUTCOMES",
    "OFFLINE_GRACE",
    "UNANSWERED",
    "ActionStep",
    "DeviceState",
    "NextAction",
    "QueueGroup",
    "QueueRow",
    "answer_colour",
    "build_queue",
    "cascade_steps",
    "device_state",
    "last_reading",
    "next_action",
    "owner_key",
    "same_address",
]

S = DispatchState

#: The TSA answer target (s): a row's timer is amber from half of it, red past it.
ANSWER_TARGET_S: Final = 60
#: What an operator records after phoning a responder (key, label, event).
CONTACT_OUTCOMES: Final = (
    ("1", "Answered: will attend", "answered"),
    ("2", "No answer", "no_answer"),
    ("3", "Declined", "declined"),
)
#: States in which nobody has picked the alarm up yet: the sound plays for them. An
#: escalated alarm is one the supervisors were alerted to (not answered in 60 s, the
#: cascade exhausted, nobody on scene in time): it wants a person just as much.
UNANSWERED: Final = frozenset({S.RAISED, S.ESCALATED})
#: A device heard from this recently is not OFFLINE because its connection closed.
OFFLINE_GRACE: Final = timedelta(minutes=15)
#: Battery below this (%) is shown as low, in red.
LOW_BATTERY: Final = 20.0


@dataclass(frozen=True, slots=True)
class DeviceState:
    """A device's health as the resident banner shows it."""

    #: "connected", "not connected", "OFFLINE" or "not heard yet".
    label: str
    last_heard: datetime | None
    missed_test_calls: bool
    low_battery: bool
    offline: bool

    @property
    def at_risk(self) -> bool:
        """Shown in red: a safety risk for the resident."""
        return self.offline or self.missed_test_calls or self.low_battery


#: What a measuring device's readings are stored as (its readings prove it alive).
MEASURES: Final[dict[str, frozenset[Metric]]] = {
    DeviceKind.OXIMETER.value: frozenset({Metric.SPO2, Metric.PULSE}),
    DeviceKind.BP_CUFF.value: frozenset({Metric.SYSTOLIC_BP, Metric.DIASTOLIC_BP}),
    DeviceKind.THERMOMETER.value: frozenset({Metric.TEMPERATURE}),
}


def last_reading(kind: str, latest: Mapping[str, tuple[datetime, float]]) -> datetime | None:
    """When the resident's newest reading of what a device of ``kind`` measures was taken
    (``latest``: ``Store.latest_vitals`` of the resident, by metric label)."""
    times = [latest[m.label][0] for m in MEASURES.get(kind, ()) if m.label in latest]
    return max(times, default=None)


def device_state(
    dv: DeviceHealth, now: datetime, reading_at: datetime | None = None
) -> DeviceState:
    """``dv``'s health at ``now`` (see the module docstring); ``reading_at``: its newest
    reading (:func:`last_reading`), for devices that only send readings."""
    came_online = dv.changed_at if dv.online else None
    times = (dv.last_heartbeat, dv.last_event, came_online, reading_at)
    heard = [t for t in times if t is not None]
    last = max(heard, default=None)
    interval = timedelta(seconds=dv.heartbeat_interval_s)
    missed = dv.heartbeat_interval_s > 0 and last is not None and now - last > 2 * interval
    offline = False
    if dv.online:
        label = "connected"
    elif last is None:
        label = "not heard yet" if dv.online is None else "OFFLINE"
        offline = dv.online is False
    elif dv.online is None:
        label = "in contact"
    elif now - last <= max(OFFLINE_GRACE, 2 * interval):
        label = "not connected"
    else:
        label, offline = "OFFLINE", True
    low = dv.battery is not None and dv.battery < LOW_BATTERY
    return DeviceState(label, last, missed, low, offline)


def same_address(d: Dispatch, other: Dispatch, site_kind: SiteKind | None) -> bool:
    """Whether ``other`` is an alarm at the same address as ``d`` (the alarm page's
    "other open alarms for this resident or address" and "already dispatched").

    A site is one address when it is a home (a couple's two pendants, the home's smoke
    detector). A care home is many: each resident's room or flat is their own (the
    model has no finer address than the resident), so another resident's alarm there is
    not this address; an alarm of the building itself (no resident: the corridor's
    smoke detector, the mains) concerns every room and is shown with all of them."""
    if d.resident_id and other.resident_id == d.resident_id:
        return True
    if not d.site_id or other.site_id != d.site_id:
        return False
    if site_kind is not SiteKind.CARE_HOME:
        return True
    return d.resident_id is None or other.resident_id is None


def owner_key(resident_id: str | None, dispatch_id: str) -> str:
    """Ownership is per resident (all of a resident's alarms go to one operator)."""
    return resident_id or f"dispatch:{dispatch_id}"


def answer_colour(age_s: float, state: DispatchState) -> str:
    """``ok``, ``amber`` (half the answer target gone) or ``red`` (target missed), for
    alarms still waiting to be answered; ``none`` once answered."""
    if state not in UNANSWERED:
        return "none"
    if age_s >= ANSWER_TARGET_S:
        return "red"
    if age_s >= ANSWER_TARGET_S / 2:
        return "amber"
    return "ok"


@dataclass(frozen=True, slots=True)
class QueueRow:
    alarm: AlarmRow
    #: The alarm's open dispatch, and seconds since it was opened.
    dispatch: Dispatch
    age_s: float
    owner: Owner | None
    hold: TimerRow | None
    recheck: TimerRow | None
    notices: tuple[Notice, ...]

    @property
    def colour(self) -> str:
        return answer_colour(self.age_s, self.dispatch.state)

    @property
    def unanswered(self) -> bool:
        return self.dispatch.state in UNANSWERED

    @property
    def section(self) -> str:
        """``waiting`` (needs an operator), ``held`` or ``owned``."""
        if self.hold is not None:
            return "held"
        if self.owner is not None:
            return "owned"
        return "waiting"


@dataclass(slots=True)
class QueueGroup:
    key: str
    resident_id: str | None
    site_id: str | None
    rows: list[QueueRow] = field(default_factory=list)

    @property
    def rank(self) -> tuple[int, float]:
        return min((r.dispatch.priority, -r.age_s) for r in self.rows)

    @property
    def owner(self) -> Owner | None:
        return next((r.owner for r in self.rows if r.owner), None)


def build_queue(
    alarms: Iterable[AlarmRow],
    owners: Iterable[Owner],
    timers: Iterable[TimerRow],
    notices: Iterable[Notice],
    now: datetime,
) -> dict[str, list[QueueGroup]]:
    """The queue's sections (``waiting``, ``owned``, ``held``), each a list of groups
    per resident, most urgent first; rows in a group by priority then age. ``alarms``:
    alerts with an open dispatch (``store.open_alarms``); any other is left out."""
    by_key = {o.owner_key: o for o in owners}
    holds = {t.dispatch_id: t for t in timers if t.kind == "hold"}
    rechecks = {t.dispatch_id: t for t in timers if t.kind == "recheck"}
    open_notices: dict[str, list[Notice]] = {}
    for n in notices:
        open_notices.setdefault(n.dispatch_id, []).append(n)
    sections: dict[str, dict[str, QueueGroup]] = {"waiting": {}, "owned": {}, "held": {}}
    for a, d in ((a, a.dispatch) for a in alarms if a.dispatch is not None):
        key = owner_key(d.resident_id, d.dispatch_id)
        row = QueueRow(
            a,
            d,
            (now - d.created_at).total_seconds(),
            by_key.get(key),
            holds.get(d.dispatch_id),
            rechecks.get(d.dispatch_id),
            tuple(open_notices.get(d.dispatch_id, ())),
        )
        groups = sections[row.section]
        group = groups.setdefault(key, QueueGroup(key, d.resident_id, d.site_id))
        group.rows.append(row)
    out: dict[str, list[QueueGroup]] = {}
    for name, groups in sections.items():
        for g in groups.values():
            g.rows.sort(key=lambda r: (r.dispatch.priority, -r.age_s))
        out[name] = sorted(groups.values(), key=lambda g: g.rank)
    return out


# -- the action list ---------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ActionStep:
    """One cascade step: who, and what happened when they were tried."""

    position: int
    responder_id: str
    kind: str
    name: str
    state: str  # "waiting", "current", "contacted", "answered", "no_answer", "declined"
    at: datetime | None = None
    reference: str | None = None


@dataclass(frozen=True, slots=True)
class NextAction:
    """The "do next" key's action: ``action`` is a route verb, ``label`` what it says."""

    action: str
    label: str


def cascade_steps(
    dispatch: Dispatch,
    cascade: Sequence[CascadeEntry],
    audit: Sequence[AuditRecord],
    names: dict[str, tuple[str, str]],
) -> list[ActionStep]:
    """The cascade as steps with their state, from the audit trail. ``names``:
    responder id -> (kind, display name)."""
    state: dict[str, tuple[str, datetime, str | None]] = {}
    for r in audit:
        who = r.detail.get("responder_id")
        event = r.detail.get("event")
        if not isinstance(who, str):
            continue
        if event == "contact":
            state[who] = ("contacted", r.at, None)
        elif event == "accept":
            ref = r.detail.get("reference")
            state[who] = ("answered", r.at, ref if isinstance(ref, str) else None)
        elif event in ("decline", "no_answer"):
            state[who] = ("declined" if event == "decline" else "no_answer", r.at, None)
        elif event in ("en_route", "on_scene"):
            state[who] = (event, r.at, state.get(who, ("", r.at, None))[2])
    steps = []
    for e in cascade:
        kind, name = names.get(e.responder_id, ("", ""))
        st, at, ref = state.get(e.responder_id, ("waiting", None, None))
        if st == "waiting" and e.responder_id == dispatch.responder_id and dispatch.state.is_open:
            st = "current"
        steps.append(ActionStep(e.position, e.responder_id, kind, name, st, at, ref))
    return steps


def _acknowledged(audit: Sequence[AuditRecord]) -> bool:
    return any(r.to_state is S.ACKNOWLEDGED for r in audit)


def next_action(
    dispatch: Dispatch, audit: Sequence[AuditRecord], responder_kind: str | None
) -> NextAction:
    """What the "do next" key does for ``dispatch`` now."""
    st = dispatch.state
    if not st.is_open:
        return NextAction("none", "Closed")
    if st is S.RAISED or (st is S.ESCALATED and not _acknowledged(audit)):
        return NextAction("acknowledge", "Acknowledge the alarm")
    if st in (S.ACKNOWLEDGED, S.DECLINED, S.NO_ANSWER, S.ESCALATED):
        if dispatch.responder_id is None:
            return NextAction("close", "Nobody left in the cascade: close or phone someone")
        return NextAction("contact", f"Phone {dispatch.responder_id}")
    if st is S.RESPONDER_CONTACTED:
        if responder_kind == ResponderKind.AMBULANCE.value:
            return NextAction("handover", "Record the 999 handover reference")
        return NextAction("outcome", f"Record {dispatch.responder_id}'s answer")
    if st is S.ACCEPTED and responder_kind == ResponderKind.AMBULANCE.value:
        return NextAction("close", "Handed to 999: close once the crew has the person")
    if st is S.ACCEPTED:
        return NextAction("en_route", f"{dispatch.responder_id} is on the way")
    if st is S.EN_ROUTE:
        return NextAction("on_scene", f"{dispatch.responder_id} has arrived")
    return NextAction("close", "Close with an outcome")
