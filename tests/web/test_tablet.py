"""The care-home NEWS2 page (issue 12 part 4) against the real app, pipeline and dispatch
service on both store backends: pages, pre-fill from devices, idempotent submission with
soft signs and SBARD, teletriage, and one site never seeing another."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from telecare.devices.model import (
    Device,
    DeviceKind,
    Metric,
    Reading,
    Resident,
    Site,
    SiteKind,
)
from telecare.gateway.store.accounts import Role
from telecare.gateway.web.tablet_store import tablet_sets_of
from telecare.rules.config import DEFAULT_ADVICE
from tests.web.conftest import WebEnv

NORMAL = {
    "respiration_rate": 16,
    "spo2": 97,
    "on_oxygen": False,
    "systolic_bp": 120,
    "pulse": 70,
    "consciousness": "A",
    "temperature": 36.8,
}
#: NEWS2 5 (medium): respiration 22 (2), SpO2 95 (1), systolic 108 (1), temperature 38.4 (1).
MEDIUM = {**NORMAL, "respiration_rate": 22, "spo2": 95, "systolic_bp": 108, "temperature": 38.4}
SETS = "/tablet/api/residents/{}/sets"


@pytest.fixture
async def home(web: WebEnv) -> WebEnv:
    store = web.store
    await store.upsert_site(Site("oak", SiteKind.CARE_HOME, "Oak House"))
    await store.upsert_site(Site("elm", SiteKind.CARE_HOME, "Elm Court"))
    await store.upsert_resident(Resident("oak-r1", "oak", "Ada Smith"))
    await store.upsert_resident(Resident("oak-r2", "oak", "Bill Jones"))
    await store.upsert_resident(Resident("elm-r1", "elm", "Cora Patel"))
    await store.upsert_device(Device("oak-r1-oxi", "oak", DeviceKind.OXIMETER, "oak-r1"))
    await store.upsert_device(Device("oak-tab", "oak", DeviceKind.TABLET))
    return web


def _key(n: int) -> dict[str, str]:
    return {"Idempotency-Key": f"test-key-{n:04d}"}


async def test_a_carer_sees_only_their_own_sites_residents(home: WebEnv) -> None:
    carer = await home.login("carer", Role.CARE_HOME, "oak")
    page = await carer.get("/tablet", headers={"accept": "text/html"})
    assert page.status_code == 200
    assert "Ada Smith" in page.text
    assert "Bill Jones" in page.text
    assert "Cora Patel" not in page.text
    other = await carer.get("/tablet/residents/elm-r1", headers={"accept": "text/html"})
    assert other.status_code == 404
    refused = await carer.post(
        SETS.format("elm-r1"), json={"observations": NORMAL}, headers=_key(1)
    )
    assert refused.status_code == 404
    token = await home.token("elm")
    anon = await home.client()
    by_token = await anon.post(
        SETS.format("oak-r1"),
        json={"observations": NORMAL},
        headers={**_key(2), "Authorization": f"Bearer {token}"},
    )
    assert by_token.status_code == 404
    assert (
        await home.store.news2_history(
            "oak-r1", home.clock.now() - timedelta(days=1), home.clock.now() + timedelta(days=1)
        )
        == []
    )


async def test_the_form_is_prefilled_from_a_recent_device_reading_with_source_and_age(
    home: WebEnv,
) -> None:
    now = home.clock.now()
    await home.store.write_readings(
        [
            Reading("oak-r1-oxi", Metric.SPO2, 94, "%", now - timedelta(minutes=3), "m1", "oak-r1"),
            Reading(
                "oak-r1-oxi", Metric.PULSE, 88, "/min", now - timedelta(minutes=3), "m1", "oak-r1"
            ),
            # Too old to pre-fill, and a tablet's typed value is never a device source.
            Reading(
                "oak-r1-oxi",
                Metric.SYSTOLIC_BP,
                131,
                "mm[Hg]",
                now - timedelta(minutes=30),
                "m0",
                "oak-r1",
            ),
            Reading(
                "oak-tab",
                Metric.TEMPERATURE,
                37.9,
                "Cel",
                now - timedelta(minutes=1),
                "t1",
                "oak-r1",
            ),
        ]
    )
    carer = await home.login("carer", Role.CARE_HOME, "oak")
    page = await carer.get("/tablet/residents/oak-r1", headers={"accept": "text/html"})
    assert page.status_code == 200
    assert re.search(r'id="f-spo2"[^>]*value="94"', page.text)
    assert re.search(r'id="f-pulse"[^>]*value="88"', page.text)
    assert not re.search(r'id="f-systolic_bp"[^>]*value=', page.text)
    assert not re.search(r'id="f-temperature"[^>]*value=', page.text)
    assert "from oximeter oak-r1-oxi, 3 min ago" in page.text


async def test_a_set_is_scored_with_advice_and_sbard_and_a_retry_is_never_a_duplicate(
    home: WebEnv,
) -> None:
    carer = await home.login("carer", Role.CARE_HOME, "oak")
    body = {"observations": MEDIUM, "soft_signs": ["not_eating", "drowsy"]}
    first = await carer.post(SETS.format("oak-r1"), json=body, headers=_key(3))
    assert first.status_code == 200, first.text
    answer = first.json()
    result = answer["result"]
    news2 = result["news2"]
    assert (news2["total"], news2["risk"], news2["complete"]) == (5, "medium", True)
    assert news2["sub_scores"]["respiration_rate"] == 2
    assert news2["monitoring"] == "minimum 1-hourly"
    assert result["advice"] == DEFAULT_ADVICE["medium"]
    assert (result["site_id"], result["resident_id"]) == ("oak", "oak-r1")
    dispatch = result["dispatch"]  # medium risk raises an alert: a dispatch opens
    assert dispatch is not None
    assert dispatch["state"] == "raised"
    assert answer["soft_signs"] == ["drowsy", "not_eating"]
    letters = [s["letter"] for s in answer["sbard"]]
    assert letters == ["S", "B", "A", "R", "D"]
    situation = answer["sbard"][0]["text"]
    assert "Ada Smith" in situation
    assert "NEWS2 is 5 (medium risk)" in situation
    assert "not eating or drinking as usual" in situation
    assert "Respiration rate 22 /min (scores 2)" in answer["sbard"][2]["text"]
    assert DEFAULT_ADVICE["medium"] in answer["sbard"][3]["text"]

    again = await carer.post(SETS.format("oak-r1"), json=body, headers=_key(3))
    assert again.status_code == 200
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["result"] == result
    window = (home.clock.now() - timedelta(hours=1), home.clock.now() + timedelta(hours=1))
    assert len(await home.store.news2_history("oak-r1", *window)) == 1

    changed = {"observations": {**MEDIUM, "pulse": 140}}
    conflict = await carer.post(SETS.format("oak-r1"), json=changed, headers=_key(3))
    assert conflict.status_code == 409
    assert len(await home.store.news2_history("oak-r1", *window)) == 1


async def test_a_partial_set_names_what_is_missing(home: WebEnv) -> None:
    carer = await home.login("carer", Role.CARE_HOME, "oak")
    partial = {"spo2": 96, "pulse": 80}
    r = await carer.post(SETS.format("oak-r2"), json={"observations": partial}, headers=_key(4))
    assert r.status_code == 200, r.text
    result = r.json()["result"]["news2"]
    assert (result["complete"], result["total"]) == (False, None)
    assert set(result["missing"]) == {
        "respiration_rate",
        "on_oxygen",
        "systolic_bp",
        "consciousness",
        "temperature",
    }
    assert "partial set" in r.json()["sbard"][0]["text"]


async def test_bad_input_is_422_with_a_message_per_field(home: WebEnv) -> None:
    carer = await home.login("carer", Role.CARE_HOME, "oak")
    bad = {"observations": {"spo2": 130, "consciousness": "X"}, "soft_signs": ["sad"]}
    r = await carer.post(SETS.format("oak-r1"), json=bad, headers=_key(5))
    assert r.status_code == 422
    fields = {tuple(d["loc"][-2:]) for d in r.json()["detail"]}
    assert ("observations", "spo2") in fields
    assert ("observations", "consciousness") in fields
    assert ("body", "soft_signs") in fields
    no_key = await carer.post(SETS.format("oak-r1"), json={"observations": NORMAL})
    assert no_key.status_code == 422
    assert "Idempotency-Key" in no_key.json()["detail"]
    # Plausible values, impossible together: refused by the pipeline, key released.
    dead = {"observations": {**NORMAL, "pulse": 0}}
    refused = await carer.post(SETS.format("oak-r1"), json=dead, headers=_key(6))
    assert refused.status_code == 422
    assert await tablet_sets_of(home.store).get("oak", "test-key-0006") is None


async def test_teletriage_carries_the_sbard_and_soft_signs_once(home: WebEnv) -> None:
    carer = await home.login("carer", Role.CARE_HOME, "oak")
    body = {"observations": NORMAL, "soft_signs": ["confusion"]}
    scored = await carer.post(SETS.format("oak-r1"), json=body, headers=_key(7))
    assert scored.status_code == 200
    url = "/tablet/api/residents/oak-r1/teletriage"
    first = await carer.post(url, json={"set_key": "test-key-0007"})
    assert first.status_code == 200, first.text
    alert_id, dispatch_id = first.json()["alert_id"], first.json()["dispatch_id"]
    assert dispatch_id is not None
    dispatch = await home.services.dispatcher.repo.load_for_alert(alert_id)
    assert dispatch is not None
    assert dispatch.dispatch_id == dispatch_id
    assert dispatch.resident_id == "oak-r1"
    second = await carer.post(url, json={"set_key": "test-key-0007"})
    assert second.json() == first.json()
    stored = await tablet_sets_of(home.store).get("oak", "test-key-0007")
    assert stored is not None
    assert stored.teletriage_alert_id == alert_id
    assert stored.soft_signs == ["confusion"]
    assert stored.entered_by == "user:carer"


async def test_the_trend_shows_each_score(home: WebEnv) -> None:
    carer = await home.login("carer", Role.CARE_HOME, "oak")
    for n, values in enumerate((NORMAL, MEDIUM)):
        r = await carer.post(
            SETS.format("oak-r2"), json={"observations": values}, headers=_key(10 + n)
        )
        assert r.status_code == 200
        home.clock.advance(600)
    page = await carer.get("/tablet/residents/oak-r2", headers={"accept": "text/html"})
    assert page.text.count("<circle") == 2
    assert "NEWS2 5 (medium)" in page.text
    assert "NEWS2 0 (low)" in page.text
    index = await carer.get("/tablet", headers={"accept": "text/html"})
    assert "NEWS2 5" in index.text
