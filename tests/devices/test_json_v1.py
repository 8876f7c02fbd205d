"""Protocol v1 codec: valid payloads decode to the model; every kind of bad input gives a
specific ``Malformed`` reason; arbitrary bytes never raise anything else."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from telecare.devices.codecs import Malformed, json_v1
from telecare.devices.model import AlarmEvent, EventType, Metric, Phase, Reading

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
        (EVENT, _doc(type="pendant", phase="maybe"), "phase .* must be 'alarm' or 'restore'"),
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
            "unit .* is wrong; send 'Cel'",
        ),
        (
            READING,
            _doc(readings=[{"metric": "glucose", "value": 5, "unit": "mmol/L"}]),
            "unknown metric",
        ),
        (READING, _doc(readings=[{"metric": "spo2", "value": 97}]), "unit missing"),
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


# --------------------------------------------------------------------------- bounds (issue 9)


def test_huge_integer_is_malformed_not_overflow() -> None:
    """A 504-byte reading whose value is 1 followed by 400 zeros (it used to raise
    OverflowError from ``math.isfinite``)."""
    payload = _doc(readings=[{"metric": "spo2", "value": 10**400, "unit": "%"}])
    with pytest.raises(Malformed, match="number literal of 401 characters; at most 24"):
        json_v1.decode(READING, payload)


def test_huge_float_is_malformed() -> None:
    payload = b'{"v":1,"msg_id":"m","ts":"2026-11-23T09:30:00Z","battery":1e400}'
    with pytest.raises(Malformed, match="number out of range"):
        json_v1.decode(json_v1.Topic("s1", "d1", "heartbeat"), payload)


def test_timestamp_that_overflows_in_utc_is_malformed() -> None:
    payload = _doc(type="pendant", ts="0001-01-01T00:00:00+01:00")
    with pytest.raises(Malformed, match="outside the representable range"):
        json_v1.decode(EVENT, payload)


def test_deep_nesting_is_malformed_not_recursion_error() -> None:
    for payload in (b"[" * 20_000, b'{"v":1,"x":' + b"[" * 20_000 + b"]" * 20_000 + b"}"):
        with pytest.raises(Malformed, match=f"nested deeper than {json_v1.MAX_DEPTH}"):
            json_v1.decode(EVENT, payload)


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    payload = _doc(type="pendant", zone='[[[[{{{{[[[[ "quoted" \\" [[[[')
    [event] = json_v1.decode(EVENT, payload)
    assert isinstance(event, AlarmEvent)


def test_deepest_valid_document_is_within_the_bound() -> None:
    items = [
        {
            "device_id": "oxi1",
            "channel": "reading",
            "msg_id": f"a{i}",
            "ts": "2026-11-23T09:30:00Z",
            "readings": [{"metric": "spo2", "value": 93, "unit": "%"}],
        }
        for i in range(400)  # as many as fit in MAX_PAYLOAD_BYTES
    ]
    payload = json_v1.encode_batch("m", items)
    assert payload.count(b"[") + payload.count(b"{") > json_v1.MAX_DEPTH  # the full scan
    out = json_v1.decode(json_v1.Topic("s1", "hub1", "batch"), payload)
    assert len(out) == 400


MARKER = "Mrs Winifred Marker"


@pytest.mark.parametrize(
    ("topic", "payload"),
    [
        (EVENT, _doc(type=MARKER)),
        (EVENT, _doc(type="pendant", phase=MARKER)),
        (EVENT, _doc(type="pendant", msg_id=MARKER)),
        (EVENT, _doc(type="pendant", ts=MARKER)),
        (EVENT, _doc(type="pendant", ts=MARKER + "T00:00")),
        (EVENT, _doc(type="pendant", zone=[MARKER])),
        (READING, _doc(readings=[{"metric": MARKER, "value": 91, "unit": "%"}])),
        (READING, _doc(readings=[{"metric": "spo2", "value": MARKER, "unit": "%"}])),
        (READING, _doc(readings=[{"metric": "spo2", "value": 91, "unit": MARKER}])),
        (READING, _doc(readings=[MARKER])),
        (json_v1.Topic("s1", "d1", "observation"), _doc(resident_id=MARKER, spo2=91)),
        (json_v1.Topic("s1", "d1", "observation"), _doc(resident_id="r1", consciousness=MARKER)),
        (json_v1.Topic("s1", "d1", "observation"), _doc(resident_id="r1", on_oxygen=MARKER)),
        (json_v1.Topic("s1", "d1", "observation"), _doc(resident_id="r1", spo2=MARKER)),
        (json_v1.Topic("s1", "d1", "ble"), _doc(device_id=MARKER, uuid="2A5F", data="00")),
        (json_v1.Topic("s1", "d1", "ble"), _doc(uuid=MARKER, data="00")),
        (json_v1.Topic("s1", "d1", "ble"), _doc(uuid="2A5F", data=MARKER)),
        (json_v1.Topic("s1", "d1", "batch"), _doc(items=[{"device_id": MARKER}])),
        (
            json_v1.Topic("s1", "d1", "batch"),
            _doc(items=[{"device_id": "c1", "channel": MARKER}]),
        ),
        (json_v1.Topic("s1", "d1", "status"), json.dumps({"v": 1, "online": MARKER}).encode()),
        (EVENT, json.dumps({"v": MARKER}).encode()),
    ],
)
def test_reasons_never_echo_raw_values(topic: json_v1.Topic, payload: bytes) -> None:
    """A name sent where an id, a type or a value belongs (issue 9 finding 7) must not come
    back in the reason, which is logged and published."""
    with pytest.raises(Malformed) as caught:
        json_v1.decode(topic, payload)
    assert "Winifred" not in caught.value.reason
    assert "Marker" not in caught.value.reason


def test_out_of_range_vitals_are_rejected_without_the_value() -> None:
    payload = _doc(readings=[{"metric": "spo2", "value": 191.25, "unit": "%"}])
    with pytest.raises(Malformed, match=r"spo2: value is impossible \(accepted range 0..100 %\)"):
        json_v1.decode(READING, payload)
    obs = _doc(resident_id="r1", pulse=912.5)
    with pytest.raises(Malformed, match="pulse: value is impossible") as caught:
        json_v1.decode(json_v1.Topic("s1", "d1", "observation"), obs)
    assert "912" not in caught.value.reason
