"""The queue pushed to queue pages shows the store as it is, not only what this gateway
saw happen: alarms another process wrote on the same store (a second gateway, the CLI)
have no live event here.

Before, the pushed queue was the copy kept for the last live event (``web/fragments.py``,
up to 2 s): a page that (re)connected within 2 s of the last push was pushed that copy,
replacing the fresher queue it had just loaded (the browser test of keyboard focus lost
its row this way, now and then), and an alarm written elsewhere reached open pages only
with the next local event."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from telecare.devices.model import Alert, AlertKind, EventType
from telecare.dispatch.machine import open_dispatch
from telecare.dispatch.records import CascadeEntry
from telecare.gateway.pipeline import ActivityFeed
from telecare.gateway.web.console import running_console
from telecare.gateway.web.console_service import ConsoleService, ConsoleSettings
from telecare.gateway.web.live import LiveClient
from tests.web.conftest import WebEnv

QUEUE = frozenset({"queue"})


async def _console(web: WebEnv, **settings: float) -> ConsoleService:
    return await web.stack.enter_async_context(
        running_console(web.app, ActivityFeed(), ConsoleSettings(tick_s=3600, **settings))
    )


async def _pushed_queue(client: LiveClient, timeout: float = 10.0) -> str:
    """The next queue snapshot pushed to ``client``."""
    async with asyncio.timeout(timeout):
        while True:
            item = await client.next(timeout)
            assert item is not None, "nothing pushed"
            if isinstance(item, bytes) and item.startswith(b"event: queue\n"):
                return item.decode()


async def _written_elsewhere(web: WebEnv, n: int) -> str:
    """An alarm and its dispatch written straight into the store, as another process
    would: no live event in this gateway. Its dispatch id."""
    at = web.clock.now() - timedelta(seconds=5)
    alert = Alert(
        f"other-{n}",
        AlertKind.ALARM,
        1,
        "pendant alarm",
        at,
        "ch1",
        "r1",
        "pend-other",
        EventType.PENDANT,
        f"pend-other/m{n}",
    )
    await web.store.write_alerts([alert])
    step = open_dispatch(
        f"d-other{n}", alert.alert_id, 1, at, site_id="ch1", resident_id="r1", first_responder="kh1"
    )
    await web.services.dispatcher.repo.create(
        step.dispatch, step.audit, [CascadeEntry(0, "kh1", 300)], []
    )
    return step.dispatch.dispatch_id


@pytest.fixture
async def home(web: WebEnv) -> WebEnv:
    await web.care_home("ch1", "r1")
    return web


async def test_a_queue_page_that_connects_is_pushed_the_queue_as_the_store_has_it(
    home: WebEnv,
) -> None:
    console = await _console(home)
    first = console.hub.connect("op1", scopes=QUEUE)
    console.queue_changed()  # what ``/console/live?scope=queue`` does on connect
    before = await _pushed_queue(first)
    other = await _written_elsewhere(home, 1)
    assert other not in before
    # A second page loads (its HTML already shows the new alarm) and connects at once.
    second = console.hub.connect("op2", scopes=QUEUE)
    console.queue_changed()
    assert f'data-dispatch="{other}"' in await _pushed_queue(second)


async def test_open_queue_pages_get_alarms_written_elsewhere_without_a_local_event(
    home: WebEnv,
) -> None:
    console = await _console(home, queue_refresh_s=0.2)
    page = console.hub.connect("op1", scopes=QUEUE)
    console.queue_changed()
    await _pushed_queue(page)
    other = await _written_elsewhere(home, 2)
    async with asyncio.timeout(10):  # a safety bound: it is pushed every 0.2 s
        while f'data-dispatch="{other}"' not in await _pushed_queue(page):
            pass
