"""SIA DC-09 codec: known vectors, replies byte for byte against the standard's layout,
Hypothesis round trips with the simulated unit's independent encoder, and noise."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from telecare.devices.codecs import Incomplete, Malformed, dc09
from telecare.devices.model import EventType, Phase
from telecare.firmware_stubs.dc09_unit import Dc09Unit, crc16_arc, parse_reply
from tests.devices.conftest import check_parse_contract

FUZZ = settings(max_examples=300, deadline=None)
NOW = datetime(2026, 3, 1, 9, 15, 30, tzinfo=UTC)
KEY = bytes.fromhex("000102030405060708090A0B0C0D0E0F")


def test_crc_known_vectors() -> None:
    assert dc09.crc16(b"123456789") == 0xBB3D  # CRC-16/ARC check value
    assert crc16_arc(b"123456789") == 0xBB3D
    assert dc09.crc16(b"") == 0
    content = '"NULL"0001L0#1234[]'
    assert dc09.frame(content) == b"\n%04X0013%s\r" % (
        crc16_arc(content.encode()),
        content.encode(),
    )


def test_parse_a_known_plain_adm_cid_frame() -> None:
    content = '"ADM-CID"0007R5L2#1234[#1234|1101 01 003][H09:15:00,03-01-2026]_09:15:30,03-01-2026'
    raw = dc09.frame(content)
    block, used = dc09.parse(raw + b"\n")
    assert used == len(raw)
    assert (block.token, block.encrypted, block.seq) == ("ADM-CID", False, "0007")
    assert (block.receiver, block.line, block.account) == ("5", "2", "1234")
    c = dc09.open_block(block, None)
    assert c.account == "1234"
    assert c.payload == "1101 01 003"
    assert c.extension("H") == "09:15:00,03-01-2026"
    assert c.timestamp == NOW
    msg = dc09.adm_cid(c, block.account)
    assert (msg.code, msg.group, msg.zone) == (101, "01", "003")
    assert (msg.event_type, msg.phase) == (EventType.PENDANT, Phase.ALARM)


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ("1101 01 003", (101, "01", "003", Phase.ALARM)),
        ("110101003", (101, "01", "003", Phase.ALARM)),  # no spaces (pysiaalarm #52/#72)
        ("3120 00 00F", (120, "00", "00F", Phase.RESTORE)),  # hex zone digit
        ("E111 02 005", (111, "02", "005", Phase.ALARM)),  # E/R qualifiers
        ("R111 02 005", (111, "02", "005", Phase.RESTORE)),
        ("6406 01 001", (406, "01", "001", Phase.ALARM)),
    ],
)
def test_adm_cid_variants(payload: str, expected: tuple[int, str, str, Phase]) -> None:
    m = dc09.adm_cid(dc09.Content(payload), "1234")
    assert (m.code, m.group, m.zone, m.phase) == expected


@pytest.mark.parametrize("payload", ["1101 01", "9101 01 003", "1999 01 003", "11O1 01 003", ""])
def test_adm_cid_refuses_what_it_cannot_map(payload: str) -> None:
    with pytest.raises(Malformed):
        dc09.adm_cid(dc09.Content(payload), "1234")


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ("Nri1/MA01", [("MA", "01", EventType.PENDANT, Phase.ALARM, "1")]),
        ("NMA01", [("MA", "01", EventType.PENDANT, Phase.ALARM, None)]),
        ("NA01", [("NA", "01", EventType.INACTIVITY, Phase.ALARM, None)]),
        (
            "Nri2id12ti10:15:00FA005^hall^|AMrs X",
            [("FA", "005", EventType.SMOKE, Phase.ALARM, "2")],
        ),
        (
            "Nri1/FA003/FR003",
            [
                ("FA", "003", EventType.SMOKE, Phase.ALARM, "1"),
                ("FR", "003", EventType.SMOKE, Phase.RESTORE, "1"),
            ],
        ),
        ("NRP", [("RP", "", EventType.PERIODIC_TEST, Phase.ALARM, None)]),
        ("NOC12", [("OC", "12", EventType.CANCEL, Phase.ALARM, None)]),
    ],
)
def test_sia_dcs_events(
    payload: str, expected: list[tuple[str, str, EventType, Phase, str | None]]
) -> None:
    events = dc09.sia_dcs(dc09.Content(payload))
    assert [(e.code, e.zone, e.event_type, e.phase, e.area) for e in events] == expected


@pytest.mark.parametrize("payload", ["", "N", "Nri1", "NBA01", "Nxx1/MA01", "N$$"])
def test_sia_dcs_refuses(payload: str) -> None:
    with pytest.raises(Malformed):
        dc09.sia_dcs(dc09.Content(payload))


# --------------------------------------------------------------------------- replies


def _content(reply: bytes) -> bytes:
    """Check LF, CRC, length and CR; return the content."""
    assert reply[:1] == b"\n"
    assert reply[-1:] == b"\r"
    content = reply[9:-1]
    assert reply[1:5] == b"%04X" % dc09.crc16(content)
    assert reply[5:9] == b"%04X" % len(content)
    return content


def test_plain_ack_byte_for_byte() -> None:
    block, _ = dc09.parse(dc09.frame('"ADM-CID"0042R1L2#1234[#1234|1101 01 003]'))
    reply = dc09.ack(block, None, NOW)
    assert _content(reply) == b'"ACK"0042R1L2#1234[]'
    assert reply == b'\n%04X0014"ACK"0042R1L2#1234[]\r' % dc09.crc16(b'"ACK"0042R1L2#1234[]')
    # No receiver or line in the frame: none in the ACK (never "RNone", pysiaalarm #88).
    block, _ = dc09.parse(dc09.frame('"SIA-DCS"0001#ABC[#ABC|NMA1]'))
    assert _content(dc09.ack(block, None, NOW)) == b'"ACK"0001#ABC[]'


def test_nak_byte_for_byte() -> None:
    reply = dc09.nak(NOW)
    assert _content(reply) == b'"NAK"0000R0L0A0[]_09:15:30,03-01-2026'
    assert reply[5:9] == b"0025"


def test_duh_byte_for_byte() -> None:
    block, _ = dc09.parse(dc09.frame('"ADM-CID"0003L0#1234[#1234|1999 01 003]'))
    assert _content(dc09.duh(block)) == b'"DUH"0003L0#1234[]'
    assert _content(dc09.duh(None)) == b'"DUH"0000R0L0A0[]'


def test_encrypted_ack_carries_the_receiver_time_under_the_same_key() -> None:
    unit = Dc09Unit("1234", key=KEY, receiver=3, line=1)
    block, _ = dc09.parse(unit.frame(unit.adm_cid(1, 101), stamp=NOW))
    reply = dc09.ack(block, KEY, NOW, pad=lambda n: "x" * n)
    content = _content(reply).decode()
    assert content.startswith('"*ACK"0001R3L1#1234[')
    hexed = content[len('"*ACK"0001R3L1#1234[') :]
    assert len(hexed) % 32 == 0
    assert dc09.decrypt(hexed, KEY) == "x" * 10 + "|]_09:15:30,03-01-2026"
    parsed = parse_reply(reply, KEY)
    assert (parsed.token, parsed.seq, parsed.timestamp) == ("ACK", "0001", NOW)


# --------------------------------------------------------------------------- errors


def test_frame_errors_say_nak_and_noise_is_skipped() -> None:
    good = dc09.frame('"ADM-CID"0001L0#1234[#1234|1101 01 003]')
    with pytest.raises(dc09.Refused) as exc:
        dc09.parse(good[:1] + b"0000" + good[5:])
    assert exc.value.reply is dc09.Reply.NAK
    assert "CRC" in exc.value.reason
    assert exc.value.skip == len(good)
    with pytest.raises(dc09.Refused, match="length"):
        dc09.parse(good[:5] + b"0010" + good[9:])
    with pytest.raises(dc09.Refused, match="outside"):
        dc09.parse(b"\n0000FFFF")
    with pytest.raises(Malformed, match="cannot start") as noise:
        dc09.parse(b"xyz" + good)
    assert noise.value.skip == 3
    assert not isinstance(noise.value, dc09.Refused)
    with pytest.raises(Incomplete):
        dc09.parse(good[:-1])
    with pytest.raises(dc09.Refused, match="cut short"):
        dc09.parse_datagram(good[:-1])
    with pytest.raises(dc09.Refused, match="after the DC-09 frame"):
        dc09.parse_datagram(good + good)
    with pytest.raises(dc09.Refused, match="no #account"):
        dc09.parse(dc09.frame('"ADM-CID"0001L0[#1234|1101 01 003]'))


def test_timestamps() -> None:
    assert dc09.parse_timestamp("09:15:30,03-01-2026") == NOW
    assert dc09.format_timestamp(NOW + timedelta(hours=1, minutes=0)) == "_10:15:30,03-01-2026"
    with pytest.raises(dc09.Refused):
        dc09.parse_timestamp("25:15:30,03-01-2026")
    block, _ = dc09.parse(dc09.frame('"ADM-CID"0001L0#1234[#1234|1101 01 003]_09:15:30,13-01-2026'))
    with pytest.raises(dc09.Refused, match="timestamp") as exc:
        dc09.open_block(block, None)
    assert exc.value.reply is dc09.Reply.NAK


def test_encryption_needs_the_right_key_and_a_timestamp() -> None:
    unit = Dc09Unit("1234", key=KEY)
    block, _ = dc09.parse(unit.frame(unit.adm_cid(1, 101), stamp=NOW))
    with pytest.raises(dc09.Refused) as no_key:
        dc09.open_block(block, None)
    assert no_key.value.reply is dc09.Reply.DUH
    with pytest.raises(dc09.Refused) as wrong:
        dc09.open_block(block, bytes(16))
    assert wrong.value.reply is dc09.Reply.DUH
    no_stamp = dc09.encrypt("#1234|1101 01 003]", KEY)
    block, _ = dc09.parse(dc09.frame(f'"*ADM-CID"0001L0#1234[{no_stamp}'))
    with pytest.raises(dc09.Refused, match="no timestamp"):
        dc09.open_block(block, KEY)


# --------------------------------------------------------------------------- round trips

_accounts = st.text("0123456789ABCDEF", min_size=3, max_size=16)
_keys = st.one_of(
    st.none(), st.binary(min_size=16, max_size=16), st.binary(min_size=32, max_size=32)
)
_times = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31), timezones=st.just(UTC)
).map(lambda d: d.replace(microsecond=0))


@FUZZ
@given(
    account=_accounts,
    key=_keys,
    receiver=st.one_of(st.none(), st.integers(0, 0xFFFFFF)),
    line=st.one_of(st.none(), st.integers(0, 0xFFFFFF)),
    qualifier=st.sampled_from([1, 3, 6]),
    code=st.sampled_from(sorted(c for c in dc09.cid.EVENT_CODES)),
    group=st.integers(0, 99),
    zone=st.integers(0, 999),
    stamp=_times,
    event_time=st.one_of(st.none(), _times),
    seed=st.integers(0, 2**32),
)
def test_adm_cid_round_trip_with_the_unit_encoder(
    account: str,
    key: bytes | None,
    receiver: int | None,
    line: int | None,
    qualifier: int,
    code: int,
    group: int,
    zone: int,
    stamp: datetime,
    event_time: datetime | None,
    seed: int,
) -> None:
    unit = Dc09Unit(account, key=key, receiver=receiver, line=line, rng=random.Random(seed))
    msg = unit.adm_cid(qualifier, code, group=group, zone=zone, event_time=event_time)
    raw = unit.frame(msg, stamp=stamp)
    block, used = dc09.parse(raw)
    assert used == len(raw)
    assert (block.account, block.seq, block.encrypted) == (account, "0001", key is not None)
    assert block.receiver == (None if receiver is None else f"{receiver:X}")
    content = dc09.open_block(block, key)
    assert content.timestamp == stamp
    assert content.extension("H") == (
        None if event_time is None else dc09.format_timestamp(event_time)[1:]
    )
    m = dc09.adm_cid(content, block.account)
    assert (m.account, m.code, m.group, m.zone) == (account, code, f"{group:02d}", f"{zone:03d}")
    assert m.qualifier == qualifier
    # ... and the receiver's ACK is one the unit accepts.
    reply = parse_reply(dc09.ack(block, key, stamp), key)
    assert (reply.token, reply.seq) == ("ACK", "0001")
    assert reply.timestamp == (stamp if key is not None else None)


@FUZZ
@given(
    account=_accounts,
    key=_keys,
    code=st.sampled_from(sorted(dc09.SIA_CODES)),
    zone=st.one_of(st.none(), st.integers(0, 9999)),
    area=st.one_of(st.none(), st.integers(0, 99)),
    stamp=_times,
)
def test_sia_dcs_round_trip_with_the_unit_encoder(
    account: str, key: bytes | None, code: str, zone: int | None, area: int | None, stamp: datetime
) -> None:
    unit = Dc09Unit(account, key=key)
    raw = unit.frame(unit.sia_dcs(code, zone, area=area), stamp=stamp)
    block, _ = dc09.parse(raw)
    (event,) = dc09.sia_dcs(dc09.open_block(block, key))
    assert (event.code, event.zone) == (code, "" if zone is None else f"{zone:02d}")
    assert event.area == (None if area is None else str(area))
    assert (event.event_type, event.phase) == dc09.SIA_CODES[code]


@FUZZ
@given(st.binary(max_size=300))
def test_noise_never_breaks_the_parse_contract(data: bytes) -> None:
    check_parse_contract(dc09.parse, data)
    check_parse_contract(dc09.parse, b"\n" + data)


@FUZZ
@given(st.binary(max_size=200), st.integers(0, 10_000))
def test_corrupted_frames_only_ever_raise_codec_errors(noise: bytes, seed: int) -> None:
    rng = random.Random(seed)
    unit = Dc09Unit("1234", key=KEY, rng=rng)
    raw = bytearray(unit.frame(unit.adm_cid(1, 101), stamp=NOW))
    for _ in range(1 + seed % 3):
        raw[rng.randrange(len(raw))] = rng.randrange(256)
    stream = bytes(raw) + noise
    while stream:  # a stream parser always makes progress through the buffer
        try:
            block, used = dc09.parse(stream)
        except Incomplete:
            break
        except Malformed as exc:
            stream = stream[exc.skip :]
            continue
        try:
            content = dc09.open_block(block, KEY)
            dc09.adm_cid(content, block.account)
        except Malformed:  # Refused is one
            pass
        stream = stream[used:]
