"""Protocol v1 codec: valid payloads decode to the model; every kind of bad input gives a
specific ``Malformed`` reason; arbitrary bytes never raise anything else."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devices.codecs import Malformed, json_v1
from devices.model import AlarmEvent, EventType, Metric, Phase, Reading

TS = datetime(2026, 11, 23, 9, 30, tzinfo=UTC)
EVENT = json_v1.Topic("s1", "d1", "event")
READING = json_v1.Topic("s1", "d1", "reading")


def test_parse_topic() -> None:
    assert json_v1.parse_topic("telecare/v1", "telecare/v1/s1/d1/event") == EVENT
    for bad, reason in [
        ("other/v1/s1/d1/event", "not under"),
        ("telecare/v1/s1/event", "must be"),
        ("telecare/v1/s1/d1/x/event", "must be"),
        ("telecare/v1/s1/d1/shout", "unknown channel"),
        ("telecare/v1/s 1/d1/event", "not a valid identifier"),
    ]:
        with pytest.raises(Malformed, match=reason):
            json_v1.parse_topic("telecare/v1", bad)


def test_event_round_trip() -> None:
    payload = json_v1.encode_event("m1", TS, EventType.PENDANT)
    [event] = json_v1.decode(EVENT, payload, site_id="s1", resident_id="r1")
    assert event == AlarmEvent("d1", EventType.PENDANT, Phase.ALARM, TS, "m1", "s1", "r1")


def test_restore_event() -> None:
    payload = json_v1.encode_event("m2", TS, EventType.MAINS_FAIL, Phase.RESTORE)
    [event] = json_v1.decode(EVENT, payload)
    assert isinstance(event, AlarmEvent)
    assert event.phase is Phase.RESTORE


def test_readings_round_trip_with_unit_aliases() -> None:
    payload = json_v1.encode_readings("m3", TS, [("spo2", 95.5, "%"), ("pulse", 131, "bpm")])
    readings = json_v1.decode(READING, payload, resident_id="r1")
    assert readings == [
        Reading("d1", Metric.SPO2, 95.5, "%", TS, "m3", "r1"),
        Reading("d1", Metric.PULSE, 131, "/min", TS, "m3", "r1"),
    ]


def _doc(**fields: object) -> bytes:
    base: dict[str, object] = {"v": 1, "msg_id": "m1", "ts": "2026-11-23T09:30:00Z"}
    base.update(fields)
    return json.dumps(base).encode()


@pytest.mark.parametrize(
    ("topic", "payload", "reason"),
    [
        (EVENT, b"{not json", "malformed JSON at line 1"),
        (EVENT, b"\xff\xfe", "not UTF-8"),
        (EVENT, b"[1, 2]", "must be a JSON object"),
        (EVENT, _doc(v=2, type="pendant"), "unsupported protocol version 2"),
        (EVENT, _doc(type="explosion"), "not in the taxonomy"),
        (EVENT, _doc(type="pendant", phase="maybe"), "phase 'maybe'"),
        (EVENT, _doc(type="pendant", msg_id=""), "msg_id"),
        (EVENT, _doc(type="pendant", ts="yesterday"), "not an ISO 8601"),
        (EVENT, _doc(type="pendant", ts="2026-11-23T09:30:00"), "no timezone"),
        (READING, _doc(readings=[]), "non-empty list"),
        (READING, _doc(readings=[{"metric": "spo2", "value": "97", "unit": "%"}]), "not a number"),
        (READING, _doc(readings=[{"metric": "spo2", "value": True, "unit": "%"}]), "not a number"),
        (READING, _doc(readings=[{"metric": "spo2", "value": 101, "unit": "%"}]), "impossible"),
        (READING, _doc(readings=[{"metric": "pulse", "value": -3, "unit": "/min"}]), "impossible"),
        (
            READING,
            _doc(readings=[{"metric": "temperature", "value": 98.6, "unit": "Cel"}]),
            "impossible",
        ),
        (
            READING,
            _doc(readings=[{"metric": "temperature", "value": 37, "unit": "degF"}]),
            "unit 'degF' is wrong",
        ),
        (
            READING,
            _doc(readings=[{"metric": "glucose", "value": 5, "unit": "mmol/L"}]),
            "unknown metric",
        ),
        (READING, _doc(readings=[{"metric": "spo2", "value": 97}]), "unit None missing"),
        (
            READING,
            b'{"v":1,"msg_id":"m","ts":"2026-11-23T09:30:00Z","readings":'
            b'[{"metric":"spo2","value":NaN,"unit":"%"}]}',
            "NaN is not allowed",
        ),
        (
            READING,
            b'{"v":1,"msg_id":"m","ts":"2026-11-23T09:30:00Z","readings":'
            b'[{"metric":"spo2","value":Infinity,"unit":"%"}]}',
            "Infinity is not allowed",
        ),
        (READING, b'{"v":1,"readings":[' + b'{"metric":"spo2"},' * 40_000 + b"{}]}", "exceeds"),
    ],
)
def test_bad_input_has_a_specific_reason(topic: json_v1.Topic, payload: bytes, reason: str) -> None:
    with pytest.raises(Malformed, match=reason):
        json_v1.decode(topic, payload)


def test_batch_from_hub() -> None:
    items = [
        {
            "device_id": "oxi1",
            "channel": "reading",
            "msg_id": "a",
            "ts": "2026-11-23T09:30:00Z",
            "readings": [{"metric": "spo2", "value": 93, "unit": "%"}],
        },
        {
            "device_id": "pir1",
            "channel": "event",
            "msg_id": "b",
            "ts": "2026-11-23T09:30:01Z",
            "type": "inactivity",
        },
    ]
    out = json_v1.decode(json_v1.Topic("s1", "hub1", "batch"), json_v1.encode_batch("m", items))
    assert [type(m) for m in out] == [Reading, AlarmEvent]
    assert [m.device_id for m in out] == ["oxi1", "pir1"]
    bad = [{**items[0], "readings": [{"metric": "spo2", "value": 130, "unit": "%"}]}]
    with pytest.raises(Malformed, match=r"batch item 0 \(oxi1\).*impossible"):
        json_v1.decode(json_v1.Topic("s1", "hub1", "batch"), json_v1.encode_batch("m", bad))


def test_status_and_heartbeat() -> None:
    [status] = json_v1.decode(json_v1.Topic("s1", "d1", "status"), json_v1.encode_status(False))
    assert status == json_v1.Status("d1", False, None)
    [hb] = json_v1.decode(
        json_v1.Topic("s1", "d1", "heartbeat"), json_v1.encode_heartbeat("h1", TS, 80)
    )
    assert hb == json_v1.Heartbeat("d1", "h1", TS, 80.0)


@settings(max_examples=300, deadline=None)
@given(
    channel=st.sampled_from(json_v1.CHANNELS),
    payload=st.one_of(
        st.binary(max_size=512),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
            lambda children: (
                st.lists(children, max_size=4)
                | st.dictionaries(
                    st.sampled_from(
                        [
                            "v",
                            "msg_id",
                            "ts",
                            "type",
                            "phase",
                            "readings",
                            "items",
                            "metric",
                            "value",
                            "unit",
                            "device_id",
                            "channel",
                            "online",
                        ]
                    ),
                    children,
                    max_size=6,
                )
            ),
            max_leaves=20,
        ).map(lambda doc: json.dumps(doc).encode()),
    ),
)
def test_fuzz_only_malformed_escapes(channel: str, payload: bytes) -> None:
    reason = None
    try:
        json_v1.decode(json_v1.Topic("s1", "d1", channel), payload)
    except Malformed as exc:
        reason = exc.reason
    assert reason is None or len(reason) > 5  # a specific message, not an empty one
