"""The live channel over real HTTP (no browser needed): the running gateway's SSE stream
delivers a pendant press, and a reconnect with ``Last-Event-ID`` resumes exactly after
the last event seen; closing the hub (shutdown) ends open streams."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx

from telecare.gateway.web.live import LiveHub
from tests.browser.conftest import PASSWORD, ConsoleGateway
from tests.browser.test_console_browser import _press
from tests.helpers import eventually


async def _events(response: httpx.Response) -> AsyncIterator[tuple[str, str, dict[str, object]]]:
    """(id, event, data) of each SSE event (comments and the retry hint skipped)."""
    fields: dict[str, str] = {}
    async for line in response.aiter_lines():
        if line:
            name, _, value = line.partition(": ")
            fields[name] = value
            continue
        if "event" in fields:
            yield fields.get("id", ""), fields["event"], json.loads(fields.get("data", "{}"))
        fields = {}


@asynccontextmanager
async def _client(cg: ConsoleGateway) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=cg.url, timeout=10) as client:
        r = await client.post("/api/v1/session", json={"username": "op1", "password": PASSWORD})
        assert r.status_code == 200, r.text
        yield client


async def test_sse_delivers_a_press_and_resumes_after_the_last_event_id(
    console_gateway: ConsoleGateway,
) -> None:
    cg = console_gateway
    async with _client(cg) as client:
        seen: list[tuple[str, str, dict[str, object]]] = []
        async with client.stream("GET", "/console/live") as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            pressed = False
            async for event in _events(r):
                if event[1] == "ping" and not pressed:
                    await _press(cg)  # the stream is open: now raise the alarm
                    pressed = True
                elif event[1] != "ping":
                    seen.append(event)
                if any(e[1] == "dispatch" for e in seen):
                    break
        kinds = [e[1] for e in seen]
        assert "alert" in kinds
        alert = next(e for e in seen if e[1] == "alert")
        assert alert[2]["priority"] == 1
        assert "Ada" not in json.dumps([e[2] for e in seen])  # no personal data on the wire
        first_id = seen[0][0]
        # Reconnect as a browser does, from the first event: the rest is replayed.
        async with client.stream("GET", "/console/live", headers={"Last-Event-ID": first_id}) as r:
            replayed = []
            async for event in _events(r):
                if event[1] != "ping":
                    replayed.append(event[0])
                if len(replayed) == len(seen) - 1:
                    break
        assert replayed == [e[0] for e in seen[1:]]
        assert cg.gw.console is not None
        hub = cg.gw.console.hub
        await eventually(lambda: _count(hub), lambda n: n == 0)  # both streams removed


async def _count(hub: LiveHub) -> int:
    return len(hub.clients())


async def test_closing_the_hub_ends_open_streams(console_gateway: ConsoleGateway) -> None:
    """What the gateway does on shutdown, before the web server stops: no SSE response
    may hold the server open."""
    cg = console_gateway
    assert cg.gw.console is not None
    async with _client(cg) as client, client.stream("GET", "/console/live") as r:
        kinds = []
        async for event in _events(r):
            kinds.append(event[1])
            if len(kinds) == 1:
                cg.gw.console.hub.close()
        assert kinds == ["ping"]  # then the stream ended by itself
