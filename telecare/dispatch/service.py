"""``DispatchService``: the running dispatcher.

It opens a dispatch for an alert (choosing the cascade), applies operator and responder
actions through the pure state machine (:mod:`dispatch.machine`), stores each step
atomically through the repository (compare-and-set on ``version``), fires persisted
timers on the injected clock, and sends notifications.

Storms: identical technical alerts of one area (same event type) share one *group*
dispatch. The intake queue folds those still waiting; the intake worker adds any that
arrive while a group dispatch for their key is open to that dispatch as members instead
of opening another (:meth:`DispatchService.open_or_join`). A member's restore only marks
the member cleared; the group auto-clears when every member has. Members are stored, so
the orphan sweeper never re-submits them.

Closing: when a dispatch is resolved or cancelled, each ``on_closed`` listener is called
with the dispatch and the ids of every alert it held (the rules release their fold
keys, so the next press is a new alert).

Intake: the worker takes what the queue holds (most urgent first), up to ``max_open``
entries, and opens them at once (each open is one transaction; the store's unique alert
id keeps it to one dispatch per alert); group entries of a batch are opened one after
the other, after its single ones, so two never both start a group of one key.

Resource handling: an async context manager whose loops (:mod:`dispatch.loops`) run in the
injected ``runner`` (the gateway's supervisor; a private task group by default): the timer
loop ``dispatch-timers``, the intake worker ``dispatch-intake`` (draining the
storm-proof :class:`~dispatch.storm.AlarmQueue`) and ``notify_workers`` notification
workers ``dispatch-notify-<n>``. Leaving it cancels and awaits them; timers are rows in
the store, so a new service on the same store picks them up where this one stopped. The
timer loop sleeps until the earliest deadline (at most ``poll_s``); it is woken only by
a new timer due before that, so opening a dispatch costs it no query.

Error handling: actions raise :class:`~dispatch.errors.IllegalTransition`,
:class:`~dispatch.errors.StaleDispatch` (only when the caller passed
``expected_version``) or :class:`~dispatch.errors.UnknownDispatch`. Without
``expected_version`` a lost compare-and-set is retried on the reloaded dispatch, where
the event is usually no longer legal. A failed round of the timer loop (the store away)
is retried by the runner (within ``retry_s``, logged); the intake worker logs a failed
open and goes on (the alert is stored: the orphan sweep re-submits it); a notification
failure only produces a ``failed`` receipt. Anything else escaping a loop is a bug: the
runner ends the loop loudly (in the gateway, the process).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from types import TracebackType
from typing import Final, Self

import structlog

from telecare.devices.model import Alert, Dispatch, DispatchState, ResponderKind
from telecare.dispatch.attend import AttendConfig, Plan, plan_of, presented_at, stamp
from telecare.dispatch.cascades import CascadeConfig, Route, resolve_cascade
from telecare.dispatch.errors import IllegalTransition, StaleDispatch, UnknownDispatch
from telecare.dispatch.loops import LoopSpec, Runner, TaskLoops, any_error
from telecare.dispatch.machine import (
    AdvanceCascade,
    ClearTimers,
    Event,
    EventKind,
    NotifyResponder,
    NotifySupervisors,
    SetTimer,
    Step,
    TimerPolicy,
    open_dispatch,
    transition,
)
from telecare.dispatch.notify import Notifier
from telecare.dispatch.records import AuditRecord, CascadeEntry, Timer, TimerKind
from telecare.dispatch.repository import DispatchRepository, Registry
from telecare.dispatch.responders import ResponderDirectory
from telecare.dispatch.storm import AlarmQueue, Intake, group_key_text
from telecare.rules.clock import Clock

__all__ = ["DispatchService"]

log = structlog.get_logger(__name__)

_CAS_RETRIES: Final = 5
#: Default step timeout (s) when an operator contacts someone outside the cascade.
_DEFAULT_STEP_S: Final = 300
_Note = tuple[Dispatch, NotifyResponder | NotifySupervisors]
#: States in which a responder is contacted or on the way (kept when re-routing).
_ENGAGED: Final = frozenset(
    {
        DispatchState.RESPONDER_CONTACTED,
        DispatchState.ACCEPTED,
        DispatchState.EN_ROUTE,
        DispatchState.ON_SCENE,
    }
)
#: States in which a dispatch is over.
_CLOSED: Final = frozenset({DispatchState.RESOLVED, DispatchState.CANCELLED})
#: Told of a dispatch that was resolved or cancelled, with every alert id it held.
ClosedListener = Callable[[Dispatch, Sequence[str]], None]


class DispatchService:
    def __init__(
        self,
        repo: DispatchRepository,
        registry: Registry,
        clock: Clock,
        *,
        cascades: CascadeConfig | None = None,
        directory: ResponderDirectory | None = None,
        notifier: Notifier | None = None,
        policy: TimerPolicy = TimerPolicy(),
        attend: AttendConfig | None = None,
        intake: AlarmQueue | None = None,
        poll_s: float = 5.0,
        retry_s: float = 5.0,
        notify_workers: int = 4,
        max_open: int = 3,
        on_change: Callable[[Dispatch, str, str], None] | None = None,
        runner: Runner | None = None,
    ) -> None:
        self.repo = repo
        #: Told of every stored change ``(dispatch, actor, reason)`` (live console, demo).
        self.on_change = on_change
        self.registry = registry
        self.clock = clock
        self.cascades = cascades or CascadeConfig()
        self.directory = directory or (notifier.directory if notifier else ResponderDirectory())
        self.notifier = notifier
        self.policy = policy
        #: Attend targets per route and site (the not-on-scene timer; the report's target).
        self.attend = attend or AttendConfig()
        self.intake = intake or AlarmQueue()
        self.poll_s = poll_s  # re-check the store this often (other gateways' timers)
        self.retry_s = retry_s
        self._notify_workers = notify_workers
        #: Intake entries opened at once (each holds a store connection meanwhile).
        self.max_open = max_open
        self._runner: Runner = runner or TaskLoops()
        #: The deadline the timer loop sleeps until; ``None`` while it is not asleep.
        self._sleeping_until: datetime | None = None
        #: Set by the timer loop's firing step, taken by its sleeping step.
        self._timer_next: datetime | None = None
        # Bounded: 1000 pending notifications; beyond that a failed receipt is recorded.
        self._notes: asyncio.Queue[_Note] = asyncio.Queue(maxsize=1000)
        self._wake = asyncio.Event()
        self._running = False
        #: Called for each dispatch that is resolved or cancelled (see the docstring).
        self.on_closed: list[ClosedListener] = []

    # -- lifecycle ---------------------------------------------------------------------
    async def __aenter__(self) -> Self:
        loops = [
            LoopSpec("dispatch-timers", self._timer_round, any_error, self.retry_s),
            LoopSpec("dispatch-intake", self._intake_round),
        ]
        loops += [
            LoopSpec(f"dispatch-notify-{n}", self._notify_one)
            for n in range(self._notify_workers if self.notifier else 0)
        ]
        await self._runner.start(*loops)
        self._running = True
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._running:
            self._running = False
            await self._runner.stop()

    # -- opening -----------------------------------------------------------------------
    async def submit(self, alert: Alert) -> None:
        """Queue an alert for dispatch (priority order, technical storms folded).
        Waits while the intake queue is full. Needs the service to be running."""
        await self.intake.put(alert, await self._area(alert.site_id))

    async def open_or_join(self, entry: Intake) -> Dispatch:
        """Open a dispatch for an intake entry; a technical group joins the open group
        dispatch of its key (event type and area) when there is one."""
        if entry.group_key is None:
            return await self.open(entry.first, grouped=entry.alerts[1:])
        key = group_key_text(entry.group_key)
        group = await self.repo.open_group(key)
        if group is None:
            return await self.open(entry.first, grouped=entry.alerts[1:], group_key=key)
        added = await self.repo.add_members(group.dispatch_id, [a.alert_id for a in entry.alerts])
        if added:
            log.info("dispatch_group_joined", dispatch_id=group.dispatch_id, added=added)
            if self.on_change is not None:
                self.on_change(group, "system", f"{added} more grouped alert(s) joined")
        return group

    async def open(
        self,
        alert: Alert,
        *,
        grouped: Sequence[Alert] = (),
        group_key: str | None = None,
        actor: str = "system",
    ) -> Dispatch:
        """Open (or return the existing) dispatch for ``alert``. The alert must be stored.

        ``grouped`` are further identical technical alerts folded into this dispatch;
        ``group_key`` makes it a group dispatch that later alerts of that key join;
        ``actor`` is who asked for it (a person's request, e.g. a teletriage call).

        One transaction in the common case: the store refuses the insert when the alert
        already has a dispatch (its own, or a group's it is a member of), and only then
        is that dispatch read and returned.
        """
        now = self.clock.now()
        route = self.cascades.route_for(alert)
        area, cascade = await self._resolve(route, alert.site_id, alert.resident_id, now)
        step = open_dispatch(
            f"d-{uuid.uuid4().hex[:20]}",
            alert.alert_id,
            alert.priority,
            now,
            site_id=alert.site_id,
            resident_id=alert.resident_id,
            first_responder=cascade[0].responder_id if cascade else None,
            actor=actor,
            reason=alert.reason,
            policy=self.policy,
        )
        detail = step.audit.detail
        detail.update(route=route.value, cascade=[e.responder_id for e in cascade], area=area)
        if isinstance(alert.detail.get("presented_at"), str):
            detail["presented_at"] = alert.detail["presented_at"]  # answer time starts here
        target = self.attend.target_for(route, alert.site_id)
        detail.update(stamp(route, target, presented_at(detail, now)))
        if grouped:
            detail.update(
                grouped=len(grouped) + 1, grouped_alerts=[a.alert_id for a in grouped][:50]
            )
        timers = [e.timer for e in step.effects if isinstance(e, SetTimer)]
        members = [alert.alert_id, *(a.alert_id for a in grouped)] if group_key else []
        if group_key:
            detail.update(group_key=group_key)
        created = await self.repo.create(
            step.dispatch, step.audit, cascade, timers, group_key=group_key, members=members
        )
        if not created:
            found = await self.repo.load_for_alert(alert.alert_id)
            if found is None:  # pragma: no cover - the unique alert_id guarantees it
                raise RuntimeError(f"dispatch for alert {alert.alert_id} vanished")
            return found
        log.info("dispatch_opened", dispatch_id=step.dispatch.dispatch_id, route=route.value)
        if self.on_change is not None:
            self.on_change(step.dispatch, step.audit.actor, f"route {route.value}")
        for timer in timers:
            self._timer_set(timer.due_at)
        return step.dispatch

    async def cascade_for(
        self, route: Route, site_id: str | None, resident_id: str | None
    ) -> list[CascadeEntry]:
        """The cascade a dispatch of ``route`` for this resident (or site) would walk if
        it opened now: the resident's own responders and the area's on-call ones,
        resolved exactly as :meth:`open` does (for the console's resident page; an open
        dispatch's own cascade is ``repo.cascade``)."""
        return (await self._resolve(route, site_id, resident_id, self.clock.now()))[1]

    async def _resolve(
        self, route: Route, site_id: str | None, resident_id: str | None, at: datetime
    ) -> tuple[str, list[CascadeEntry]]:
        """The site's area and the resolved cascade of ``route`` at ``at``."""
        resident = await self.registry.get_resident(resident_id) if resident_id else None
        area = await self._area(site_id)
        cascade = resolve_cascade(
            self.cascades.templates_for(route, site_id, resident_id),
            resident=resident,
            area=area,
            directory=self.directory,
            at=at,
            max_steps=self.cascades.max_steps,
        )
        return area, cascade

    async def _area(self, site_id: str | None) -> str:
        """The site's response area as the registry has it now: never kept here, so a site
        an installer moved to another area is dispatched in its new area (the gateway's
        registry answers from a warm cache invalidated on change)."""
        site = await self.registry.get_site(site_id) if site_id is not None else None
        return site.area if site else "default"

    # -- actions -----------------------------------------------------------------------
    async def acknowledge(
        self, dispatch_id: str, actor: str, reason: str = "", *, expected_version: int | None = None
    ) -> Dispatch:
        return await self.apply(
            dispatch_id, Event(EventKind.ACKNOWLEDGE), actor, reason, expected_version
        )

    async def contact(
        self,
        dispatch_id: str,
        actor: str,
        responder_id: str | None = None,
        reason: str = "",
        *,
        timeout_s: int | None = None,
        expected_version: int | None = None,
    ) -> Dispatch:
        """Contact ``responder_id``, or by default the responder the cascade proposes."""
        d = await self._load(dispatch_id)
        cascade = await self.repo.cascade(dispatch_id)
        step, who = d.cascade_step, responder_id or d.responder_id
        if who is None:
            raise IllegalTransition(
                dispatch_id,
                d.state.value,
                "contact",
                "nobody left in the cascade; name a responder",
            )
        for entry in cascade:
            if entry.responder_id == who:
                step, timeout_s = entry.position, timeout_s or entry.timeout_s
                break
        event = Event(EventKind.CONTACT, who, step, timeout_s or _DEFAULT_STEP_S)
        return await self.apply(
            dispatch_id, event, actor, reason or "please attend", expected_version
        )

    async def accept(self, dispatch_id: str, responder_id: str, reason: str = "") -> Dispatch:
        return await self.apply(
            dispatch_id, Event(EventKind.ACCEPT, responder_id), responder_id, reason
        )

    async def handed_to_999(
        self, dispatch_id: str, actor: str, reference: str, reason: str = ""
    ) -> Dispatch:
        """The operator ``actor`` phoned 999 and the ambulance service took the call: the
        contacted ambulance accepts, and the audit row records the handover with the
        ambulance service's ``reference`` (what the emergency route's report measures).
        Raises :class:`IllegalTransition` unless an ambulance is the responder contacted."""
        reference = reference.strip()
        if not reference or len(reference) > 64 or not reference.isprintable():
            raise ValueError("reference: the ambulance service's reference, 1-64 characters")
        d = await self._load(dispatch_id)
        profile = self.directory.get(d.responder_id) if d.responder_id else None
        if profile is None or profile.responder.kind is not ResponderKind.AMBULANCE:
            raise IllegalTransition(
                dispatch_id, d.state.value, "hand over to 999", "contact the ambulance first"
            )
        event = Event(EventKind.ACCEPT, d.responder_id, reference=reference)
        return await self.apply(dispatch_id, event, actor, reason or "handed to 999")

    async def decline(self, dispatch_id: str, responder_id: str, reason: str = "") -> Dispatch:
        return await self.apply(
            dispatch_id, Event(EventKind.DECLINE, responder_id), responder_id, reason
        )

    async def no_answer(self, dispatch_id: str, actor: str, reason: str = "") -> Dispatch:
        d = await self._load(dispatch_id)
        return await self.apply(
            dispatch_id, Event(EventKind.NO_ANSWER, d.responder_id), actor, reason
        )

    async def en_route(self, dispatch_id: str, responder_id: str, reason: str = "") -> Dispatch:
        return await self.apply(
            dispatch_id, Event(EventKind.EN_ROUTE, responder_id), responder_id, reason
        )

    async def on_scene(self, dispatch_id: str, responder_id: str, reason: str = "") -> Dispatch:
        return await self.apply(
            dispatch_id, Event(EventKind.ON_SCENE, responder_id), responder_id, reason
        )

    async def resolve(
        self, dispatch_id: str, actor: str, outcome: str, reason: str = ""
    ) -> Dispatch:
        return await self.apply(
            dispatch_id, Event(EventKind.RESOLVE, outcome=outcome), actor, reason
        )

    async def escalate(self, dispatch_id: str, actor: str, reason: str = "") -> Dispatch:
        return await self.apply(
            dispatch_id, Event(EventKind.ESCALATE), actor, reason or "escalated"
        )

    async def cancel(
        self, dispatch_id: str, actor: str, reason: str = "", *, expected_version: int | None = None
    ) -> Dispatch:
        return await self.apply(
            dispatch_id, Event(EventKind.CANCEL), actor, reason, expected_version
        )

    async def auto_clear(
        self, dispatch_id: str, actor: str, reason: str = "", *, expected_version: int | None = None
    ) -> Dispatch:
        return await self.apply(
            dispatch_id, Event(EventKind.AUTO_CLEAR), actor, reason, expected_version
        )

    async def report_injury(self, dispatch_id: str, actor: str, reason: str = "") -> Dispatch:
        """An operator learnt that the person is injured (e.g. a fall with injury): the
        dispatch moves to the emergency route, 999 first. The cascade is resolved again
        and stored; the audit row names ``actor``. Nobody engaged (raised, acknowledged,
        declined, no answer, escalated): the ambulance becomes the proposed responder.
        A responder already contacted or on the way stays so; the operator contacts the
        ambulance next. Raises :class:`IllegalTransition` on a closed dispatch."""
        if not actor.strip():
            raise ValueError("report_injury needs the person reporting it (actor)")
        for _ in range(_CAS_RETRIES):
            d = await self._load(dispatch_id)
            if not d.state.is_open:
                raise IllegalTransition(dispatch_id, d.state.value, "report_injury", "it is closed")
            now = self.clock.now()
            _, cascade = await self._resolve(Route.EMERGENCY, d.site_id, d.resident_id, now)
            engaged = d.state in _ENGAGED
            records = await self.repo.audit(dispatch_id)
            presented = presented_at(records[0].detail, records[0].at) if records else now
            target = self.attend.target_for(Route.EMERGENCY, d.site_id)
            new = replace(
                d,
                updated_at=now,
                version=d.version + 1,
                responder_id=d.responder_id
                if engaged
                else (cascade[0].responder_id if cascade else None),
                cascade_step=d.cascade_step if engaged else 0,
            )
            audit = AuditRecord(
                dispatch_id,
                now,
                d.state,
                d.state,
                actor,
                reason or "injury reported",
                {
                    "event": "injury_reported",
                    "injury": True,
                    **stamp(Route.EMERGENCY, target, presented),
                    "cascade": [e.responder_id for e in cascade],
                },
            )
            if await self.repo.reroute(d.version, new, audit, cascade):
                log.info("dispatch_rerouted", dispatch_id=dispatch_id, route="emergency")
                if self.on_change is not None:
                    self.on_change(new, actor, "injury reported: route emergency")
                return new
        raise StaleDispatch(dispatch_id, d.version)

    async def add_note(self, dispatch_id: str, actor: str, text: str) -> Dispatch:
        """Append ``actor``'s note to the dispatch's audit trail. No state change, and the
        version stays (a note never makes another operator's action stale); open or
        closed. Raises :class:`UnknownDispatch`."""
        text = text.strip()
        if not text or not actor.strip():
            raise ValueError("a note needs its text and the person adding it (actor)")
        for _ in range(_CAS_RETRIES):
            d = await self._load(dispatch_id)
            now = self.clock.now()
            new = replace(d, updated_at=now)
            audit = AuditRecord(dispatch_id, now, d.state, d.state, actor, text, {"event": "note"})
            if await self.repo.apply(d.version, new, audit, (), ()):
                if self.on_change is not None:
                    self.on_change(new, actor, "note added")
                return new
        raise StaleDispatch(dispatch_id, d.version)

    async def on_restore(self, alert_id: str, actor: str = "device") -> Dispatch | None:
        """A restore for ``alert_id``'s alarm: auto-clear while still unacknowledged.
        ``None`` when there is no dispatch or an operator already owns it. A member of a
        group dispatch is marked cleared; the group auto-clears when all members have."""
        return await self._by_alert(alert_id, EventKind.AUTO_CLEAR, actor, "restore received")

    async def on_cancel(self, alert_id: str, actor: str = "device") -> Dispatch | None:
        """A cancel/reset from the alarm unit: cancel while still unacknowledged."""
        return await self._by_alert(alert_id, EventKind.CANCEL, actor, "cancel/reset pressed")

    async def _by_alert(
        self, alert_id: str, kind: EventKind, actor: str, reason: str
    ) -> Dispatch | None:
        member = await self.repo.clear_member(alert_id, self.clock.now())
        if member is not None:
            dispatch_id, left = member
            if left:
                log.info("dispatch_group_member_cleared", dispatch_id=dispatch_id, left=left)
                return None
            d = await self.repo.load(dispatch_id)
            reason = f"{reason}; every grouped alert cleared"
        else:
            d = await self.repo.load_for_alert(alert_id)
        if d is None:
            return None
        try:
            return await self.apply(d.dispatch_id, Event(kind), actor, reason)
        except IllegalTransition as exc:
            log.info("dispatch_event_ignored", dispatch_id=d.dispatch_id, why=str(exc))
            return None

    async def apply(
        self,
        dispatch_id: str,
        event: Event,
        actor: str,
        reason: str = "",
        expected_version: int | None = None,
    ) -> Dispatch:
        """Apply ``event`` atomically and carry out its effects; see the module docstring."""
        for _ in range(_CAS_RETRIES):
            d = await self._load(dispatch_id)
            if expected_version is not None and d.version != expected_version:
                raise StaleDispatch(dispatch_id, expected_version)
            attend_by = None
            if event.kind is EventKind.ACCEPT:
                plan = plan_of(await self.repo.audit(dispatch_id))
                attend_by = plan.attend_by if plan else None
            now = self.clock.now()
            step = transition(d, event, now, actor, reason, policy=self.policy, attend_by=attend_by)
            if await self._store(d.version, step):
                await self._carry_out(step)
                return step.dispatch
            if expected_version is not None:
                raise StaleDispatch(dispatch_id, expected_version)
        raise StaleDispatch(dispatch_id, d.version)

    async def _load(self, dispatch_id: str) -> Dispatch:
        d = await self.repo.load(dispatch_id)
        if d is None:
            raise UnknownDispatch(dispatch_id)
        return d

    async def _store(self, version: int, step: Step) -> bool:
        sets = [e.timer for e in step.effects if isinstance(e, SetTimer)]
        clears = [k for e in step.effects if isinstance(e, ClearTimers) for k in e.kinds]
        return await self.repo.apply(version, step.dispatch, step.audit, sets, clears)

    async def _carry_out(self, step: Step) -> None:
        d = step.dispatch
        log.info(
            "dispatch_transition",
            dispatch_id=d.dispatch_id,
            from_state=step.audit.from_state,
            to_state=d.state.value,
            actor=step.audit.actor,
        )
        if self.on_change is not None:
            self.on_change(d, step.audit.actor, step.audit.reason)
        if d.state in _CLOSED and step.audit.from_state not in _CLOSED and self.on_closed:
            held = [d.alert_id, *await self.repo.members(d.dispatch_id)]
            for listener in self.on_closed:
                listener(d, list(dict.fromkeys(held)))
        for effect in step.effects:
            if isinstance(effect, SetTimer):
                self._timer_set(effect.timer.due_at)
            elif isinstance(effect, NotifyResponder | NotifySupervisors):
                self._queue_note(d, effect)
            elif isinstance(effect, AdvanceCascade):
                await self._advance(d, effect.after_step)

    async def _advance(self, d: Dispatch, after_step: int) -> None:
        """Contact the next responder in the cascade, or escalate when none is left."""
        nxt = [e for e in await self.repo.cascade(d.dispatch_id) if e.position > after_step]
        try:
            if nxt:
                e = nxt[0]
                event = Event(EventKind.CONTACT, e.responder_id, e.position, e.timeout_s)
                await self.apply(d.dispatch_id, event, "system", "next in cascade", d.version)
            else:
                event = Event(EventKind.ESCALATE)
                await self.apply(d.dispatch_id, event, "system", "cascade exhausted", d.version)
        except (StaleDispatch, IllegalTransition) as exc:
            # An operator acted in between (contacted someone, resolved): theirs stands.
            log.info("cascade_advance_skipped", dispatch_id=d.dispatch_id, why=str(exc))

    def _queue_note(self, d: Dispatch, effect: NotifyResponder | NotifySupervisors) -> None:
        if self.notifier is None:
            return
        try:
            self._notes.put_nowait((d, effect))
        except asyncio.QueueFull:
            log.error("notification_queue_full", dispatch_id=d.dispatch_id)

    # -- timers ------------------------------------------------------------------------
    def _timer_event(
        self, t: Timer, d: Dispatch, plan: Plan | None = None
    ) -> tuple[Event, str] | None:
        """What a due timer means now, or ``None`` when it no longer applies."""
        if t.kind is TimerKind.ACK and d.state is DispatchState.RAISED:
            return Event(EventKind.ESCALATE), (
                f"not acknowledged within {self.policy.ack_after_s} s; alerting supervisors"
            )
        if (
            t.kind is TimerKind.STEP
            and d.state is DispatchState.RESPONDER_CONTACTED
            and d.cascade_step == t.step
        ):
            return Event(EventKind.NO_ANSWER, d.responder_id), "no acceptance within step timeout"
        if t.kind is TimerKind.ATTEND and d.state in (
            DispatchState.ACCEPTED,
            DispatchState.EN_ROUTE,
        ):
            if plan is None:
                minutes = self.policy.attend_within_s // 60
                return Event(EventKind.ESCALATE), f"nobody on scene within {minutes} min"
            return Event(EventKind.ESCALATE), (
                f"nobody on scene within {plan.target.escalate_min} min"
                f" (the {plan.route} route's attend target)"
            )
        return None

    async def fire_due_timers(self) -> int:
        """Fire every timer due at ``clock.now()``; return how many changed a dispatch."""
        fired = 0
        for t in await self.repo.due_timers(self.clock.now()):
            d = await self.repo.load(t.dispatch_id)
            plan = None
            if d is not None and t.kind is TimerKind.ATTEND:
                plan = plan_of(await self.repo.audit(d.dispatch_id))
            meaning = self._timer_event(t, d, plan) if d is not None else None
            if meaning is None or d is None:
                await self.repo.drop_timer(t)
                continue
            event, reason = meaning
            try:
                await self.apply(d.dispatch_id, event, "timer", reason, d.version)
            except (StaleDispatch, IllegalTransition):
                continue  # changed meanwhile; the next pass re-reads it
            fired += 1
        return fired

    def _timer_set(self, due_at: datetime) -> None:
        """A timer was stored: wake the timer loop if it sleeps past ``due_at``."""
        if self._sleeping_until is None or due_at < self._sleeping_until:
            self._wake.set()

    async def _timer_round(self) -> None:
        """Two steps taken in turn: fire due timers and find the next deadline; then sleep
        until it, an earlier new timer or ``poll_s`` (other gateways' timers). Separate
        steps so that the runner, which checks for a cancellation after every step, ends
        the loop before it sleeps when a library swallowed one during the store's work.
        A storage error goes to the runner (and the firing step runs again)."""
        until, self._timer_next = self._timer_next, None
        if until is not None:
            await self._sleep(until)
            return
        self._wake.clear()
        await self.fire_due_timers()
        nxt = await self.repo.next_due()
        until = self.clock.now() + timedelta(seconds=self.poll_s)
        self._timer_next = min(until, nxt) if nxt else until

    async def _sleep(self, until: datetime) -> None:
        self._sleeping_until = until
        sleeper = asyncio.create_task(self.clock.sleep_until(until), name="dispatch-sleep")
        waker = asyncio.create_task(self._wake.wait(), name="dispatch-wake")
        try:
            await asyncio.wait((sleeper, waker), return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._sleeping_until = None
            for task in (sleeper, waker):
                task.cancel()
            await asyncio.gather(sleeper, waker, return_exceptions=True)

    # -- workers -----------------------------------------------------------------------
    async def _intake_round(self) -> None:
        """Open dispatches for what the intake queue holds (see the module docstring)."""
        entries = [await self.intake.get(), *await self.intake.get_ready(self.max_open - 1)]
        single = [e for e in entries if e.group_key is None]
        if len(single) == 1:
            await self._open_logged(single[0])  # the usual case: no task to start
        elif single:
            await asyncio.gather(*(self._open_logged(e) for e in single))
        for entry in entries:
            if entry.group_key is not None:
                await self._open_logged(entry)

    async def _open_logged(self, entry: Intake) -> None:
        try:
            await self.open_or_join(entry)
        except Exception:
            log.exception("dispatch_open_failed", alert_id=entry.first.alert_id)

    async def _notify_one(self) -> None:
        assert self.notifier is not None
        d, effect = await self._notes.get()
        try:
            await self.notifier.notify(d, effect)
        except Exception:
            log.exception("notification_failed", dispatch_id=d.dispatch_id)
        finally:
            self._notes.task_done()

    async def drain_notifications(self) -> None:
        """Wait until every queued notification has been delivered or failed."""
        await self._notes.join()
