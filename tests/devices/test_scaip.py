"""SCAIP codec (sans-IO): the SIP message parser, <mrq>/<mrs> XML, the SIP-level checks and
the mapping onto the event taxonomy."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from telecare.devices.codecs import Incomplete, Malformed, scaip, sip
from telecare.devices.codecs.scaip import MessageType, Mrq, Reply, ScaipError, Snu
from telecare.devices.model import EventType, Phase
from telecare.firmware_stubs.scaip_unit import encode_message, encode_mrq
from tests.devices.conftest import T0, check_parse_contract

FUZZ = settings(max_examples=300, deadline=None)

#: A real unit's alarm (captured form published by an ARC integrator).
REAL_ME = (
    b"<mrq><ref>00001883</ref><cha>0</cha><mty>ME</mty><cid>26317</cid><dty>02</dty>"
    b"<did>00</did><crd>gsm:+3700000000</crd><stc>010</stc></mrq>"
)
REAL_PI = b"<mrq><mty>PI</mty><ref>1998218577</ref><cid>10149471</cid><dty>2</dty></mrq>"

BOMB = (
    b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    b'<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">'
    b'<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>'
    b"<mrq><ref>&lol3;</ref><cid>1</cid><dty>0003</dty></mrq>"
)


def _request(body: bytes, from_user: str = "26317", **kw: object) -> sip.SipRequest:
    raw = encode_message(body, from_user=from_user, host="127.0.0.1", port=5060, **kw)  # type: ignore[arg-type]
    msg, used = sip.parse(raw, stream=True)
    assert used == len(raw)
    assert isinstance(msg, sip.SipRequest)
    return msg


# ---------------------------------------------------------------------------- SIP parser


def test_sip_message_known_vector() -> None:
    raw = (
        b"MESSAGE sip:arc@10.0.0.1 SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bK776asdhds\r\n"
        b"f: <sip:26317@10.0.0.2>;tag=1928301774\r\n"
        b"t: <sip:arc@10.0.0.1>\r\n"
        b"i: a84b4c76e66710@10.0.0.2\r\n"
        b"CSeq: 314159 MESSAGE\r\n"
        b"c: application/scaip+xml\r\n"
        b"l: " + str(len(REAL_ME)).encode() + b"\r\n\r\n" + REAL_ME + b"NEXT"
    )
    msg, used = sip.parse(raw, stream=True)
    assert isinstance(msg, sip.SipRequest)
    assert used == len(raw) - 4
    assert (msg.method, msg.uri) == ("MESSAGE", "sip:arc@10.0.0.1")
    assert msg.header("FROM") == "<sip:26317@10.0.0.2>;tag=1928301774"
    assert msg.content_type == scaip.CONTENT_TYPE
    assert msg.body == REAL_ME
    assert msg.transaction_key == ("z9hG4bK776asdhds", "a84b4c76e66710@10.0.0.2", "314159 MESSAGE")
    assert sip.uri_user(msg.header("from") or "") == "26317"


def test_sip_stream_needs_content_length_and_waits_for_the_body() -> None:
    raw = encode_message(REAL_ME, from_user="26317", host="h", port=1)
    for n in (10, raw.index(b"\r\n\r\n"), len(raw) - 1):
        with pytest.raises(Incomplete):
            sip.parse(raw[:n], stream=True)
    no_length = raw.replace(b"Content-Length", b"X-Length")
    with pytest.raises(Malformed, match="without Content-Length"):
        sip.parse(no_length, stream=True)
    msg, _ = sip.parse(no_length, stream=False)  # a datagram: the body is the rest
    assert isinstance(msg, sip.SipRequest)


def test_sip_datagram_with_short_body_is_malformed() -> None:
    raw = encode_message(REAL_ME, from_user="26317", host="h", port=1)
    with pytest.raises(Malformed, match="shorter"):
        sip.parse(raw[:-5], stream=False)


def test_sip_keepalive_and_oversize() -> None:
    with pytest.raises(Malformed, match="keep-alive") as info:
        sip.parse(b"\r\n\r\nMESSAGE", stream=True)
    assert info.value.skip == 4
    with pytest.raises(sip.TooLarge):
        sip.parse(b"MESSAGE sip:a@b SIP/2.0\r\nX: " + b"a" * 9000, stream=True)


def test_response_copies_transaction_headers_and_adds_a_to_tag() -> None:
    req = _request(REAL_ME)
    raw = sip.build_response(
        req, 200, "OK", to_tag="abc", body=b"<mrs/>", content_type=scaip.CONTENT_TYPE
    )
    resp, _ = sip.parse(raw, stream=True)
    assert isinstance(resp, sip.SipResponse)
    assert resp.status == 200
    for name in ("via", "from", "call-id", "cseq"):
        assert resp.header(name) == req.header(name)
    assert resp.header("to") == f"{req.header('to')};tag=abc"
    assert resp.body == b"<mrs/>"


@given(st.binary(max_size=400), st.booleans())
@FUZZ
def test_sip_parser_raises_only_codec_errors(data: bytes, stream: bool) -> None:
    check_parse_contract(lambda b: sip.parse(b, stream=stream), data)


# ---------------------------------------------------------------------------- <mrq> <mrs>


def test_real_unit_alarm_decodes_with_normalised_codes() -> None:
    m = scaip.decode_mrq(REAL_ME)
    assert m == Mrq(
        ref="00001883",
        cid="26317",
        dty="0002",
        mty=MessageType.ALARM,
        stc="0010",
        did="00",
        crd="gsm:+3700000000",
    )
    assert scaip.classify(m) == (EventType.PENDANT, Phase.ALARM)


def test_real_unit_heartbeat_defaults() -> None:
    m = scaip.decode_mrq(REAL_PI)
    assert (m.mty, m.stc, m.dty) == (MessageType.HEARTBEAT, "0010", "0002")
    assert scaip.classify(m) == (EventType.PERIODIC_TEST, Phase.ALARM)


@pytest.mark.parametrize(
    ("body", "snu", "reason"),
    [
        (b"<mrq><ref>1</ref><cid>2</cid>", Snu.INVALID_FORMAT, "not well-formed"),
        (BOMB, Snu.INVALID_FORMAT, "DTDs and entities"),
        (b"<mrs><ref>1</ref></mrs>", Snu.INVALID_FORMAT, "root element"),
        (b"<mrq><ref>1</ref><cid>2</cid></mrq>", Snu.MANDATORY_TAG_MISSING, "dty"),
        (encode_mrq("r", "c", mty="XX"), Snu.WRONG_DATA_CONTENT, "mty"),
        (encode_mrq("r", "c", stc="1x"), Snu.WRONG_DATA_CONTENT, "stc"),
        (b"<mrq>" + b"<x>a</x>" * 600 + b"</mrq>", Snu.MESSAGE_TOO_LONG, "over"),
    ],
)
def test_bad_requests_carry_their_status_number(body: bytes, snu: Snu, reason: str) -> None:
    with pytest.raises(ScaipError, match=reason) as info:
        scaip.decode_mrq(body)
    assert info.value.snu is snu


def test_mandatory_missing_still_echoes_ref() -> None:
    with pytest.raises(ScaipError) as info:
        scaip.decode_mrq(b"<mrq><ref>R-9</ref><dty>3</dty></mrq>")
    assert info.value.ref == "R-9"


def test_mrs_encoding_known_vector_and_escaping() -> None:
    assert scaip.encode_mrs("00001883", Snu.OK) == b"<mrs><ref>00001883</ref><snu>0</snu></mrs>"
    body = scaip.encode_mrs("a<b&c", Snu.NOT_TREATED, "unknown <cid>")
    assert scaip.decode_mrs(body) == scaip.Mrs("a<b&c", 5, "unknown <cid>")


_code = st.integers(0, 9999).map(lambda n: f"{n:04d}")
_text = st.text(
    st.characters(min_codepoint=33, max_codepoint=0x2FF, blacklist_characters="<>&"),
    min_size=1,
    max_size=40,
)


@given(
    ref=st.text(st.characters(min_codepoint=32, max_codepoint=0x7E), min_size=1, max_size=48),
    cid=_text,
    dty=_code,
    mty=st.sampled_from(["ME", "RE", "IN", "PI"]),
    stc=_code,
    lco=st.none() | st.integers(0, 999).map(lambda n: f"{n:03d}"),
)
@FUZZ
def test_mrq_round_trip_through_the_stub_encoder(
    ref: str, cid: str, dty: str, mty: str, stc: str, lco: str | None
) -> None:
    ref = ref.strip() or "r"
    cid = cid.strip() or "c"
    m = scaip.decode_mrq(encode_mrq(ref, cid, dty, mty, stc, lco=lco))
    assert (m.ref, m.cid, m.dty, m.mty.value, m.stc, m.lco) == (ref, cid, dty, mty, stc, lco)
    event = scaip.to_event(m, device_id="unit1", ts=T0)
    assert event.msg_id == scaip.msg_id_for_ref(ref)
    assert (event.device_type, event.location, event.code) == (dty, lco, int(stc))
    # the same ref is the same idempotency key, whatever else changed
    again = scaip.decode_mrq(encode_mrq(ref, cid, "0005", "ME", "0010"))
    assert scaip.to_event(again, device_id="unit1", ts=T0).msg_id == event.msg_id


@given(st.binary(max_size=300))
@FUZZ
def test_noise_bodies_raise_only_scaip_errors(data: bytes) -> None:
    error: ScaipError | None = None
    try:
        scaip.decode_mrq(data)
    except ScaipError as exc:
        error = exc
    assert error is None or (error.reason and error.snu is not Snu.OK)


@given(st.text(max_size=200))
@FUZZ
def test_noise_xml_like_text_raises_only_scaip_errors(text: str) -> None:
    error: ScaipError | None = None
    try:
        scaip.decode_mrq(f"<mrq>{text}</mrq>".encode())
    except ScaipError as exc:
        error = exc
    assert error is None or error.snu is not Snu.OK


# ---------------------------------------------------------------------------- taxonomy


@pytest.mark.parametrize(
    ("mty", "stc", "dty", "expected"),
    [
        ("ME", "0010", "0003", (EventType.PENDANT, Phase.ALARM)),
        ("ME", "0009", "0005", (EventType.FALL, Phase.ALARM)),
        ("ME", "0010", "0023", (EventType.SMOKE, Phase.ALARM)),
        ("ME", "0010", "0026", (EventType.CO, Phase.ALARM)),
        ("ME", "0010", "0033", (EventType.FLOOD, Phase.ALARM)),
        ("ME", "0104", "0010", (EventType.INACTIVITY, Phase.ALARM)),
        ("ME", "0077", "0014", (EventType.DOOR_EXIT, Phase.ALARM)),
        ("ME", "0010", "0099", (EventType.PENDANT, Phase.ALARM)),  # unknown dty: never dropped
        ("ME", "0016", "0003", (EventType.LOW_BATTERY, Phase.ALARM)),
        ("ME", "0085", "0002", (EventType.MAINS_FAIL, Phase.ALARM)),
        ("ME", "0086", "0002", (EventType.MAINS_FAIL, Phase.RESTORE)),
        ("ME", "0094", "0023", (EventType.SMOKE, Phase.RESTORE)),
        ("ME", "0019", "0003", (EventType.CANCEL, Phase.ALARM)),
        ("ME", "0102", "0002", (EventType.PERIODIC_TEST, Phase.ALARM)),
        ("RE", "0010", "0005", (EventType.FALL, Phase.RESTORE)),
        ("RE", "0093", "0003", (EventType.CANCEL, Phase.ALARM)),
        ("RE", "0111", "0003", (EventType.CARER_ARRIVED, Phase.ALARM)),
        ("RE", "0016", "0003", (EventType.LOW_BATTERY, Phase.RESTORE)),
        ("IN", "0016", "0003", (EventType.LOW_BATTERY, Phase.ALARM)),
        ("IN", "0083", "0011", (EventType.INFORMATION, Phase.ALARM)),
        ("PI", "0010", "0002", (EventType.PERIODIC_TEST, Phase.ALARM)),
    ],
)
def test_taxonomy_mapping(mty: str, stc: str, dty: str, expected: tuple[EventType, Phase]) -> None:
    m = Mrq(ref="r", cid="c", dty=dty, mty=MessageType(mty), stc=stc)
    assert scaip.classify(m) == expected


def test_unsafe_ref_is_hashed_into_a_valid_msg_id() -> None:
    a = scaip.msg_id_for_ref("ref with spaces / and more than enough characters to be long")
    assert a.startswith("scaip-h")
    assert a == scaip.msg_id_for_ref("ref with spaces / and more than enough characters to be long")
    assert scaip.msg_id_for_ref("00001A85") == "scaip-00001A85"


# ---------------------------------------------------------------------------- SIP checks


def test_check_request_accepts_a_scaip_message() -> None:
    out = scaip.check_request(_request(REAL_ME))
    assert isinstance(out, Mrq)
    assert out.cid == "26317"


@pytest.mark.parametrize(
    ("kw", "status", "header"),
    [
        ({"method": "INVITE"}, 405, ("Allow", "MESSAGE, OPTIONS")),
        ({"method": "SUBSCRIBE"}, 405, ("Allow", "MESSAGE, OPTIONS")),
        ({"content_type": "text/plain"}, 415, ("Accept", "application/scaip+xml")),
        ({"method": "OPTIONS"}, 200, ("Allow", "MESSAGE, OPTIONS")),
    ],
)
def test_check_request_rejects_what_is_not_a_scaip_message(
    kw: dict[str, str], status: int, header: tuple[str, str]
) -> None:
    out = scaip.check_request(_request(REAL_ME, **kw))
    assert isinstance(out, Reply)
    assert out.status == status
    assert header in out.headers


def test_check_request_without_call_id_is_400_and_ack_gets_nothing() -> None:
    req = _request(REAL_ME)
    bare = sip.SipRequest(req.method, req.uri, tuple(h for h in req.headers if h[0] != "call-id"))
    out = scaip.check_request(bare)
    assert isinstance(out, Reply)
    assert out.status == 400
    ack = _request(b"", method="ACK")
    assert scaip.check_request(ack) is None


def test_from_user_must_match_cid() -> None:
    out = scaip.check_request(_request(REAL_ME, from_user="99999"))
    assert isinstance(out, Reply)
    assert out.status == 200
    mrs = scaip.decode_mrs(out.body)
    assert (mrs.ref, mrs.snu) == ("00001883", Snu.WRONG_DATA_CONTENT)


def test_bomb_in_a_message_gets_invalid_format_reply() -> None:
    out = scaip.check_request(_request(BOMB, from_user="1"))
    assert isinstance(out, Reply)
    assert scaip.decode_mrs(out.body).snu == Snu.INVALID_FORMAT
