"""The console's pages and actions against the real app, store (both backends), pipeline
and dispatch service, with a fake clock: ownership, the action list, hold and recall,
no-progress return, closing rules, audited reveals, the outage list and the report."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from telecare.devices.model import (
    AlarmEvent,
    Alert,
    AlertKind,
    Device,
    DeviceKind,
    DispatchState,
    EventType,
    Phase,
    ReceiverAccount,
    ReceiverKind,
    Resident,
    Responder,
    ResponderKind,
    Site,
    SiteKind,
)
from telecare.gateway.config import Config
from telecare.gateway.pipeline import Activity, Pipeline
from telecare.gateway.store.accounts import Accounts, Role
from telecare.gateway.store.postgres import PostgresStore
from telecare.gateway.store.rows import StatusItem
from telecare.gateway.store.sqlite import SqliteStore
from telecare.gateway.web.app import create_app
from telecare.gateway.web.auth import CSRF_FIELD, hash_password
from telecare.gateway.web.console import running_console
from telecare.gateway.web.console_service import ConsoleService, ConsoleSettings
from telecare.gateway.web.services import Services
from telecare.rules.alarms import alarm_id_for
from telecare.rules.clock import FakeClock
from tests.helpers import dispatch_for, eventually, running_pipeline

PASSWORD = "correct horse battery staple"
T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


@dataclass
class Env:
    pipeline: Pipeline
    console: ConsoleService
    clock: FakeClock
    store: SqliteStore | PostgresStore
    stack: AsyncExitStack
    app: object

    async def login(self, username: str, role: Role = Role.OPERATOR) -> httpx.AsyncClient:
        accounts = Accounts(self.store.sql)
        await accounts.add_user(
            username, username.title(), role, hash_password(PASSWORD), self.clock.now()
        )
        c = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app),  # type: ignore[arg-type]
            base_url="https://testserver",
            follow_redirects=False,
        )
        await self.stack.enter_async_context(c)
        r = await c.post("/api/v1/session", json={"username": username, "password": PASSWORD})
        assert r.status_code == 200, r.text
        c.headers["X-CSRF-Token"] = r.json()["csrf_token"]
        return c

    async def press(
        self,
        msg_id: str,
        ts: datetime | None = None,
        kind: EventType = EventType.PENDANT,
        *,
        injury: bool = False,
    ) -> str:
        at = ts or self.clock.now()
        event = AlarmEvent("pend1", kind, Phase.ALARM, at, msg_id, "s1", "res1", injury=injury)
        await self.pipeline.handle_event(event, received_at=self.clock.now())
        return (await dispatch_for(self.store, _alert_of(msg_id))).dispatch_id


def _alert_of(msg_id: str) -> str:
    from telecare.rules.alarms import alarm_id_for

    return alarm_id_for("pend1", msg_id)


@pytest.fixture
async def env(store: SqliteStore | PostgresStore) -> AsyncIterator[Env]:
    clock = FakeClock(T0)
    await store.upsert_site(Site("s1", SiteKind.HOME, "Rose Cottage", "1 High Street"))
    await store.upsert_responder(Responder("kh1", ResponderKind.KEYHOLDER, "J Smith"))
    await store.upsert_responder(Responder("kh2", ResponderKind.KEYHOLDER, "A Jones"))
    await store.upsert_responder(Responder("amb1", ResponderKind.AMBULANCE, "Ambulance"))
    await store.upsert_resident(Resident("res1", "s1", "Mrs A", responders=("kh1", "kh2")))
    await store.upsert_device(Device("pend1", "s1", DeviceKind.PENDANT, "res1"))
    async with AsyncExitStack() as stack:
        pipeline = await stack.enter_async_context(running_pipeline(store, clock))
        svc = Services(
            config=Config(),
            store=store,
            dispatcher=pipeline.dispatcher,
            accounts=Accounts(store.sql),
            clock=clock,
        )
        app = create_app(svc)
        console = await stack.enter_async_context(
            running_console(app, pipeline.feed, ConsoleSettings(tick_s=3600))
        )
        yield Env(pipeline, console, clock, store, stack, app)


def _error(r: httpx.Response) -> str:
    location = r.headers.get("location", "")
    found = re.search(r"error=([^&]+)", location)
    return httpx.QueryParams(f"e={found.group(1)}")["e"] if found else ""


async def _post(c: httpx.AsyncClient, url: str, **form: str) -> httpx.Response:
    r = await c.post(url, data=form)
    assert r.status_code == 303, r.text
    return r


async def test_queue_shows_a_new_alarm_waiting_and_unanswered(env: Env) -> None:
    op = await env.login("op1")
    dispatch_id = await env.press("m1")
    env.clock.advance(45)
    page = (await op.get("/console")).text
    assert f'data-dispatch="{dispatch_id}"' in page
    assert 'data-unanswered="1"' in page
    assert "Waiting for an operator" in page
    r = await op.get("/console/next")  # the n key
    assert r.headers["location"] == f"/console/alarm/{dispatch_id}"
    fragment = (await op.get("/console/queue")).text
    assert dispatch_id in fragment
    assert "<html" not in fragment


async def test_second_operator_is_told_who_owns_the_alarm_and_cannot_act(env: Env) -> None:
    op1, op2 = await env.login("op1"), await env.login("op2")
    dispatch_id = await env.press("m1")
    assert (await op1.get(f"/console/alarm/{dispatch_id}")).status_code == 200
    page = (await op2.get(f"/console/alarm/{dispatch_id}")).text
    assert "<strong>op1</strong> has this resident's alarms" in page
    r = await _post(op2, f"/console/alarm/{dispatch_id}/act", action="acknowledge")
    assert _error(r) == "op1 has this resident's alarms"
    d = await env.pipeline.dispatcher.repo.load(dispatch_id)
    assert d is not None
    assert d.state is DispatchState.RAISED
    queue = (await op2.get("/console/queue")).text
    assert "Being handled" in queue
    assert re.search(rf'data-dispatch="{dispatch_id}".*?op1', queue, re.S)


async def test_action_list_acknowledge_contact_outcomes_hold_recall_and_close(env: Env) -> None:
    op = await env.login("op1")
    dispatch_id = await env.press("m1")
    url = f"/console/alarm/{dispatch_id}"
    page = (await op.get(url)).text
    assert 'data-action="acknowledge"' in page
    assert not _error(await _post(op, f"{url}/act", action="acknowledge"))
    assert 'data-action="contact"' in (await op.get(url)).text
    assert not _error(await _post(op, f"{url}/act", action="contact"))
    page = (await op.get(url)).text
    assert 'data-action="outcome"' in page
    assert "phoned: waiting for an answer" in page
    # No answer from kh1: the dispatch service phones kh2 next, by itself.
    assert not _error(await _post(op, f"{url}/act", action="no_answer"))
    page = (await op.get(url)).text
    assert re.search(r"kh1.*?no answer", page, re.S)
    assert re.search(r"kh2.*?phoned: waiting for an answer", page, re.S)

    # Hold for 5 minutes: on hold in the queue, then recalled with a notice.
    second = await env.press("m-other", kind=EventType.FALL)
    r = await _post(op, f"/console/alarm/{second}/hold", minutes="5")
    assert "acknowledge the alarm before" in _error(r)
    r = await _post(op, f"{url}/hold", minutes="5", reason="calling back the daughter")
    assert r.headers["location"] == "/console"
    assert "On hold" in (queue := (await op.get("/console/queue")).text)
    assert re.search(r"qs-held.*?" + dispatch_id, queue, re.S)
    env.clock.advance(301)
    assert await env.console.tick() == 1
    queue = (await op.get("/console/queue")).text
    assert re.search(r"qs-waiting.*?" + dispatch_id + r".*?recall", queue, re.S)

    # Closing is refused while the recall notice is unread; needs an outcome code.
    page = (await op.get(url)).text
    assert "recalled from hold (set by op1)" in page
    r = await _post(op, f"{url}/close", outcome="false_alarm", false_alarm="true")
    assert "acknowledge the 1 open notice" in _error(r)
    notice_id = re.search(rf"{url}/notice/(\d+)", page)
    assert notice_id is not None
    await _post(op, f"{url}/notice/{notice_id.group(1)}")
    assert "choose an outcome" in _error(await _post(op, f"{url}/close", outcome=""))
    r = await _post(
        op,
        f"{url}/close",
        outcome="no_action_needed",
        false_alarm="true",
        note="pressed by mistake",
    )
    assert not _error(r)
    d = await env.pipeline.dispatcher.repo.load(dispatch_id)
    assert d is not None
    assert (d.state, d.outcome) == (DispatchState.RESOLVED, "no_action_needed")
    closure = await env.console.store.closure(dispatch_id)
    assert closure is not None
    assert (closure.false_alarm, closure.closed_by) == (True, "op1")
    actors = {a.actor for a in await env.store.dispatches.audit(dispatch_id)}
    assert {"op1", "system"} <= actors
    page = (await op.get(url)).text
    assert re.search(r'class="actor">op1<', page)
    # Still op1's: the resident has another open alarm (released with the last one).
    assert [o.operator for o in await env.console.store.owners()] == ["op1"]


async def test_an_acknowledged_alarm_left_alone_returns_to_the_queue(env: Env) -> None:
    op = await env.login("op1")
    dispatch_id = await env.press("m1")
    await _post(op, f"/console/alarm/{dispatch_id}/act", action="acknowledge")
    env.clock.advance(60)
    assert await env.console.tick() == 0
    env.clock.advance(150)
    assert await env.console.tick() == 1
    assert await env.console.store.owners() == []
    notices = await env.console.store.notices(dispatch_id)
    assert [n.kind for n in notices] == ["recall"]
    assert "no progress for 3 min" in notices[0].text


async def test_key_safe_is_shown_on_demand_and_each_view_is_audited(env: Env) -> None:
    op = await env.login("op1")
    await env.console.store.add_note(
        "res1", "key_safe", "code 4321, left of the door", "inst", env.clock.now()
    )
    await env.console.store.add_note(
        "res1",
        "hearing",
        "hard of hearing: speak slowly",
        "inst",
        env.clock.now(),
        env.clock.now() + timedelta(days=1),
    )
    page = (await op.get("/console/resident/res1")).text
    assert "4321" not in page
    assert "hard of hearing" in page
    assert "expiring" in page
    r = await op.post("/console/resident/res1/reveal/key_safe", data={CSRF_FIELD: ""})
    assert r.status_code == 200
    assert "code 4321" in r.text
    views = await env.console.store.views("res1")
    assert [(v.what, v.operator) for v in views] == [("key_safe", "op1")]
    assert (await op.post("/console/resident/res1/reveal/address")).status_code == 404


async def test_resident_banner_has_svg_charts_and_device_health(env: Env) -> None:
    op = await env.login("op1")
    page = (await op.get("/console/resident/res1")).text
    assert page.count("<svg") == 4
    assert "NEWS2" in page
    assert "pend1" in page
    r = await op.get("/console/resident/res1/chart/spo2.svg")
    assert r.headers["content-type"].startswith("image/svg+xml")
    assert "no data in this period" in r.text


async def test_outage_list_names_late_alarms_and_residents_to_call_back(env: Env) -> None:
    env.clock.set(datetime.now(UTC))  # received_at is the database's own clock
    op = await env.login("op1")
    await env.press("late1", ts=env.clock.now() - timedelta(minutes=40))
    await env.press("on-time")
    page = (await op.get("/console/outage?hours=2&late_s=120")).text
    assert "Residents to call back (1)" in page
    assert "res1" in page
    assert "pendant" in page


async def test_report_page_uses_the_cli_computation_and_states_the_method(env: Env) -> None:
    op = await env.login("op1")
    dispatch_id = await env.press("m1")
    env.clock.advance(20)
    await _post(op, f"/console/alarm/{dispatch_id}/act", action="acknowledge")
    page = (await op.get("/console/report?start=2026-01-05&end=2026-01-06&period=day")).text
    assert "Method" in page
    assert "response_report" in page
    assert "100.0 %" in page  # answered within 60 s: 1 of 1


async def test_supervisor_view_needs_the_supervisor_role(env: Env) -> None:
    op = await env.login("op1")
    sup = await env.login("sup1", Role.SUPERVISOR)
    await env.press("m1")
    env.clock.advance(90)
    assert (await op.get("/console/supervisor")).status_code == 403
    page = (await sup.get("/console/supervisor")).text
    assert "Overflow" in page
    assert "Oldest unanswered" in page


async def test_handed_to_ambulance_keeps_its_reference_and_is_rechecked(env: Env) -> None:
    op = await env.login("op1")
    dispatch_id = await env.press("f1", kind=EventType.FALL, injury=True)
    url = f"/console/alarm/{dispatch_id}"
    await _post(op, f"{url}/act", action="acknowledge")
    await _post(op, f"{url}/act", action="contact")
    page = (await op.get(url)).text
    assert 'data-action="handover"' in page  # an ambulance: the 999 reference, not "answered"
    assert "reference" in _error(await _post(op, f"{url}/act", action="handover", reference=" "))
    assert not _error(await _post(op, f"{url}/act", action="handover", reference="CAD-4711"))
    page = (await op.get(url)).text
    assert "ref CAD-4711" in page
    assert "re-check at" in page
    env.clock.advance(15 * 60 + 1)
    assert await env.console.tick() == 1
    notices = await env.console.store.notices(dispatch_id)
    assert "re-check the ambulance (ref CAD-4711)" in notices[-1].text
    assert await env.console.store.owners() == []  # back in the queue for anyone
    env.clock.advance(15 * 60 + 1)  # a person on the floor, 30 min on: supervisors told
    assert await env.console.tick() == 1
    notices = await env.console.store.notices(dispatch_id)
    assert "supervisor alerted" in notices[-1].text


async def test_a_repeat_press_on_an_acknowledged_alarm_is_a_notice(env: Env) -> None:
    op = await env.login("op1")
    dispatch_id = await env.press("m1")
    await _post(op, f"/console/alarm/{dispatch_id}/act", action="acknowledge")
    env.clock.advance(5)
    event = AlarmEvent("pend1", EventType.PENDANT, Phase.ALARM, env.clock.now(), "m2", "s1", "res1")
    await env.pipeline.handle_event(event, received_at=env.clock.now())
    notices = await eventually(
        lambda: env.console.store.notices(dispatch_id), lambda found: bool(found)
    )
    assert "pressed again" in notices[0].text


async def test_live_stream_needs_a_login_and_metrics_count_its_clients(env: Env) -> None:
    anonymous = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=env.app),  # type: ignore[arg-type]
        base_url="https://testserver",
    )
    await env.stack.enter_async_context(anonymous)
    assert (await anonymous.get("/console/live")).status_code == 401
    client = env.console.hub.connect("op1")
    metrics = (await anonymous.get("/metrics")).text
    assert "telecare_sse_clients 1.0" in metrics
    env.console.hub.disconnect(client)


async def test_a_second_alarm_at_an_address_with_a_responder_on_the_way_warns(env: Env) -> None:
    op = await env.login("op1")
    first = await env.press("m1")
    url = f"/console/alarm/{first}"
    for action in ("acknowledge", "contact", "answered"):
        assert not _error(await _post(op, f"{url}/act", action=action))
    await env.store.upsert_device(Device("smoke1", "s1", DeviceKind.SMOKE_DETECTOR, "res1"))
    event = AlarmEvent("smoke1", EventType.SMOKE, Phase.ALARM, env.clock.now(), "s1m", "s1", "res1")
    await env.pipeline.handle_event(event, received_at=env.clock.now())
    from telecare.rules.alarms import alarm_id_for

    second = (await dispatch_for(env.store, alarm_id_for("smoke1", "s1m"))).dispatch_id
    page = (await op.get(f"/console/alarm/{second}")).text
    assert "Already dispatched to this address" in page
    assert first in page


async def test_a_supervisor_takes_over_and_the_owner_hands_back(env: Env) -> None:
    op = await env.login("op1")
    sup = await env.login("sup1", Role.SUPERVISOR)
    dispatch_id = await env.press("m1")
    await op.get(f"/console/alarm/{dispatch_id}")
    assert (await op.post(f"/console/alarm/{dispatch_id}/takeover")).status_code == 403
    assert "Take over" in (await sup.get(f"/console/alarm/{dispatch_id}")).text
    await _post(sup, f"/console/alarm/{dispatch_id}/takeover")
    assert [o.operator for o in await env.console.store.owners()] == ["sup1"]
    r = await _post(op, f"/console/alarm/{dispatch_id}/act", action="acknowledge")
    assert _error(r) == "sup1 has this resident's alarms"
    await _post(sup, f"/console/alarm/{dispatch_id}/handback")
    assert await env.console.store.owners() == []


async def test_a_pendant_that_closes_its_connection_after_its_alarm_is_not_offline(
    env: Env,
) -> None:
    """A pendant connects, presses and disconnects (its last will / clean "offline"): the
    alarm proves it alive, so the banner says when it was last heard, not OFFLINE; only
    a device silent for the grace period after dropping off is OFFLINE."""
    # The store stamps an event's receive time itself (the wall clock): start there.
    env.clock.set(datetime.now(UTC))
    op = await env.login("op1")
    await env.store.write_status(StatusItem("pend1", env.clock.now(), True, False, None))
    env.clock.advance(600)
    await env.press("m1")
    env.clock.advance(2)
    await env.store.write_status(StatusItem("pend1", env.clock.now(), False, False, None))
    banner = (await op.get("/console/resident/res1")).text
    device = re.search(r"<li[^>]*>\s*<strong>pendant</strong> pend1.*?</li>", banner, re.S)
    assert device is not None
    assert "OFFLINE" not in device.group(0)
    assert "risk-dev" not in device.group(0)
    assert "not connected" in device.group(0)
    assert "last heard" in device.group(0)
    env.clock.advance(16 * 60)  # silent since: now it is a safety risk
    banner = (await op.get("/console/resident/res1")).text
    device = re.search(r"<li[^>]*>\s*<strong>pendant</strong> pend1.*?</li>", banner, re.S)
    assert device is not None
    assert "<strong>OFFLINE</strong>" in device.group(0)
    assert "risk-dev" in device.group(0)


async def test_a_scaip_alarm_shows_the_units_call_back_details(env: Env) -> None:
    await env.store.upsert_receiver_account(ReceiverAccount(ReceiverKind.SCAIP, "26317", "pend1"))
    event = AlarmEvent(
        "pend1",
        EventType.PENDANT,
        Phase.ALARM,
        env.clock.now(),
        "scaip-00001883",
        "s1",
        "res1",
        source="scaip",
        code=10,
        device_type="0005",
        location="011",
    )
    await env.pipeline.handle_event(event, received_at=env.clock.now())
    dispatch_id = (
        await dispatch_for(env.store, alarm_id_for("pend1", "scaip-00001883"))
    ).dispatch_id
    op = await env.login("op1")
    page = (await op.get(f"/console/alarm/{dispatch_id}")).text
    unit = re.search(r'<aside class="unit".*?</aside>', page, re.S)
    assert unit is not None
    assert "SCAIP" in unit.group(0)
    assert "SIP user 26317" in unit.group(0)
    assert re.search(r"Location code</dt><dd><strong>011</strong>", unit.group(0))
    assert "0005" in unit.group(0)
    # An MQTT pendant's alarm has no unit box.
    other = await env.press("m-mqtt", kind=EventType.FALL)
    assert 'class="unit"' not in (await op.get(f"/console/alarm/{other}")).text


async def test_console_actions_go_through_the_services_layer_with_the_version_shown(
    env: Env,
) -> None:
    """The console's forms carry the dispatch's version: an action on a dispatch that
    changed since the page was drawn is refused, not applied blind; the audit names the
    operator."""
    op = await env.login("op1")
    dispatch_id = await env.press("m1")
    url = f"/console/alarm/{dispatch_id}"
    page = (await op.get(url)).text
    shown = re.search(r'name="version" value="(\d+)"', page)
    assert shown is not None
    assert not _error(await _post(op, f"{url}/act", action="acknowledge", version=shown.group(1)))
    stale = await _post(op, f"{url}/act", action="contact", version=shown.group(1))
    assert "changed by someone else" in _error(stale)
    d = await env.pipeline.dispatcher.repo.load(dispatch_id)
    assert d is not None
    assert d.state is DispatchState.ACKNOWLEDGED
    assert not _error(await _post(op, f"{url}/act", action="contact", version=str(d.version)))
    audit = await env.store.dispatches.audit(dispatch_id)
    assert [(a.to_state, a.actor) for a in audit if a.actor == "op1"][:2] == [
        (DispatchState.ACKNOWLEDGED, "op1"),
        (DispatchState.RESPONDER_CONTACTED, "op1"),
    ]


async def test_an_alarm_is_in_the_queue_before_its_dispatch_is_open(env: Env) -> None:
    """The queue shows an announced alert at once (ringing), while the dispatch service
    opens its dispatch; then the dispatch's own row replaces it."""
    op = await env.login("op1")
    alert = Alert(
        "al-just-in",
        AlertKind.ALARM,
        1,
        "pendant alarm from device pend1",
        env.clock.now(),
        "s1",
        "res1",
        "pend1",
        EventType.PENDANT,
        "pend1/just-in",
    )
    await env.store.write_alerts([alert])  # stored, not yet handed to the dispatch service
    env.pipeline.feed.publish(
        Activity(
            "alert",
            alert.ts,
            f"P1 {alert.reason}",
            {"alert_id": alert.alert_id, "site_id": "s1", "resident_id": "res1", "priority": 1},
        )
    )
    queue = (await op.get("/console/queue")).text
    row = re.search(r'<tr class="row pending p1" data-alert="al-just-in".*?</tr>', queue, re.S)
    assert row is not None
    assert 'data-unanswered="1"' in row.group(0)
    assert "Mrs A" in row.group(0)
    assert "opening" in row.group(0)
    d = await env.pipeline.dispatcher.open(alert)
    # What the gateway's dispatch service announces on the feed (not wired in this env).
    env.pipeline.feed.publish(
        Activity("dispatch", d.updated_at, "raised", {"dispatch_id": d.dispatch_id})
    )
    queue = (await op.get("/console/queue")).text
    assert 'data-alert="al-just-in"' not in queue
    assert f'data-dispatch="{d.dispatch_id}"' in queue


async def test_queue_pages_get_the_just_in_row_then_the_queue_pushed(env: Env) -> None:
    """A queue page (``?scope=queue``) is pushed the just-in row the moment the alert is
    announced (from memory), then the whole queue, rendered once for every page."""
    hub = env.console.hub
    page = hub.connect("op1", scopes=frozenset({"queue"}))
    other = hub.connect("op2")  # an alarm page: events only, no snapshots
    dispatch_id = await env.press("m1")
    kinds: dict[str, str] = {}
    while "queue" not in kinds:
        item = await page.next(5.0)
        assert item is not None, "nothing pushed"
        if isinstance(item, bytes):
            text = item.decode()
            kinds[text.split("\n", 1)[0].removeprefix("event: ")] = text
    assert "just_in" in kinds
    assert "opening" in kinds["just_in"]
    assert f'data-dispatch="{dispatch_id}"' in kinds["queue"]
    assert env.console.queue_fragment.renders >= 1
    while (item := await other.next(0.2)) is not None:
        assert not isinstance(item, bytes)
