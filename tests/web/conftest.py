"""Fixtures for the web face: the real app over a real store (both backends), the real
dispatch service and pipeline, a fake clock, and logged-in httpx clients.

    async def test_x(web: WebEnv) -> None:
        client = await web.login("alice", Role.OPERATOR)   # session cookie + CSRF header
        r = await client.get("/api/v1/dispatches")

``web.client()`` is an anonymous client; ``web.token("S1")`` is a care-home bearer
token of site S1. Clients talk to the app in-process (``httpx.ASGITransport``) over
``https://testserver``, so ``Secure`` cookies behave as in a browser.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx
import pytest
from argon2 import PasswordHasher, profiles
from fastapi import FastAPI

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
from telecare.gateway.config import Config
from telecare.gateway.dispatching import add_store_responders
from telecare.gateway.store.accounts import Accounts, Role
from telecare.gateway.store.postgres import PostgresStore
from telecare.gateway.store.sqlite import SqliteStore
from telecare.gateway.web.app import create_app
from telecare.gateway.web.auth import CSRF_HEADER, digest, new_api_token
from telecare.gateway.web.services import Services
from telecare.rules.clock import FakeClock
from tests.helpers import running_pipeline
from tests.store.conftest import pg_proxy, proxied_dsn  # noqa: F401 (fixtures, re-exported)

BASE_URL = "https://testserver"
PASSWORD = "correct horse battery staple"
#: Hashed once, with argon2's cheapest parameters: verifying the production ones takes
#: about a second on a busy test machine, at every login (the parameters travel in the
#: hash, so the gateway verifies these as it would any other).
PASSWORD_HASH = PasswordHasher.from_parameters(profiles.CHEAPEST).hash(PASSWORD)


@dataclass
class WebEnv:
    app: FastAPI
    services: Services
    store: SqliteStore | PostgresStore
    clock: FakeClock
    accounts: Accounts
    stack: AsyncExitStack
    clients: list[httpx.AsyncClient] = field(default_factory=list)

    async def client(self) -> httpx.AsyncClient:
        """An anonymous client (closed with the fixture)."""
        c = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url=BASE_URL)
        await self.stack.enter_async_context(c)
        return c

    async def add_user(
        self, username: str, role: Role = Role.OPERATOR, site_id: str | None = None
    ) -> None:
        await self.accounts.add_user(
            username, username.title(), role, PASSWORD_HASH, self.clock.now(), site_id
        )

    async def login(
        self, username: str, role: Role = Role.OPERATOR, site_id: str | None = None
    ) -> httpx.AsyncClient:
        """A new user ``username`` logged in; the client sends the CSRF header."""
        if await self.accounts.password_hash(username) is None:
            await self.add_user(username, role, site_id)
        c = await self.client()
        r = await c.post("/api/v1/session", json={"username": username, "password": PASSWORD})
        assert r.status_code == 200, r.text
        c.headers[CSRF_HEADER] = r.json()["csrf_token"]
        return c

    async def care_home(self, site_id: str, *residents: str) -> None:
        """Provision a care home and its residents."""
        await self.store.upsert_site(Site(site_id, SiteKind.CARE_HOME, name=f"{site_id} House"))
        for rid in residents:
            await self.store.upsert_resident(Resident(rid, site_id, name=f"Resident {rid}"))

    async def responders(self, resident_id: str, *responders: tuple[str, ResponderKind]) -> None:
        """Provision responders, in cascade order for ``resident_id``."""
        for rid, kind in responders:
            await self.store.upsert_responder(Responder(rid, kind, name=rid))
        resident = await self.store.get_resident(resident_id)
        assert resident is not None
        await self.store.upsert_resident(
            dataclasses.replace(resident, responders=tuple(r for r, _ in responders))
        )
        await add_store_responders(self.services.dispatcher.directory, self.store)

    async def raise_alarm(
        self, site_id: str, resident_id: str, priority: int = 1, *, injury: bool = False
    ) -> Dispatch:
        """A pendant alarm of ``resident_id``, stored and opened as a dispatch."""
        alert = Alert(
            alert_id=f"al-{uuid.uuid4().hex[:16]}",
            kind=AlertKind.ALARM,
            priority=priority,
            reason="pendant pressed",
            ts=self.clock.now(),
            site_id=site_id,
            resident_id=resident_id,
            event_type=EventType.PENDANT,
            detail={"injury": injury},
        )
        await self.store.write_alerts([alert])
        return await self.services.dispatcher.open(alert)

    async def token(self, site_id: str, name: str = "home-system") -> str:
        """A new care-home API token of ``site_id`` (the bearer string)."""
        token_id, secret, bearer = new_api_token()
        await self.accounts.add_token(token_id, site_id, name, digest(secret), self.clock.now())
        return bearer


@asynccontextmanager
async def web_env(store: SqliteStore | PostgresStore) -> AsyncIterator[WebEnv]:
    """The app over ``store``, with its pipeline and dispatch service running."""
    clock = FakeClock(datetime(2026, 1, 5, 9, 0, tzinfo=UTC))
    async with AsyncExitStack() as stack:
        pipeline = await stack.enter_async_context(running_pipeline(store, clock))
        accounts = Accounts(store.sql)
        svc = Services(
            config=Config(),
            store=store,
            dispatcher=pipeline.dispatcher,
            accounts=accounts,
            clock=clock,
            rules=pipeline.engine.config,
            observations=pipeline.handle_observation,
        )
        yield WebEnv(create_app(svc), svc, store, clock, accounts, stack)


@pytest.fixture
async def web(store: SqliteStore | PostgresStore) -> AsyncIterator[WebEnv]:
    """The app over ``store`` (both backends)."""
    async with web_env(store) as env:
        yield env


@pytest.fixture
async def web_pg(pg_store: PostgresStore) -> AsyncIterator[WebEnv]:
    """The app over PostgreSQL only (for what only a server database does)."""
    async with web_env(pg_store) as env:
        yield env
