"""``ConsoleService``: what the operator console does beyond the dispatch state machine.

* **Ownership**: the operator who opens an alarm owns that resident's alarms; anyone
  else opening one is told who has it (``Owned``); it can be handed back to the queue.
  Every action checks it, so two operators never work one resident by accident.
* **Actions** go through the web services layer (:meth:`Services.act
  <telecare.gateway.web.services.Services.act>`, the same path as the operator API) with
  the logged-in person as the actor, so every audit row names them.
* **Hold with a timed recall**, **re-check** of an alarm handed to an ambulance, and an
  acknowledged alarm **left without progress** for ``stale_s`` returning to the queue:
  console timers (stored, so they survive a restart) fired by a loop every ``tick_s``.
* **Notices** the operator must acknowledge before closing: a recall, a repeat press,
  a restore or "carer arrived" at the device, an escalation by a timer. They come from
  the live activity feed.
* **Closing** needs an outcome code; the false-alarm flag and a note are stored beside
  it; it is refused while a notice is unacknowledged.

Resource handling: an async context manager running two supervised loops
(:mod:`telecare.gateway.tasks`), ``console-timers`` and ``console-activity``, in the
gateway's supervisor (``Services.supervisor``) or a private one. Leaving it stops them.

Error handling: actions raise :class:`Owned`, :class:`NoticesOpen`,
:class:`~telecare.dispatch.errors.IllegalTransition`, ``StaleDispatch``,
``UnknownDispatch`` or ``ValueError`` (bad input) for the routes to show. A timer round
or a notice that fails because storage is unavailable is retried by the helper with
backoff (a notice is not lost); anything else is logged and skipped (one dispatch gone
must not stop the others' timers). Cancellation always ends a loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import TracebackType
from typing import Final, Self

from telecare.devices.model import Dispatch, DispatchState, EventType, ResponderKind
from telecare.dispatch.errors import IllegalTransition, UnknownDispatch
from telecare.dispatch.machine import OUTCOMES
from telecare.gateway.backoff import Backoff
from telecare.gateway.failures import is_storage_unavailable
from telecare.gateway.logging import get_logger
from telecare.gateway.pipeline import Activity, ActivityFeed
from telecare.gateway.store.accounts import User
from telecare.gateway.store.reports import DispatchFilter
from telecare.gateway.tasks import Loop, Loops
from telecare.gateway.web.console_model import owner_key
from telecare.gateway.web.console_store import Closure, ConsoleStore, Owner, TimerRow
from telecare.gateway.web.fragments import SharedFragment
from telecare.gateway.web.live import LiveEvent, LiveHub
from telecare.gateway.web.services import Act, Services
from telecare.rules.clock import Clock

__all__ = ["ConsoleService", "ConsoleSettings", "NoticesOpen", "Owned"]

log = get_logger("telecare.console")

S = DispatchState
#: States in which an acknowledged alarm is waiting for its operator to progress it.
_IDLE: Final = frozenset({S.ACKNOWLEDGED, S.DECLINED, S.NO_ANSWER})
#: Alarms of a person who may be on the floor: a long wait for them escalates.
_ON_THE_FLOOR: Final = frozenset({EventType.FALL, EventType.POST_FALL_INACTIVITY})


class Owned(Exception):
    """Another operator owns this resident's alarms."""

    def __init__(self, owner: Owner) -> None:
        super().__init__(f"{owner.operator} has this resident's alarms")
        self.owner = owner


class NoticesOpen(Exception):
    """The alarm has notices nobody acknowledged: read them before closing."""

    def __init__(self, count: int) -> None:
        super().__init__(f"acknowledge the {count} open notice(s) before closing")
        self.count = count


@dataclass(frozen=True, slots=True)
class PendingAlert:
    """An alert the activity feed announced whose dispatch is not open yet: shown in the
    queue at once (and rings), so an alarm is on the screen while the dispatch service
    is still opening its dispatch."""

    alert_id: str
    priority: int
    ts: datetime
    summary: str
    site_id: str | None
    resident_id: str | None


#: Alerts kept waiting for their dispatch (a storm's worth; the oldest go first).
PENDING_LIMIT: Final = 1000
#: Event kinds that change the queue (``console.js`` has the same list).
QUEUE_KINDS: Final = frozenset(
    {"alert", "dispatch", "console", "cleared", "restored", "folded", "reset"}
)
#: After a queue change, wait this long for more before pushing the queue (a press is
#: an alert then a dispatch event a moment later: one push for both).
PUSH_DELAY_S: Final = 0.1


@dataclass(frozen=True, slots=True)
class ConsoleSettings:
    """``stale_s``: an acknowledged alarm nobody progressed for this long goes back to
    the queue. ``recheck_s``: how often an alarm handed to an ambulance is re-checked.
    ``floor_escalate_s``: a person on the floor still waiting this long escalates to the
    supervisors. ``tick_s``: how often timers are checked. ``queue_refresh_s``: queue
    pages are pushed the queue at least this often, rendered anew, even when nothing
    happened in this gateway, so alarms another process wrote on the same store (a
    second gateway, the CLI) show without a reload."""

    stale_s: int = 180
    recheck_s: int = 15 * 60
    floor_escalate_s: int = 30 * 60
    tick_s: float = 1.0
    queue_refresh_s: float = 10.0
    #: Activity lines waiting for the worker (notices are advisory: past this, dropped
    #: and counted rather than holding up the publisher).
    queue_size: int = 1024


class ConsoleService:
    def __init__(
        self,
        store: ConsoleStore,
        services: Services,
        hub: LiveHub,
        feed: ActivityFeed,
        clock: Clock,
        settings: ConsoleSettings | None = None,
    ) -> None:
        self.store = store
        self.services = services
        #: Reads only: every action goes through ``services.act``.
        self.repo = services.dispatcher.repo
        self.hub = hub
        self.clock = clock
        self.settings = settings or ConsoleSettings()
        self._inbox: asyncio.Queue[Activity] = asyncio.Queue(self.settings.queue_size)
        self._loops = Loops(services.supervisor)
        #: The queue fragment, rendered once per live event for every browser.
        self.queue_fragment = SharedFragment()
        #: Alerts announced on the feed whose dispatch is not open yet (by alert id).
        self._just_in: dict[str, PendingAlert] = {}
        #: Renders the queue fragment (set by ``running_console``, which has the
        #: templates); ``None``: nothing is pushed, pages fetch the queue themselves.
        self.render_queue: Callable[[], Awaitable[bytes]] | None = None
        #: Renders the just-in section from memory (``running_console``).
        self.render_just_in: (
            Callable[[list[PendingAlert], dict[str, tuple[str, str]]], str] | None
        ) = None
        self._just_in_changed = asyncio.Event()
        #: Resident id -> (name, address) as the last queues showed them (no database
        #: read for a just-in push; a resident not seen yet shows by id until the queue).
        self.who_seen: dict[str, tuple[str, str]] = {}
        #: Alert ids the last queue showed with their dispatch (never "just in" again).
        self.shown_alerts: set[str] = set()
        self._queue_changed = asyncio.Event()
        hub.watchers.append(self._watch)
        self.pushes = 0
        #: How long the latest pushes took to render (s; for the benchmark).
        self.push_seconds: list[float] = []
        #: The activity line being turned into a notice (kept while storage is away).
        self._pending: Activity | None = None
        self.dropped_activity = 0
        feed.listen(self._offer)

    async def __aenter__(self) -> Self:
        tick = self.settings.tick_s
        await self._loops.start(
            Loop(
                "console-timers",
                self._timer_step,
                retry=is_storage_unavailable,
                backoff=Backoff(initial=min(1.0, tick), cap=max(30.0, tick)),
            ),
            Loop("console-activity", self._activity_step, retry=is_storage_unavailable),
            Loop("console-just-in-push", self._just_in_step),
            Loop(
                "console-queue-push",
                self._push_step,
                retry=is_storage_unavailable,
                backoff=Backoff(initial=0.2, cap=5.0),
            ),
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._loops.stop()

    # -- ownership ---------------------------------------------------------------------
    async def open(self, dispatch_id: str, operator: str) -> tuple[Dispatch, Owner | None]:
        """Open an alarm: claim its resident for ``operator`` when nobody has it. The
        owner is returned either way (the page says who has it when it is not you);
        ``None`` for a closed alarm, which nobody owns."""
        d = await self._load(dispatch_id)
        if not d.state.is_open:
            return d, await self.store.owner(owner_key(d.resident_id, d.dispatch_id))
        owner, new = await self.store.claim(
            owner_key(d.resident_id, d.dispatch_id), operator, d.dispatch_id, self.clock.now()
        )
        if new:
            self._tell("claimed", d, operator, f"{operator} opened the alarm")
        return d, owner

    async def hand_back(self, dispatch_id: str, operator: str) -> None:
        d = await self._load(dispatch_id)
        if await self.store.release(owner_key(d.resident_id, d.dispatch_id), operator):
            self._tell("released", d, operator, f"{operator} handed the alarm back to the queue")

    async def take_over(self, dispatch_id: str, operator: str) -> Owner:
        """A supervisor (or the queue) takes a resident's alarms from their owner."""
        d = await self._load(dispatch_id)
        key = owner_key(d.resident_id, d.dispatch_id)
        await self.store.release(key)
        owner, _ = await self.store.claim(key, operator, d.dispatch_id, self.clock.now())
        self._tell("claimed", d, operator, f"{operator} took the alarm over")
        return owner

    async def _owned_by(self, d: Dispatch, operator: str) -> None:
        key = owner_key(d.resident_id, d.dispatch_id)
        owner, _ = await self.store.claim(key, operator, d.dispatch_id, self.clock.now())
        if owner.operator != operator:
            raise Owned(owner)

    # -- actions -----------------------------------------------------------------------
    async def act(
        self,
        dispatch_id: str,
        user: User,
        action: str,
        *,
        reference: str = "",
        version: int | None = None,
    ) -> Dispatch:
        """Apply one action verb (``acknowledge``, ``contact``, ``answered``,
        ``no_answer``, ``declined``, ``handover``, ``en_route``, ``on_scene``,
        ``escalate``, ``injury``) as ``user``, who must own the resident, through the
        services layer (``version``: the one the page showed, compare-and-set)."""
        if action in ("close", "note"):
            raise ValueError(f"unknown action {action!r}")
        d = await self._load(dispatch_id)
        await self._owned_by(d, user.username)
        defaults = {
            "acknowledge": "answered at the console",
            "injury": "injury reported by phone",
        }
        act = Act(action, version, defaults.get(action, ""), reference=reference)
        new = await self.services.act(user, dispatch_id, act)
        if action == "handover":
            await self._arm_recheck(new, user.username, reference.strip())
        return new

    async def hold(self, dispatch_id: str, operator: str, seconds: int, reason: str) -> TimerRow:
        """Put an alarm on hold; it is recalled to the queue after ``seconds`` (3 s to
        4 h: the form takes minutes, a fraction for a "call me back in a moment")."""
        if not 3 <= seconds <= 4 * 3600:
            raise ValueError("hold for 3 seconds to 240 minutes")
        d = await self._load(dispatch_id)
        if not d.state.is_open:
            raise IllegalTransition(dispatch_id, d.state.value, "hold", "it is closed")
        if d.state is S.RAISED:
            raise ValueError("acknowledge the alarm before putting it on hold")
        await self._owned_by(d, operator)
        now = self.clock.now()
        due = now + timedelta(seconds=seconds)
        row = TimerRow(dispatch_id, "hold", due, operator, now, reason.strip()[:200], None)
        await self.store.set_timer(row)
        self._tell("hold", d, operator, f"on hold until {due:%H:%M:%S} by {operator}")
        return row

    async def resume(self, dispatch_id: str, operator: str) -> None:
        """Take an alarm off hold before its recall."""
        d = await self._load(dispatch_id)
        await self._owned_by(d, operator)
        await self.store.clear_timer(dispatch_id, "hold")
        self._tell("resumed", d, operator, f"taken off hold by {operator}")

    async def ack_notice(self, dispatch_id: str, notice_id: int, operator: str) -> None:
        d = await self._load(dispatch_id)
        await self._owned_by(d, operator)
        if await self.store.ack_notice(notice_id, operator, self.clock.now()):
            self._tell("notice_acked", d, operator, f"notice read by {operator}")

    async def close(
        self,
        dispatch_id: str,
        user: User,
        outcome: str,
        *,
        false_alarm: bool,
        note: str = "",
        version: int | None = None,
    ) -> Dispatch:
        """Close with an outcome code; refused while a notice is unacknowledged."""
        if outcome not in OUTCOMES or outcome == "auto_cleared":
            raise ValueError("choose an outcome code to close the alarm")
        d = await self._load(dispatch_id)
        await self._owned_by(d, user.username)
        open_notices = await self.store.notices(dispatch_id)
        if open_notices:
            raise NoticesOpen(len(open_notices))
        reason = "false alarm" if false_alarm else (note.strip()[:200] or "closed")
        act = Act("close", version, reason, outcome=outcome)
        new = await self.services.act(user, dispatch_id, act)
        await self.store.record_closure(
            Closure(
                dispatch_id,
                outcome,
                false_alarm,
                note.strip()[:2000],
                user.username,
                new.updated_at,
            )
        )
        await self._closed(new)
        return new

    # -- notices from the activity feed ------------------------------------------------
    def _offer(self, activity: Activity) -> None:
        if activity.kind == "alert":
            self._note_pending(activity)
            self._just_in_changed.set()
            return
        if activity.kind not in ("folded", "restored", "attended", "dispatch"):
            return
        try:
            self._inbox.put_nowait(activity)
        except asyncio.QueueFull:
            self.dropped_activity += 1

    # -- the queue, pushed to every queue page ------------------------------------------
    def queue_changed(self) -> None:
        """Push the queue soon, rendered anew (a queue page just connected: what it
        showed was rendered from the store, which may hold more than the kept copy, made
        for the same live event, e.g. alarms another process wrote since)."""
        self.queue_fragment.invalidate()
        self._queue_changed.set()

    def _watch(self, event: LiveEvent) -> None:
        if event.kind in QUEUE_KINDS:
            self._queue_changed.set()

    async def _push_step(self) -> None:
        """After a queue change (and :data:`PUSH_DELAY_S` for the next), render the queue
        once and push it to every queue page (``LiveHub.broadcast``); with no change for
        ``queue_refresh_s``, render it anew and push it anyway. Storage away: raised
        (retried with backoff; pages fetch meanwhile); anything else: logged."""
        try:
            await asyncio.wait_for(self._queue_changed.wait(), self.settings.queue_refresh_s)
        except TimeoutError:
            # Nothing happened here for a while: push anyway, rendered anew, so what
            # another process (a second gateway on this store, the CLI) changed shows.
            self.queue_fragment.invalidate()
        await asyncio.sleep(PUSH_DELAY_S)
        self._queue_changed.clear()
        render = self.render_queue
        if render is None or not self.hub.clients_in("queue"):
            return
        started = time.perf_counter()
        try:
            body = await self.queue_fragment.get(self.hub.last_id, render)
        except Exception as exc:
            if is_storage_unavailable(exc):
                self._queue_changed.set()  # push it once the store is back
                raise
            log.exception("console_queue_push_failed")
            return
        self.hub.broadcast("queue", "queue", body.decode())
        self.pushes += 1
        self.push_seconds.append(time.perf_counter() - started)
        del self.push_seconds[:-1000]

    async def _just_in_step(self) -> None:
        """The moment an alert is announced: push the just-in rows to every queue page,
        rendered from memory (no database read, so ingest's writes cannot delay it);
        the full queue follows with the next queue push. Never fails: rendering what is
        in memory raises nothing it could retry, and an error is logged."""
        await self._just_in_changed.wait()
        self._just_in_changed.clear()
        render = self.render_just_in
        if render is None or not self.hub.clients_in("queue"):
            return
        rows = [p for p in self._just_in.values() if p.alert_id not in self.shown_alerts]
        rows.sort(key=lambda p: (p.priority, p.ts))
        try:
            html = render(rows, self.who_seen)
        except Exception:
            log.exception("console_just_in_push_failed")
            return
        self.hub.broadcast("queue", "just_in", html)

    def remember(self, who: dict[str, tuple[str, str]], alert_ids: set[str]) -> None:
        """What the queue just showed (names for just-in pushes, alerts with dispatches)."""
        if len(self.who_seen) > 10_000:
            self.who_seen.clear()
        self.who_seen.update(who)
        self.shown_alerts = alert_ids

    def _note_pending(self, a: Activity) -> None:
        alert_id, priority = a.data.get("alert_id"), a.data.get("priority")
        if not isinstance(alert_id, str) or not isinstance(priority, int):
            return
        if len(self._just_in) >= PENDING_LIMIT:
            del self._just_in[next(iter(self._just_in))]
        site, resident = a.data.get("site_id"), a.data.get("resident_id")
        self._just_in[alert_id] = PendingAlert(
            alert_id,
            priority,
            a.ts,
            a.summary,
            site if isinstance(site, str) else None,
            resident if isinstance(resident, str) else None,
        )

    async def pending(self) -> list[PendingAlert]:
        """Announced alerts still without a dispatch, most urgent then oldest first (one
        query while there are any: those that have one by now are forgotten)."""
        if not self._just_in:
            return []
        states = await self.services.store.alarm_states(list(self._just_in))
        for alert_id, state in states.items():
            if state is not None:  # a dispatch holds it (its own, or a group's it joined)
                self._just_in.pop(alert_id, None)
        return sorted(self._just_in.values(), key=lambda p: (p.priority, p.ts))

    async def _activity_step(self) -> None:
        """One activity line into a notice. Storage away: raised (the helper retries the
        same line after a backoff); anything else: logged and skipped."""
        activity = self._pending or await self._inbox.get()
        self._pending = activity
        try:
            await self.on_activity(activity)
        except Exception as exc:
            if is_storage_unavailable(exc):
                raise  # kept in _pending: the same line again after the backoff
            log.exception("console_activity_failed", kind=activity.kind)
        self._pending = None

    async def on_activity(self, a: Activity) -> None:
        if a.kind == "dispatch":
            await self._dispatch_changed(a)
            return
        alert_id = a.data.get("alert_id")
        if not isinstance(alert_id, str):
            return
        d = await self.repo.load_for_alert(alert_id)
        if d is None or not d.state.is_open or d.state is S.RAISED:
            return  # still in the queue: the operator sees it anyway
        text = {
            "folded": f"pressed again (x{a.data.get('count', 2)})",
            "restored": "restored at the device: check the person is safe",
            "attended": "a carer arrived (reported by the device)",
        }[a.kind]
        await self._notice(d, a.kind, text)

    async def _dispatch_changed(self, a: Activity) -> None:
        dispatch_id = a.data.get("dispatch_id")
        state = a.data.get("state")
        if not isinstance(dispatch_id, str):
            return
        if state in (S.RESOLVED.value, S.CANCELLED.value):
            d = await self.repo.load(dispatch_id)
            if d is not None:
                await self._closed(d)
        elif state == S.ESCALATED.value and a.data.get("actor") in ("timer", "system"):
            # Only for an alarm someone was handling (cascade exhausted, nobody on scene
            # in time): one nobody answered is red in the queue already.
            audit = await self.repo.audit(dispatch_id)
            d = await self.repo.load(dispatch_id)
            if d is not None and any(r.to_state is S.ACKNOWLEDGED for r in audit):
                await self._notice(d, "escalated", a.summary.split(": ", 1)[-1])

    async def _notice(self, d: Dispatch, kind: str, text: str) -> None:
        await self.store.add_notice(d.dispatch_id, kind, text, self.clock.now())
        self._tell("notice", d, "system", text)

    async def _closed(self, d: Dispatch) -> None:
        await self.store.clear_timer(d.dispatch_id)
        key = owner_key(d.resident_id, d.dispatch_id)
        owner = await self.store.owner(key)
        if owner is None:
            return
        mine = DispatchFilter(open=True, resident_id=d.resident_id, limit=None)
        others = await self.services.store.find_dispatches(mine) if d.resident_id else []
        if all(o.dispatch_id == d.dispatch_id for o in others):  # the resident's last
            await self.store.release(key)

    # -- timers ------------------------------------------------------------------------
    async def _arm_recheck(self, d: Dispatch, operator: str, reference: str) -> None:
        now = self.clock.now()
        await self.store.set_timer(
            TimerRow(
                d.dispatch_id,
                "recheck",
                now + timedelta(seconds=self.settings.recheck_s),
                operator,
                now,
                "handed to ambulance",
                reference,
            )
        )

    async def _timer_step(self) -> None:
        """One round: fire what is due, then sleep ``tick_s``. Storage away: raised (the
        helper retries with backoff); anything else: logged, and the next round runs."""
        try:
            await self.tick()
        except Exception as exc:
            if is_storage_unavailable(exc):
                raise
            log.exception("console_timer_error")
        await self.clock.sleep_until(self.clock.now() + timedelta(seconds=self.settings.tick_s))

    async def tick(self) -> int:
        """Fire what is due now; return how many alarms came back to the queue."""
        now = self.clock.now()
        fired = 0
        for t in await self.store.timers(due_by=now):
            if not await self.store.take_timer(t):
                continue  # another process fired it
            d = await self.repo.load(t.dispatch_id)
            if d is None or not d.state.is_open:
                continue
            fired += 1
            if t.kind == "hold":
                await self._recall(d, f"recalled from hold (set by {t.set_by})")
            else:
                await self._recheck(d, t, now)
        for owner in await self.store.owners():
            # Only owned alarms can be left without progress (others are in the queue).
            d = await self.repo.load(owner.dispatch_id)
            if d is None or d.state not in _IDLE:
                continue
            if now - d.updated_at < timedelta(seconds=self.settings.stale_s):
                continue
            if any(t.dispatch_id == d.dispatch_id for t in await self.store.timers()):
                continue  # on hold: its recall brings it back
            minutes = self.settings.stale_s // 60
            await self._recall(d, f"no progress for {minutes} min: back to the queue")
            fired += 1
        return fired

    async def _recall(self, d: Dispatch, text: str) -> None:
        await self.store.release(owner_key(d.resident_id, d.dispatch_id))
        await self._notice(d, "recall", text)

    async def _recheck(self, d: Dispatch, t: TimerRow, now: datetime) -> None:
        ref = t.reference or "?"
        waited = now - d.created_at
        alert = await self.services.store.alert(d.alert_id)
        on_floor = (alert is not None and alert.event_type in _ON_THE_FLOOR) or d.priority == 1
        if on_floor and waited >= timedelta(seconds=self.settings.floor_escalate_s):
            text = (
                f"ambulance ref {ref}: still waiting after {int(waited.total_seconds() // 60)}"
                " min for a person who may be on the floor: supervisor alerted"
            )
            self.hub.emit("console", text, {"dispatch_id": d.dispatch_id, "escalation": True})
        else:
            text = f"re-check the ambulance (ref {ref}): is it still on its way?"
        await self._recall(d, text)
        await self._arm_recheck(d, t.set_by, ref)

    # -- helpers -----------------------------------------------------------------------
    async def _load(self, dispatch_id: str) -> Dispatch:
        d = await self.repo.load(dispatch_id)
        if d is None:
            raise UnknownDispatch(dispatch_id)
        return d

    def _tell(self, what: str, d: Dispatch, operator: str, summary: str) -> None:
        self.hub.emit(
            "console",
            f"alarm {d.dispatch_id}: {summary}",
            {
                "dispatch_id": d.dispatch_id,
                "resident_id": d.resident_id,
                "what": what,
                "operator": operator,
            },
        )

    @staticmethod
    def is_ambulance(kind: str | None) -> bool:
        return kind == ResponderKind.AMBULANCE.value
