"""Alarm rules: event taxonomy -> priority, restore pairing, folding repeats, closing.

Priorities (1 = most urgent), documented in ``docs/rules.md``:

1. life-critical: pendant, fall, post-fall inactivity, smoke, carbon monoxide
2. wellbeing: daily-living inactivity, bed/chair not re-occupied, door exit
3. environmental: flood, temperature extremes
4. technical: mains fail, low battery, tamper, jamming, supervision, missed heartbeat,
   device clock wrong

Periodic test, cancel/reset, carer arrived and motion never raise an alert
(:data:`NO_ALERT`): a periodic test is a heartbeat, motion is proof of daily living, the
other two close what is open.

State (:class:`AlarmBook`) keeps the open alarms, keyed by ``(device_id, event type)``:

* an alarm-phase event with nothing open for its key **raises** a new alarm;
* another alarm-phase event for an open key within ``fold_window`` of the time that
  alarm was raised is **folded** into it (counted, never dropped); after the window it
  raises a fresh alarm, so a press is never hidden behind a stale one;
* a redelivered event (same ``device_id`` and ``msg_id``) is a **duplicate**, not a press;
* a restore **clears** its own alarm (same device and type) only, except for the
  latching types (:data:`LATCHING`: pendant, fall, post-fall inactivity, smoke, CO and
  door exit): their restore is recorded as **restored** and the alarm stays open until a
  person closes it (a closed door does not mean the person came back);
* a cancel/reset **closes** only its own device's alarms of the types a person at the
  unit may cancel (:data:`CANCELLABLE`: pendant, fall, post-fall inactivity,
  inactivity, bed/chair not re-occupied), never a smoke, CO, flood, temperature,
  door-exit or technical alarm, and never another device's;
* a carer-arrived **closes** the open wellbeing/environmental alarms (priority 2-3,
  not latching, not technical) of its own resident, or of its own device when it has
  no resident (a communal hub); a life-critical alarm stays open for an operator (the
  outcome lists it under ``attended``);
* :meth:`AlarmBook.close` forgets an alarm the dispatch layer resolved or closed, so the
  next press raises a new alarm instead of folding into a closed one.

The book snapshots to a plain JSON-able dict and is rebuilt from one, so it survives a
restart; :meth:`AlarmBook.take_changes` gives only the alarms opened, changed or dropped
since its last call (one row per alarm id), so a persistent store writes what changed,
not the whole book. All methods are synchronous and read no clock: time comes from the
events.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Final

from telecare.devices.model import AlarmEvent, EventType, Phase

__all__ = [
    "CANCELLABLE",
    "CLOSING",
    "LATCHING",
    "NO_ALERT",
    "PRIORITY",
    "AlarmBook",
    "AlarmOutcome",
    "ClearedAlarm",
    "OpenAlarm",
    "Outcome",
    "alarm_id_for",
    "is_technical",
    "priority_of",
]

PRIORITY: Final[dict[EventType, int]] = {
    EventType.PENDANT: 1,
    EventType.FALL: 1,
    EventType.POST_FALL_INACTIVITY: 1,
    EventType.SMOKE: 1,
    EventType.CO: 1,
    EventType.INACTIVITY: 2,
    EventType.BED_NOT_REOCCUPIED: 2,
    EventType.CHAIR_NOT_REOCCUPIED: 2,
    EventType.DOOR_EXIT: 2,
    EventType.FLOOD: 3,
    EventType.TEMPERATURE_HIGH: 3,
    EventType.TEMPERATURE_LOW: 3,
    EventType.MAINS_FAIL: 4,
    EventType.LOW_BATTERY: 4,
    EventType.SENSOR_LOW_BATTERY: 4,
    EventType.TAMPER: 4,
    EventType.JAMMING: 4,
    EventType.SUPERVISION: 4,
    EventType.HEARTBEAT_MISSED: 4,
    EventType.CLOCK_SKEW: 4,
}

#: Events that never raise an alert. With PRIORITY this covers the whole taxonomy.
NO_ALERT: Final = frozenset(
    {
        EventType.PERIODIC_TEST,
        EventType.CANCEL,
        EventType.CARER_ARRIVED,
        EventType.MOTION,
        EventType.INFORMATION,
    }
)
#: Events that close open alarms (see the module docstring for which).
CLOSING: Final = frozenset({EventType.CANCEL, EventType.CARER_ARRIVED})
#: Alarms a restore does not clear: a person must close them. Door exit is a
#: wandering risk: the door closing again does not mean the person came back.
LATCHING: Final = frozenset(
    {
        EventType.PENDANT,
        EventType.FALL,
        EventType.POST_FALL_INACTIVITY,
        EventType.SMOKE,
        EventType.CO,
        EventType.DOOR_EXIT,
    }
)
#: Alarms the cancel/reset button of the same device may close (a person at the unit
#: says the call was a mistake). Hazards (smoke, CO, flood, temperature), door exits
#: and technical faults are never closed by a cancel.
CANCELLABLE: Final = frozenset(
    {
        EventType.PENDANT,
        EventType.FALL,
        EventType.POST_FALL_INACTIVITY,
        EventType.INACTIVITY,
        EventType.BED_NOT_REOCCUPIED,
        EventType.CHAIR_NOT_REOCCUPIED,
    }
)

#: Keep this many recent message ids per open alarm to spot redeliveries.
_RECENT_IDS: Final = 16


def priority_of(event_type: EventType) -> int | None:
    """The priority an alarm of this type raises, or ``None`` if it raises no alert
    (periodic test, cancel, carer arrived: these close or confirm, they never alarm)."""
    return PRIORITY.get(event_type)


def is_technical(event_type: EventType) -> bool:
    return PRIORITY.get(event_type) == 4


def alarm_id_for(device_id: str, msg_id: str) -> str:
    """A stable alert id for the event that raised an alarm (same event -> same id)."""
    digest = hashlib.blake2b(f"{device_id}/{msg_id}".encode(), digest_size=10).hexdigest()
    return f"al-{digest}"


@dataclass(frozen=True, slots=True)
class ClearedAlarm:
    """An alert that no longer stands: restored, closed, or its condition has ended."""

    alarm_id: str
    reason: str
    ts: datetime
    #: Closed by someone at the unit (cancel/reset, carer arrived), not a restore.
    closed: bool = False


class Outcome(StrEnum):
    RAISED = "raised"
    FOLDED = "folded"
    DUPLICATE = "duplicate"
    RESTORED = "restored"
    CLEARED = "cleared"
    CLOSED = "closed"
    IGNORED = "ignored"


@dataclass(frozen=True, slots=True)
class OpenAlarm:
    """One open alarm; ``count`` is how many alarm-phase events it holds (>= 1)."""

    alarm_id: str
    device_id: str
    type: EventType
    priority: int
    raised_at: datetime
    last_at: datetime
    count: int = 1
    restored: bool = False
    site_id: str | None = None
    resident_id: str | None = None
    source_key: str | None = None
    recent_ids: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "alarm_id": self.alarm_id,
            "device_id": self.device_id,
            "type": self.type.value,
            "priority": self.priority,
            "raised_at": self.raised_at.isoformat(),
            "last_at": self.last_at.isoformat(),
            "count": self.count,
            "restored": self.restored,
            "site_id": self.site_id,
            "resident_id": self.resident_id,
            "source_key": self.source_key,
            "recent_ids": list(self.recent_ids),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OpenAlarm:
        return cls(
            alarm_id=data["alarm_id"],
            device_id=data["device_id"],
            type=EventType(data["type"]),
            priority=int(data["priority"]),
            raised_at=datetime.fromisoformat(data["raised_at"]),
            last_at=datetime.fromisoformat(data["last_at"]),
            count=int(data["count"]),
            restored=bool(data["restored"]),
            site_id=data.get("site_id"),
            resident_id=data.get("resident_id"),
            source_key=data.get("source_key"),
            recent_ids=tuple(data.get("recent_ids", ())),
        )


@dataclass(frozen=True, slots=True)
class AlarmOutcome:
    """What one event did. ``alarms`` are the alarms it raised, folded into, restored,
    cleared or closed (empty for ``IGNORED``); ``superseded`` is an open alarm that a
    press after the fold window replaced (the caller may close it)."""

    outcome: Outcome
    alarms: tuple[OpenAlarm, ...] = ()
    reason: str = ""
    superseded: OpenAlarm | None = None
    #: Life-critical alarms a carer-arrived found open and left for an operator.
    attended: tuple[OpenAlarm, ...] = ()


@dataclass(slots=True)
class AlarmBook:
    """Open alarms and the rules above. Snapshot with :meth:`snapshot`."""

    fold_window: timedelta = timedelta(seconds=120)
    priorities: dict[EventType, int] = field(default_factory=lambda: dict(PRIORITY))
    _open: dict[tuple[str, EventType], OpenAlarm] = field(default_factory=dict)
    #: Indexes for cancel/reset: resident / device id -> keys of open alarms.
    _by_owner: dict[tuple[str, str], set[tuple[str, EventType]]] = field(default_factory=dict)
    #: alarm id -> key, so closing one alarm of many is a lookup, not a scan.
    _ids: dict[str, tuple[str, EventType]] = field(default_factory=dict)
    #: Alarm ids put or dropped since the last :meth:`take_changes`.
    _dirty: set[str] = field(default_factory=set)

    @property
    def open_alarms(self) -> list[OpenAlarm]:
        return sorted(self._open.values(), key=lambda a: (a.priority, a.raised_at))

    def apply(self, event: AlarmEvent) -> AlarmOutcome:
        """Apply one event and say what it did (see the module docstring)."""
        if event.type in CLOSING:
            if event.phase is Phase.RESTORE:
                return AlarmOutcome(Outcome.IGNORED, reason=f"{event.type.value} restore")
            return self._close_matching(event)
        priority = self.priorities.get(event.type)
        if priority is None:
            return AlarmOutcome(Outcome.IGNORED, reason=f"{event.type.value} raises no alarm")
        key = (event.device_id, event.type)
        current = self._open.get(key)
        if event.phase is Phase.RESTORE:
            return self._restore(key, current, event)
        if current is not None:
            if event.msg_id in current.recent_ids:
                return AlarmOutcome(Outcome.DUPLICATE, (current,), reason="redelivered event")
            if event.ts - current.raised_at <= self.fold_window:
                folded = replace(
                    current,
                    count=current.count + 1,
                    last_at=max(current.last_at, event.ts),
                    recent_ids=(*current.recent_ids, event.msg_id)[-_RECENT_IDS:],
                )
                self._put(key, folded)
                return AlarmOutcome(Outcome.FOLDED, (folded,))
        alarm = OpenAlarm(
            alarm_id=alarm_id_for(event.device_id, event.msg_id),
            device_id=event.device_id,
            type=event.type,
            priority=priority,
            raised_at=event.ts,
            last_at=event.ts,
            site_id=event.site_id,
            resident_id=event.resident_id,
            source_key=f"{event.device_id}/{event.msg_id}",
            recent_ids=(event.msg_id,),
        )
        self._put(key, alarm)
        return AlarmOutcome(Outcome.RAISED, (alarm,), superseded=current)

    def get(self, alarm_id: str) -> OpenAlarm | None:
        """The open alarm with this id, if any."""
        key = self._ids.get(alarm_id)
        return self._open.get(key) if key is not None else None

    def open_for(self, device_id: str, event_type: EventType) -> OpenAlarm | None:
        """The alarm open for this device and event type (what a press of it would
        fold into, inside the fold window), if any."""
        return self._open.get((device_id, event_type))

    def close(self, alarm_id: str) -> OpenAlarm | None:
        """Close one alarm by id (the dispatch layer resolved or closed it): its key is
        released, so the next press raises a new alarm. ``None`` if not open."""
        key = self._ids.get(alarm_id)
        return self._drop(key) if key is not None else None

    def _restore(
        self, key: tuple[str, EventType], current: OpenAlarm | None, event: AlarmEvent
    ) -> AlarmOutcome:
        if current is None:
            return AlarmOutcome(Outcome.IGNORED, reason="restore with no open alarm")
        if event.type in LATCHING:
            restored = replace(current, restored=True, last_at=max(current.last_at, event.ts))
            self._put(key, restored)
            return AlarmOutcome(Outcome.RESTORED, (restored,), reason="restore; stays open")
        self._drop(key)
        return AlarmOutcome(Outcome.CLEARED, (current,), reason=f"{event.type.value} restored")

    def _close_matching(self, event: AlarmEvent) -> AlarmOutcome:
        what = event.type.value
        if event.type is EventType.CANCEL:
            keys = sorted(self._by_owner.get(("d", event.device_id), ()))
            keys = [k for k in keys if k[1] in CANCELLABLE]
            attended: list[OpenAlarm] = []
        else:  # carer arrived: its resident's alarms, else its own device's
            if event.resident_id is not None:
                owner = ("r", event.resident_id)
            else:
                owner = ("d", event.device_id)
            keys, attended = [], []
            for key in sorted(self._by_owner.get(owner, ())):
                alarm = self._open[key]
                if alarm.priority == 1:
                    attended.append(alarm)  # life-critical: an operator closes it
                elif key[1] not in LATCHING and not is_technical(key[1]):
                    keys.append(key)
        if not keys:
            reason = f"{what}: nothing it may close is open"
            if attended:
                reason = f"{what}: life-critical alarm stays open for an operator"
            return AlarmOutcome(Outcome.IGNORED, reason=reason, attended=tuple(attended))
        closed = [self._drop(key) for key in keys]
        return AlarmOutcome(Outcome.CLOSED, tuple(closed), reason=what, attended=tuple(attended))

    # ------------------------------------------------------------------ persistence

    def snapshot(self) -> dict[str, Any]:
        """Plain JSON-able state (open alarms and the fold window)."""
        return {
            "version": 1,
            "fold_window_s": self.fold_window.total_seconds(),
            "open": [a.to_dict() for a in self._open.values()],
        }

    @classmethod
    def from_snapshot(
        cls, data: dict[str, Any], *, priorities: dict[EventType, int] | None = None
    ) -> AlarmBook:
        """Rebuild a book from :meth:`snapshot` output."""
        if data.get("version") != 1:
            raise ValueError(f"alarm state: unsupported snapshot version {data.get('version')!r}")
        book = cls(
            fold_window=timedelta(seconds=float(data["fold_window_s"])),
            priorities=dict(priorities or PRIORITY),
        )
        book.load(OpenAlarm.from_dict(d) for d in data["open"])
        return book

    def load(self, alarms: Iterable[OpenAlarm]) -> None:
        """Open ``alarms`` as they were stored (a restart): nothing is marked changed."""
        for alarm in alarms:
            self._put((alarm.device_id, alarm.type), alarm)
        self._dirty.clear()  # loaded from where it is stored: nothing to write back

    def take_changes(self) -> dict[str, dict[str, Any] | None]:
        """The alarms changed since the last call, by alarm id: the alarm as
        :meth:`OpenAlarm.to_dict` gives it, or ``None`` when it is no longer open."""
        dirty, self._dirty = self._dirty, set()
        out: dict[str, dict[str, Any] | None] = {}
        for alarm_id in dirty:
            key = self._ids.get(alarm_id)
            out[alarm_id] = self._open[key].to_dict() if key is not None else None
        return out

    # ------------------------------------------------------------------ indexes

    @staticmethod
    def _owners(alarm: OpenAlarm) -> list[tuple[str, str]]:
        owners = [("d", alarm.device_id)]
        if alarm.resident_id is not None:
            owners.append(("r", alarm.resident_id))
        return owners

    def _put(self, key: tuple[str, EventType], alarm: OpenAlarm) -> None:
        if key in self._open:
            self._drop(key)
        for owner in self._owners(alarm):
            self._by_owner.setdefault(owner, set()).add(key)
        self._open[key] = alarm
        self._ids[alarm.alarm_id] = key
        self._dirty.add(alarm.alarm_id)

    def _drop(self, key: tuple[str, EventType]) -> OpenAlarm:
        alarm = self._open.pop(key)
        self._ids.pop(alarm.alarm_id, None)
        self._dirty.add(alarm.alarm_id)
        for owner in self._owners(alarm):
            keys = self._by_owner[owner]
            keys.discard(key)
            if not keys:
                del self._by_owner[owner]
        return alarm
