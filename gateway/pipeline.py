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
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from devices.codecs import json_v1
from devices.model import (
    AlarmEvent,
    Alert,
    AlertKind,
    Dispatch,
    DispatchState,
    Phase,
    Reading,
)
from gateway.decode import MessageDecoder, Rejected
from gateway.envelope import Envelope
from gateway.logging import get_logger
from gateway.store.base import AuditEntry, DeadLetter, Store
from rules.alarms import priority_of
from rules.clock import Clock

__all__ = ["Activity", "Envelope", "Pipeline", "alert_id_for", "dispatch_id_for"]

log = get_logger("telecare.pipeline")

_NS = uuid.UUID("6f0c35a8-3b4e-4a59-9d55-8a1b0f6c2e11")


def alert_id_for(source_key: str, kind: AlertKind) -> str:
    """Deterministic alert id for what raised it, so redelivery never duplicates."""
    return "al-" + uuid.uuid5(_NS, f"{kind.value}:{source_key}").hex[:20]


def dispatch_id_for(alert_id: str) -> str:
    return "dp-" + uuid.uuid5(_NS, f"dispatch:{alert_id}").hex[:20]


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
    ) -> None:
        self.store = store
        self.clock = clock
        self.topic_prefix = topic_prefix
        self.feed = feed or ActivityFeed()
        self.decoder = MessageDecoder(store, topic_prefix)
        self.counters: Counter[str] = Counter()
        self._on_dead_letter = on_dead_letter

    # -- entry point -----------------------------------------------------------------
    async def handle(self, env: Envelope) -> None:
        """Decode and process one envelope; return once its content is durable."""
        self.counters[f"received_{env.source}"] += 1
        try:
            messages = await self.decoder.decode(env)
        except Rejected as exc:
            await self.dead_letter(env, exc.reason, device_id=exc.device_id)
            return
        readings: list[Reading] = []
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
            else:
                await self.dead_letter(
                    env, f"{type(message).__name__} messages are not handled yet", message.device_id
                )
        if readings:
            await self.handle_readings(readings)

    # -- stages ----------------------------------------------------------------------
    async def handle_readings(self, readings: list[Reading]) -> None:
        stored = await self.store.write_readings(readings)
        self.counters["readings"] += stored
        self.counters["readings_duplicate"] += len(readings) - stored

    async def handle_event(self, event: AlarmEvent) -> None:
        source_key = f"{event.device_id}/{event.msg_id}"
        new = await self.store.write_event(event)
        self.counters["events"] += 1
        priority = priority_of(event.type)
        if event.phase is not Phase.ALARM or priority is None:
            # Restores, cancels and tests are recorded; clearing open dispatches is the
            # dispatch service's job (issue 5).
            return
        alert_id = alert_id_for(source_key, AlertKind.ALARM)
        if not new and await self.store.get_dispatch(dispatch_id_for(alert_id)) is not None:
            self.counters["events_duplicate"] += 1
            return  # redelivery of something fully processed
        alert = Alert(
            alert_id=alert_id,
            kind=AlertKind.ALARM,
            priority=priority,
            reason=f"{event.type.value} alarm from device {event.device_id}",
            ts=event.ts,
            site_id=event.site_id,
            resident_id=event.resident_id,
            device_id=event.device_id,
            event_type=event.type,
            source_key=source_key,
        )
        await self.raise_alert(alert)

    async def raise_alert(self, alert: Alert) -> None:
        """Store an alert and open its dispatch (both idempotent)."""
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
        await self.open_dispatch(alert)

    async def open_dispatch(self, alert: Alert) -> None:
        resident = await self.decoder.registry.resident(alert.resident_id)
        responder_id = resident.responders[0] if resident and resident.responders else None
        now = self.clock.now()
        dispatch = Dispatch(
            dispatch_id=dispatch_id_for(alert.alert_id),
            alert_id=alert.alert_id,
            state=DispatchState.RAISED,
            priority=alert.priority,
            created_at=now,
            updated_at=now,
            site_id=alert.site_id,
            resident_id=alert.resident_id,
            responder_id=responder_id,
        )
        audit = AuditEntry(
            dispatch.dispatch_id,
            now,
            None,
            DispatchState.RAISED,
            "gateway",
            f"raised by alert {alert.alert_id}",
            {"proposed_responder": responder_id},
        )
        if await self.store.create_dispatch(dispatch, audit):
            self.counters["dispatches"] += 1
            log.info(
                "dispatch_raised",
                dispatch_id=dispatch.dispatch_id,
                alert_id=alert.alert_id,
                responder_id=responder_id,
            )
            self.feed.publish(
                Activity(
                    "dispatch",
                    now,
                    f"dispatch {dispatch.dispatch_id} raised; proposed responder "
                    f"{responder_id or 'none: operator must assign'}",
                    {
                        "dispatch_id": dispatch.dispatch_id,
                        "responder_id": responder_id,
                        "resident_id": alert.resident_id,
                        "priority": alert.priority,
                    },
                )
            )

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
