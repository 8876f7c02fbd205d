"""The alarm page's resident banner and its "other open alarms" against the real app,
store (both backends) and dispatch service.

The banner's cascade is the one the dispatch resolved (the resident's own responders,
then the on-call responders covering the site's area), not only the resident's own list
it showed before; on the resident page it is what a pendant alarm would get now.
"Other open alarms for this resident or address" in a care home is the resident's own
room and the building's own alarms, not every resident's: before, a care home listed
the whole site, so an operator saw "already dispatched to this address" for a stranger
down the corridor."""

from __future__ import annotations

import re
import uuid

import pytest

from telecare.devices.model import (
    Alert,
    AlertKind,
    Dispatch,
    EventType,
    Resident,
    Responder,
    ResponderKind,
    Site,
    SiteKind,
)
from telecare.gateway.dispatching import add_store_responders
from telecare.gateway.pipeline import ActivityFeed
from telecare.gateway.web.console import running_console
from telecare.gateway.web.console_service import ConsoleSettings
from tests.web.conftest import WebEnv


@pytest.fixture
async def web(web: WebEnv) -> WebEnv:
    """The app with its console running (the pages answer 503 without it)."""
    await web.stack.enter_async_context(
        running_console(web.app, ActivityFeed(), ConsoleSettings(tick_s=3600))
    )
    return web


def _section(html: str, pattern: str) -> str:
    found = re.search(pattern, html, re.DOTALL)
    assert found is not None, pattern
    return found.group(1)


def _banner_cascade(html: str) -> list[str]:
    """The responder ids of the banner's cascade, in order."""
    banner = _section(html, r'<article class="banner".*?<ol class="cascade">(.*?)</ol>')
    return re.findall(r"<li>([\w.-]+) <small>", banner)


def _others(html: str) -> set[str]:
    """The dispatch ids listed under "Other open alarms for this resident or address"."""
    found = re.search(r"Other open alarms for this resident or address:(.*?)</p>", html, re.DOTALL)
    return set(re.findall(r'href="/console/alarm/([\w-]+)"', found.group(1))) if found else set()


async def _site_alarm(web: WebEnv, site_id: str) -> Dispatch:
    """An alarm of the building itself (no resident): the corridor's smoke detector."""
    alert = Alert(
        alert_id=f"al-{uuid.uuid4().hex[:16]}",
        kind=AlertKind.ALARM,
        priority=1,
        reason="smoke",
        ts=web.clock.now(),
        site_id=site_id,
        event_type=EventType.SMOKE,
    )
    await web.store.write_alerts([alert])
    return await web.services.dispatcher.open(alert)


async def test_the_banner_shows_the_cascade_the_dispatch_resolved(web: WebEnv) -> None:
    await web.care_home("ch1", "r1")
    await web.responders("r1", ("kh1", ResponderKind.KEYHOLDER))
    # On call for the care home's area (``default``), not in the resident's own list.
    await web.store.upsert_responder(Responder("w1", ResponderKind.MOBILE_WARDEN, name="Warden"))
    await add_store_responders(web.services.dispatcher.directory, web.store)
    d = await web.raise_alarm("ch1", "r1")
    stored = [e.responder_id for e in await web.services.dispatcher.repo.cascade(d.dispatch_id)]
    assert stored[:2] == ["kh1", "w1"]

    client = await web.login("op1")
    page = await client.get(f"/console/alarm/{d.dispatch_id}")
    assert page.status_code == 200
    assert _banner_cascade(page.text) == stored
    assert "Warden · covers the area" in page.text
    assert "as this alarm&#39;s dispatch" in page.text or "as this alarm's dispatch" in page.text

    resident = await client.get("/console/resident/r1")
    assert resident.status_code == 200
    assert _banner_cascade(resident.text) == stored  # a pendant alarm now: the same
    assert "for a pendant alarm now" in resident.text


async def test_other_open_alarms_are_those_at_the_same_address(web: WebEnv) -> None:
    await web.care_home("ch1", "r1", "r2")
    await web.store.upsert_site(Site("h1", SiteKind.HOME, name="Home"))
    for rid in ("r3", "r4"):  # a couple at one home
        await web.store.upsert_resident(Resident(rid, "h1"))
    mine = await web.raise_alarm("ch1", "r1")
    mine_again = await web.raise_alarm("ch1", "r1")
    next_door = await web.raise_alarm("ch1", "r2")  # another room of the care home
    building = await _site_alarm(web, "ch1")
    husband = await web.raise_alarm("h1", "r3")
    wife = await web.raise_alarm("h1", "r4")

    client = await web.login("op1")
    page = await client.get(f"/console/alarm/{mine.dispatch_id}")
    assert _others(page.text) == {mine_again.dispatch_id, building.dispatch_id}
    assert next_door.dispatch_id not in page.text

    # The building's own alarm concerns every room.
    page = await client.get(f"/console/alarm/{building.dispatch_id}")
    assert _others(page.text) == {mine.dispatch_id, mine_again.dispatch_id, next_door.dispatch_id}

    # A private home is one address: both residents' alarms.
    page = await client.get(f"/console/alarm/{husband.dispatch_id}")
    assert _others(page.text) == {wife.dispatch_id}
