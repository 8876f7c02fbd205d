"""The live hub: numbered events, resume after a reconnect without loss, bounded clients
dropped (never blocking the publisher), a reset when resuming is impossible."""

from __future__ import annotations

from datetime import UTC, datetime

from telecare.gateway.pipeline import Activity, ActivityFeed
from telecare.gateway.web.live import ClientDropped, LiveHub, sse_stream

T0 = datetime(2026, 12, 2, 4, 0, tzinfo=UTC)


def _alert(n: int) -> Activity:
    return Activity("alert", T0, f"P1 alarm {n}", {"alert_id": f"a{n}", "priority": 1})


async def test_feed_lines_reach_a_client_numbered_and_readings_stay_out() -> None:
    feed = ActivityFeed()
    hub = LiveHub()
    hub.attach(feed)
    client = hub.connect("op1")
    feed.publish(Activity("readings", T0, "12 readings"))
    feed.publish(_alert(1))
    event = await client.next(1.0)
    assert event is not None
    assert (event.kind, event.seq, event.data["alert_id"]) == ("alert", 1, "a1")
    assert event.event_id == f"{hub.epoch}-1"
    wire = event.encode().decode()
    assert wire.startswith(f"id: {hub.epoch}-1\nevent: alert\ndata: {{")
    assert wire.endswith("\n\n")


async def test_reconnect_with_last_event_id_replays_exactly_the_missed_events() -> None:
    hub = LiveHub()
    first = hub.connect("op1")
    for n in range(1, 4):
        hub.on_activity(_alert(n))
    seen = [await first.next(1.0) for _ in range(2)]  # the browser got 1 and 2, then cut
    last = seen[-1]
    assert last is not None
    hub.disconnect(first)
    hub.on_activity(_alert(4))  # while disconnected
    again = hub.connect("op1", last_event_id=last.event_id)
    hub.on_activity(_alert(5))
    got = [await again.next(1.0) for _ in range(3)]
    assert [e.data["alert_id"] for e in got if e is not None] == ["a3", "a4", "a5"]


async def test_a_slow_client_is_dropped_and_never_blocks_the_publisher() -> None:
    hub = LiveHub(client_queue=4)
    slow = hub.connect("slow")
    quick = hub.connect("quick")
    for n in range(1, 11):
        hub.on_activity(_alert(n))  # synchronous: returns at once however full the queues
        event = await quick.next(1.0)
        assert event is not None
        assert event.seq == n
    assert slow.dropped
    assert hub.dropped_clients == 1
    assert [c.who for c in hub.clients()] == ["quick"]
    try:
        await slow.next(1.0)
        raise AssertionError("a dropped client must be told to go")
    except ClientDropped:
        pass


async def test_resume_from_another_epoch_or_a_gap_beyond_history_is_a_reset() -> None:
    hub = LiveHub(history=3)
    for n in range(1, 8):
        hub.on_activity(_alert(n))
    stale = hub.connect("op1", last_event_id=f"{hub.epoch}-2")  # 3..4 fell out of the ring
    event = await stale.next(1.0)
    assert event is not None
    assert event.kind == "reset"
    restarted = hub.connect("op2", last_event_id="deadbeef-7")
    event = await restarted.next(1.0)
    assert event is not None
    assert event.kind == "reset"
    assert "restarted" in event.summary
    assert hub.resets == 2


async def test_sse_stream_pings_when_quiet_and_removes_its_client_when_it_ends() -> None:
    hub = LiveHub(client_queue=2)
    client = hub.connect("op1")
    stream = sse_stream(hub, client, ping_s=0.01)
    first = await anext(stream)
    assert first.startswith(b"retry: 1000\n\nevent: ping\n")  # live at once
    assert (await anext(stream)).startswith(b"event: ping\n")  # and when quiet
    hub.on_activity(_alert(1))
    assert b"event: alert" in await anext(stream)
    for n in range(2, 6):
        hub.on_activity(_alert(n))  # overflows the queue of 2: the client is dropped
    chunks = [chunk async for chunk in stream]
    assert chunks == []  # the stream ended at the drop marker
    assert hub.clients() == []


def test_console_lines_of_its_own_are_numbered_in_the_same_sequence() -> None:
    hub = LiveHub()
    hub.on_activity(_alert(1))
    event = hub.emit("console", "alarm put on hold", {"dispatch_id": "d1"})
    assert event.seq == 2
    assert hub.last_id == f"{hub.epoch}-2"
    assert [e.seq for e in hub.recent(5)] == [2, 1]
