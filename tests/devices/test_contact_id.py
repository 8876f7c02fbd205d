"""Ademco Contact ID from an alarm receiver's serial line."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from telecare.devices.codecs import Malformed, contact_id
from telecare.devices.model import EventType, Phase
from telecare.firmware_stubs.alarm_receiver import checksum_digit, encode_contact_id
from tests.devices.conftest import T0, check_parse_contract

FUZZ = settings(max_examples=300, deadline=None)


def test_checksum_known_vectors() -> None:
    # 1234 18 1 131 01 015: 1+2+3+4+1+8+1+1+3+1+10+1+10+1+5 = 52 -> 8 makes 60
    assert checksum_digit("123418113101015") == "8"
    # 1234 18 1 101 01 015: 59 -> 1 makes 60
    assert checksum_digit("123418110101015") == "1"
    # 1234 18 3 301 01 000: 77 -> 13 ('D') makes 90
    assert checksum_digit("123418330101000") == "D"
    # whatever the body, the check digit completes a multiple of 15
    body = "123418160200000"
    total = sum(contact_id.digit_value(c) for c in body)
    assert (total + contact_id.digit_value(checksum_digit(body))) % 15 == 0


def test_pendant_alarm_known_message() -> None:
    msg, used = contact_id.parse(b"1234181101010151\r\n")
    assert used == 18
    assert (msg.account, msg.message_type, msg.qualifier, msg.code) == ("1234", "18", 1, 101)
    assert (msg.group, msg.zone) == ("01", "015")
    assert (msg.event_type, msg.phase) == (EventType.PENDANT, Phase.ALARM)


def test_mains_restore_known_message() -> None:
    msg, _ = contact_id.parse(b"123418330101000D\r")
    assert (msg.event_type, msg.phase) == (EventType.MAINS_FAIL, Phase.RESTORE)


def test_checksum_is_verified() -> None:
    with pytest.raises(Malformed, match="checksum"):
        contact_id.parse(b"1234181101010152\r\n")


def test_valid_but_unmapped_code_is_malformed_with_reason() -> None:
    # 131 (perimeter burglary) passes the checksum but is not a telecare event we map
    with pytest.raises(Malformed, match="event code 131 is not one we map") as info:
        contact_id.parse(b"1234181131010158\r\n")
    assert info.value.skip == 18


@pytest.mark.parametrize(
    ("code", "event"),
    [
        (101, EventType.PENDANT),
        (120, EventType.FALL),
        (102, EventType.POST_FALL_INACTIVITY),
        (641, EventType.INACTIVITY),
        (111, EventType.SMOKE),
        (162, EventType.CO),
        (154, EventType.FLOOD),
        (158, EventType.TEMPERATURE_HIGH),
        (159, EventType.TEMPERATURE_LOW),
        (301, EventType.MAINS_FAIL),
        (302, EventType.LOW_BATTERY),
        (384, EventType.SENSOR_LOW_BATTERY),
        (383, EventType.TAMPER),
        (344, EventType.JAMMING),
        (147, EventType.SUPERVISION),
        (602, EventType.PERIODIC_TEST),
        (406, EventType.CANCEL),
    ],
)
@pytest.mark.parametrize(
    ("qualifier", "phase"), [(1, Phase.ALARM), (3, Phase.RESTORE), (6, Phase.ALARM)]
)
def test_every_mapped_code(code: int, event: EventType, qualifier: int, phase: Phase) -> None:
    msg, _ = contact_id.parse(encode_contact_id("5678", qualifier, code, zone=3))
    assert (msg.event_type, msg.phase, msg.code) == (event, phase, code)


def test_unknown_qualifier_and_message_type() -> None:
    with pytest.raises(Malformed, match="qualifier 2"):
        contact_id.parse(encode_contact_id("1234", 2, 101))
    with pytest.raises(Malformed, match="message type 17"):
        contact_id.parse(encode_contact_id("1234", 1, 101, message_type="17"))


def test_hex_account_and_lowercase() -> None:
    line = encode_contact_id("B2CF", 1, 120, zone=7)
    msg, _ = contact_id.parse(line.lower())
    assert msg.account == "B2CF"
    assert msg.event_type is EventType.FALL


def test_to_event() -> None:
    msg, _ = contact_id.parse(encode_contact_id("1234", 3, 111, group=2, zone=12))
    ev = contact_id.to_event(msg, device_id="arc-rx1", ts=T0, site_id="s1", resident_id="r1")
    assert (ev.type, ev.phase, ev.zone, ev.code, ev.source) == (
        EventType.SMOKE,
        Phase.RESTORE,
        "012",
        111,
        "serial",
    )
    again = contact_id.to_event(msg, device_id="arc-rx1", ts=T0)
    assert ev.msg_id == again.msg_id  # deterministic
    assert ev.msg_id.startswith("cid-1234-3111-02012-")


def test_decoder_resyncs_after_noise_and_partial_frames() -> None:
    a = encode_contact_id("1234", 1, 101, zone=1)
    b = encode_contact_id("1234", 3, 101, zone=1)
    c = encode_contact_id("4321", 1, 120)
    stream = b"\x00\xff AT" + a + a[:7] + b"\r\n" + b"\x07" + b + a[:10] + c + b"\n\n" + c
    dec = contact_id.decoder()
    out = dec.feed(stream)
    assert [(m.account, m.code, m.phase) for m in out] == [
        ("1234", 101, Phase.ALARM),
        ("1234", 101, Phase.RESTORE),
        ("4321", 120, Phase.ALARM),
        ("4321", 120, Phase.ALARM),
    ]
    skips = dec.pop_skips()
    reasons = " | ".join(s.reason for s in skips)
    assert "cannot start" in reasons
    assert "cut short" in reasons or "longer than 16" in reasons
    assert dec.skipped_bytes == len(stream) - 2 * len(a) - 2 * len(c)


def test_decoder_split_arbitrarily() -> None:
    stream = b"".join(encode_contact_id("1234", 1, 101, zone=z) for z in range(20))
    dec = contact_id.decoder()
    out = [m for i in range(0, len(stream), 7) for m in dec.feed(stream[i : i + 7])]
    assert [int(m.zone) for m in out] == list(range(20))


accounts = st.text("0123456789BCDEF", min_size=4, max_size=4)


@FUZZ
@given(
    account=accounts,
    qualifier=st.sampled_from([1, 3, 6]),
    code=st.sampled_from(sorted(contact_id.EVENT_CODES)),
    group=st.integers(0, 99),
    zone=st.integers(0, 999),
    mt=st.sampled_from(["18", "98"]),
    end=st.sampled_from([b"\r", b"\n", b"\r\n"]),
)
def test_round_trip(
    account: str, qualifier: int, code: int, group: int, zone: int, mt: str, end: bytes
) -> None:
    line = encode_contact_id(
        account, qualifier, code, group=group, zone=zone, message_type=mt, line_end=end
    )
    msg, used = contact_id.parse(line)
    assert used == len(line)
    assert (msg.account, msg.qualifier, msg.code, int(msg.group), int(msg.zone)) == (
        account,
        qualifier,
        code,
        group,
        zone,
    )


@FUZZ
@given(
    st.one_of(st.binary(max_size=40), st.text("0123456789BCDEFA\r\n", max_size=40).map(str.encode))
)
def test_fuzz_parse(data: bytes) -> None:
    check_parse_contract(contact_id.parse, data)


@FUZZ
@given(st.lists(st.binary(max_size=40), max_size=8))
def test_fuzz_decoder_never_raises(chunks: list[bytes]) -> None:
    dec = contact_id.decoder()
    good = encode_contact_id("1234", 1, 101)
    for c in chunks:
        dec.feed(c)
    out = dec.feed(b"\r\n" + good)
    assert out
    assert out[-1].code == 101


@FUZZ
@given(st.text("0123456789BCDEF", min_size=16, max_size=16))
def test_fuzz_parse_message(text: str) -> None:
    try:
        msg = contact_id.parse_message(text)
    except Malformed:
        return
    assert msg.code in contact_id.EVENT_CODES
