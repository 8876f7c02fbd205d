"""The spool keeps what a SCAIP unit sent (device type, location) on a spooled event, and
reads records written before those fields existed."""

from __future__ import annotations

import json

from telecare.devices.model import AlarmEvent, EventType, Phase
from telecare.gateway.store.durable import decode, encode
from tests.store.helpers import T0


def test_scaip_event_round_trips_with_its_unit_codes() -> None:
    e = AlarmEvent(
        "unit1", EventType.FALL, Phase.ALARM, T0, "scaip-R1", "s1", "res1", "05", "scaip", 10,
        device_type="0005", location="011",
    )  # fmt: skip
    back = decode(encode(e))
    assert back == e
    assert isinstance(back, AlarmEvent)
    assert (back.device_type, back.location, back.injury) == ("0005", "011", False)


def test_event_spooled_before_migration_0012_still_decodes() -> None:
    e = AlarmEvent("p1", EventType.PENDANT, Phase.ALARM, T0, "e1", "s1", "res1")
    record = json.loads(encode(e))
    record["v"] = record["v"][:10]  # the record as it was written before 0012
    back = decode(json.dumps(record).encode())
    assert back == e
