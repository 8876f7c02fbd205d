"""The one-way pipeline: envelope -> decode -> rules -> store + dispatch -> activity feed.

``Pipeline.handle`` is called by every ingest source (MQTT, serial, HTTP) with one
:class:`Envelope`. It returns only once everything the envelope carried is durably stored
(or spooled), so the source can acknowledge it (MQTT PUBACK, HTTP 2xx) afterwards.

Processing is idempotent end to end: the alert and dispatch ids are derived from the
event's idempotency key ``(device_id, msg_id)``, so a redelivered message (the broker
resends what we had not acknowledged before a crash) completes whatever the first attempt
left undone and stores nothing twice.

Error handling: a ``Malformed`` payload or an unknown device becomes a dead letter (stored,
counted, published on the activity feed) and ``handle`` returns normally: bad input never
stops the gateway. Storage errors propagate to the source, which does not acknowledge.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from devices.codecs import json_v1
from devices.model import (
    AlarmEvent,
    Alert,
    AlertKind,
    ObservationSet,
    Phase,
    Reading,
)
from dispatch import DispatchService
from gateway.decode import MessageDecoder, Rejected
from gateway.envelope import Envelope
from gateway.logging import get_logger
from gateway.store.base import DeadLetter, News2Record, Store
from rules.alarms import ClearedAlarm, alarm_id_for, is_technical, priority_of
from rules.clock import Clock
from rules.engine import EngineResult, RuleEngine
from rules.news2 import News2Result, News2ValueError, Observation
from rules.plausibility import check_plausible

__all__ = ["Activity", "ActivityFeed", "Envelope", "Pipeline"]

log = get_logger("telecare.pipeline")


@dataclass(frozen=True, slots=True)
class Activity:
    """One line of the live activity feed (console, demo output). No personal data."""

    kind: str  # "alert", "dispatch", "dead_letter", "status", "readings"
    ts: datetime
    summary: str
    data: dict[str, Any] = field(default_factory=dict)


class ActivityFeed:
    """Fan-out of :class:`Activity` to live subscribers. Each subscriber has a bounded
    queue (256); a subscriber that falls behind loses its oldest lines, never blocks
    the pipeline: the console reloads from the store anyway."""

    def __init__(self) -> None:
        self._subscribers: set[asyncio.Queue[Activity]] = set()

    def publish(self, activity: Activity) -> None:
        for q in self._subscribers:
            if q.full():
                q.get_nowait()
            q.put_nowait(activity)

    def subscribe(self, size: int = 256) -> asyncio.Queue[Activity]:
        q: asyncio.Queue[Activity] = asyncio.Queue(maxsize=size)
        self._subscribers.add(q)
        return q

    def unsubscribe(self, q: asyncio.Queue[Activity]) -> None:
        self._subscribers.discard(q)


class Pipeline:
    def __init__(
        self,
        store: Store,
        clock: Clock,
        *,
        topic_prefix: str = "telecare/v1",
        feed: ActivityFeed | None = None,
        on_dead_letter: Callable[[DeadLetter], Awaitable[None]] | None = None,
        engine: RuleEngine | None = None,
        dispatcher: DispatchService,
    ) -> None:
        self.store = store
        self.clock = clock
        self.topic_prefix = topic_prefix
        self.feed = feed or ActivityFeed()
        self.decoder = MessageDecoder(store, topic_prefix)
        self.engine = engine or RuleEngine(clock=clock)
        self.dispatcher = dispatcher
        self.counters: Counter[str] = Counter()
        self._watched: set[str] = set()
        self._on_dead_letter = on_dead_letter

    # -- entry point -----------------------------------------------------------------
    async def handle(self, env: Envelope) -> None:
        """Decode and process one envelope; return once its content is durable."""
        readings: list[Reading] = []
        await self._handle(env, readings)
        if readings:
            await self.handle_readings(readings)

    async def handle_group(self, envs: Sequence[Envelope]) -> None:
        """Process envelopes that need no ordering between them (plain readings, each with
        its own timestamp and idempotency key) together; return once the content of every
        one is durable. Each is decoded, checked and dead-lettered on its own as by
        :meth:`handle`; the readings of all of them are stored in one write and then go
        through the rules. If storing fails the exception propagates and none of them
        may be acknowledged."""
        readings: list[Reading] = []
        for env in envs:
            await self._handle(env, readings)
        if readings:
            await self.handle_readings(readings)

    async def _handle(self, env: Envelope, readings: list[Reading]) -> None:
        """Decode ``env`` and process all it carried except its readings, which are
        appended to ``readings`` for the caller to store and evaluate."""
        self.counters[f"received_{env.source}"] += 1
        try:
            messages = await self.decoder.decode(env)
        except Rejected as exc:
            await self.dead_letter(env, exc.reason, device_id=exc.device_id)
            return
        watched = self._watched
        for message in messages:
            if message.device_id not in watched:
                await self._watch(message.device_id)
        for message in messages:
            if isinstance(message, Reading):
                readings.append(message)
            elif isinstance(message, AlarmEvent):
                await self.handle_event(message)
            elif isinstance(message, json_v1.Heartbeat):
                await self.store.set_device_status(
                    message.device_id, at=message.ts, heartbeat=True, battery=message.battery
                )
                self.counters["heartbeats"] += 1
            elif isinstance(message, json_v1.Status):
                await self._status(message)
            elif isinstance(message, ObservationSet):
                try:
                    await self.handle_observation(message)
                except Rejected as exc:
                    await self.dead_letter(env, exc.reason, exc.device_id)
            else:
                await self.dead_letter(
                    env, f"{type(message).__name__} messages are not handled yet", message.device_id
                )

    # -- stages ----------------------------------------------------------------------
    async def handle_readings(self, readings: list[Reading]) -> None:
        stored = await self.store.write_readings(readings)
        self.counters["readings"] += stored
        self.counters["readings_duplicate"] += len(readings) - stored
        registry = self.decoder.registry
        on_reading = self.engine.on_reading
        for reading in readings:
            rid = reading.resident_id
            if rid is None:
                resident = None
            else:
                hit = registry.cached_resident(rid)
                resident = hit[1] if hit is not None else await registry.resident(rid)
            result = on_reading(reading, resident)
            if result.alerts or result.cleared or result.folded:  # what apply() acts on
                await self.apply(result)

    async def handle_event(self, event: AlarmEvent) -> None:
        await self._event_stored(event, await self.store.write_event(event))

    async def handle_events(self, events: Sequence[AlarmEvent]) -> None:
        """Like :meth:`handle_event` for each, the events stored in one write first (an
        IP receiver's concurrent alarms share one commit); rules then run in order."""
        news = await self.store.write_events(events)
        for event, new in zip(events, news, strict=True):
            await self._event_stored(event, new)

    async def _event_stored(self, event: AlarmEvent, new: bool) -> None:
        self.counters["events"] += 1
        raises = event.phase is Phase.ALARM and priority_of(event.type) is not None
        alert_id = alarm_id_for(event.device_id, event.msg_id)
        if not new:
            self.counters["events_duplicate"] += 1
            if raises and await self.dispatcher.repo.load_for_alert(alert_id) is not None:
                return  # a redelivery of something fully processed
        resident = await self.decoder.registry.resident(event.resident_id)
        result = self.engine.on_event(event, resident)
        if not new and raises and not result.alerts and not result.folded:
            # Redelivered after a crash that stored the event but not its alert/dispatch,
            # while the engine already knew the alarm: finish the job (idempotent writes).
            result.alerts.append(self._event_alert(event, alert_id))
        await self.apply(result)

    async def handle_observation(self, obs: ObservationSet) -> News2Result | None:
        """Store an observation set's readings, score it (NEWS2) and raise what the score
        calls for. Returns the result (``complete=False`` names what is missing)."""
        resident = await self.decoder.registry.resident(obs.resident_id)
        if resident is None or (obs.site_id is not None and resident.site_id != obs.site_id):
            raise Rejected(
                f"resident {obs.resident_id!r} is not a resident of site {obs.site_id!r}",
                obs.device_id,
            )
        site = await self.store.get_site(resident.site_id)
        observation = Observation(
            respiration_rate=obs.respiration_rate,
            spo2=obs.spo2,
            on_oxygen=obs.on_oxygen,
            systolic_bp=obs.systolic_bp,
            pulse=obs.pulse,
            consciousness=obs.consciousness.value if obs.consciousness else None,
            temperature=obs.temperature,
        )
        try:
            check_plausible(observation)  # before anything of it is stored as a vital sign
        except News2ValueError as exc:
            raise Rejected(str(exc), obs.device_id) from None
        await self.handle_readings(obs.readings())
        source_key = f"{obs.device_id}/{obs.msg_id}"
        try:
            news, result = self.engine.on_observation(
                observation, resident, site, ts=obs.ts, source_key=source_key
            )
        except News2ValueError as exc:
            raise Rejected(str(exc), obs.device_id) from None
        self.counters["observations"] += 1
        if news.complete and news.total is not None and news.risk is not None:
            await self.store.write_news2(
                News2Record(
                    resident_id=resident.resident_id,
                    ts=obs.ts,
                    total=news.total,
                    risk=news.risk,
                    red_flag=news.red_flag,
                    components=dict(news.components),
                    spo2_scale=news.spo2_scale,
                    observation_id=source_key,
                )
            )
            log.info(
                "news2_scored",
                resident_id=resident.resident_id,
                total=news.total,
                risk=news.risk,
                red_flag=news.red_flag,
            )
            self.feed.publish(
                Activity(
                    "news2",
                    obs.ts,
                    f"NEWS2 {news.total} ({news.risk}) for resident {resident.resident_id}"
                    + (f": {result.advice}" if result.advice else ""),
                    {"resident_id": resident.resident_id, "total": news.total, "risk": news.risk},
                )
            )
        else:
            self.feed.publish(
                Activity(
                    "news2",
                    obs.ts,
                    f"partial observations for resident {resident.resident_id}: "
                    f"missing {', '.join(news.missing)}",
                    {"resident_id": resident.resident_id, "missing": list(news.missing)},
                )
            )
        await self.apply(result)
        return news

    async def _watch(self, device_id: str) -> None:
        """First message from a device since start: let the heartbeat rule watch it."""
        device = await self.decoder.registry.device(device_id)
        if device is not None:
            self.engine.watch_device(device, self.clock.now())
            self._watched.add(device_id)

    async def tick(self) -> None:
        """Run the time-driven rules (missed heartbeats, inactivity, observations due)."""
        await self.apply(self.engine.tick(self.clock.now()))

    async def apply(self, result: EngineResult) -> None:
        """Act on what the rules decided: raise alerts; report folds and clears."""
        for alert in result.alerts:
            await self.raise_alert(alert)
        for folded in result.folded:
            self.counters["folded"] += 1
            self.feed.publish(
                Activity(
                    "folded",
                    folded.ts,
                    f"repeat folded into open alarm {folded.alarm_id} (x{folded.count})",
                    {"alert_id": folded.alarm_id, "count": folded.count},
                )
            )
        for cleared in result.cleared:
            self.counters["cleared"] += 1
            await self.on_cleared(cleared)

    async def on_cleared(self, cleared: ClearedAlarm) -> None:
        """An alarm's condition ended (restore, cancel, device heard again): the dispatch is
        auto-cleared or cancelled if nobody has taken it on yet (an operator who already
        acknowledged it closes it with an outcome)."""
        alert_id = cleared.alarm_id
        log.info("alarm_cleared", alert_id=alert_id, reason=cleared.reason)
        if cleared.closed:
            await self.dispatcher.on_cancel(alert_id)
        else:
            await self.dispatcher.on_restore(alert_id)
        self.feed.publish(
            Activity(
                "cleared",
                cleared.ts,
                f"alarm {alert_id} cleared: {cleared.reason}",
                {"alert_id": alert_id},
            )
        )

    def _event_alert(self, event: AlarmEvent, alert_id: str) -> Alert:
        priority = priority_of(event.type)
        assert priority is not None
        return Alert(
            alert_id=alert_id,
            kind=AlertKind.TECHNICAL if is_technical(event.type) else AlertKind.ALARM,
            priority=priority,
            reason=f"{event.type.value.replace('_', ' ')} alarm from device {event.device_id}",
            ts=event.ts,
            site_id=event.site_id,
            resident_id=event.resident_id,
            device_id=event.device_id,
            event_type=event.type,
            source_key=f"{event.device_id}/{event.msg_id}",
            detail={"injury": True} if event.injury else {},
        )

    async def raise_alert(self, alert: Alert) -> None:
        """Store an alert and open its dispatch (both idempotent).

        The alert carries ``detail["presented_at"]``: when the gateway presented it to
        the monitoring centre (now). Answer times are measured from it, not from when
        the dispatch opened (``dispatch/reports.py``)."""
        if "presented_at" not in alert.detail:
            presented = self.clock.now().isoformat()
            alert = dataclasses.replace(alert, detail={**alert.detail, "presented_at": presented})
        if await self.store.write_alert(alert):
            self.counters["alerts"] += 1
            log.info(
                "alert",
                alert_id=alert.alert_id,
                priority=alert.priority,
                event_type=alert.event_type,
                device_id=alert.device_id,
                site_id=alert.site_id,
                resident_id=alert.resident_id,
            )
            self.feed.publish(
                Activity(
                    "alert",
                    alert.ts,
                    f"P{alert.priority} {alert.reason}",
                    {
                        "alert_id": alert.alert_id,
                        "site_id": alert.site_id,
                        "resident_id": alert.resident_id,
                        "priority": alert.priority,
                    },
                )
            )
        # The dispatch service opens the dispatch from its storm-proof priority queue; an
        # alert stored but not yet dispatched when the process dies is re-submitted at the
        # next start (``Store.alerts_without_dispatch``).
        await self.dispatcher.submit(alert)

    async def _status(self, status: json_v1.Status) -> None:
        at = status.ts or self.clock.now()
        await self.store.set_device_status(status.device_id, online=status.online, at=at)
        self.feed.publish(
            Activity(
                "status",
                at,
                f"device {status.device_id} {'online' if status.online else 'OFFLINE'}",
                {"device_id": status.device_id, "online": status.online},
            )
        )

    async def dead_letter(self, env: Envelope, reason: str, device_id: str | None = None) -> None:
        letter = DeadLetter(env.received_at, env.source, env.origin, reason, env.payload, device_id)
        await self.store.write_dead_letter(letter)
        self.counters["dead_letters"] += 1
        log.warning(
            "dead_letter", source=env.source, origin=env.origin, reason=reason, device_id=device_id
        )
        self.feed.publish(
            Activity(
                "dead_letter",
                env.received_at,
                f"rejected from {env.origin}: {reason}",
                {"device_id": device_id, "reason": reason},
            )
        )
        if self._on_dead_letter is not None:
            await self._on_dead_letter(letter)
