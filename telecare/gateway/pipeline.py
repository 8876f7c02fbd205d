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
stops the gateway. Only a storage-unavailable error (``gateway.failures``) propagates to
the source, which then does not acknowledge. Any other exception while decoding or
processing one envelope makes it a *poison message*: it is dead-lettered with the stage
and exception class (``decode failed: RecursionError in ...``), counted in
``poison_<stage>``, and the next message is handled as usual. Every source goes through
this one stage (:meth:`Pipeline.handle`, or :meth:`Pipeline.guarded` for a source that
decodes itself, as serial does).

Proof of life: every decoded message (heartbeat, status, event, reading, observation
set) tells the rules its device was heard, at the gateway's receive time (device clocks
are not trusted for that). Events and observation sets carry the receive time into the
rules, which check the device clock (see ``rules.engine``).

Closing: the pipeline listens to the dispatch service; when a dispatch is resolved or
cancelled, the rules forget every alert it held, so the next press raises a new alert
(a fold into an alarm whose dispatch is already closed is re-run as a new alarm too, in
case the rule state was restored from before the close).

Lanes: the gateway runs a second pipeline, :meth:`Pipeline.lane`, for the alarm lane
(``gateway/ingest/lanes.py``): the same decoder, rules, dispatcher, feed and counters
over the alarm lane's own store path. Alarm-class messages (events, observation sets,
status) that reach this pipeline anyway (an event inside a hub's ``batch``) are handed
to it (:attr:`alarm_lane`), so they are stored and dispatched at once,
never behind a write of telemetry. With :attr:`turns` set (the telemetry pipeline,
:meth:`Pipeline.pace`), each message, group and rules pass takes a turn
(``gateway/turns.py``: while the alarm lane has work in flight, a few telemetry steps
per event-loop iteration; the lane marks its work there) and a long group yields every
couple of milliseconds (``_YIELD_S``), so the alarm lane's steps never wait behind a
thousand telemetry steps.

Storms: the time-driven rules run in chunks of ``tick_chunk`` alerts, most urgent first,
yielding to the event loop between chunks, so a regional outage (100,000 devices
falling silent) never holds up ingest or the other rules.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any

from telecare.devices.model import (
    AlarmEvent,
    Alert,
    AlertKind,
    DeviceMessage,
    DeviceStatus,
    Dispatch,
    DispatchState,
    Heartbeat,
    ObservationSet,
    Phase,
    Reading,
)
from telecare.dispatch import DispatchService
from telecare.gateway.decode import MessageDecoder, Rejected
from telecare.gateway.envelope import Envelope
from telecare.gateway.failures import is_storage_unavailable, poison_reason, where
from telecare.gateway.ingest.deadletter import DeadLetterLimiter, Verdict, flood_alert, sender_key
from telecare.gateway.logging import get_logger
from telecare.gateway.store.base import Store
from telecare.gateway.store.rows import AlertNote, DeadLetter, News2Record, StatusItem
from telecare.gateway.store.tables import event_digest
from telecare.gateway.timebounds import TimeBounds
from telecare.gateway.turns import Turns
from telecare.rules.alarms import (
    ClearedAlarm,
    OpenAlarm,
    alarm_id_for,
    is_technical,
    priority_of,
)
from telecare.rules.clock import Clock
from telecare.rules.engine import EngineResult, RuleEngine
from telecare.rules.news2 import News2Result, News2ValueError, Observation
from telecare.rules.plausibility import check_plausible

__all__ = ["Activity", "ActivityFeed", "Envelope", "Pipeline"]

_CLOSED = frozenset({DispatchState.RESOLVED, DispatchState.CANCELLED})
#: A group of telemetry yields to the event loop after this much work (seconds).
_YIELD_S = 0.002
#: A receiver batch's fold counts and restores are written at most this often (seconds)
#: while batches keep coming (``Pipeline.handle_events``); the receivers' writer writes
#: what is left once it has been idle for ``NOTES_IDLE_S``.
NOTES_EVERY_S = 1.0
NOTES_IDLE_S = 0.2
#: What :meth:`Pipeline._alarm_work` holds without turns: nothing.
_NOT_ALARM: AbstractContextManager[None] = nullcontext()

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
    the pipeline: the console reloads from the store anyway. A *listener* (the console's
    live hub, ``gateway.web.live``) is called synchronously instead: it must not block."""

    def __init__(self) -> None:
        self._subscribers: set[asyncio.Queue[Activity]] = set()
        self._listeners: list[Callable[[Activity], None]] = []

    def listen(self, listener: Callable[[Activity], None]) -> None:
        """Call ``listener`` with every activity, in the publisher's frame (no queue)."""
        self._listeners.append(listener)

    def publish(self, activity: Activity) -> None:
        for listener in self._listeners:
            listener(activity)
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


@dataclass(frozen=True, slots=True)
class _FoldTargets:
    """The open alarms a batch's presses may fold into (``ids``), as the store has them:
    ``states`` holds those whose alert is stored, with their dispatch's state."""

    ids: set[str]
    states: dict[str, str | None]


def _open_alarm_alert(alarm: OpenAlarm, event: AlarmEvent) -> Alert:
    """The alert of an open alarm whose own alert was never stored (its first press's
    time and key; ``event`` is the press that found it)."""
    return Alert(
        alert_id=alarm.alarm_id,
        kind=AlertKind.TECHNICAL if is_technical(alarm.type) else AlertKind.ALARM,
        priority=alarm.priority,
        reason=f"{alarm.type.value.replace('_', ' ')} alarm from device {alarm.device_id}",
        ts=alarm.raised_at,
        site_id=alarm.site_id or event.site_id,
        resident_id=alarm.resident_id or event.resident_id,
        device_id=alarm.device_id,
        event_type=alarm.type,
        source_key=alarm.source_key,
        detail={"count": alarm.count, "recovered": True},
    )


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
        time_bounds: TimeBounds | None = None,
        dead_letter_limit: DeadLetterLimiter | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.topic_prefix = topic_prefix
        self.feed = feed or ActivityFeed()
        self.decoder = MessageDecoder(store, topic_prefix, clock=clock, time_bounds=time_bounds)
        self.engine = engine or RuleEngine(clock=clock)
        self.dispatcher = dispatcher
        self.counters: Counter[str] = Counter()
        self._watched: set[str] = set()
        self._on_dead_letter = on_dead_letter
        #: Alerts raised per chunk of a tick before yielding to the event loop.
        self.tick_chunk = 100
        #: Receiver batches' alert notes not written yet (:meth:`flush_notes`).
        self._notes: dict[str, AlertNote] = {}
        self._notes_due = 0.0
        self._notes_lock = asyncio.Lock()  # flushes commit in order
        dispatcher.on_closed.append(self._dispatch_closed)
        #: Per-sender allowance of dead letters; past it they are shed (counted only).
        self.dead_letter_limit = dead_letter_limit or DeadLetterLimiter()
        #: Called (without awaiting) with each observation set from a device once it is
        #: stored and scored: the tablet's MQTT reply (``gateway.tablet_reply``). Must
        #: not block.
        self.on_scored: list[Callable[[ObservationSet, News2Result, EngineResult], None]] = []
        #: Where alarm-class messages go (:meth:`lane`); ``None``: handled here.
        self.alarm_lane: Pipeline | None = None
        #: Telemetry pacing (see the module docstring); ``None``: no pacing.
        self.turns: Turns | None = None
        #: The alarm lane's: the telemetry's turns, which it holds while it has work in
        #: flight (:meth:`Turns.alarm`), so that telemetry takes turns only then.
        self.overtakes: Turns | None = None

    def lane(self, store: Store) -> Pipeline:
        """A pipeline for another lane: the same decoder, rules, dispatcher, feed,
        counters and dead-letter allowance, writing through ``store`` (its own store
        path). Alarm-class messages this pipeline meets are handed to it from now on."""
        sibling = copy.copy(self)
        sibling.store = store
        sibling.alarm_lane = None
        sibling.turns = None
        sibling.overtakes = self.turns
        sibling._notes = {}
        sibling._notes_lock = asyncio.Lock()
        self.alarm_lane = sibling
        return sibling

    def pace(self, turns: Turns) -> None:
        """Telemetry takes ``turns`` (each message, group and rules pass) while the alarm
        lane (:meth:`lane`) has work in flight, which it marks in ``turns``."""
        self.turns = turns
        if self.alarm_lane is not None:
            self.alarm_lane.overtakes = turns

    # -- entry point -----------------------------------------------------------------
    async def handle(self, env: Envelope) -> None:
        """Decode and process one envelope; return once its content is durable (or it is
        dead-lettered). Raises only when storage is unavailable (do not acknowledge)."""
        readings: list[Reading] = []
        with self._alarm_work(self.overtakes):
            await self._pause()
            await self._handle(env, readings)
            if readings:
                await self.guarded(
                    env, "process", lambda: self.handle_readings(readings, seen_at=env.received_at)
                )

    async def handle_group(self, envs: Sequence[Envelope]) -> None:
        """Process envelopes that need no ordering between them (plain readings, each with
        its own timestamp and idempotency key) together; return once the content of every
        one is durable. Each is decoded, checked and dead-lettered on its own as by
        :meth:`handle`; the readings of all of them are stored in one write and then go
        through the rules. If storage is unavailable the exception propagates and none of
        them may be acknowledged; if the joint write fails otherwise, each envelope's
        readings are handled on their own so that only the poison one is dead-lettered."""
        readings: list[Reading] = []
        spans: list[tuple[Envelope, int, int]] = []
        clock = time.perf_counter
        await self._pause()
        since = clock()
        for env in envs:
            start = len(readings)
            await self._handle(env, readings)
            if len(readings) > start:
                spans.append((env, start, len(readings)))
            if clock() - since > _YIELD_S:  # let the alarm lane in
                await self._pause(always=True)
                since = clock()
        if not readings:
            return
        seen_at = max(e.received_at for e in envs)
        if len(spans) == 1:
            await self.guarded(
                spans[0][0], "process", lambda: self.handle_readings(readings, seen_at=seen_at)
            )
            return
        try:
            await self.handle_readings(readings, seen_at=seen_at)
        except Exception as exc:
            if is_storage_unavailable(exc):
                raise
            log.warning("group_failed_retrying_each", error_type=type(exc).__name__)
            for env, start, end in spans:
                await self.guarded(
                    env,
                    "process",
                    partial(self.handle_readings, readings[start:end], seen_at=env.received_at),
                )

    def _alarm_work(self, turns: Turns | None) -> AbstractContextManager[None]:
        """Alarm work in flight in ``turns`` (telemetry takes them meanwhile): each of the
        lane's messages (``overtakes``); each event on either pipeline (``turns`` on the
        telemetry one: the serial line's events come through it)."""
        return _NOT_ALARM if turns is None else turns.alarm()

    async def _pause(self, *, always: bool = False) -> None:
        """Take a telemetry turn (with :attr:`turns`); else yield if ``always``."""
        if self.turns is not None:
            await self.turns.take()
        elif always:
            await asyncio.sleep(0)

    async def guarded(
        self,
        env: Envelope,
        stage: str,
        work: Callable[[], Awaitable[object]],
        device_id: str | None = None,
    ) -> bool:
        """Run ``work`` for ``env`` (the stage every ingest source goes through); ``True``
        when it completed. ``Rejected`` -> a dead letter with its reason; storage
        unavailable -> propagates (do not acknowledge); any other exception -> ``env`` is a
        poison message (:meth:`poison`). ``False`` when ``env`` was dead-lettered."""
        try:
            await work()
        except Rejected as exc:
            await self.dead_letter(env, exc.reason, exc.device_id or device_id)
            return False
        except Exception as exc:
            if is_storage_unavailable(exc):
                raise
            await self.poison(env, stage, exc, device_id)
            return False
        return True

    async def poison(
        self, env: Envelope, stage: str, exc: BaseException, device_id: str | None = None
    ) -> None:
        """Dead-letter ``env``, whose ``stage`` raised ``exc``, and count it. The reason and
        the log name the exception's class and code location, never its text."""
        self.counters[f"poison_{stage}"] += 1
        device_id = device_id or self.decoder.device_of(env)
        log.error(
            "poison_message",
            stage=stage,
            error_type=type(exc).__name__,
            at=where(exc),
            source=env.source,
            origin=env.origin,
            device_id=device_id,
        )
        await self.dead_letter(env, poison_reason(stage, exc), device_id)

    async def _handle(self, env: Envelope, readings: list[Reading]) -> None:
        """Decode ``env`` and process all it carried except its readings, which are
        appended to ``readings`` for the caller to store and evaluate. Dead-letters
        ``env`` (appending nothing) when it is rejected or poison."""
        self.counters[f"received_{env.source}"] += 1
        # ``guarded`` inlined twice: this is the hot path (a coroutine frame per message
        # is measurable at thousands of messages a second).
        try:
            messages = await self.decoder.decode(env)
        except Rejected as exc:
            await self.dead_letter(env, exc.reason, device_id=exc.device_id)
            return
        except Exception as exc:
            if is_storage_unavailable(exc):
                raise
            await self.poison(env, "decode", exc)
            return
        start = len(readings)
        try:
            watched = self._watched
            heard = {m.device_id for m in messages if self._alive(m, env.received_at)}
            topic = self.decoder.topic_of(env.origin)
            if topic is not None and heard:
                heard.add(topic.device_id)  # a hub forwarding for others is alive too
            for device_id in heard:
                if device_id not in watched:
                    await self._watch(device_id)
                seen = self.engine.device_seen(device_id, env.received_at)
                if seen.cleared:
                    await self.apply(seen)
            for message in messages:
                if isinstance(message, Reading):
                    readings.append(message)
                    continue
                try:
                    await self._message(env, message)
                except Rejected as exc:  # this message only: the rest of a batch goes on
                    await self.dead_letter(env, exc.reason, exc.device_id)
        except Exception as exc:
            if is_storage_unavailable(exc):
                raise
            del readings[start:]
            await self.poison(env, "process", exc)

    async def _message(self, env: Envelope, message: DeviceMessage) -> None:
        lane = self.alarm_lane or self  # alarm-class messages: the alarm lane's store path
        if isinstance(message, AlarmEvent):
            await lane.handle_event(message, received_at=env.received_at)
        elif isinstance(message, Heartbeat):
            await self._check_clock(message.device_id, message.ts, env.received_at)
            await self.store.write_status(
                StatusItem(message.device_id, message.ts, heartbeat=True, battery=message.battery)
            )
            self.counters["heartbeats"] += 1
        elif isinstance(message, DeviceStatus):
            await lane._status(message, replayed=env.retained)
        elif isinstance(message, ObservationSet):
            await lane.handle_observation(
                message, received_at=env.received_at, on_scored=self._scored
            )
        else:
            await self.dead_letter(
                env, f"{type(message).__name__} messages are not handled yet", message.device_id
            )

    def _scored(self, obs: ObservationSet, news: News2Result, result: EngineResult) -> None:
        for listener in self.on_scored:
            listener(obs, news, result)

    def _alive(self, message: DeviceMessage, received_at: datetime) -> bool:
        """Whether a message proves its device alive. Everything does except a status
        that is not a fresh "online" from the device itself: a last will ("offline") is
        published by the broker, and a retained status may be hours old."""
        if not isinstance(message, DeviceStatus):
            return True
        if not message.online or message.ts is None:
            return False
        age = abs((received_at - message.ts).total_seconds())
        return age <= self.engine.config.defaults.late_after_s

    async def _check_clock(self, device_id: str, ts: datetime, received_at: datetime) -> None:
        """A heartbeat's timestamp shows a device clock running ahead (or right again)."""
        device = await self.decoder.registry.device(device_id)
        result = self.engine.check_clock(
            device_id,
            ts,
            received_at,
            site_id=device.site_id if device else None,
            resident_id=device.resident_id if device else None,
        )
        if result.alerts or result.cleared:
            await self.apply(result)

    # -- stages ----------------------------------------------------------------------
    async def handle_readings(
        self, readings: list[Reading], *, seen_at: datetime | None = None
    ) -> None:
        """Store readings and run them through the rules (``seen_at``: when the gateway
        received them, for proof of life; default each reading's own time)."""
        stored = await self.store.write_readings(readings)
        self.counters["readings"] += stored
        self.counters["readings_duplicate"] += len(readings) - stored
        registry = self.decoder.registry
        on_reading = self.engine.on_reading
        clock = time.perf_counter
        await self._pause()
        since = clock()
        for n, reading in enumerate(readings):
            if not n & 255 and clock() - since > _YIELD_S:  # let the alarm lane in
                await self._pause(always=True)
                since = clock()
            rid = reading.resident_id
            if rid is None:
                resident = None
            else:
                hit = registry.cached_resident(rid)
                resident = hit[1] if hit is not None else await registry.resident(rid)
            result = on_reading(reading, resident, seen_at=seen_at)
            if result.alerts or result.cleared or result.folded:  # what apply() acts on
                await self.apply(result)

    async def handle_event(self, event: AlarmEvent, *, received_at: datetime | None = None) -> None:
        """Store an event and act on what the rules make of it (``received_at``: the
        gateway's receive time, to check the device clock; serial lines are timed by the
        gateway already). A redelivery (same idempotency key, same content) completes what
        an earlier attempt left undone; the same key with different content raises
        ``Rejected`` and goes through no rules."""
        event = event.received(received_at)
        with self._alarm_work(self.overtakes or self.turns):
            [new] = await self.store.write_events([event])
            await self._event_stored(event, new, received_at)

    async def handle_events(
        self,
        events: Sequence[AlarmEvent],
        *,
        received_at: datetime | None = None,
        on_stored: Callable[[], None] | None = None,
    ) -> None:
        """Like :meth:`handle_event` for each, the events stored in one write first (an
        IP receiver's concurrent alarms share one commit); rules then run in order; the
        alerts they raise are stored in one more write and submitted. ``on_stored`` is
        called then: what the events carried is durable (the receiver may acknowledge).
        The fold counts and restores the rules note on stored alerts (annotations) are
        kept and written with later batches' in one commit at most every
        ``NOTES_EVERY_S`` (:meth:`flush_notes`: the receivers' writer writes what is left
        when it falls idle); a failure is logged, not raised."""
        with self._alarm_work(self.overtakes or self.turns):
            if received_at is not None:  # a receiver stamps each frame's own time before
                events = [e.received(received_at) for e in events]
            # The fold targets are read while the events are written (PostgreSQL: on
            # another connection; SQLite: queued right behind the write).
            reading = asyncio.ensure_future(self._fold_targets(events))
            try:
                news = await self.store.write_events(events)
            except BaseException:
                reading.cancel()
                await asyncio.gather(reading, return_exceptions=True)
                raise
            targets = await reading
            notes = self._notes
            raised: list[Alert] = []
            try:
                for event, new in zip(events, news, strict=True):
                    await self._event_stored(
                        event, new, received_at, notes=notes, raised=raised, targets=targets
                    )
            except Exception:
                if raised:  # what the events before the failing one raised (the rules know it)
                    await self._raise_alerts(raised)
                raise
            if raised:
                await self._raise_alerts(raised)
            if on_stored is not None:
                on_stored()
            if notes and time.monotonic() >= self._notes_due:
                await self.flush_notes()

    @property
    def notes_pending(self) -> bool:
        """Whether receiver batches' alert notes wait for :meth:`flush_notes`."""
        return bool(self._notes)

    async def flush_notes(self) -> None:
        """Write the receiver batches' pending fold counts and restores (one commit)."""
        self._notes_due = time.monotonic() + NOTES_EVERY_S
        async with self._notes_lock:
            notes = list(self._notes.values())
            self._notes.clear()  # the same dict: a batch in its rules pass adds to it
            if not notes:
                return
            try:
                await self.store.note_alerts(notes)
            except Exception as exc:  # an annotation: the events themselves are stored
                log.warning("alert_notes_failed", alerts=len(notes), error=repr(exc))

    async def _fold_targets(self, events: Sequence[AlarmEvent]) -> _FoldTargets:
        """What the open alarms ``events`` may fold into look like in the store (one
        query for a batch): stored alert or not, the state of its dispatch."""
        book = self.engine.alarms
        ids = {
            a.alarm_id
            for e in events
            if e.phase is Phase.ALARM and (a := book.open_for(e.device_id, e.type)) is not None
        }
        return _FoldTargets(ids, await self._alarm_states(ids))

    async def _alarm_states(self, ids: set[str]) -> dict[str, str | None]:
        if not ids or self.store.degraded:
            # Database away (writes spooled): nothing to read; taken as stored and open.
            return dict.fromkeys(ids)
        return await self.store.alarm_states(ids)

    async def _fold_target(
        self, alarm_id: str, targets: _FoldTargets | None, raised: list[Alert] | None
    ) -> tuple[bool, bool]:
        """``(alert stored, dispatch closed)`` for an open alarm a press folded into."""
        if raised and any(a.alert_id == alarm_id for a in raised):
            return True, False  # raised by this batch: written with its alerts
        if targets is None or alarm_id not in targets.ids:
            targets = _FoldTargets({alarm_id}, await self._alarm_states({alarm_id}))
        if alarm_id not in targets.states:
            return False, False
        state = targets.states[alarm_id]
        return True, state is not None and DispatchState(state) in _CLOSED

    async def _event_stored(
        self,
        event: AlarmEvent,
        new: bool,
        received_at: datetime | None = None,
        *,
        notes: dict[str, AlertNote] | None = None,
        raised: list[Alert] | None = None,
        targets: _FoldTargets | None = None,
    ) -> None:
        self.counters["events"] += 1
        raises = event.phase is Phase.ALARM and priority_of(event.type) is not None
        alert_id = alarm_id_for(event.device_id, event.msg_id)
        if not new:
            stored = await self.store.stored_event_digest(event.device_id, event.msg_id)
            if stored is not None and stored != event_digest(event):
                self.counters["msg_id_reused"] += 1
                raise Rejected(
                    f"msg_id {event.msg_id} of device {event.device_id} was already used for"
                    " an event with different content (a msg_id must be unique per message)",
                    event.device_id,
                )
            self.counters["events_duplicate"] += 1
            if raises and await self.dispatcher.repo.load_for_alert(alert_id) is not None:
                return  # a redelivery of something fully processed
        resident = await self.decoder.registry.resident(event.resident_id)
        result = self.engine.on_event(event, resident, received_at=received_at)
        for folded in result.folded:
            known, closed = await self._fold_target(folded.alarm_id, targets, raised)
            if closed:
                # Folded into an alarm whose dispatch is already over (rule state older
                # than the close): release it and take the press as a new alarm.
                self.engine.close(folded.alarm_id, folded.ts)
                result = self.engine.on_event(event, resident, received_at=received_at)
                break
            if not known and (alarm := self.engine.alarms.get(folded.alarm_id)) is not None:
                # Folded into an open alarm whose alert was never stored (the process
                # died, or the store failed, between the rules and the alert's write,
                # and the rule state outlived it): raise that alarm's alert now.
                self.counters["alerts_recovered"] += 1
                log.warning("alert_recovered", alert_id=alarm.alarm_id, device_id=alarm.device_id)
                result.alerts.append(_open_alarm_alert(alarm, event))
        if not new and raises and not result.alerts and not result.folded:
            # Redelivered after a crash that stored the event but not its alert/dispatch,
            # while the engine already knew the alarm: finish the job (idempotent writes).
            result.alerts.append(self._event_alert(event, alert_id))
        await self.apply(result, notes=notes, raised=raised)

    async def handle_observation(
        self,
        obs: ObservationSet,
        *,
        received_at: datetime | None = None,
        on_scored: Callable[[ObservationSet, News2Result, EngineResult], None] | None = None,
    ) -> News2Result | None:
        """Store an observation set's readings, score it (NEWS2) and raise what the score
        calls for. Returns the result (``complete=False`` names what is missing). With
        ``received_at`` a set dated ahead of it is timed by it, and a stale set is stored
        with its true time but not escalated as current. ``on_scored`` is called once the set
        is stored and scored (a tablet's reply, the care-home page's advice and alerts)."""
        resident = await self.decoder.registry.resident(obs.resident_id)
        if resident is None:  # the id may be anything typed on a tablet: not echoed
            raise Rejected(
                f"observation names a resident that is not provisioned ({len(obs.resident_id)}"
                f"-character id); site {obs.site_id!r}",
                obs.device_id,
            )
        if obs.site_id is not None and resident.site_id != obs.site_id:
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
        readings = obs.readings()
        await self._check_observation_reuse(obs, readings)
        await self.handle_readings(readings)
        source_key = f"{obs.device_id}/{obs.msg_id}"
        try:
            news, result = self.engine.on_observation(
                observation,
                resident,
                site,
                ts=obs.ts,
                source_key=source_key,
                received_at=received_at,
                device_id=obs.device_id,
            )
        except News2ValueError as exc:
            raise Rejected(str(exc), obs.device_id) from None
        self.counters["observations"] += 1
        if news.complete and news.total is not None and news.risk is not None:
            await self.store.write_news2(
                News2Record(
                    resident_id=resident.resident_id,
                    ts=result.rule_ts or obs.ts,
                    total=news.total,
                    risk=news.risk,
                    red_flag=news.red_flag,
                    components=dict(news.components),
                    spo2_scale=news.spo2_scale,
                    observation_id=source_key,
                    consciousness=observation.consciousness,
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
        if on_scored is not None:
            on_scored(obs, news, result)
        return news

    async def _check_observation_reuse(self, obs: ObservationSet, readings: list[Reading]) -> None:
        """``Rejected`` when ``(device_id, msg_id)`` already stored other values: the content
        of an observation set is its readings, stored under that key. Skipped while the
        database is away (writes are spooled; there is nothing to compare with)."""
        if self.store.degraded:
            return
        stored = await self.store.stored_message_readings(obs.device_id, obs.msg_id)
        # A subset is a redelivery of a set whose readings were not all stored yet.
        if stored and not stored <= {(r.metric, r.ts, r.value) for r in readings}:
            self.counters["msg_id_reused"] += 1
            raise Rejected(
                f"msg_id {obs.msg_id} of device {obs.device_id} was already used for an"
                " observation set with different content (a msg_id must be unique per message)",
                obs.device_id,
            )

    async def _watch(self, device_id: str) -> None:
        """First message from a device since start: let the heartbeat rule watch it."""
        device = await self.decoder.registry.device(device_id)
        if device is not None:
            self.engine.watch_device(device, self.clock.now())
            self._watched.add(device_id)

    async def tick(self) -> None:
        """Run the time-driven rules (missed heartbeats, inactivity, observations due) in
        chunks of at most ``tick_chunk`` alerts, yielding to the event loop between
        chunks; every chunk runs the cheap rules first, so a heartbeat storm never
        holds up an inactivity or observations-due alert."""
        now = self.clock.now()
        while True:
            result = self.engine.tick(now, max_alerts=self.tick_chunk)
            await self.apply(result)
            if len(result.alerts) < self.tick_chunk:
                return
            await asyncio.sleep(0)

    def _dispatch_closed(self, dispatch: Dispatch, alert_ids: Sequence[str]) -> None:
        """A dispatch was resolved or cancelled: release every alert it held."""
        now = self.clock.now()
        for alert_id in alert_ids:
            self.engine.close(alert_id, now)

    async def apply(
        self,
        result: EngineResult,
        *,
        notes: dict[str, AlertNote] | None = None,
        raised: list[Alert] | None = None,
    ) -> None:
        """Act on what the rules decided: raise alerts (most urgent first; given
        ``raised``, collected there for the caller to raise in one go); report folds,
        restores and clears (fold counts and restores are noted on the stored alert, or,
        given ``notes``, collected there for the caller to write in one go)."""
        alerts = sorted(result.alerts, key=lambda a: a.priority)
        if raised is not None:
            raised.extend(alerts)
            alerts = []
        if len(alerts) == 1:
            await self.raise_alert(alerts[0])
        for k in range(0, len(alerts) if len(alerts) > 1 else 0, self.tick_chunk):
            if k:
                await asyncio.sleep(0)  # a storm of alerts never starves ingest
            chunk = alerts[k : k + self.tick_chunk]
            for alert, new in zip(chunk, await self.store.write_alerts(chunk), strict=True):
                if new:
                    self._alert_stored(alert)
            for alert in chunk:
                await self.dispatcher.submit(alert)
        for restored in result.restored:
            self.counters["restored"] += 1
            await self._note(restored, restored_at=self.clock.now(), notes=notes)
            self.feed.publish(
                Activity(
                    "restored",
                    self.clock.now(),
                    f"alarm {restored} restored at the device; stays open for an operator",
                    {"alert_id": restored},
                )
            )
        for attended in result.attended:
            self.feed.publish(
                Activity(
                    "attended",
                    self.clock.now(),
                    f"carer arrived; life-critical alarm {attended} stays open for an operator",
                    {"alert_id": attended},
                )
            )
        for folded in result.folded:
            await self._note(folded.alarm_id, count=folded.count, notes=notes)
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

    async def _note(
        self,
        alert_id: str,
        *,
        count: int | None = None,
        restored_at: datetime | None = None,
        notes: dict[str, AlertNote] | None = None,
    ) -> None:
        if notes is None and alert_id in self._notes:
            notes = self._notes  # behind a receiver batch's note: keep the order
        if notes is not None:
            # The later note of the same alert wins key by key, as successive
            # note_alerts calls would.
            was = notes.get(alert_id)
            notes[alert_id] = AlertNote(
                alert_id,
                count=count if count is not None else (was.count if was else None),
                restored_at=restored_at
                if restored_at is not None
                else (was.restored_at if was else None),
            )
            return
        try:
            await self.store.note_alerts([AlertNote(alert_id, count, restored_at)])
        except Exception as exc:  # an annotation only: the events themselves are stored
            log.warning("alert_note_failed", alert_id=alert_id, error=repr(exc))

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
        [new] = await self.store.write_alerts([alert])
        if new:
            self._alert_stored(alert)
        # The dispatch service opens the dispatch from its storm-proof priority queue; an
        # alert stored but not yet dispatched when the process dies is re-submitted at the
        # next start (``Store.alerts_without_dispatch``).
        await self.dispatcher.submit(alert)

    async def _raise_alerts(self, alerts: list[Alert]) -> None:
        """:meth:`raise_alert` for many (a receiver batch's): one write, then each is
        submitted, most urgent first."""
        presented = self.clock.now().isoformat()
        alerts = [
            a
            if "presented_at" in a.detail
            else dataclasses.replace(a, detail={**a.detail, "presented_at": presented})
            for a in sorted(alerts, key=lambda a: a.priority)
        ]
        for alert, new in zip(alerts, await self.store.write_alerts(alerts), strict=True):
            if new:
                self._alert_stored(alert)
        for alert in alerts:
            await self.dispatcher.submit(alert)

    def _alert_stored(self, alert: Alert) -> None:
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

    async def _status(self, status: DeviceStatus, *, replayed: bool = False) -> None:
        """Store a device's online/offline. A live status without a time of its own (a
        last will the broker publishes as the device drops) is timed on arrival. A
        retained one the broker *replays* at (re)subscribe without a time was sent at
        some unknown moment, already recorded if the gateway was running then: it
        changes the stored state only if it differs, never re-times it (an old "offline"
        must not look fresh, an old "online" must not move "last heard";
        docs/protocol.md)."""
        unchanged = replayed and status.ts is None
        if unchanged and await self.store.device_online(status.device_id) == status.online:
            return
        at = status.ts or self.clock.now()
        await self.store.write_status(StatusItem(status.device_id, at, status.online))
        self.feed.publish(
            Activity(
                "status",
                at,
                f"device {status.device_id} {'online' if status.online else 'OFFLINE'}"
                + (" (retained status: time unknown)" if replayed and status.ts is None else ""),
                {"device_id": status.device_id, "online": status.online},
            )
        )

    async def dead_letter(self, env: Envelope, reason: str, device_id: str | None = None) -> None:
        """Store, count, log and publish a dead letter. Raises only when storage is
        unavailable; a dead letter the store refuses otherwise is logged and counted in
        ``dead_letters_unstored`` (it must not make its message poison in turn). Past a
        sender's allowance (``dead_letter_limit``) the dead letter is shed: counted only,
        and the first of a flood raises one technical alert."""
        key = sender_key(env.source, env.origin, device_id, self.topic_prefix)
        verdict = self.dead_letter_limit.admit(key, self.clock.now().timestamp())
        if verdict is not Verdict.ADMIT:  # a flood: shed, never at another device's expense
            self.counters["dead_letters_shed"] += 1
            if verdict is Verdict.FLOOD_STARTED:
                log.warning("dead_letter_flood", sender=key, device_id=device_id, reason=reason)
                device = await self.decoder.registry.device(device_id) if device_id else None
                await self.raise_alert(flood_alert(key, device, self.clock.now(), reason))
            return
        letter = DeadLetter(env.received_at, env.source, env.origin, reason, env.payload, device_id)
        try:
            await self.store.write_dead_letter(letter)
        except Exception as exc:
            if is_storage_unavailable(exc):
                raise
            self.counters["dead_letters_unstored"] += 1
            log.error(
                "dead_letter_not_stored",
                error_type=type(exc).__name__,
                at=where(exc),
                origin=env.origin,
                device_id=device_id,
            )
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
