"""The operator console's pages (``/console``): server-rendered HTML, a little JavaScript.

Pages: the queue (``/console``), an alarm's action list with the resident banner
(``/console/alarm/{id}``), a resident (``/console/resident/{id}``), the dispatch board,
the supervisor view, the after-an-outage list and the response-time report. Live
changes arrive over SSE (``/console/live``, :mod:`~telecare.gateway.web.live`); the
page then re-fetches the fragment that changed (``/console/queue``,
``/console/alarm/{id}/actions``), so the server renders everything and the browser
never holds state of its own that could go stale.

Operator actions are HTML form posts (CSRF token in the form) handled by the
:class:`~telecare.gateway.web.console_service.ConsoleService`, which checks ownership
and acts through the web services layer (``Services.act``, as the operator API does)
with the logged-in operator as the actor; each form carries the dispatch's ``version``
as the page showed it, so an action on a dispatch someone changed meanwhile is refused
("changed by someone else") instead of applied blind. Each post answers
with a redirect back to the page (``?error=`` when the action was refused), so the
keyboard shortcuts only submit forms.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Final
from urllib.parse import quote

from fastapi import APIRouter, Depends, FastAPI, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse

from telecare.devices.model import Dispatch, DispatchState, Metric, Resident
from telecare.dispatch.cascades import Route
from telecare.dispatch.errors import DispatchError, StaleDispatch, UnknownDispatch
from telecare.dispatch.machine import OUTCOMES
from telecare.dispatch.reports import build_report
from telecare.gateway.dispatching import attend_config
from telecare.gateway.pipeline import ActivityFeed
from telecare.gateway.store.accounts import Role, Session, User
from telecare.gateway.store.reports import DeviceHealth, DispatchFilter
from telecare.gateway.web.auth import current_session, render, require_roles
from telecare.gateway.web.console_charts import Band, Series, line_chart
from telecare.gateway.web.console_model import (
    ANSWER_TARGET_S,
    CONTACT_OUTCOMES,
    UNANSWERED,
    DeviceState,
    build_queue,
    cascade_steps,
    device_state,
    last_reading,
    next_action,
    owner_key,
    same_address,
)
from telecare.gateway.web.console_service import (
    ConsoleService,
    ConsoleSettings,
    NoticesOpen,
    Owned,
    PendingAlert,
)
from telecare.gateway.web.console_store import PRIVATE_NOTE_KINDS, ConsoleStore
from telecare.gateway.web.live import LiveHub, sse_stream
from telecare.gateway.web.services import Services, services

__all__ = ["console_of", "router", "running_console"]

router = APIRouter(prefix="/console", include_in_schema=False)

Operator = Annotated[User, Depends(require_roles(Role.OPERATOR))]
Supervisor = Annotated[User, Depends(require_roles(Role.SUPERVISOR))]
SessionDep = Annotated[Session, Depends(current_session)]
Svc = Annotated[Services, Depends(services)]

#: Outcome codes an operator can close with (``auto_cleared`` is the device's own).
CLOSE_OUTCOMES: Final = tuple(sorted(OUTCOMES - {"auto_cleared"}))
_CHART_HOURS: Final = 72
#: Every open dispatch, most urgent then oldest first.
_OPEN: Final = DispatchFilter(open=True, limit=None)


@asynccontextmanager
async def running_console(
    app: FastAPI, feed: ActivityFeed, settings: ConsoleSettings | None = None
) -> AsyncIterator[ConsoleService]:
    """Run the console for ``app`` (its :class:`Services`), fed by ``feed``: the live hub
    (also ``Services.live``) and the console service's timer and notice tasks. On leaving,
    every SSE stream is ended first, so no browser holds the web server open."""
    svc: Services = app.state.services
    hub = LiveHub()
    hub.attach(feed)
    console = ConsoleService(ConsoleStore(svc.store.sql), svc, hub, feed, svc.clock, settings)

    async def count_clients() -> None:
        svc.metrics.sse_clients.set(len(hub.clients()))

    svc.metrics.add_refresher(count_clients)
    templates = app.state.templates.env

    async def render_queue() -> bytes:
        context = await _queue(svc, console)
        html: str = templates.get_template("console/_queue.html").render(context)
        return html.encode()

    def render_just_in(pending: list[PendingAlert], who: dict[str, tuple[str, str]]) -> str:
        html: str = templates.get_template("console/_just_in.html").render(pending=pending, who=who)
        return html

    console.render_queue = render_queue
    console.render_just_in = render_just_in
    async with console:
        svc.live = hub
        app.state.console = console
        try:
            yield console
        finally:
            app.state.console = None
            svc.live = None
            hub.close()


def console_of(request: Request) -> ConsoleService:
    """The app's console service (``app.state.console``; see :func:`running_console`)."""
    console: ConsoleService | None = getattr(request.app.state, "console", None)
    if console is None:
        raise HTTPException(503, "the console is not running on this gateway")
    return console


Console = Annotated[ConsoleService, Depends(console_of)]


def _page(request: Request, name: str, session: Session, **context: Any) -> HTMLResponse:
    console: ConsoleService | None = getattr(request.app.state, "console", None)
    return render(
        request,
        name,
        {
            "user": session.user,
            "csrf_token": session.csrf_token,
            "last_event_id": console.hub.last_id if console else "",
            "error": request.query_params.get("error", ""),
            "answer_target_s": ANSWER_TARGET_S,
            **context,
        },
    )


def _back(url: str, error: str = "") -> RedirectResponse:
    sep = "&" if "?" in url else "?"
    return RedirectResponse(url + (f"{sep}error={quote(error)}" if error else ""), 303)


# -- the queue ---------------------------------------------------------------------------
async def _queue(svc: Services, console: ConsoleService) -> dict[str, Any]:
    now = svc.clock.now()
    pending = await console.pending()
    alarms = await svc.store.open_alarms()
    shown = {a.alert_id for a in alarms}  # opened between the two reads
    pending = [p for p in pending if p.alert_id not in shown]
    just_in_residents = {p.resident_id for p in pending if p.resident_id}
    sections = build_queue(
        alarms,
        await console.store.owners(),
        await console.store.timers(),
        await console.store.notices(),
        now,
    )
    who = await console.services.store.who(
        sorted({a.resident_id for a in alarms if a.resident_id} | just_in_residents)
    )
    console.remember(who, shown)
    return {
        "sections": sections,
        "now": now,
        "open_count": len(alarms) + len(pending),
        "pending": pending,
        "who": who,
    }


@router.get("", response_class=HTMLResponse)
async def queue_page(
    request: Request, user: Operator, session: SessionDep, svc: Svc, console: Console
) -> HTMLResponse:
    return _page(request, "console/queue.html", session, **await _queue(svc, console))


@router.get("/queue", response_class=HTMLResponse)
async def queue_fragment(
    request: Request, user: Operator, svc: Svc, console: Console
) -> HTMLResponse:
    """The queue for the page's live refresh: the same for every operator, so rendered
    once per live event however many browsers ask (``web/fragments.py``)."""

    async def fresh() -> bytes:
        return bytes(render(request, "console/_queue.html", await _queue(svc, console)).body)

    body = await console.queue_fragment.get(console.hub.last_id, fresh)
    return HTMLResponse(body)


@router.get("/next")
async def next_alarm(user: Operator, svc: Svc, console: Console) -> RedirectResponse:
    """The ``n`` key: the alarm at the top of the waiting queue (else the queue)."""
    waiting = (await _queue(svc, console))["sections"]["waiting"]
    if not waiting:
        return RedirectResponse("/console", 303)
    return RedirectResponse(f"/console/alarm/{waiting[0].rows[0].dispatch.dispatch_id}", 303)


@router.get("/live")
async def live(request: Request, user: Operator, console: Console) -> StreamingResponse:
    """Server-Sent Events; ``Last-Event-ID`` resumes where the browser left off;
    ``?scope=queue`` (the queue page) also receives the queue itself after each change."""
    last = request.headers.get("last-event-id") or request.query_params.get("last")
    scopes = frozenset({"queue"}) if request.query_params.get("scope") == "queue" else frozenset()
    client = console.hub.connect(user.username, last, scopes)
    if scopes:
        console.queue_changed()  # its first push: whatever changed before it connected
    return StreamingResponse(
        sse_stream(console.hub, client),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


# -- an alarm ------------------------------------------------------------------------------
async def _alarm_context(svc: Services, console: ConsoleService, d: Dispatch) -> dict[str, Any]:
    repo = svc.dispatcher.repo
    audit = await repo.audit(d.dispatch_id)
    alert = await svc.store.alert(d.alert_id)
    names = {
        p.responder.responder_id: (p.responder.kind.value, p.responder.name)
        for p in svc.dispatcher.directory.profiles()
    }
    steps = cascade_steps(d, await repo.cascade(d.dispatch_id), audit, names)
    current_kind = names.get(d.responder_id or "", (None, ""))[0]
    owner = await console.store.owner(owner_key(d.resident_id, d.dispatch_id))
    timers = [t for t in await console.store.timers() if t.dispatch_id == d.dispatch_id]
    site = await svc.store.get_site(d.site_id) if d.site_id else None
    kind = site.kind if site else None
    others = [
        o
        for o in await svc.store.find_dispatches(_OPEN)
        if o.dispatch_id != d.dispatch_id and same_address(d, o, kind)
    ]
    return {
        "d": d,
        "steps": steps,
        "next": next_action(d, audit, current_kind),
        "owner": owner,
        "hold": next((t for t in timers if t.kind == "hold"), None),
        "recheck": next((t for t in timers if t.kind == "recheck"), None),
        "notices": await console.store.notices(d.dispatch_id),
        "timeline": audit,
        "closure": await console.store.closure(d.dispatch_id),
        "others": others,
        "engaged_elsewhere": [o for o in others if o.state in _ENGAGED],
        "outcomes": CONTACT_OUTCOMES,
        "close_outcomes": CLOSE_OUTCOMES,
        "alert": alert,
        "unit": await console.services.store.unit_event(alert.source_key if alert else None),
    }


_ENGAGED: Final = frozenset(
    {
        DispatchState.RESPONDER_CONTACTED,
        DispatchState.ACCEPTED,
        DispatchState.EN_ROUTE,
        DispatchState.ON_SCENE,
    }
)


@router.get("/alarm/{dispatch_id}", response_class=HTMLResponse)
async def alarm_page(
    request: Request,
    dispatch_id: str,
    user: Operator,
    session: SessionDep,
    svc: Svc,
    console: Console,
) -> HTMLResponse:
    try:
        d, owner = await console.open(dispatch_id, user.username)
    except UnknownDispatch:
        raise HTTPException(404, f"no alarm {dispatch_id}") from None
    context = await _alarm_context(svc, console, d)
    banner = await _banner(svc, console, d.resident_id, d) if d.resident_id else None
    return _page(
        request,
        "console/alarm.html",
        session,
        banner=banner,
        owned_by_other=owner is not None and owner.operator != user.username,
        **context,
    )


@router.get("/alarm/{dispatch_id}/actions", response_class=HTMLResponse)
async def alarm_actions(
    request: Request,
    dispatch_id: str,
    user: Operator,
    session: SessionDep,
    svc: Svc,
    console: Console,
) -> HTMLResponse:
    d = await svc.dispatcher.repo.load(dispatch_id)
    if d is None:
        raise HTTPException(404, f"no alarm {dispatch_id}")
    context = await _alarm_context(svc, console, d)
    owned_by_other = context["owner"] is not None and context["owner"].operator != user.username
    return render(
        request,
        "console/_actions.html",
        {
            "user": user,
            "csrf_token": session.csrf_token,
            "owned_by_other": owned_by_other,
            **context,
        },
    )


async def _do(url: str, work: Any) -> RedirectResponse:
    try:
        await work
    except Owned as exc:
        return _back(url, f"{exc.owner.operator} has this resident's alarms")
    except NoticesOpen as exc:
        return _back(url, str(exc))
    except StaleDispatch:
        return _back(url, "changed by someone else meanwhile: check it and try again")
    except (DispatchError, ValueError) as exc:
        return _back(url, str(exc))
    return _back(url)


#: The dispatch's version as the page showed it (empty: act on it as it is now).
Version = Annotated[int | None, Form()]


@router.post("/alarm/{dispatch_id}/act")
async def act(
    dispatch_id: str,
    user: Operator,
    console: Console,
    action: Annotated[str, Form()],
    reference: Annotated[str, Form()] = "",
    version: Version = None,
) -> Response:
    url = f"/console/alarm/{dispatch_id}"
    work = console.act(dispatch_id, user, action, reference=reference, version=version)
    return await _do(url, work)


@router.post("/alarm/{dispatch_id}/hold")
async def hold(
    dispatch_id: str,
    user: Operator,
    console: Console,
    minutes: Annotated[float, Form()],
    reason: Annotated[str, Form()] = "",
) -> Response:
    work = console.hold(dispatch_id, user.username, round(minutes * 60), reason)
    result = await _do(f"/console/alarm/{dispatch_id}", work)
    return result if "error=" in result.headers["location"] else _back("/console")


@router.post("/alarm/{dispatch_id}/resume")
async def resume(dispatch_id: str, user: Operator, console: Console) -> Response:
    return await _do(f"/console/alarm/{dispatch_id}", console.resume(dispatch_id, user.username))


@router.post("/alarm/{dispatch_id}/handback")
async def hand_back(dispatch_id: str, user: Operator, console: Console) -> Response:
    await console.hand_back(dispatch_id, user.username)
    return _back("/console")


@router.post("/alarm/{dispatch_id}/takeover")
async def take_over(dispatch_id: str, user: Supervisor, console: Console) -> Response:
    await console.take_over(dispatch_id, user.username)
    return _back(f"/console/alarm/{dispatch_id}")


@router.post("/alarm/{dispatch_id}/notice/{notice_id}")
async def ack_notice(
    dispatch_id: str, notice_id: int, user: Operator, console: Console
) -> Response:
    url = f"/console/alarm/{dispatch_id}"
    return await _do(url, console.ack_notice(dispatch_id, notice_id, user.username))


@router.post("/alarm/{dispatch_id}/close")
async def close(
    dispatch_id: str,
    user: Operator,
    console: Console,
    outcome: Annotated[str, Form()] = "",
    false_alarm: Annotated[bool, Form()] = False,
    note: Annotated[str, Form()] = "",
    version: Version = None,
) -> Response:
    url = f"/console/alarm/{dispatch_id}"
    work = console.close(
        dispatch_id, user, outcome, false_alarm=false_alarm, note=note, version=version
    )
    return await _do(url, work)


# -- the resident -------------------------------------------------------------------------
async def _banner(
    svc: Services, console: ConsoleService, resident_id: str, d: Dispatch | None = None
) -> dict[str, Any]:
    now = svc.clock.now()
    resident = await svc.store.get_resident(resident_id)
    if resident is None:
        raise HTTPException(404, f"no resident {resident_id}")
    site = await svc.store.get_site(resident.site_id)
    notes = await console.store.notes(resident_id, now)
    return {
        "resident": resident,
        "site": site,
        "public_notes": [n for n in notes if n.kind not in PRIVATE_NOTE_KINDS],
        "private_kinds": sorted({n.kind for n in notes if n.kind in PRIVATE_NOTE_KINDS}),
        "expiring": [n for n in notes if n.expires_at and n.expires_at - now < timedelta(days=2)],
        **await _cascade(svc, resident, d),
        "recent": await svc.store.find_alarms(DispatchFilter(resident_id=resident_id, limit=8)),
        "devices": await _devices(svc, console, resident_id, now),
        "views": await console.store.views(resident_id, 5),
        "charts": await _charts(svc, resident_id, now),
        "now": now,
    }


async def _cascade(svc: Services, resident: Resident, d: Dispatch | None) -> dict[str, Any]:
    """The banner's cascade: the one the dispatch resolved and walks (the resident's own
    responders, then the on-call responders covering the site's area, skipping anyone
    off call), or, on the resident's page, the one a pendant alarm would get now. Each
    step ``(responder id, kind, name, whose)``: ``own`` for the resident's list, else
    ``area``."""
    dispatcher = svc.dispatcher
    if d is not None:
        entries = await dispatcher.repo.cascade(d.dispatch_id)
        note = "as this alarm's dispatch"
    else:
        entries = await dispatcher.cascade_for(
            Route.WELLBEING, resident.site_id, resident.resident_id
        )
        note = "for a pendant alarm now"
    steps = []
    for e in entries:
        profile = dispatcher.directory.get(e.responder_id)
        r = profile.responder if profile else await svc.store.get_responder(e.responder_id)
        whose = "own" if e.responder_id in resident.responders else "area"
        steps.append((e.responder_id, r.kind.value if r else "?", r.name if r else "", whose))
    return {"cascade": steps, "cascade_note": note}


async def _devices(
    svc: Services, console: ConsoleService, resident_id: str, now: datetime
) -> list[tuple[DeviceHealth, DeviceState]]:
    """Each paired device with its health (``console_model.device_state``)."""
    vitals = await svc.store.latest_vitals([resident_id], since=now - timedelta(hours=_CHART_HOURS))
    latest = vitals.get(resident_id, {})
    return [
        (d, device_state(d, now, last_reading(d.kind, latest)))
        for d in await console.services.store.device_health(resident_id)
    ]


async def _charts(svc: Services, resident_id: str, now: datetime) -> list[str]:
    start, bucket = now - timedelta(hours=_CHART_HOURS), timedelta(minutes=30)

    async def avg(metric: Metric) -> list[tuple[datetime, float]]:
        history = await svc.store.metric_history(resident_id, metric, start, now, bucket)
        return [(p.bucket, p.avg) for p in history]

    news = [(r.ts, float(r.total)) for r in await svc.store.news2_history(resident_id, start, now)]
    return [
        line_chart(
            "NEWS2",
            "points",
            [Series("NEWS2", news, "#14171a")],
            y_range=(0, 8),
            bands=[Band(0, 4.5, "#e3f4e8"), Band(4.5, 6.5, "#fdf0d5"), Band(6.5, 20, "#fbe0e3")],
        ),
        line_chart(
            "SpO2",
            "%",
            [Series("SpO2", await avg(Metric.SPO2))],
            y_range=(88, 100),
            bands=[Band(96, 101, "#e3f4e8")],
        ),
        line_chart(
            "Pulse",
            "/min",
            [Series("Pulse", await avg(Metric.PULSE), "#8a1c7c")],
            y_range=(50, 110),
            bands=[Band(51, 90.5, "#e3f4e8")],
        ),
        line_chart(
            "Blood pressure",
            "mmHg",
            [
                Series("Systolic", await avg(Metric.SYSTOLIC_BP), "#b00020"),
                Series("Diastolic", await avg(Metric.DIASTOLIC_BP), "#0b5cad"),
            ],
            y_range=(60, 160),
            bands=[Band(111, 219.5, "#e3f4e8")],
        ),
    ]


@router.get("/resident/{resident_id}", response_class=HTMLResponse)
async def resident_page(
    request: Request,
    resident_id: str,
    user: Operator,
    session: SessionDep,
    svc: Svc,
    console: Console,
) -> HTMLResponse:
    banner = await _banner(svc, console, resident_id)
    return _page(request, "console/resident.html", session, banner=banner)


@router.post("/resident/{resident_id}/reveal/{what}", response_class=HTMLResponse)
async def reveal(
    request: Request,
    resident_id: str,
    what: str,
    user: Operator,
    svc: Svc,
    console: Console,
    dispatch_id: Annotated[str, Form()] = "",
) -> HTMLResponse:
    """Key safe or medical notes, on demand: the view is audited with the operator."""
    if what not in PRIVATE_NOTE_KINDS:
        raise HTTPException(404, "only key_safe and medical notes are revealed")
    now = svc.clock.now()
    await console.store.record_view(resident_id, what, user.username, now, dispatch_id or None)
    notes = [n for n in await console.store.notes(resident_id, now) if n.kind == what]
    console.hub.emit(
        "console",
        f"{what} notes viewed by {user.username}",
        {"resident_id": resident_id, "what": "viewed", "operator": user.username},
    )
    return render(request, "console/_revealed.html", {"notes": notes, "what": what})


@router.post("/resident/{resident_id}/notes")
async def add_note(
    resident_id: str,
    user: Operator,
    svc: Svc,
    console: Console,
    kind: Annotated[str, Form()],
    text: Annotated[str, Form()],
    expires_days: Annotated[int, Form()] = 0,
    back: Annotated[str, Form()] = "",
) -> Response:
    now = svc.clock.now()
    expires = now + timedelta(days=expires_days) if expires_days > 0 else None
    url = back if back.startswith("/console/") else f"/console/resident/{resident_id}"
    if not text.strip():
        return _back(url, "a note needs some text")
    try:
        await console.store.add_note(
            resident_id, kind, text.strip()[:2000], user.username, now, expires
        )
    except ValueError as exc:
        return _back(url, str(exc))
    return _back(url)


@router.get("/resident/{resident_id}/chart/{name}.svg")
async def chart(resident_id: str, name: str, user: Operator, svc: Svc) -> Response:
    charts = await _charts(svc, resident_id, svc.clock.now())
    index = {"news2": 0, "spo2": 1, "pulse": 2, "bp": 3}.get(name)
    if index is None:
        raise HTTPException(404, "charts: news2, spo2, pulse, bp")
    return Response(charts[index], media_type="image/svg+xml")


# -- boards and reports ---------------------------------------------------------------------
@router.get("/board", response_class=HTMLResponse)
async def board(
    request: Request, user: Operator, session: SessionDep, svc: Svc, console: Console
) -> HTMLResponse:
    """Dispatches with a responder contacted or on the way, against their attend times."""
    now = svc.clock.now()
    rows = []
    engaged = [d for d in await svc.store.find_dispatches(_OPEN) if d.state in _ENGAGED]
    for d in engaged:
        timers = await svc.dispatcher.repo.timers(d.dispatch_id)
        attend = next((t.due_at for t in timers if t.kind.value == "attend"), None)
        rows.append(
            {"d": d, "elapsed_s": (now - d.created_at).total_seconds(), "attend_by": attend}
        )
    residents = sorted({d.resident_id for d in engaged if d.resident_id})
    names = {
        p.responder.responder_id: " · ".join(
            x for x in (p.responder.kind.value.replace("_", " "), p.responder.name) if x
        )
        for p in svc.dispatcher.directory.profiles()
    }
    return _page(
        request,
        "console/board.html",
        session,
        rows=rows,
        now=now,
        who=await console.services.store.who(residents),
        names=names,
    )


@router.get("/supervisor", response_class=HTMLResponse)
async def supervisor(
    request: Request, user: Supervisor, session: SessionDep, svc: Svc, console: Console
) -> HTMLResponse:
    now = svc.clock.now()
    alarms = await svc.store.find_dispatches(DispatchFilter(open=True, limit=10_000))
    waiting = [a for a in alarms if a.state in UNANSWERED]
    depth: dict[int, int] = {}
    for a in waiting:
        depth[a.priority] = depth.get(a.priority, 0) + 1
    since = now - timedelta(minutes=svc.config.web.session_idle_min)
    owners = await console.store.owners()
    return _page(
        request,
        "console/supervisor.html",
        session,
        logged_in=await svc.accounts.logged_in(since),
        watching=console.hub.clients(),
        owners=owners,
        who=await console.services.store.who([o.owner_key for o in owners]),
        depth=sorted(depth.items()),
        oldest=min(waiting, key=lambda a: a.created_at, default=None),
        overdue=[a for a in waiting if (now - a.created_at).total_seconds() >= ANSWER_TARGET_S],
        open_count=len(alarms),
        hub=console.hub,
        now=now,
    )


@router.get("/outage", response_class=HTMLResponse)
async def outage(
    request: Request,
    user: Operator,
    session: SessionDep,
    svc: Svc,
    console: Console,
    hours: int = 12,
    late_s: int = 120,
) -> HTMLResponse:
    """What arrived late (an outage's backlog) and which residents to call back."""
    now = svc.clock.now()
    hours, late_s = max(1, min(hours, 168)), max(10, late_s)
    late = await console.services.store.late_arrivals(now - timedelta(hours=hours), late_s)
    residents: dict[str, list[Any]] = {}
    for e in late:
        residents.setdefault(e.resident_id or f"site {e.site_id}", []).append(e)
    return _page(
        request,
        "console/outage.html",
        session,
        late=late,
        residents=residents,
        hours=hours,
        late_s=late_s,
        now=now,
    )


@router.get("/report", response_class=HTMLResponse)
async def report(
    request: Request,
    user: Operator,
    session: SessionDep,
    svc: Svc,
    start: str = "",
    end: str = "",
    period: str = "day",
) -> HTMLResponse:
    """Response times by the same function as ``telecare report responses``."""
    now = svc.clock.now()
    periods = {"hour": timedelta(hours=1), "day": timedelta(days=1), "week": timedelta(weeks=1)}
    try:
        first = (
            _day(start)
            if start
            else (now - timedelta(days=7)).replace(hour=0, minute=0, second=0, microsecond=0)
        )
        last = _day(end) if end else first + timedelta(days=8)
    except ValueError:
        return _page(
            request,
            "console/report.html",
            session,
            figures=[],
            start=start,
            end=end,
            period=period,
            bad="dates are YYYY-MM-DD",
        )
    figures = await build_report(
        svc.dispatcher.repo,
        first,
        last,
        periods.get(period, periods["day"]),
        attend_config(svc.config),
    )
    return _page(
        request,
        "console/report.html",
        session,
        figures=figures,
        start=first.date().isoformat(),
        end=last.date().isoformat(),
        period=period,
        bad="",
    )


def _day(text: str) -> datetime:
    day = datetime.fromisoformat(text)
    return day if day.tzinfo else day.replace(tzinfo=UTC)
