"""The care-home NEWS2 page in headless Chromium with an iPad viewport (issue 12 parts 4
and 6): a carer logs in, enters a set and reads back the right score and advice; then
submits a set with the network cut, sees it kept on the iPad, and sees it delivered
exactly once when the network returns.

Drives Debian's ``/usr/bin/chromium`` through Playwright's ``executable_path`` (never a
browser download); skipped, saying why, where there is no Chromium. The page is served
by the real app (uvicorn on a free port) over a real SQLite store, pipeline and dispatch
service. A screenshot of the page is saved in ``artifacts/`` (ignored by git).
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest

from telecare.devices.model import Device, DeviceKind, Metric, Reading, Resident, Site, SiteKind
from telecare.gateway.config import Config, WebConfig
from telecare.gateway.store.accounts import Accounts, Role
from telecare.gateway.store.sqlite import SqliteStore
from telecare.gateway.web.app import WebServer, create_app
from telecare.gateway.web.auth import hash_password
from telecare.gateway.web.services import Services
from telecare.gateway.web.tablet_store import tablet_sets_of
from telecare.rules.clock import SystemClock
from telecare.rules.config import DEFAULT_ADVICE
from tests.helpers import eventually, running_pipeline

playwright_api = pytest.importorskip("playwright.async_api")

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
PASSWORD = "a carer's long passphrase"

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="no Chromium: apt-get install chromium"
)


@dataclass
class Served:
    url: str
    store: SqliteStore


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    clock = SystemClock()
    async with AsyncExitStack() as stack:
        store = await stack.enter_async_context(SqliteStore(tmp_path / "t.sqlite3"))
        await store.migrate()
        await store.upsert_site(Site("oak", SiteKind.CARE_HOME, "Oak House"))
        await store.upsert_resident(Resident("oak-r1", "oak", "Ada Smith"))
        await store.upsert_resident(Resident("oak-r2", "oak", "Bill Jones"))
        await store.upsert_device(Device("oak-r1-oxi", "oak", DeviceKind.OXIMETER, "oak-r1"))
        now = clock.now()
        await store.write_readings(
            [
                Reading(
                    "oak-r1-oxi", Metric.SPO2, 95, "%", now - timedelta(minutes=2), "m1", "oak-r1"
                ),
                Reading(
                    "oak-r1-oxi",
                    Metric.PULSE,
                    96,
                    "/min",
                    now - timedelta(minutes=2),
                    "m1",
                    "oak-r1",
                ),
            ]
        )
        accounts = Accounts(store.sql)
        await accounts.add_user(
            "carer", "Sam Carer", Role.CARE_HOME, hash_password(PASSWORD), now, "oak"
        )
        pipeline = await stack.enter_async_context(running_pipeline(store, clock))
        svc = Services(
            config=Config(web=WebConfig(secure_cookies=False)),  # plain http on 127.0.0.1
            store=store,
            dispatcher=pipeline.dispatcher,
            accounts=accounts,
            clock=clock,
            observations=pipeline.handle_observation,
        )
        server = await stack.enter_async_context(WebServer(create_app(svc), "127.0.0.1", 0))
        yield Served(server.url, store)


async def _scores(store: SqliteStore, resident_id: str) -> int:
    now = SystemClock().now()
    return len(await store.news2_history(resident_id, now - timedelta(hours=1), now + timedelta(1)))


async def test_an_ipad_scores_a_set_and_delivers_one_sent_offline_exactly_once(
    served: Served,
) -> None:
    async with playwright_api.async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        try:
            context = await browser.new_context(**pw.devices["iPad (gen 7) landscape"])
            page = await context.new_page()
            await page.goto(f"{served.url}/tablet")
            await page.fill("#username", "carer")
            await page.fill("#password", PASSWORD)
            await page.click("button[type=submit]")
            await page.wait_for_url(f"{served.url}/tablet")
            ARTIFACTS.mkdir(exist_ok=True)
            await page.screenshot(path=str(ARTIFACTS / "tablet-ipad-residents.png"))
            await page.click("text=Ada Smith")
            await page.wait_for_url(f"{served.url}/tablet/residents/oak-r1")

            # Pre-filled from the oximeter, with its source and age.
            assert await page.input_value("#f-spo2") == "95"
            assert await page.input_value("#f-pulse") == "96"
            source = await page.text_content("[data-source-for=spo2]")
            assert source is not None
            assert "from oximeter oak-r1-oxi, 2 min ago" in source

            # NEWS2 5: respiration 22 (2), SpO2 95 (1), systolic 108 (1), pulse 96 (1).
            await page.fill("#f-respiration_rate", "22")
            await page.fill("#f-systolic_bp", "108")
            await page.fill("#f-temperature", "37.2")
            await page.click("label.choice:has-text('Air')")
            await page.click("label.choice:has-text('Alert')")
            await page.click("label.chip:has-text('Not eating or drinking')")
            row = page.locator(".obs-row[data-param=respiration_rate]")
            assert "score-2" in (await row.get_attribute("class") or "")
            await page.click("#submit-set")
            await page.wait_for_selector("#result.risk-medium")
            assert await page.text_content("#result-total") == "5"
            assert await page.text_content("#result-advice") == DEFAULT_ADVICE["medium"]
            sbard = await page.text_content("#sbard-sections")
            assert sbard is not None
            assert "Ada Smith" in sbard
            assert "not eating or drinking" in sbard
            await page.wait_for_selector(".trend-box circle")  # the trend caught up
            await page.evaluate("window.scrollTo(0, 0)")
            await page.screenshot(path=str(ARTIFACTS / "tablet-ipad.png"), full_page=True)
            await page.set_viewport_size({"width": 810, "height": 1080})  # held upright
            await page.screenshot(path=str(ARTIFACTS / "tablet-ipad-portrait.png"))
            await page.set_viewport_size({"width": 1080, "height": 810})
            assert await _scores(served.store, "oak-r1") == 1

            # Bad Wi-Fi: the set is kept on the iPad, not lost and not sent twice.
            await page.click("#new-set")
            await context.set_offline(True)
            await page.fill("#f-respiration_rate", "16")
            await page.fill("#f-systolic_bp", "124")
            await page.fill("#f-temperature", "36.9")
            await page.fill("#f-pulse", "72")
            await page.fill("#f-spo2", "97")
            assert not await page.is_visible("[data-source-for=spo2]")  # typed, not the device's
            await page.click("label.choice:has-text('Air')")
            await page.click("label.choice:has-text('Alert')")
            await page.click("#submit-set")
            await page.wait_for_selector("#outbox:not([hidden])")
            banner = await page.text_content("#outbox")
            assert banner is not None
            assert "kept on this iPad" in banner
            assert await page.text_content("#result-band") == "Not confirmed yet"
            assert await page.text_content("#result-total") == "0"  # provisional
            kept = await page.evaluate("localStorage.getItem('telecare.tablet.outbox.v1')")
            assert kept is not None
            assert '"kind":"set"' in kept
            await page.evaluate("window.scrollTo(0, 0)")
            await page.screenshot(path=str(ARTIFACTS / "tablet-ipad-offline.png"))
            assert await _scores(served.store, "oak-r1") == 1

            await context.set_offline(False)
            await page.wait_for_selector("#result.risk-low")
            await page.wait_for_selector("#outbox", state="hidden")
            assert await page.text_content("#result-total") == "0"
            assert await page.text_content("#result-advice") == DEFAULT_ADVICE["zero"]
            assert await page.evaluate("localStorage.getItem('telecare.tablet.outbox.v1')") == "[]"
            assert await eventually(lambda: _scores(served.store, "oak-r1"), lambda n: n >= 2) == 2
            rows = await tablet_sets_of(served.store).sql.fetch_all(
                "SELECT COUNT(*) FROM tablet_sets WHERE resident_id = ?", "oak-r1"
            )
            assert rows[0][0] == 2
            await context.close()
        finally:
            await browser.close()
