"""The operator API against the real app, store (both backends) and dispatch service."""

from __future__ import annotations

import asyncio

import httpx

from telecare.devices.model import ResponderKind
from telecare.gateway.store.accounts import Role
from tests.web.conftest import WebEnv

KEYHOLDER = ("kh1", ResponderKind.KEYHOLDER)
WARDEN = ("mw1", ResponderKind.MOBILE_WARDEN)
AMBULANCE = ("amb1", ResponderKind.AMBULANCE)


async def _setup(web: WebEnv) -> None:
    await web.care_home("S1", "R1")
    await web.responders("R1", KEYHOLDER, WARDEN, AMBULANCE)


async def _post(c: httpx.AsyncClient, did: str, action: str, **body: object) -> httpx.Response:
    return await c.post(f"/api/v1/dispatches/{did}/{action}", json=body)


async def test_the_whole_life_of_an_alarm_audited_to_the_operator(web: WebEnv) -> None:
    await _setup(web)
    d = await web.raise_alarm("S1", "R1")
    alice = await web.login("alice")
    r = await _post(alice, d.dispatch_id, "acknowledge", version=d.version)
    assert r.status_code == 200, r.text
    v = r.json()["version"]
    r = await _post(alice, d.dispatch_id, "contact", version=v)
    assert r.json()["state"] == "responder_contacted"
    assert r.json()["responder_id"] == "kh1"
    r = await _post(
        alice, d.dispatch_id, "contact-outcome", version=r.json()["version"], outcome="no_answer"
    )
    assert r.status_code == 200, r.text
    # the cascade moved on to the warden by itself ("system"); the warden answers
    assert r.json()["state"] == "responder_contacted"
    assert r.json()["responder_id"] == "mw1"
    r = await _post(
        alice, d.dispatch_id, "contact-outcome", version=r.json()["version"], outcome="answered"
    )
    assert r.json()["state"] == "accepted", r.text
    r = await _post(alice, d.dispatch_id, "en-route", version=r.json()["version"])
    assert r.json()["state"] == "en_route"
    r = await _post(alice, d.dispatch_id, "arrived", version=r.json()["version"], note="with her")
    assert r.json()["state"] == "on_scene"
    r = await alice.post(f"/api/v1/dispatches/{d.dispatch_id}/notes", json={"text": "all well"})
    assert r.status_code == 201
    r = await _post(
        alice, d.dispatch_id, "close", version=r.json()["version"], outcome="assisted_at_home"
    )
    assert r.json()["state"] == "resolved"
    assert r.json()["outcome"] == "assisted_at_home"
    audit = (await alice.get(f"/api/v1/dispatches/{d.dispatch_id}")).json()["audit"]
    people = [a["actor"] for a in audit[1:] if a["actor"] != "system"]
    assert len(people) == 8  # ack, contact, no answer, answered, en route, arrived, note, close
    assert set(people) == {"alice"}
    assert [a["reason"] for a in audit if a["actor"] == "system"][-1] == "next in cascade"
    assert any(a["event"] == "note" and a["reason"] == "all well" for a in audit)


async def test_two_operators_acknowledging_at_once_one_wins_the_other_is_told_who(
    web: WebEnv,
) -> None:
    await _setup(web)
    d = await web.raise_alarm("S1", "R1")
    alice = await web.login("alice")
    bob = await web.login("bob")
    ra, rb = await asyncio.gather(
        _post(alice, d.dispatch_id, "acknowledge", version=d.version),
        _post(bob, d.dispatch_id, "acknowledge", version=d.version),
    )
    codes = sorted([ra.status_code, rb.status_code])
    assert codes == [200, 409]
    winner, loser = ("alice", rb) if ra.status_code == 200 else ("bob", ra)
    body = loser.json()
    assert body["owner"] == winner
    assert body["current"]["state"] == "acknowledged"
    assert winner in body["detail"]


async def test_a_stale_version_is_409_with_the_current_state(web: WebEnv) -> None:
    await _setup(web)
    d = await web.raise_alarm("S1", "R1")
    alice = await web.login("alice")
    r = await _post(alice, d.dispatch_id, "acknowledge", version=d.version)
    assert r.status_code == 200
    r = await _post(alice, d.dispatch_id, "escalate", version=d.version)
    assert r.status_code == 409
    assert r.json()["current"]["version"] == d.version + 1


async def test_an_illegal_action_is_409_and_a_bad_outcome_422(web: WebEnv) -> None:
    await _setup(web)
    d = await web.raise_alarm("S1", "R1")
    alice = await web.login("alice")
    r = await _post(alice, d.dispatch_id, "en-route", version=d.version)
    assert r.status_code == 409
    assert "cannot en_route" in r.json()["detail"]
    r = await _post(alice, d.dispatch_id, "close", version=d.version, outcome="made_up")
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["body", "outcome"]


async def test_injury_reroutes_to_999_and_handover_keeps_the_reference(web: WebEnv) -> None:
    await _setup(web)
    d = await web.raise_alarm("S1", "R1")
    alice = await web.login("alice")
    r = await _post(alice, d.dispatch_id, "acknowledge", version=d.version)
    r = await _post(alice, d.dispatch_id, "injury", version=r.json()["version"], note="bleeding")
    assert r.status_code == 200, r.text
    assert r.json()["responder_id"] == "amb1"
    r = await _post(alice, d.dispatch_id, "contact", version=r.json()["version"])
    assert r.json()["responder_id"] == "amb1"
    r = await _post(
        alice, d.dispatch_id, "handover-999", version=r.json()["version"], reference="AMB-123"
    )
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "accepted"
    audit = (await alice.get(f"/api/v1/dispatches/{d.dispatch_id}")).json()["audit"]
    assert [a["actor"] for a in audit[1:]] == ["alice"] * 4
    assert [a["reason"] for a in audit][2] == "bleeding"


async def test_assign_a_named_responder(web: WebEnv) -> None:
    await _setup(web)
    d = await web.raise_alarm("S1", "R1")
    alice = await web.login("alice")
    r = await _post(alice, d.dispatch_id, "acknowledge", version=d.version)
    r = await _post(alice, d.dispatch_id, "assign", version=r.json()["version"], responder_id="mw1")
    assert r.json()["responder_id"] == "mw1"
    r = await _post(
        alice, d.dispatch_id, "assign", version=r.json()["version"], responder_id="nobody"
    )
    assert r.status_code == 422


async def test_lists_filter_by_state_site_and_priority(web: WebEnv) -> None:
    await _setup(web)
    await web.care_home("S2", "R2")
    one = await web.raise_alarm("S1", "R1", priority=1)
    await web.raise_alarm("S2", "R2", priority=3)
    alice = await web.login("alice")
    await _post(alice, one.dispatch_id, "acknowledge", version=one.version)
    r = await alice.get("/api/v1/dispatches", params={"open": "true"})
    assert [d["priority"] for d in r.json()] == [1, 3]
    assert (await alice.get("/api/v1/dispatches", params={"open": "false"})).json() == []
    r = await alice.get("/api/v1/dispatches", params={"site_id": "S2"})
    assert [d["site_id"] for d in r.json()] == ["S2"]
    r = await alice.get("/api/v1/dispatches", params={"state": "acknowledged"})
    assert [d["dispatch_id"] for d in r.json()] == [one.dispatch_id]
    r = await alice.get("/api/v1/alarms", params={"max_priority": 2})
    assert [a["dispatch"]["dispatch_id"] for a in r.json()] == [one.dispatch_id]
    r = await alice.get("/api/v1/alarms", params={"since": "2026-01-05T09:00:00"})
    assert r.status_code == 422


async def test_only_operators_and_supervisors_act(web: WebEnv) -> None:
    await _setup(web)
    d = await web.raise_alarm("S1", "R1")
    installer = await web.login("ian", Role.INSTALLER)
    carer = await web.login("cara", Role.CARE_HOME, site_id="S1")
    sup = await web.login("sue", Role.SUPERVISOR)
    for c in (installer, carer):
        assert (await c.get("/api/v1/dispatches")).status_code == 403
        assert (await _post(c, d.dispatch_id, "acknowledge", version=1)).status_code == 403
    assert (await _post(sup, d.dispatch_id, "acknowledge", version=1)).status_code == 200
    anonymous = await web.client()
    assert (await anonymous.get("/api/v1/alarms")).status_code == 401


async def test_unknown_dispatch_is_404(web: WebEnv) -> None:
    alice = await web.login("alice")
    assert (await alice.get("/api/v1/dispatches/nope")).status_code == 404
    assert (await _post(alice, "nope", "acknowledge", version=1)).status_code == 404
    r = await alice.post("/api/v1/dispatches/nope/notes", json={"text": "x"})
    assert r.status_code == 404
