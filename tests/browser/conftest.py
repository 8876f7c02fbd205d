"""Browser tests: the real gateway (embedded broker, SQLite, web console) driven by
Debian's Chromium through Playwright for Python (``executable_path``; never
``playwright install``, never a browser download). Skipped, with the reason, where no
Chromium is installed or Playwright is missing.

Screenshots go to ``artifacts/`` at the top of the checkout (ignored by git).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher, profiles

from telecare.devices.model import (
    Alert,
    AlertKind,
    Device,
    DeviceKind,
    EventType,
    Metric,
    Reading,
    Resident,
    Responder,
    ResponderKind,
    Site,
    SiteKind,
)
from telecare.dispatch.machine import open_dispatch
from telecare.dispatch.records import CascadeEntry
from telecare.gateway.app import Gateway
from telecare.gateway.broker import EmbeddedBroker
from telecare.gateway.config import Config, MqttConfig, RulesSection, StoreConfig, WebConfig
from telecare.gateway.dispatching import dispatch_repository
from telecare.gateway.store.accounts import Accounts, Role
from telecare.gateway.store.postgres import PostgresStore
from telecare.gateway.store.rows import News2Record
from telecare.gateway.store.sqlite import SqliteStore
from telecare.gateway.web.console_store import ConsoleStore
from tests.helpers import eventually

PASSWORD = "correct horse battery staple"
#: Hashed once, with argon2's cheapest parameters (as tests/web/conftest.py does): the
#: production ones cost a second per user and per login on a busy test machine; the
#: parameters travel in the hash, so the console verifies it as any other.
PASSWORD_HASH = PasswordHasher.from_parameters(profiles.CHEAPEST).hash(PASSWORD)
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
VIEWPORT = {"width": 1366, "height": 768}


def chromium_path() -> str | None:
    """``$CHROMIUM``, else Debian's ``chromium`` on the PATH or in /usr/bin."""
    for candidate in (os.environ.get("CHROMIUM"), shutil.which("chromium"), "/usr/bin/chromium"):
        if candidate and Path(candidate).exists():
            return candidate
    return None


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    path = chromium_path()
    if path is None:
        pytest.skip("no Chromium: install Debian's 'chromium' (or set $CHROMIUM)")
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        pytest.skip("Playwright for Python is not installed (pip install -e '.[dev]')")
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=path, headless=True, args=["--no-sandbox"])
        try:
            yield b
        finally:
            await b.close()


@dataclass
class ConsoleGateway:
    gw: Gateway
    broker: EmbeddedBroker
    url: str

    async def login(self, browser: Any, username: str) -> Any:
        """A new browser context at 1366x768, logged in as ``username``; its page."""
        context = await browser.new_context(viewport=VIEWPORT)
        page = await context.new_page()
        await page.goto(f"{self.url}/login")
        await page.fill("#username", username)
        await page.fill("#password", PASSWORD)
        await page.click("button[type=submit]")
        await page.wait_for_url(f"{self.url}/console")
        await page.wait_for_selector("#live-state.on", timeout=5000)
        return page


async def _provision(path: Path) -> None:
    async with SqliteStore(path) as store:
        await store.migrate()
        await store.upsert_site(Site("s1", SiteKind.HOME, "Rose Cottage", "1 High Street, Stroud"))
        await store.upsert_responder(
            Responder("kh1", ResponderKind.KEYHOLDER, "J Smith (daughter)", "07700900123")
        )
        await store.upsert_responder(Responder("kh2", ResponderKind.KEYHOLDER, "A Jones"))
        await store.upsert_responder(Responder("warden1", ResponderKind.MOBILE_WARDEN))
        await store.upsert_resident(
            Resident(
                "res1",
                "s1",
                "Mrs Ada Lovelace",
                responders=("kh1", "kh2", "warden1"),
                notes="Lives alone; diabetic",
            )
        )
        await store.upsert_device(Device("pend1", "s1", DeviceKind.PENDANT, "res1"))
        now = datetime.now(UTC)
        notes = ConsoleStore(store.sql)
        await notes.add_note("res1", "key_safe", "Left of the door, code 4321", "inst", now)
        await notes.add_note("res1", "medical", "Type 2 diabetes; warfarin", "inst", now)
        await notes.add_note("res1", "hearing", "Hard of hearing: speak slowly", "inst", now)
        await notes.add_note("res1", "risk", "Dog in the house", "inst", now)
        await _vitals(store, now)
        accounts = Accounts(store.sql)
        users = (("op1", Role.OPERATOR), ("op2", Role.OPERATOR), ("sup1", Role.SUPERVISOR))
        for name, role in users:
            await accounts.add_user(name, name.upper(), role, PASSWORD_HASH, now)


async def _vitals(store: SqliteStore, now: datetime) -> None:
    """Two days of an oximeter and a cuff every 2 h, and NEWS2 scores: the banner's charts."""
    await store.upsert_device(Device("oxi1", "s1", DeviceKind.OXIMETER, "res1"))
    readings, scores = [], []
    for i in range(24):
        ts = now - timedelta(hours=48 - 2 * i)
        worse = max(0, i - 16)  # deteriorating over the last 16 h
        for metric, value in (
            (Metric.SPO2, 97 - worse * 0.6),
            (Metric.PULSE, 72 + worse * 3),
            (Metric.SYSTOLIC_BP, 132 - worse * 4),
            (Metric.DIASTOLIC_BP, 82 - worse * 2),
        ):
            readings.append(Reading("oxi1", metric, value, metric.unit, ts, f"v{i}", "res1", "s1"))
        total = 1 + worse
        scores.append(
            News2Record(
                "res1", ts, total, "low" if total <= 4 else "medium", False, {}, 1, f"obs{i}"
            )
        )
    await store.write_readings(readings)
    for score in scores:
        await store.write_news2(score)


async def seed_queue(store: SqliteStore | PostgresStore) -> None:
    """A busy queue for the at-a-glance screenshot: three more residents' alarms raised
    20 s, 40 s and 75 s ago (ok, amber, red), two of them for one resident."""
    now = datetime.now(UTC)
    repo = dispatch_repository(store)
    rows = (
        ("res2", "Mr Brian Cole", "pend2", EventType.FALL, 1, 75),
        ("res3", "Mrs Cara Dunn", "pend3", EventType.PENDANT, 1, 40),
        ("res4", "Mr Dev Patel", "smoke4", EventType.SMOKE, 2, 20),
        ("res2", "Mr Brian Cole", "door2", EventType.DOOR_EXIT, 3, 10),
    )
    for n, (rid, name, device, kind, priority, age) in enumerate(rows):
        site = f"s{rid[3:]}"
        await store.upsert_site(Site(site, SiteKind.HOME, "", f"{rid[3:]}0 Mill Lane, Stroud"))
        await store.upsert_resident(Resident(rid, site, name, responders=("warden1",)))
        at = now - timedelta(seconds=age)
        alert = Alert(
            f"seed-{n}",
            AlertKind.ALARM,
            priority,
            f"{kind.value} alarm",
            at,
            site,
            rid,
            device,
            kind,
            f"{device}/seed{n}",
            {"presented_at": at.isoformat()},
        )
        await store.write_alerts([alert])
        step = open_dispatch(
            f"d-seed{n}",
            alert.alert_id,
            priority,
            at,
            site_id=site,
            resident_id=rid,
            first_responder="warden1",
        )
        await repo.create(step.dispatch, step.audit, [CascadeEntry(0, "warden1", 300)], [])


@pytest.fixture
async def console_gateway(tmp_path: Path) -> AsyncIterator[ConsoleGateway]:
    db = tmp_path / "console.sqlite3"
    await _provision(db)
    async with EmbeddedBroker() as broker:
        config = Config(
            mqtt=MqttConfig(port=broker.port, client_id="gw-browser"),
            store=StoreConfig(backend="sqlite", sqlite_path=str(db)),
            rules=RulesSection(state_file=str(tmp_path / "rules-state.json")),
            web=WebConfig(enabled=True, port=0, secure_cookies=False),
        )
        async with Gateway(config) as gw:
            await eventually(lambda: _connected(gw), timeout=10)
            assert gw.web is not None
            ARTIFACTS.mkdir(exist_ok=True)
            yield ConsoleGateway(gw, broker, gw.web.url)


async def _connected(gw: Gateway) -> bool:
    return gw.mqtt.connected.is_set()
