"""Temporal rules: things that happen because time passed (or a trend moved).

=====================  ==============================================  =================
rule                   fires when                                      clears when
=====================  ==============================================  =================
missed heartbeat       no message of any kind (heartbeat, status,      the device is
                       event, reading) from a watched device for       heard again
                       ``heartbeat_miss_multiple`` x its interval,
                       counted from its last message or from when
                       this process started watching, the later
device clock wrong     a device's timestamp is ahead of the            a plausible
                       gateway's receive time by more than             timestamp from
                       ``clock_skew_s``                                the device
daily-living           a resident's inactivity window ends with no     the next activity
inactivity             activity since the window started
NEWS2 trend            (returned to the engine, which words the alert)
                       total rose by ``news2_trend_rise`` within
                       ``news2_trend_window_h``, or the band went up
SpO2 below target      readings stay below the resident's target for   a reading at or
                       ``spo2_sustained_s``                            above target
observations due       no new complete set within the interval the     a new complete
                       last score requires (site ``obs_due_s``)        set arrives
=====================  ==============================================  =================

When the dispatch layer resolves or closes an alert (:meth:`TemporalRules.close`) the
rule is released: SpO2-low starts a new episode with the next low reading, and
observations-due is due again one interval after the close, so neither stays latched.

Nothing here reads a clock: the engine passes ``now`` into :meth:`TemporalRules.tick`
and event timestamps into the other methods, so tests jump time instead of sleeping.
Each rule raises its alert once and then waits for the clearing condition.

State is plain data: :meth:`TemporalRules.snapshot` returns a JSON-able dict and
:meth:`TemporalRules.from_snapshot` rebuilds the rules from it, so timers survive a
restart (a restart mid-window neither loses nor repeats an alert). The same state is one
row per key (:data:`SECTIONS`: a device's heartbeat watch, a resident's activity, NEWS2
and SpO2 state, a device's clock fault): :meth:`TemporalRules.take_changes` gives only
the rows changed since its last call (every mutation marks its row), so a persistent
store writes what changed instead of everything after every tick.
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from telecare.devices.model import Alert, AlertKind, EventType
from telecare.rules.alarms import ClearedAlarm, priority_of
from telecare.rules.config import RulesConfig
from telecare.rules.news2 import RISK_ORDER

__all__ = ["SECTIONS", "TemporalOutput", "TemporalRules", "Trend"]

#: The row sections of the state, each keyed by a device or resident id, and the
#: snapshot key each one is stored under.
SECTIONS: dict[str, str] = {
    "device": "devices",
    "activity": "activity",
    "news2": "news2",
    "spo2": "spo2",
    "clock": "skewed",
}


@dataclass(slots=True)
class TemporalOutput:
    alerts: list[Alert] = field(default_factory=list)
    cleared: list[ClearedAlarm] = field(default_factory=list)

    def extend(self, other: TemporalOutput) -> None:
        self.alerts.extend(other.alerts)
        self.cleared.extend(other.cleared)


@dataclass(frozen=True, slots=True)
class Trend:
    """How a new NEWS2 total compares with the resident's recent ones."""

    rise: int  # total minus the lowest total within the window (0 if no history)
    previous_risk: str | None
    rising: bool  # rise >= the site's threshold
    crossed: bool  # the band is higher than the previous score's band


def _alert_id(prefix: str, *parts: object) -> str:
    digest = hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=10).hexdigest()
    return f"{prefix}-{digest}"


def _dt(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


@dataclass(slots=True)
class _Device:
    interval_s: int
    last_seen: datetime
    site_id: str | None = None
    resident_id: str | None = None
    alert_id: str | None = None
    #: When this process started watching (not persisted): a device is not missing for
    #: the time the gateway itself was down and could not hear it.
    watching_since: datetime | None = None


@dataclass(slots=True)
class _Activity:
    watching_since: datetime
    last: datetime | None = None
    site_id: str | None = None
    checked: dict[str, str] = field(default_factory=dict)  # window index -> local date
    alert_id: str | None = None


@dataclass(slots=True)
class _News2:
    history: list[tuple[datetime, int]] = field(default_factory=list)
    last_ts: datetime | None = None
    last_risk: str | None = None
    last_total: int | None = None
    due_at: datetime | None = None
    due_alert_id: str | None = None
    site_id: str | None = None


@dataclass(slots=True)
class _Spo2:
    low_since: datetime | None = None
    alert_id: str | None = None
    site_id: str | None = None


class TemporalRules:
    """The temporal rules and their state. See the module docstring."""

    def __init__(self, config: RulesConfig | None = None) -> None:
        self.config = config or RulesConfig()
        self._devices: dict[str, _Device] = {}
        self._activity: dict[str, _Activity] = {}
        self._news2: dict[str, _News2] = {}
        self._spo2: dict[str, _Spo2] = {}
        #: device id -> open clock-fault alert id.
        self._skewed: dict[str, str] = {}
        #: alert id -> ("kind", key) of the rule holding it, for :meth:`close`.
        self._holders: dict[str, tuple[str, str]] = {}
        #: (deadline, device id): when each watched device would next be missing. Lazy:
        #: an entry is checked against the device's real deadline when it comes due, so
        #: hearing a device costs nothing here and a tick touches only due devices.
        self._hb_due: list[tuple[datetime, str]] = []
        #: ``(section, key)`` of the rows changed since the last :meth:`take_changes`.
        self._dirty: set[tuple[str, str]] = set()

    # ------------------------------------------------------------------ heartbeats

    def watch_device(
        self,
        device_id: str,
        interval_s: int,
        now: datetime,
        *,
        site_id: str | None = None,
        resident_id: str | None = None,
    ) -> None:
        """Expect a message from ``device_id`` every ``interval_s`` (0 stops watching)."""
        if interval_s <= 0:
            if self._devices.pop(device_id, None) is not None:
                self._dirty.add(("device", device_id))
            return
        current = self._devices.get(device_id)
        last_seen = current.last_seen if current else now
        alert_id = current.alert_id if current else None
        since = current.watching_since if current and current.watching_since else now
        dev = self._devices[device_id] = _Device(
            interval_s, last_seen, site_id, resident_id, alert_id, since
        )
        if current is None or (current.interval_s, current.site_id, current.resident_id) != (
            interval_s,
            site_id,
            resident_id,
        ):
            self._dirty.add(("device", device_id))
        heapq.heappush(self._hb_due, (self._deadline(dev), device_id))

    def _deadline(self, dev: _Device) -> datetime:
        """When ``dev`` is missing: its last message (or the start of watching, if
        later) plus ``heartbeat_miss_multiple`` intervals."""
        since = dev.last_seen
        if dev.watching_since is not None and dev.watching_since > since:
            since = dev.watching_since
        multiple = self.config.site(dev.site_id).heartbeat_miss_multiple
        return since + timedelta(seconds=multiple * dev.interval_s)

    def device_seen(self, device_id: str, ts: datetime) -> TemporalOutput:
        """Any message from a device proves it alive; clears its missed-heartbeat alert."""
        out = TemporalOutput()
        cleared = self.seen(device_id, ts)
        if cleared is not None:
            out.cleared.append(cleared)
        return out

    def seen(self, device_id: str, ts: datetime) -> ClearedAlarm | None:
        """:meth:`device_seen` for the hot path (every reading): the cleared
        missed-heartbeat alert, if there was one, without building an output."""
        dev = self._devices.get(device_id)
        if dev is None:
            return None
        if ts > dev.last_seen:
            dev.last_seen = ts
            self._dirty.add(("device", device_id))
        if dev.alert_id is None:
            return None
        self._dirty.add(("device", device_id))
        cleared = ClearedAlarm(dev.alert_id, "device heard again", ts)
        self._holders.pop(dev.alert_id, None)
        dev.alert_id = None
        heapq.heappush(self._hb_due, (self._deadline(dev), device_id))
        return cleared

    def _tick_heartbeats(self, now: datetime, out: TemporalOutput, budget: int | None) -> None:
        heap = self._hb_due
        raised = 0
        while heap and heap[0][0] < now:
            if budget is not None and raised >= budget:
                return  # the rest stay due for the next call
            _, device_id = heapq.heappop(heap)
            dev = self._devices.get(device_id)
            if dev is None or dev.alert_id is not None:
                continue  # no longer watched, or already alarmed (re-armed on clear)
            deadline = self._deadline(dev)
            if deadline >= now:
                heapq.heappush(heap, (deadline, device_id))
                continue
            since = deadline - timedelta(
                seconds=self.config.site(dev.site_id).heartbeat_miss_multiple * dev.interval_s
            )
            silent = (now - dev.last_seen).total_seconds()
            raised += 1
            dev.alert_id = _alert_id("hb", device_id, dev.last_seen.isoformat(), since.isoformat())
            self._holders[dev.alert_id] = ("device", device_id)
            self._dirty.add(("device", device_id))
            out.alerts.append(
                Alert(
                    alert_id=dev.alert_id,
                    kind=AlertKind.TECHNICAL,
                    priority=priority_of(EventType.HEARTBEAT_MISSED) or 4,
                    reason=(
                        f"no message from device {device_id} for {silent:.0f} s "
                        f"(heartbeat every {dev.interval_s} s)"
                    ),
                    ts=now,
                    site_id=dev.site_id,
                    resident_id=dev.resident_id,
                    device_id=device_id,
                    event_type=EventType.HEARTBEAT_MISSED,
                    detail={"last_seen": dev.last_seen.isoformat(), "silent_s": int(silent)},
                )
            )

    # ------------------------------------------------------------------ inactivity

    def activity(
        self, resident_id: str, ts: datetime, *, site_id: str | None = None
    ) -> TemporalOutput:
        """The resident did something (motion, a press, a door): clears an inactivity alert."""
        out = TemporalOutput()
        act = self._activity.setdefault(resident_id, _Activity(watching_since=ts))
        self._dirty.add(("activity", resident_id))
        act.last = ts if act.last is None else max(act.last, ts)
        act.site_id = site_id or act.site_id
        if act.alert_id is not None:
            out.cleared.append(ClearedAlarm(act.alert_id, "activity seen", ts))
            self._holders.pop(act.alert_id, None)
            act.alert_id = None
        return out

    def _tick_inactivity(self, now: datetime, out: TemporalOutput) -> None:
        for rid, rules in self.config.residents.items():
            if not rules.inactivity_windows:
                continue
            act = self._activity.get(rid)
            if act is None:  # start watching now; judge only windows that start later
                act = self._activity[rid] = _Activity(watching_since=now)
                self._dirty.add(("activity", rid))
            site = self.config.site(rules.site_id or act.site_id)
            tz = site.tz
            today: date = now.astimezone(tz).date()
            for i, window in enumerate(rules.inactivity_windows):
                start = datetime.combine(today, window.start, tzinfo=tz)
                end = datetime.combine(today, window.end, tzinfo=tz)
                if now < end or act.checked.get(str(i)) == today.isoformat():
                    continue
                act.checked[str(i)] = today.isoformat()
                self._dirty.add(("activity", rid))
                if start < act.watching_since or (act.last is not None and act.last >= start):
                    continue
                if act.alert_id is not None:
                    continue
                act.alert_id = _alert_id("ia", rid, today.isoformat(), i)
                self._holders[act.alert_id] = ("activity", rid)
                out.alerts.append(
                    Alert(
                        alert_id=act.alert_id,
                        kind=AlertKind.TEMPORAL,
                        priority=site.inactivity_priority,
                        reason=(
                            f"no activity between {window.start:%H:%M} and "
                            f"{window.end:%H:%M} (daily-living window)"
                        ),
                        ts=now,
                        site_id=rules.site_id or act.site_id,
                        resident_id=rid,
                        event_type=EventType.INACTIVITY,
                        detail={"last_activity": _iso(act.last), "window": i},
                    )
                )

    # ------------------------------------------------------------------ NEWS2

    def news2_scored(
        self,
        resident_id: str,
        ts: datetime,
        total: int,
        risk: str,
        *,
        site_id: str | None = None,
    ) -> tuple[Trend, TemporalOutput]:
        """Record a complete score: compute the trend, reset the observations-due timer."""
        out = TemporalOutput()
        site = self.config.site(site_id)
        st = self._news2.setdefault(resident_id, _News2())
        self._dirty.add(("news2", resident_id))
        st.site_id = site_id or st.site_id
        window = timedelta(hours=site.news2_trend_window_h)
        earlier = [t for when, t in st.history if ts - window <= when <= ts]
        rise = total - min(earlier) if earlier else 0
        previous = st.last_risk if st.last_ts is not None and st.last_ts <= ts else None
        trend = Trend(
            rise=rise,
            previous_risk=previous,
            rising=bool(earlier) and rise >= site.news2_trend_rise,
            crossed=previous is not None and RISK_ORDER[risk] > RISK_ORDER[previous],
        )
        st.history = [(w, t) for w, t in st.history if w >= ts - window] + [(ts, total)]
        st.history.sort()
        if st.last_ts is None or ts >= st.last_ts:
            st.last_ts, st.last_risk, st.last_total = ts, risk, total
            st.due_at = ts + timedelta(seconds=site.due_after_s(total, risk))
            if st.due_alert_id is not None:
                out.cleared.append(ClearedAlarm(st.due_alert_id, "new observations", ts))
                self._holders.pop(st.due_alert_id, None)
                st.due_alert_id = None
        return trend, out

    def _tick_obs_due(self, now: datetime, out: TemporalOutput) -> None:
        for rid, st in self._news2.items():
            if st.due_at is None or st.due_alert_id is not None or now < st.due_at:
                continue
            site = self.config.site(st.site_id)
            st.due_alert_id = _alert_id("od", rid, st.due_at.isoformat())
            self._holders[st.due_alert_id] = ("news2", rid)
            self._dirty.add(("news2", rid))
            out.alerts.append(
                Alert(
                    alert_id=st.due_alert_id,
                    kind=AlertKind.TEMPORAL,
                    priority=site.obs_due_priority,
                    reason=(
                        f"NEWS2 observations due (last score {st.last_total}, "
                        f"{st.last_risk} risk, due {st.due_at:%Y-%m-%d %H:%M}Z)"
                    ),
                    ts=now,
                    site_id=st.site_id,
                    resident_id=rid,
                    detail={"due_at": st.due_at.isoformat(), "last_total": st.last_total},
                )
            )

    # ------------------------------------------------------------------ SpO2

    def spo2_reading(
        self,
        resident_id: str,
        value: float,
        ts: datetime,
        *,
        target: int,
        sustained_s: int,
        site_id: str | None = None,
    ) -> TemporalOutput:
        """One SpO2 reading: alert once it has stayed below ``target`` for ``sustained_s``."""
        out = TemporalOutput()
        st = self._spo2.get(resident_id)
        if st is None:
            st = self._spo2[resident_id] = _Spo2()
            self._dirty.add(("spo2", resident_id))
        if site_id and site_id != st.site_id:
            st.site_id = site_id
            self._dirty.add(("spo2", resident_id))
        if value >= target:
            if st.low_since is not None:
                st.low_since = None
                self._dirty.add(("spo2", resident_id))
            if st.alert_id is not None:
                self._dirty.add(("spo2", resident_id))
                out.cleared.append(ClearedAlarm(st.alert_id, "SpO2 back at target", ts))
                self._holders.pop(st.alert_id, None)
                st.alert_id = None
            return out
        if st.low_since is None or ts < st.low_since:
            st.low_since = ts
            self._dirty.add(("spo2", resident_id))
        below = (ts - st.low_since).total_seconds()
        if st.alert_id is None and below >= sustained_s:
            st.alert_id = _alert_id("sp", resident_id, st.low_since.isoformat())
            self._holders[st.alert_id] = ("spo2", resident_id)
            self._dirty.add(("spo2", resident_id))
            out.alerts.append(
                Alert(
                    alert_id=st.alert_id,
                    kind=AlertKind.TEMPORAL,
                    priority=self.config.site(st.site_id).spo2_low_priority,
                    reason=f"SpO2 below target {target}% for {below:.0f} s (now {value:g}%)",
                    ts=ts,
                    site_id=st.site_id,
                    resident_id=resident_id,
                    detail={"target": target, "low_since": st.low_since.isoformat()},
                )
            )
        return out

    # ------------------------------------------------------------------ tick

    def tick(self, now: datetime, max_alerts: int | None = None) -> TemporalOutput:
        """Evaluate every time-driven rule at ``now``. With ``max_alerts``, missed
        heartbeats (run last) stop once that many alerts were raised in this call: the
        rest are raised by the next call (a storm is worked off in chunks)."""
        out = TemporalOutput()
        self._tick_inactivity(now, out)
        self._tick_obs_due(now, out)
        budget = None if max_alerts is None else max(0, max_alerts - len(out.alerts))
        self._tick_heartbeats(now, out, budget)
        return out

    def close(self, alert_id: str, now: datetime | None = None) -> bool:
        """Forget a raised temporal alert that the dispatch layer resolved or closed, so
        the rule can fire again: a missed heartbeat or inactivity re-arms; SpO2-low starts
        a new episode at the next low reading; observations are due again one interval
        after ``now`` (if given) without a new set."""
        holder = self._holders.pop(alert_id, None)
        if holder is None:
            return False
        kind, key = holder
        self._dirty.add((kind, key))
        if kind == "device" and (dev := self._devices.get(key)) and dev.alert_id == alert_id:
            dev.alert_id = None
            # Still silent: count the silence again from the close, not from the start.
            if now is not None:
                dev.watching_since = max(dev.watching_since or now, now)
            heapq.heappush(self._hb_due, (self._deadline(dev), key))
        elif kind == "activity" and (act := self._activity.get(key)):
            act.alert_id = None
        elif kind == "spo2" and (sp := self._spo2.get(key)):
            sp.alert_id = None
            sp.low_since = None  # the next low reading starts a new episode
        elif kind == "news2" and (st := self._news2.get(key)):
            st.due_alert_id = None
            due = None
            if now is not None and st.last_total is not None and st.last_risk is not None:
                site = self.config.site(st.site_id)
                due = now + timedelta(seconds=site.due_after_s(st.last_total, st.last_risk))
            st.due_at = due
        elif kind == "clock":
            self._skewed.pop(key, None)
        return True

    # ------------------------------------------------------------------ device clocks

    def clock_check(
        self,
        device_id: str,
        device_ts: datetime,
        received_at: datetime,
        *,
        site_id: str | None = None,
        resident_id: str | None = None,
    ) -> tuple[bool, TemporalOutput]:
        """Compare a device's timestamp with the gateway's receive time. Returns
        ``(plausible, output)``: a timestamp more than ``clock_skew_s`` ahead is
        implausible and raises one technical clock-fault alert for the device (until a
        plausible timestamp clears it). A timestamp in the past is plausible (late
        delivery cannot be told from a slow clock); the caller reports it as late."""
        out = TemporalOutput()
        tolerance = self.config.site(site_id).clock_skew_s
        ahead = (device_ts - received_at).total_seconds()
        if ahead <= tolerance:
            alert_id = self._skewed.pop(device_id, None)
            if alert_id is not None:
                self._dirty.add(("clock", device_id))
                self._holders.pop(alert_id, None)
                why = "device clock plausible again"
                out.cleared.append(ClearedAlarm(alert_id, why, received_at))
            return True, out
        if device_id not in self._skewed:
            alert_id = _alert_id("ck", device_id, received_at.isoformat())
            self._skewed[device_id] = alert_id
            self._holders[alert_id] = ("clock", device_id)
            self._dirty.add(("clock", device_id))
            out.alerts.append(
                Alert(
                    alert_id=alert_id,
                    kind=AlertKind.TECHNICAL,
                    priority=priority_of(EventType.CLOCK_SKEW) or 4,
                    reason=(
                        f"device {device_id} clock is {ahead:.0f} s ahead of the gateway; "
                        "its messages are timed by the gateway until it is corrected"
                    ),
                    ts=received_at,
                    site_id=site_id,
                    resident_id=resident_id,
                    device_id=device_id,
                    event_type=EventType.CLOCK_SKEW,
                    detail={"ahead_s": int(ahead), "device_ts": device_ts.isoformat()},
                )
            )
        return False, out

    # ------------------------------------------------------------------ persistence

    def snapshot(self) -> dict[str, Any]:
        """All state as one JSON-able dict (the rows of :meth:`rows`, by section)."""
        data: dict[str, Any] = {"version": 1}
        data.update({name: {} for name in SECTIONS.values()})
        for section, key, value in self.rows():
            data[SECTIONS[section]][key] = value
        data["skewed"] = {k: v["alert_id"] for k, v in data["skewed"].items()}
        return data

    def rows(self) -> Iterator[tuple[str, str, dict[str, Any]]]:
        """Every row of the state: ``(section, key, JSON-able value)``."""
        for section, table in self._tables().items():
            for key in table:
                value = self._row(section, key)
                assert value is not None
                yield section, key, value

    def take_changes(self) -> dict[tuple[str, str], dict[str, Any] | None]:
        """The rows changed since the last call: ``(section, key)`` -> the row as
        :meth:`rows` gives it, or ``None`` when the key is gone."""
        dirty, self._dirty = self._dirty, set()
        return {sk: self._row(*sk) for sk in dirty}

    def _tables(self) -> dict[str, dict[str, Any]]:
        return {
            "device": self._devices,
            "activity": self._activity,
            "news2": self._news2,
            "spo2": self._spo2,
            "clock": self._skewed,
        }

    def _row(self, section: str, key: str) -> dict[str, Any] | None:
        found = self._tables()[section].get(key)
        if found is None:
            return None
        if isinstance(found, _Device):
            return {
                "interval_s": found.interval_s,
                "last_seen": _iso(found.last_seen),
                "site_id": found.site_id,
                "resident_id": found.resident_id,
                "alert_id": found.alert_id,
            }
        if isinstance(found, _Activity):
            return {
                "watching_since": _iso(found.watching_since),
                "last": _iso(found.last),
                "site_id": found.site_id,
                "checked": dict(found.checked),
                "alert_id": found.alert_id,
            }
        if isinstance(found, _News2):
            return {
                "history": [[w.isoformat(), t] for w, t in found.history],
                "last_ts": _iso(found.last_ts),
                "last_risk": found.last_risk,
                "last_total": found.last_total,
                "due_at": _iso(found.due_at),
                "due_alert_id": found.due_alert_id,
                "site_id": found.site_id,
            }
        if isinstance(found, _Spo2):
            return {
                "low_since": _iso(found.low_since),
                "alert_id": found.alert_id,
                "site_id": found.site_id,
            }
        return {"alert_id": found}  # clock: the open clock-fault alert id

    @classmethod
    def from_rows(
        cls, rows: Iterable[tuple[str, str, dict[str, Any]]], config: RulesConfig | None = None
    ) -> TemporalRules:
        """Rules rebuilt from :meth:`rows` output (unknown sections are ignored)."""
        data: dict[str, Any] = {"version": 1}
        data.update({name: {} for name in SECTIONS.values()})
        for section, key, value in rows:
            table = SECTIONS.get(section)
            if table is not None:
                data[table][key] = value["alert_id"] if section == "clock" else value
        return cls.from_snapshot(data, config)

    @classmethod
    def from_snapshot(
        cls, data: dict[str, Any], config: RulesConfig | None = None
    ) -> TemporalRules:
        if data.get("version") != 1:
            raise ValueError(
                f"temporal state: unsupported snapshot version {data.get('version')!r}"
            )
        rules = cls(config)
        for k, d in data["devices"].items():
            rules._devices[k] = _Device(
                d["interval_s"],
                datetime.fromisoformat(d["last_seen"]),
                d["site_id"],
                d["resident_id"],
                d["alert_id"],
            )
        for k, a in data["activity"].items():
            rules._activity[k] = _Activity(
                datetime.fromisoformat(a["watching_since"]),
                _dt(a["last"]),
                a["site_id"],
                dict(a["checked"]),
                a["alert_id"],
            )
        for k, n in data["news2"].items():
            rules._news2[k] = _News2(
                [(datetime.fromisoformat(w), int(t)) for w, t in n["history"]],
                _dt(n["last_ts"]),
                n["last_risk"],
                n["last_total"],
                _dt(n["due_at"]),
                n["due_alert_id"],
                n["site_id"],
            )
        for k, s in data["spo2"].items():
            rules._spo2[k] = _Spo2(_dt(s["low_since"]), s["alert_id"], s["site_id"])
        rules._skewed = dict(data.get("skewed", {}))
        rules._index()
        rules._hb_due = [(rules._deadline(d), k) for k, d in rules._devices.items()]
        heapq.heapify(rules._hb_due)
        return rules

    def _index(self) -> None:
        """Rebuild :attr:`_holders` from the rules' state (after a restore)."""
        held: dict[str, tuple[str, str]] = {}
        for k, d in self._devices.items():
            if d.alert_id:
                held[d.alert_id] = ("device", k)
        for k, a in self._activity.items():
            if a.alert_id:
                held[a.alert_id] = ("activity", k)
        for k, n in self._news2.items():
            if n.due_alert_id:
                held[n.due_alert_id] = ("news2", k)
        for k, sp in self._spo2.items():
            if sp.alert_id:
                held[sp.alert_id] = ("spo2", k)
        for k, alert_id in self._skewed.items():
            held[alert_id] = ("clock", k)
        self._holders = held
