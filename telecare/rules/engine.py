"""The rule engine: canonical inputs in, :class:`~devices.model.Alert` s and clears out.

Contract for the gateway pipeline
---------------------------------
Build one engine per process (``RuleEngine(config, clock)``), feed it every decoded
input and act on each :class:`EngineResult`:

=====================================================  ====================================
call                                                   use it for
=====================================================  ====================================
``engine.watch_device(device)``                        each provisioned device at start-up
                                                       and when it changes (heartbeat watch;
                                                       interval 0 = none)
``engine.unwatch_device(device_id)``                   a device removed from the registry
``engine.device_seen(device_id, received_at)``         every message of any kind (heartbeat,
                                                       status, event, reading): proof of life
``engine.on_event(event, resident, received_at=...)``  every :class:`AlarmEvent`
``engine.on_reading(reading, resident)``               every :class:`Reading`
``engine.on_observation(obs, resident, site, ts=...)`` every NEWS2 observation set;
                                                       returns ``(News2Result, EngineResult)``
``engine.on_activity(resident_id, ts)``                motion / presence signals
``engine.close(alert_id)``                             the dispatch layer resolved or closed an
                                                       alert (releases its fold key / rule)
``engine.tick(now)``                                   periodically (e.g. every 10 s)
``engine.take_changes()`` / ``RuleEngine.from_rows``   persist what changed (rows) / rebuild
``engine.snapshot()`` / ``RuleEngine.restore(...)``    the whole state as one dict / rebuild
=====================================================  ====================================

An :class:`EngineResult` holds ``alerts`` to raise (store and dispatch them),
``cleared`` alerts whose condition ended (restore, cancel/reset, carer arrived, device
heard again, ...), ``folded`` repeats counted into an open alarm (update its count; do
not raise a new alert), ``restored`` latching alarms whose device restored but which
stay open, ``attended`` life-critical alarms a carer-arrived left for an operator, and
``advice`` (the site's escalation text for a NEWS2 score).

Device clocks: when the caller passes the gateway's ``received_at``, a device time more
than ``clock_skew_s`` ahead of it is implausible: the rules use ``received_at`` instead
(ordering, fold windows, due timers) and the device gets one technical clock-fault
alert. A device time more than ``late_after_s`` behind is a *late* input: alarms are
raised with their true time and ``detail["late_by_s"]``; an observation set older than
``stale_obs_s`` is scored and stored but never escalated as current (it raises a
"late observation set, take a fresh set" alert at the observations-due priority).

A pendant press (``EventType.PENDANT``, ``Phase.ALARM``) gives exactly one priority-1
``AlertKind.ALARM`` alert; technical events give ``AlertKind.TECHNICAL``. Alert ids
are stable for the same input (a redelivered message does not make a second alert),
and reasons carry ids and measurements only, never names or NHS numbers.

The engine is synchronous and pure apart from the injected clock, which it reads only
when a caller omits ``ts``/``now``. It is not thread-safe: call it from one task.

Resident settings: the :class:`~devices.model.Resident` record passed in is
authoritative for SpO2 scale and baseline consciousness; the rules file supplies the
rest (targets, windows). The observation's own ``spo2_scale`` is ignored (scale 2 is a
prescription, never a per-reading option). When the baseline is ``C`` (chronic
confusion), an observed ``C`` is scored as alert: only *new* confusion scores 3.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from telecare.devices.model import (
    AlarmEvent,
    Alert,
    AlertKind,
    Consciousness,
    Device,
    EventType,
    Metric,
    Phase,
    Reading,
    Resident,
    Site,
)
from telecare.rules.alarms import AlarmBook, ClearedAlarm, OpenAlarm, Outcome, is_technical
from telecare.rules.clock import Clock, SystemClock
from telecare.rules.config import RulesConfig, SiteRules
from telecare.rules.news2 import News2Result, Observation, score
from telecare.rules.plausibility import check_plausible
from telecare.rules.temporal import TemporalOutput, TemporalRules, Trend

__all__ = ["EngineResult", "FoldedAlarm", "RuleEngine"]

_SPO2 = Metric.SPO2  # read for every reading: a module global is cheaper than the enum's

#: Events that show the resident is up and about (for daily-living inactivity).
_ACTIVITY_EVENTS = frozenset(
    {EventType.PENDANT, EventType.DOOR_EXIT, EventType.CANCEL, EventType.MOTION}
)


@dataclass(frozen=True, slots=True)
class FoldedAlarm:
    """A repeat counted into an open alarm: ``count`` events so far."""

    alarm_id: str
    count: int
    ts: datetime


@dataclass(slots=True)
class EngineResult:
    alerts: list[Alert] = field(default_factory=list)
    cleared: list[ClearedAlarm] = field(default_factory=list)
    folded: list[FoldedAlarm] = field(default_factory=list)
    restored: list[str] = field(default_factory=list)
    attended: list[str] = field(default_factory=list)
    advice: str | None = None
    #: The time the rules used for the input (its own, or the receive time when the
    #: device clock was implausible); ``None`` when not checked.
    rule_ts: datetime | None = None

    def _take(self, out: TemporalOutput) -> EngineResult:
        self.alerts.extend(out.alerts)
        self.cleared.extend(out.cleared)
        return self


def _stable_id(prefix: str, *parts: object) -> str:
    digest = hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=10).hexdigest()
    return f"{prefix}-{digest}"


class RuleEngine:
    """Alarm and temporal rule state plus NEWS2 scoring. See the module docstring."""

    def __init__(self, config: RulesConfig | None = None, clock: Clock | None = None) -> None:
        self.config = config or RulesConfig()
        self.clock: Clock = clock or SystemClock()
        self.alarms = AlarmBook(fold_window=timedelta(seconds=self.config.defaults.fold_window_s))
        self.temporal = TemporalRules(self.config)

    # ------------------------------------------------------------------ inputs

    def watch_device(self, device: Device, now: datetime | None = None) -> None:
        """Watch a device's heartbeat (``heartbeat_interval_s``; 0 = it sends none)."""
        self.temporal.watch_device(
            device.device_id,
            device.heartbeat_interval_s,
            now or self.clock.now(),
            site_id=device.site_id,
            resident_id=device.resident_id,
        )

    def unwatch_device(self, device_id: str) -> None:
        """Stop watching a device's heartbeat (it was removed from the registry)."""
        self.temporal.watch_device(device_id, 0, self.clock.now())

    def device_seen(self, device_id: str, received_at: datetime) -> EngineResult:
        """Any message from a device, at the gateway's receive time: proof of life
        (clears its missed-heartbeat alert)."""
        result = EngineResult()
        cleared = self.temporal.seen(device_id, received_at)
        if cleared is not None:
            result.cleared.append(cleared)
        return result

    def check_clock(
        self,
        device_id: str,
        device_ts: datetime,
        received_at: datetime,
        *,
        site_id: str | None = None,
        resident_id: str | None = None,
    ) -> EngineResult:
        """Check a device's clock from a message that carries no alarm (a heartbeat):
        raises or clears its clock-fault alert (see the module docstring)."""
        _, out = self.temporal.clock_check(
            device_id, device_ts, received_at, site_id=site_id, resident_id=resident_id
        )
        return EngineResult()._take(out)

    def on_event(
        self,
        event: AlarmEvent,
        resident: Resident | None = None,
        *,
        received_at: datetime | None = None,
    ) -> EngineResult:
        """Classify one social-alarm event (``received_at``: the gateway's receive time,
        to check the device clock; omitted = the event time is trusted)."""
        result = EngineResult()._take(
            self.temporal.device_seen(event.device_id, received_at or event.ts)
        )
        resident_id = event.resident_id or (resident.resident_id if resident else None)
        site_id = event.site_id or (resident.site_id if resident else None)
        if event.resident_id is None and resident is not None:
            event = dataclasses.replace(event, resident_id=resident_id, site_id=site_id)
        late_by = 0.0
        if received_at is not None:
            rule_ts, late_by, out = self._timing(
                event.device_id, event.ts, received_at, site_id, resident_id
            )
            result._take(out)
            if rule_ts != event.ts:
                event = dataclasses.replace(event, ts=rule_ts)
        if event.phase is Phase.ALARM and event.type in _ACTIVITY_EVENTS and resident_id:
            result._take(self.temporal.activity(resident_id, event.ts, site_id=site_id))

        outcome = self.alarms.apply(event)
        result.attended.extend(a.alarm_id for a in outcome.attended)
        if outcome.outcome is Outcome.RAISED:
            alarm = outcome.alarms[0]
            result.alerts.append(self._alarm_alert(alarm, event, outcome.superseded, late_by))
        elif outcome.outcome is Outcome.FOLDED:
            alarm = outcome.alarms[0]
            result.folded.append(FoldedAlarm(alarm.alarm_id, alarm.count, event.ts))
        elif outcome.outcome is Outcome.RESTORED:
            result.restored.extend(a.alarm_id for a in outcome.alarms)
        elif outcome.outcome in (Outcome.CLEARED, Outcome.CLOSED):
            result.cleared.extend(
                ClearedAlarm(
                    a.alarm_id, outcome.reason, event.ts, closed=outcome.outcome is Outcome.CLOSED
                )
                for a in outcome.alarms
            )
        return result

    def on_reading(
        self,
        reading: Reading,
        resident: Resident | None = None,
        *,
        seen_at: datetime | None = None,
    ) -> EngineResult:
        """One measured value: proof of life for its device (at ``seen_at``, the
        gateway's receive time, else the reading's time); SpO2 feeds the target rule."""
        result = EngineResult()
        cleared = self.temporal.seen(reading.device_id, seen_at or reading.ts)
        if cleared is not None:
            result.cleared.append(cleared)
        if reading.metric is not _SPO2:
            return result
        ts = reading.ts
        if seen_at is not None:
            offset = (seen_at - ts).total_seconds()
            if offset > self.config.defaults.late_after_s:
                return result  # a stored/late value is kept, but it is no live SpO2 signal
            if -offset > self.config.defaults.clock_skew_s:
                ts = seen_at  # a clock running ahead: the rule runs on the receive time
        resident_id = reading.resident_id or (resident.resident_id if resident else None)
        if resident_id is not None:
            settings = self.config.resident(resident_id, resident)
            result._take(
                self.temporal.spo2_reading(
                    resident_id,
                    reading.value,
                    ts,
                    target=settings.spo2_target,
                    sustained_s=settings.spo2_sustained_s,
                    site_id=reading.site_id or settings.site_id,
                )
            )
        return result

    def on_observation(
        self,
        obs: Observation,
        resident: Resident | None = None,
        site: Site | None = None,
        *,
        ts: datetime | None = None,
        resident_id: str | None = None,
        source_key: str | None = None,
        received_at: datetime | None = None,
        device_id: str | None = None,
    ) -> tuple[News2Result, EngineResult]:
        """Score a NEWS2 set for a resident and raise what the score and trend call for.

        Raises :class:`rules.news2.News2ValueError` for an impossible value or an
        impossible combination (:mod:`rules.plausibility`). An incomplete set is never a
        NEWS2 total; it raises an alert only when a parameter present scores 3 (RCP
        chart 4: a red score needs an urgent response), naming what is missing. With
        ``received_at`` the set's time is checked: a set dated ahead is timed by
        ``received_at``; a set older than the site's ``stale_obs_s`` is stale (see the
        module docstring) and never escalated as current.
        """
        check_plausible(obs)
        when = ts or self.clock.now()
        rid = resident.resident_id if resident is not None else resident_id
        settings = self.config.resident(rid, resident)
        pre = EngineResult()
        late_by = 0.0
        if received_at is not None:
            site_for_clock = site.site_id if site else settings.site_id
            when, late_by, out = self._timing(
                device_id or "", when, received_at, site_for_clock, rid
            )
            pre._take(out)
            pre.rule_ts = when
        consciousness = obs.consciousness
        if consciousness == "C" and settings.baseline_consciousness is Consciousness.CONFUSION:
            consciousness = "A"  # chronic confusion is the baseline, not new confusion
        obs = dataclasses.replace(obs, spo2_scale=settings.spo2_scale, consciousness=consciousness)
        news = score(obs)
        result = pre
        site_id = site.site_id if site else settings.site_id
        site_rules = self.config.site(site_id)
        stale = late_by > site_rules.stale_obs_s
        if not news.complete or news.total is None or news.risk is None:
            if news.red_flag and stale:
                result.alerts.append(
                    self._stale_set_alert(news, when, late_by, rid, site_id, source_key)
                )
            elif news.red_flag:
                alert = self._partial_red_alert(news, site_rules, when, site_id, rid, source_key)
                result.advice = alert.detail["advice"]
                result.alerts.append(alert)
            return news, result
        result.advice = site_rules.advice_for(news.total, news.risk)

        trend: Trend | None = None
        if rid is not None:
            trend, out = self.temporal.news2_scored(
                rid, when, news.total, news.risk, site_id=site_id
            )
            result._take(out)
        if stale:
            result.alerts.append(
                self._stale_set_alert(news, when, late_by, rid, site_id, source_key)
            )
            return news, result
        priority = site_rules.news2_priority.get(news.risk)
        trend_note = ""
        if trend is not None and (trend.rising or trend.crossed):
            parts = []
            if trend.rising:
                parts.append(f"rose by {trend.rise} within {site_rules.news2_trend_window_h} h")
            if trend.crossed:
                parts.append(f"up from {trend.previous_risk} risk")
            trend_note = "; " + ", ".join(parts)
        if priority is None and not trend_note:
            return news, result
        kind = AlertKind.NEWS2 if priority is not None else AlertKind.TEMPORAL
        result.alerts.append(
            Alert(
                alert_id=_stable_id("nw", source_key or "", rid, when.isoformat(), news.total),
                kind=kind,
                priority=priority if priority is not None else site_rules.news2_trend_priority,
                reason=f"NEWS2 {news.total} ({news.risk} risk){trend_note}",
                ts=when,
                site_id=site_id,
                resident_id=rid,
                source_key=source_key,
                detail={
                    "total": news.total,
                    "news2": news.total,  # read by dispatch routing (NEWS2 >= 7 -> 999)
                    "risk": news.risk,
                    "red_flag": news.red_flag,
                    "components": dict(news.components),
                    "spo2_scale": news.spo2_scale,
                    "advice": result.advice,
                    "monitoring": news.monitoring,
                    "trend_rise": trend.rise if trend else None,
                    "previous_risk": trend.previous_risk if trend else None,
                },
            )
        )
        return news, result

    def on_activity(
        self, resident_id: str, ts: datetime | None = None, *, site_id: str | None = None
    ) -> EngineResult:
        """A motion or presence signal for a resident."""
        return EngineResult()._take(
            self.temporal.activity(resident_id, ts or self.clock.now(), site_id=site_id)
        )

    def close(self, alert_id: str, ts: datetime | None = None) -> EngineResult:
        """The dispatch layer resolved ``alert_id``: forget it so the rule can fire again."""
        result = EngineResult()
        when = ts or self.clock.now()
        if self.alarms.close(alert_id) is not None or self.temporal.close(alert_id, when):
            result.cleared.append(ClearedAlarm(alert_id, "closed by operator", when))
        return result

    def tick(self, now: datetime | None = None, *, max_alerts: int | None = None) -> EngineResult:
        """Run the time-driven rules (missed heartbeat, inactivity, observations due);
        ``max_alerts`` bounds one call (call again while it returns that many)."""
        return EngineResult()._take(self.temporal.tick(now or self.clock.now(), max_alerts))

    # ------------------------------------------------------------------ state

    def snapshot(self) -> dict[str, Any]:
        """All rule state as plain JSON-able data."""
        return {
            "version": 1,
            "alarms": self.alarms.snapshot(),
            "temporal": self.temporal.snapshot(),
        }

    @classmethod
    def restore(
        cls, data: dict[str, Any], config: RulesConfig | None = None, clock: Clock | None = None
    ) -> RuleEngine:
        """An engine rebuilt from :meth:`snapshot` output."""
        if data.get("version") != 1:
            raise ValueError(f"engine state: unsupported snapshot version {data.get('version')!r}")
        engine = cls(config, clock)
        engine.alarms = AlarmBook.from_snapshot(data["alarms"])
        engine.temporal = TemporalRules.from_snapshot(data["temporal"], engine.config)
        return engine

    def rows(self) -> Iterator[tuple[str, str, dict[str, Any]]]:
        """All rule state as rows ``(section, key, JSON-able value)``: one per open alarm
        (section ``alarm``, by alarm id) and one per temporal key (see
        :data:`rules.temporal.SECTIONS`)."""
        for alarm in self.alarms.open_alarms:
            yield "alarm", alarm.alarm_id, alarm.to_dict()
        yield from self.temporal.rows()

    def take_changes(self) -> dict[tuple[str, str], dict[str, Any] | None]:
        """The rows (as :meth:`rows` gives them) changed since the last call; ``None``
        for a row that is gone. Every input and tick marks what it changes, so this
        costs in proportion to the change, not to the fleet."""
        changes: dict[tuple[str, str], dict[str, Any] | None] = {
            ("alarm", alarm_id): row for alarm_id, row in self.alarms.take_changes().items()
        }
        changes.update(self.temporal.take_changes())
        return changes

    @classmethod
    def from_rows(
        cls,
        rows: Iterable[tuple[str, str, dict[str, Any]]],
        config: RulesConfig | None = None,
        clock: Clock | None = None,
    ) -> RuleEngine:
        """An engine rebuilt from :meth:`rows` output (the fold window is the config's)."""
        engine = cls(config, clock)
        alarms: list[OpenAlarm] = []
        temporal: list[tuple[str, str, dict[str, Any]]] = []
        for section, key, value in rows:
            if section == "alarm":
                alarms.append(OpenAlarm.from_dict(value))
            else:
                temporal.append((section, key, value))
        engine.alarms.load(alarms)
        engine.temporal = TemporalRules.from_rows(temporal, engine.config)
        return engine

    # ------------------------------------------------------------------ helpers

    def _partial_red_alert(
        self,
        news: News2Result,
        site_rules: SiteRules,
        when: datetime,
        site_id: str | None,
        rid: str | None,
        source_key: str | None,
    ) -> Alert:
        """A partial set with a parameter scoring 3: escalated as a red score (chart 4),
        never shown as a NEWS2 total; the reason and detail name what is missing.

        The missing parameters can only add to the score, so the sum of those present is
        a lower bound: when it already reaches 5 or 7 the set escalates as medium or high
        (``news2_at_least``), never less urgently than a complete set would."""
        red = [name for name, sub in news.components.items() if sub == 3]
        at_least = sum(news.components.values())
        band = "high" if at_least >= 7 else "medium" if at_least >= 5 else "low-medium"
        # The loader guarantees these bands alert (NEWS2_PRIORITY_FLOOR); the floor if unset.
        priority = site_rules.news2_priority.get(band) or (1 if band == "high" else 2)
        advice = site_rules.advice[band]
        return Alert(
            alert_id=_stable_id("nw", source_key or "", rid, when.isoformat(), "partial"),
            kind=AlertKind.NEWS2,
            priority=priority,
            reason=(
                f"{', '.join(red)} scored 3 (red score, {band} at least); incomplete set, no "
                f"NEWS2 total (at least {at_least}): missing {', '.join(news.missing)}"
            ),
            ts=when,
            site_id=site_id,
            resident_id=rid,
            source_key=source_key,
            detail={
                "partial": True,
                "red_flag": True,
                "red_parameters": red,
                "missing": list(news.missing),
                "components": dict(news.components),
                "news2_at_least": at_least,  # read by dispatch routing like "news2"
                "risk": band,
                "spo2_scale": news.spo2_scale,
                "advice": advice,
            },
        )

    def _timing(
        self,
        device_id: str,
        device_ts: datetime,
        received_at: datetime,
        site_id: str | None,
        resident_id: str | None,
    ) -> tuple[datetime, float, TemporalOutput]:
        """``(time the rules use, seconds late, clock-fault output)`` for an input."""
        plausible, out = self.temporal.clock_check(
            device_id, device_ts, received_at, site_id=site_id, resident_id=resident_id
        )
        if not plausible:
            return received_at, 0.0, out
        late_by = (received_at - device_ts).total_seconds()
        if late_by > self.config.site(site_id).late_after_s:
            return device_ts, late_by, out
        return device_ts, 0.0, out

    def _stale_set_alert(
        self,
        news: News2Result,
        when: datetime,
        late_by: float,
        rid: str | None,
        site_id: str | None,
        source_key: str | None,
    ) -> Alert:
        site_rules = self.config.site(site_id)
        if news.total is None:
            red = ", ".join(name for name, sub in news.components.items() if sub == 3)
            what = f"partial set with a red score ({red})"
        else:
            what = f"NEWS2 {news.total} ({news.risk} risk)"
        return Alert(
            alert_id=_stable_id("ns", source_key or "", rid, when.isoformat(), news.total),
            kind=AlertKind.TEMPORAL,
            priority=site_rules.obs_due_priority,
            reason=(
                f"late observation set: {what} taken "
                f"{when:%Y-%m-%d %H:%M}Z, arrived {_late_text(late_by)} late; not escalated "
                "as current: take a fresh set"
            ),
            ts=when,
            site_id=site_id,
            resident_id=rid,
            source_key=source_key,
            detail={
                "total": news.total,
                "risk": news.risk,
                "red_flag": news.red_flag,
                "late_by_s": int(late_by),
                "stale": True,
            },
        )

    def _alarm_alert(
        self,
        alarm: OpenAlarm,
        event: AlarmEvent,
        superseded: OpenAlarm | None,
        late_by: float = 0.0,
    ) -> Alert:
        detail: dict[str, Any] = {"count": alarm.count}
        if event.zone:
            detail["zone"] = event.zone
        if event.code is not None:
            detail["contact_id"] = event.code
        if superseded is not None:
            detail["supersedes"] = superseded.alarm_id
        if event.injury:
            detail["injury"] = True  # read by dispatch routing: ambulance first
        reason = f"{alarm.type.value.replace('_', ' ')} alarm from device {alarm.device_id}"
        if late_by:
            detail["late_by_s"] = int(late_by)
            reason += f" at {event.ts:%Y-%m-%d %H:%M:%S}Z (late by {_late_text(late_by)})"
        return Alert(
            alert_id=alarm.alarm_id,
            kind=AlertKind.TECHNICAL if is_technical(alarm.type) else AlertKind.ALARM,
            priority=alarm.priority,
            reason=reason,
            ts=event.ts,
            site_id=event.site_id,
            resident_id=event.resident_id,
            device_id=event.device_id,
            event_type=alarm.type,
            source_key=alarm.source_key,
            detail=detail,
        )


def _late_text(seconds: float) -> str:
    """``"3 d 2 h"``, ``"2 h 5 min"``, ``"7 min"``: how late an input arrived."""
    minutes = int(seconds // 60)
    days, rest = divmod(minutes, 24 * 60)
    hours, mins = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {mins} min"
    return f"{mins} min"
