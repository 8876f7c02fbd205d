"""The care-home API against the real app, store (both backends), pipeline and dispatch."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import httpx
import pytest

from telecare.gateway.store.accounts import Role
from telecare.gateway.store.reports import DispatchFilter
from telecare.gateway.web.api_care_home import ObservationIn
from telecare.gateway.web.api_common import body_hash
from tests.web.conftest import WebEnv

SEPSIS_LIKE = {
    "respiration_rate": 26,
    "spo2": 91,
    "on_oxygen": False,
    "systolic_bp": 95,
    "pulse": 125,
    "consciousness": "A",
    "temperature": 38.6,
}
NORMAL = {
    "respiration_rate": 16,
    "spo2": 97,
    "on_oxygen": False,
    "systolic_bp": 125,
    "pulse": 72,
    "consciousness": "A",
    "temperature": 36.8,
}


async def _client(web: WebEnv, site: str = "S1") -> httpx.AsyncClient:
    await web.care_home(site, f"{site}-r1", f"{site}-r2")
    c = await web.client()
    c.headers["Authorization"] = f"Bearer {await web.token(site)}"
    return c


def _key() -> dict[str, str]:
    return {"Idempotency-Key": str(uuid.uuid4())}


async def test_a_high_score_answers_news2_advice_and_the_dispatch(web: WebEnv) -> None:
    c = await _client(web)
    r = await c.post(
        "/api/v1/sites/S1/residents/S1-r1/observations", json=SEPSIS_LIKE, headers=_key()
    )
    assert r.status_code == 201, r.text
    body = r.json()
    news = body["news2"]
    assert news["complete"] is True
    # RR 26: 3, SpO2 91: 3, air: 0, BP 95: 2, pulse 125: 2, alert: 0, 38.6 degC: 1
    assert news["total"] == 11
    assert news["risk"] == "high"
    assert news["sub_scores"]["respiration_rate"] == 3
    assert news["missing"] == []
    assert news["monitoring"]
    assert body["advice"]
    assert body["dispatch"]["state"] == "raised"
    assert body["dispatch"]["resident_id"] == "S1-r1"


async def test_a_normal_set_opens_no_dispatch(web: WebEnv) -> None:
    c = await _client(web)
    r = await c.post("/api/v1/sites/S1/residents/S1-r1/observations", json=NORMAL, headers=_key())
    assert r.status_code == 201, r.text
    assert r.json()["news2"]["total"] == 0
    assert r.json()["news2"]["risk"] == "low"
    assert r.json()["dispatch"] is None


async def test_a_partial_set_names_what_is_missing(web: WebEnv) -> None:
    c = await _client(web)
    r = await c.post(
        "/api/v1/sites/S1/residents/S1-r1/observations", json={"spo2": 96}, headers=_key()
    )
    assert r.status_code == 201, r.text
    news = r.json()["news2"]
    assert news["complete"] is False
    assert news["total"] is None
    assert "pulse" in news["missing"]
    assert news["sub_scores"] == {"spo2": 0}


async def test_retry_with_the_same_key_gives_the_same_answer_and_stores_once(
    web: WebEnv,
) -> None:
    c = await _client(web)
    key = _key()
    url = "/api/v1/sites/S1/residents/S1-r1/observations"
    first = await c.post(url, json=SEPSIS_LIKE, headers=key)
    again = await c.post(url, json=SEPSIS_LIKE, headers=key)
    assert first.status_code == again.status_code == 201
    assert first.content == again.content
    assert again.headers["Idempotent-Replayed"] == "true"
    now = web.clock.now()
    scores = await web.store.news2_history("S1-r1", now - timedelta(hours=1), now + timedelta(1))
    assert len(scores) == 1
    assert len(await web.store.find_dispatches(DispatchFilter(open=True))) == 1


async def test_concurrent_retries_with_one_key_store_once(web: WebEnv) -> None:
    c = await _client(web)
    key = _key()
    url = "/api/v1/sites/S1/residents/S1-r1/observations"
    answers = await asyncio.gather(*(c.post(url, json=NORMAL, headers=key) for _ in range(4)))
    codes = sorted(a.status_code for a in answers)
    assert 201 in codes
    assert set(codes) <= {201, 409}
    now = web.clock.now()
    assert len(await web.store.news2_history("S1-r1", now - timedelta(hours=1), now)) <= 1


async def test_same_key_different_body_is_409(web: WebEnv) -> None:
    c = await _client(web)
    key = _key()
    url = "/api/v1/sites/S1/residents/S1-r1/observations"
    assert (await c.post(url, json=NORMAL, headers=key)).status_code == 201
    r = await c.post(url, json={**NORMAL, "pulse": 80}, headers=key)
    assert r.status_code == 409
    assert "different request" in r.json()["detail"]


async def test_validation_errors_are_422_with_a_message_per_field(web: WebEnv) -> None:
    c = await _client(web)
    r = await c.post(
        "/api/v1/sites/S1/residents/S1-r1/observations",
        json={"spo2": 140, "pulse": -1, "consciousness": "Z", "colour": "red"},
        headers=_key(),
    )
    assert r.status_code == 422
    fields = {tuple(e["loc"][1:]) for e in r.json()["detail"]}
    assert {("spo2",), ("pulse",), ("consciousness",), ("colour",)} <= fields
    assert all(e["msg"] for e in r.json()["detail"])
    missing_key = await c.post("/api/v1/sites/S1/residents/S1-r1/observations", json=NORMAL)
    assert missing_key.status_code == 422
    assert missing_key.json()["detail"][0]["loc"] == ["header", "Idempotency-Key"]


async def test_an_implausible_combination_is_422_and_not_stored(web: WebEnv) -> None:
    c = await _client(web)
    r = await c.post(
        "/api/v1/sites/S1/residents/S1-r1/observations",
        json={"pulse": 0, "consciousness": "A"},
        headers=_key(),
    )
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["msg"]


async def test_a_set_from_the_future_is_422(web: WebEnv) -> None:
    c = await _client(web)
    later = (web.clock.now() + timedelta(hours=2)).isoformat()
    r = await c.post(
        "/api/v1/sites/S1/residents/S1-r1/observations",
        json={**NORMAL, "taken_at": later},
        headers=_key(),
    )
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["body", "taken_at"]


async def test_residents_with_latest_vitals_and_trend(web: WebEnv) -> None:
    c = await _client(web)
    url = "/api/v1/sites/S1/residents/S1-r1/observations"
    assert (await c.post(url, json=NORMAL, headers=_key())).status_code == 201
    web.clock.advance(minutes=30)
    assert (await c.post(url, json=SEPSIS_LIKE, headers=_key())).status_code == 201
    r = await c.get("/api/v1/sites/S1/residents")
    assert r.status_code == 200
    by_id = {x["resident_id"]: x for x in r.json()["residents"]}
    assert set(by_id) == {"S1-r1", "S1-r2"}
    one = by_id["S1-r1"]
    assert one["latest"]["pulse"]["value"] == 125
    assert one["latest"]["spo2"]["unit"] == "%"
    assert [p["total"] for p in one["trend"]] == [0, 11]
    assert one["direction"] == "rising"
    assert by_id["S1-r2"]["news2"] is None


async def test_history_is_downsampled(web: WebEnv) -> None:
    c = await _client(web)
    url = "/api/v1/sites/S1/residents/S1-r1/observations"
    for i in range(6):
        body = {**NORMAL, "pulse": 70 + i}
        assert (await c.post(url, json=body, headers=_key())).status_code == 201
        web.clock.advance(minutes=10)
    r = await c.get("/api/v1/sites/S1/residents/S1-r1/history", params={"hours": 2, "points": 4})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["bucket_s"] == 1800
    pulse = body["vitals"]["pulse"]
    assert 2 <= len(pulse) <= 3
    assert sum(b["count"] for b in pulse) == 6
    assert len(body["news2"]) == len(pulse)


async def test_teletriage_opens_a_clinical_dispatch_with_the_set(web: WebEnv) -> None:
    c = await _client(web)
    key = _key()
    r = await c.post("/api/v1/sites/S1/residents/S1-r1/observations", json=NORMAL, headers=key)
    assert r.status_code == 201
    t = await c.post(
        "/api/v1/sites/S1/residents/S1-r1/teletriage",
        json={
            "observation_key": key["Idempotency-Key"],
            "soft_signs": ["new confusion", "not eating"],
            "sbard": "S: Mrs B is more confused today...",
        },
        headers=_key(),
    )
    assert t.status_code == 201, t.text
    d = t.json()["dispatch"]
    assert d["state"] == "raised"
    assert t.json()["news2"]["total"] == 0
    alert = next(a for a in await web.store.recent_alerts() if a.alert_id == d["alert_id"])
    assert alert.detail["queue"] == "clinical"
    assert alert.detail["soft_signs"] == ["new confusion", "not eating"]
    assert alert.detail["requested_by"].startswith("token:")
    audit = await web.services.dispatcher.repo.audit(d["dispatch_id"])
    assert audit[0].actor == alert.detail["requested_by"]


async def test_teletriage_with_an_inline_set(web: WebEnv) -> None:
    c = await _client(web)
    t = await c.post(
        "/api/v1/sites/S1/residents/S1-r1/teletriage",
        json={"observations": SEPSIS_LIKE},
        headers=_key(),
    )
    assert t.status_code == 201, t.text
    assert t.json()["news2"]["total"] == 11
    assert t.json()["dispatch"]["priority"] == 1


async def test_a_care_home_user_session_reaches_only_their_site(web: WebEnv) -> None:
    await web.care_home("S1", "S1-r1")
    await web.care_home("S2", "S2-r1")
    c = await web.login("carer1", Role.CARE_HOME, site_id="S1")
    assert (await c.get("/api/v1/sites/S1/residents")).status_code == 200
    assert (await c.get("/api/v1/sites/S2/residents")).status_code == 404
    r = await c.post("/api/v1/sites/S1/residents/S1-r1/observations", json=NORMAL, headers=_key())
    assert r.status_code == 201


async def test_a_revoked_or_wrong_token_is_401(web: WebEnv) -> None:
    c = await _client(web)
    token = c.headers["Authorization"].removeprefix("Bearer ")
    token_id = token.removeprefix("tc_").split("_", 1)[0]
    assert (await c.get("/api/v1/sites/S1/residents")).status_code == 200
    c.headers["Authorization"] = "Bearer " + token[:-2] + "xx"
    assert (await c.get("/api/v1/sites/S1/residents")).status_code == 401
    c.headers["Authorization"] = "Bearer " + token
    await web.accounts.revoke_token(token_id, web.clock.now())
    assert (await c.get("/api/v1/sites/S1/residents")).status_code == 401


@pytest.mark.parametrize("path", ["/api/v1/sites/S1/residents"])
async def test_no_credentials_is_401(web: WebEnv, path: str) -> None:
    c = await web.client()
    assert (await c.get(path)).status_code == 401


async def test_a_claim_left_by_a_stopped_gateway_is_taken_over(web: WebEnv) -> None:
    c = await _client(web)
    key = _key()
    url = "/api/v1/sites/S1/residents/S1-r1/observations"
    # What a gateway that stopped mid-request leaves: the key claimed, no answer yet.
    claim = body_hash(url, ObservationIn.model_validate(NORMAL))
    now = web.clock.now()
    assert await web.accounts.reserve_answer("site:S1", key["Idempotency-Key"], claim, now)
    r = await c.post(url, json=NORMAL, headers=key)
    assert r.status_code == 409
    assert r.headers["Retry-After"] == "1", r.text
    web.clock.advance(minutes=2)
    r = await c.post(url, json=NORMAL, headers=key)
    assert r.status_code == 201, r.text
