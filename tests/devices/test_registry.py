"""The codec registry: every format decodes its stub's bytes into model objects."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from telecare.devices.codecs import Malformed
from telecare.devices.codecs.oximetry import OximeterSample
from telecare.devices.codecs.registry import CODECS, MessageCodec, StreamCodec, get
from telecare.devices.model import AlarmEvent, EventType, Metric, Reading
from telecare.firmware_stubs.alarm_receiver import encode_contact_id
from telecare.firmware_stubs.ble_hub import encode_2a5e, encode_2a5f, encode_2a35
from telecare.firmware_stubs.oximeter import encode_sample
from tests.devices.conftest import T0

DOC = Path(__file__).resolve().parents[2] / "docs" / "devices.md"
SAMPLE = OximeterSample(spo2=96, pulse=140, perfusion_index=None)


@pytest.mark.parametrize("name", ["cms50d", "nonin2", "nonin8", "masimo_rad8"])
def test_oximeter_streams(name: str) -> None:
    codec = get(name)
    assert isinstance(codec, StreamCodec)
    dec = codec.new_decoder()
    frames = list(dec.feed(b"\x00noise" + encode_sample(name, SAMPLE) * 2))
    assert len(frames) == 2
    out = codec.to_model(frames[0], device_id="ox1", ts=T0, resident_id="r1")
    assert [(r.metric, r.value) for r in out if isinstance(r, Reading)] == [
        (Metric.SPO2, 96.0),
        (Metric.PULSE, 140.0),
    ]
    assert dec.skipped_bytes > 0


def test_contact_id_stream() -> None:
    codec = get("contact_id")
    assert isinstance(codec, StreamCodec)
    (frame,) = codec.new_decoder().feed(encode_contact_id("1234", 1, 120, zone=2))
    (event,) = codec.to_model(frame, device_id="rx1", ts=T0, site_id="s1")
    assert isinstance(event, AlarmEvent)
    assert event.type is EventType.FALL


@pytest.mark.parametrize(
    ("name", "payload", "metrics"),
    [
        ("ble_2a5e", encode_2a5e(97, 66, timestamp=datetime(2026, 1, 5)), 2),
        ("ble_2a5f", encode_2a5f(97, 66, fast=(96, 70)), 2),
        ("ble_2a35", encode_2a35(128, 84, 99, kpa=True, pulse=66), 4),
    ],
)
def test_ble_messages(name: str, payload: bytes, metrics: int) -> None:
    codec = get(name)
    assert isinstance(codec, MessageCodec)
    out = codec.to_model(codec.decode(payload), device_id="hub1-dev", ts=T0)
    assert len(out) == metrics
    with pytest.raises(Malformed):
        codec.decode(payload[:3])


def test_unknown_codec_names_known_ones() -> None:
    with pytest.raises(KeyError, match="cms50d"):
        get("nonin7")


def test_every_codec_is_documented() -> None:
    doc = DOC.read_text(encoding="utf-8")
    for name in CODECS:
        assert f"`{name}`" in doc
