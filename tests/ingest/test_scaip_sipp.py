"""The SCAIP receiver against a real SIP peer: Debian's ``sipp`` sends MESSAGE scenarios
(tests/ingest/sipp/scaip_request.xml) over UDP and TCP to a receiver in front of the real
pipeline, store and dispatch service, and checks the responses it gets."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from telecare.devices.codecs.scaip import msg_id_for_ref
from telecare.devices.model import AlertKind, EventType
from telecare.rules.alarms import alarm_id_for
from telecare.rules.clock import SystemClock
from tests.helpers import dispatch_for, eventually
from tests.ingest.scaip_support import (
    SIPP,
    SIPP_MISSING,
    AnyStore,
    last_heartbeat,
    mrq,
    mrs_regexp,
    provision,
    receiving,
    run_sipp,
    stored_events,
)

pytestmark = pytest.mark.skipif(SIPP is None, reason=SIPP_MISSING)

BOMB = (
    '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    '<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">'
    '<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">'
    '<!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">]>'
    "<mrq><ref>&lol4;</ref><cid>26317</cid><dty>0003</dty></mrq>"
)


@pytest.mark.parametrize("transport", ["u1", "t1"])
async def test_alarm_reaches_one_dispatch_with_its_time_and_a_duplicate_ref_is_recognised(
    store: AnyStore, tmp_path: Path, transport: str
) -> None:
    await provision(store)
    clock = SystemClock()
    async with receiving(store, clock) as (pipeline, receiver):
        port = (receiver.udp_address if transport == "u1" else receiver.tcp_address) or ("", 0)
        before = clock.now()
        await run_sipp(
            tmp_path,
            port[1],
            transport=transport,
            name="alarm",
            body=mrq("A-0001"),
            body_regexp=mrs_regexp("A-0001", 0),
        )
        after = clock.now()
        # the unit did not get (or lost) the answer and sends the same ref again
        await run_sipp(
            tmp_path,
            port[1],
            transport=transport,
            name="alarm-again",
            body=mrq("A-0001"),
            body_regexp=mrs_regexp("A-0001", 0),
        )
        alert_id = alarm_id_for("unit1", msg_id_for_ref("A-0001"))
        dispatch = await dispatch_for(store, alert_id)
        events = await stored_events(store)
        alerts = await store.recent_alerts()
    assert len(events) == 1
    event = events[0]
    assert (event.device_id, event.type, event.phase) == ("unit1", "pendant", "alarm")
    assert (event.code, event.device_type, event.location, event.source) == (
        10,
        "0003",
        "011",
        "scaip",
    )
    # its true time: when the message reached the receiver, not when it was processed
    assert before - timedelta(milliseconds=5) <= event.ts <= after
    assert len(alerts) == 1
    assert (alerts[0].alert_id, alerts[0].kind, alerts[0].priority) == (
        alert_id,
        AlertKind.ALARM,
        1,
    )
    assert alerts[0].ts == event.ts
    assert (dispatch.alert_id, dispatch.resident_id) == (alert_id, "res1")
    assert await store.count("dispatches") == 1
    assert pipeline.counters["events_duplicate"] == 1


async def test_reset_heartbeat_and_zone_mapping(store: AnyStore, tmp_path: Path) -> None:
    await provision(store)
    async with receiving(store, SystemClock()) as (pipeline, receiver):
        port = receiver.udp_address[1] if receiver.udp_address else 0
        await run_sipp(
            tmp_path, port, name="fall", body=mrq("F-1", dty="0005"),
            body_regexp=mrs_regexp("F-1", 0),
        )  # fmt: skip
        await run_sipp(
            tmp_path, port, name="reset", body=mrq("F-2", mty="RE", dty="0005"),
            body_regexp=mrs_regexp("F-2", 0),
        )  # fmt: skip
        await run_sipp(
            tmp_path, port, name="heartbeat", body=mrq("H-1", mty="PI", dty="0002"),
            body_regexp=mrs_regexp("H-1", 0),
        )  # fmt: skip
        smoke = mrq("S-1", dty="0023").replace("<lco>", "<did>05</did><lco>")
        await run_sipp(
            tmp_path, port, name="smoke", body=smoke, body_regexp=mrs_regexp("S-1", 0)
        )  # fmt: skip
        events = await stored_events(store)
        heartbeat = await last_heartbeat(store, "unit1")
        alerts = await store.recent_alerts()
    assert [(e.device_id, e.type, e.phase) for e in events] == [
        ("unit1", "fall", "alarm"),
        ("unit1", "fall", "restore"),
        ("unit1", "periodic_test", "alarm"),
        ("smoke1", "smoke", "alarm"),  # did 05 maps to the smoke detector
    ]
    assert heartbeat is not None
    assert {a.event_type for a in alerts} == {EventType.FALL, EventType.SMOKE}
    assert pipeline.counters["events"] == 4


async def test_unknown_cid_is_not_treated_and_dead_lettered(
    store: AnyStore, tmp_path: Path
) -> None:
    await provision(store)
    async with receiving(store, SystemClock()) as (_, receiver):
        port = receiver.udp_address[1] if receiver.udp_address else 0
        await run_sipp(
            tmp_path,
            port,
            name="unknown",
            body=mrq("U-1", cid="99999"),
            from_user="99999",
            body_regexp=mrs_regexp("U-1", 5),
        )
        letters = await eventually(store.dead_letters)
    assert await store.count("alarm_events") == 0
    assert "SCAIP cid '99999' is not mapped to a device" in letters[0].reason
    assert letters[0].source == "scaip"


@pytest.mark.parametrize(
    ("name", "body", "snu"),
    [
        ("malformed", "<mrq><ref>M-1</ref><cid>26317</cid><dty>0003</dty>", 2),
        ("bomb", BOMB, 2),
        ("missing", "<mrq><ref>M-2</ref><cid>26317</cid></mrq>", 7),
    ],
)
async def test_malformed_requests_get_their_status_number(
    store: AnyStore, tmp_path: Path, name: str, body: str, snu: int
) -> None:
    await provision(store)
    async with receiving(store, SystemClock()) as (_, receiver):
        port = receiver.udp_address[1] if receiver.udp_address else 0
        await run_sipp(tmp_path, port, name=name, body=body, body_regexp=f"<snu>{snu}</snu>")
        letters = await eventually(store.dead_letters)
    assert await store.count("alarm_events") == 0
    assert f"status {snu}" in letters[0].reason


@pytest.mark.parametrize(
    ("name", "kw", "status", "snu"),
    [
        ("subscribe", {"method": "SUBSCRIBE"}, 405, None),
        ("text", {"content_type": "text/plain"}, 415, None),
        ("no-via", {"via_header": "Subject: no Via header"}, 400, None),
        ("spoofed-from", {"from_user": "11111"}, 200, 3),
    ],
)
async def test_what_is_not_a_scaip_message_is_rejected_with_the_right_sip_status(
    store: AnyStore, tmp_path: Path, name: str, kw: dict[str, str], status: int, snu: int | None
) -> None:
    await provision(store)
    async with receiving(store, SystemClock()) as (_, receiver):
        port = receiver.tcp_address[1] if receiver.tcp_address else 0
        await run_sipp(
            tmp_path,
            port,
            transport="t1",
            name=name,
            body=mrq("X-1"),
            status=status,
            body_regexp=mrs_regexp("X-1", snu) if snu is not None else ".*",
            **kw,  # type: ignore[arg-type]
        )
        await eventually(store.dead_letters)
    assert await store.count("alarm_events") == 0
