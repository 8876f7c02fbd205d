"""SCAIP (CLC/TS 50134-9, from SIS SS 91100): social-alarm messages in SIP MESSAGE bodies.

A unit sends ``MESSAGE`` with ``Content-Type: application/scaip+xml`` and an ``<mrq>``
(message request) body; the receiver answers ``200 OK`` whose body is an ``<mrs>``
(message response) echoing ``ref`` with a status number ``snu``::

    <mrq><ref>00001883</ref><cid>26317</cid><dty>0005</dty><mty>ME</mty>
         <stc>0010</stc><lco>011</lco></mrq>
    <mrs><ref>00001883</ref><snu>0</snu></mrs>

Request elements used (others are accepted and ignored): ``ref`` reference (mandatory;
the idempotency key), ``cid`` controller id (mandatory; the unit), ``dty`` device type
(mandatory; 4 digits), ``mty`` message type ``ME`` alarm (default when absent), ``RE``
reset, ``IN`` information, ``PI`` heartbeat; ``stc`` status code (4 digits, default
``0010`` manual alarm), ``lco`` location code (3 digits), ``did`` device id (the
peripheral), ``dco`` device component, ``crd`` caller id, ``pri`` priority, ``ver``.
Leading zeros are normalised (``stc`` 10 and 0010 are the same code).

Response status numbers (``snu``): 0 OK, 1 message too long, 2 invalid format, 3 wrong
data content, 4 hold, 5 not treated, 6 busy, 7 mandatory tag missing; ``ste`` carries a
short text. The mapping of ``mty``/``stc``/``dty`` onto the event taxonomy is
:func:`classify` (table in docs/devices.md).

XML is parsed with ``defusedxml``: a DTD (and so any entity expansion, the "billion
laughs" bomb) or an external reference is refused as invalid format, never expanded.

Sources: SIS SS 91100:2014 as implemented by public receivers (field names, status and
device-type code lists); PRODUCT.md.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from enum import IntEnum, StrEnum
from typing import Final
from xml.etree.ElementTree import Element
from xml.etree.ElementTree import ParseError as XmlParseError

import defusedxml
import defusedxml.ElementTree as SafeET

from telecare.devices.codecs import Malformed, sip
from telecare.devices.model import AlarmEvent, EventType, ModelError, Phase

__all__ = [
    "CONTENT_TYPE",
    "MAX_XML",
    "MessageType",
    "Mrq",
    "Mrs",
    "Reply",
    "ScaipError",
    "Snu",
    "accepted",
    "check_request",
    "classify",
    "decode_mrq",
    "decode_mrs",
    "encode_mrq",
    "encode_mrs",
    "msg_id_for_ref",
    "reject",
    "to_event",
]

CONTENT_TYPE = "application/scaip+xml"
#: Longest ``<mrq>`` we accept (real ones are ~200 bytes); longer is ``snu`` 1.
MAX_XML = 4096
_TAG = re.compile(r"^[a-z]{2,4}$")
_TEXT_MAX = 256


class Snu(IntEnum):
    """``<mrs><snu>``: the receiver's status for a request."""

    OK = 0
    MESSAGE_TOO_LONG = 1
    INVALID_FORMAT = 2
    WRONG_DATA_CONTENT = 3
    HOLD = 4
    NOT_TREATED = 5
    BUSY = 6
    MANDATORY_TAG_MISSING = 7


class MessageType(StrEnum):
    ALARM = "ME"
    RESET = "RE"
    INFORMATION = "IN"
    HEARTBEAT = "PI"


class ScaipError(Malformed):
    """A SCAIP request we reject; ``snu`` is the status number the reply carries and
    ``ref`` the request's reference when it could be read (echoed in the reply)."""

    def __init__(self, reason: str, snu: Snu, ref: str = "") -> None:
        super().__init__(reason)
        self.snu = snu
        self.ref = ref


@dataclass(frozen=True, slots=True)
class Mrq:
    """One message request. Codes are normalised to their documented width."""

    ref: str
    cid: str
    dty: str
    mty: MessageType = MessageType.ALARM
    stc: str = "0010"
    lco: str | None = None
    did: str | None = None
    dco: str | None = None
    crd: str | None = None
    pri: str | None = None
    ver: str | None = None


@dataclass(frozen=True, slots=True)
class Mrs:
    ref: str
    snu: int
    ste: str = ""


def _digits(tag: str, value: str, width: int, ref: str) -> str:
    if not value.isdigit() or len(value) > width + 2:
        raise ScaipError(
            f"SCAIP <{tag}> {value[:12]!r} is not a numeric code", Snu.WRONG_DATA_CONTENT, ref
        )
    n = int(value)
    if n >= 10**width:
        raise ScaipError(
            f"SCAIP <{tag}> {value[:12]!r} is out of range", Snu.WRONG_DATA_CONTENT, ref
        )
    return f"{n:0{width}d}"


def _parse_xml(body: bytes, root_tag: str) -> Element:
    if len(body) > MAX_XML:
        raise ScaipError(f"SCAIP body of {len(body)} bytes is over {MAX_XML}", Snu.MESSAGE_TOO_LONG)
    try:
        root: Element = SafeET.fromstring(
            body, forbid_dtd=True, forbid_entities=True, forbid_external=True
        )
    except defusedxml.DefusedXmlException as exc:
        raise ScaipError(
            f"SCAIP body refused: {type(exc).__name__} (DTDs and entities are not allowed)",
            Snu.INVALID_FORMAT,
        ) from None
    except XmlParseError as exc:
        raise ScaipError(f"SCAIP body is not well-formed XML ({exc})", Snu.INVALID_FORMAT) from None
    if root.tag != root_tag:
        raise ScaipError(
            f"SCAIP root element is <{str(root.tag)[:20]}>, not <{root_tag}>", Snu.INVALID_FORMAT
        )
    return root


def _fields(root: Element) -> dict[str, str]:
    out: dict[str, str] = {}
    for child in root:
        tag = child.tag if isinstance(child.tag, str) else ""
        if not _TAG.match(tag) or len(child):
            continue  # namespaced, structured (lge) or unknown: ignored
        text = (child.text or "").strip()
        if len(text) > _TEXT_MAX:
            raise ScaipError(f"SCAIP <{tag}> longer than {_TEXT_MAX}", Snu.MESSAGE_TOO_LONG)
        out.setdefault(tag, text)
    return out


def decode_mrq(body: bytes) -> Mrq:
    """Decode an ``<mrq>`` body; raises :class:`ScaipError` with the reply's ``snu``."""
    f = _fields(_parse_xml(body, "mrq"))
    ref = f.get("ref", "")
    missing = [t for t in ("ref", "cid", "dty") if not f.get(t)]
    if missing:
        raise ScaipError(
            f"SCAIP mandatory element(s) missing: {', '.join(missing)}",
            Snu.MANDATORY_TAG_MISSING,
            ref,
        )
    mty_text = f.get("mty") or "ME"
    try:
        mty = MessageType(mty_text.upper())
    except ValueError:
        raise ScaipError(
            f"SCAIP <mty> {mty_text[:8]!r} is not ME, RE, IN or PI", Snu.WRONG_DATA_CONTENT, ref
        ) from None
    lco = f.get("lco")
    return Mrq(
        ref=ref,
        cid=f["cid"],
        dty=_digits("dty", f["dty"], 4, ref),
        mty=mty,
        stc=_digits("stc", f.get("stc") or "10", 4, ref),
        lco=_digits("lco", lco, 3, ref) if lco else None,
        did=f.get("did") or None,
        dco=f.get("dco") or None,
        crd=f.get("crd") or None,
        pri=f.get("pri") or None,
        ver=f.get("ver") or None,
    )


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def encode_mrs(ref: str, snu: int, ste: str = "") -> bytes:
    """The ``<mrs>`` reply body echoing ``ref``."""
    parts = [f"<ref>{_escape(ref)}</ref>", f"<snu>{int(snu)}</snu>"]
    if ste:
        parts.append(f"<ste>{_escape(ste[:_TEXT_MAX])}</ste>")
    return f"<mrs>{''.join(parts)}</mrs>".encode()


def encode_mrq(m: Mrq) -> bytes:
    """An ``<mrq>`` body for ``m`` (``telecare receiver test``; the simulated unit in
    firmware_stubs has its own, independent encoder for the round-trip tests)."""
    fields = [
        ("ref", m.ref),
        ("cid", m.cid),
        ("dty", m.dty),
        ("mty", m.mty.value),
        ("stc", m.stc),
        ("lco", m.lco),
        ("did", m.did),
        ("crd", m.crd),
    ]
    return (
        "<mrq>" + "".join(f"<{t}>{_escape(v)}</{t}>" for t, v in fields if v) + "</mrq>"
    ).encode()


def decode_mrs(body: bytes) -> Mrs:
    """Decode an ``<mrs>`` reply (what a unit reads)."""
    f = _fields(_parse_xml(body, "mrs"))
    snu = f.get("snu", "")
    if not snu.isdigit():
        raise ScaipError(f"SCAIP <snu> {snu[:8]!r} is not a number", Snu.WRONG_DATA_CONTENT)
    return Mrs(f.get("ref", ""), int(snu), f.get("ste", ""))


# ----------------------------------------------------------------------------- taxonomy

#: Device type (``dty``) -> the event an alarm (``ME``) from it is.
DTY_EVENTS: Final[dict[str, EventType]] = {
    "0002": EventType.PENDANT,  # local unit and controller (its own button)
    "0003": EventType.PENDANT,  # personal trigger
    "0004": EventType.PENDANT,  # fixed trigger (pull cord)
    "0005": EventType.FALL,  # fall detector
    "0006": EventType.PENDANT,  # personal attack trigger
    "0007": EventType.PENDANT,  # panic button
    "0010": EventType.INACTIVITY,  # activity detector
    "0012": EventType.BED_NOT_REOCCUPIED,  # bed monitor
    "0014": EventType.DOOR_EXIT,  # door sensor
    "0015": EventType.DOOR_EXIT,  # wandering sensor
    "0023": EventType.SMOKE,  # smoke detector
    "0025": EventType.TEMPERATURE_HIGH,  # heat detector
    "0026": EventType.CO,  # carbon monoxide detector
    "0030": EventType.FALL,  # automatic man-down detector
    "0033": EventType.FLOOD,  # flood detector
    "0034": EventType.FLOOD,  # bath sensor
    "0038": EventType.TAMPER,  # tamper
    "0041": EventType.MAINS_FAIL,  # power supply
    "0044": EventType.CHAIR_NOT_REOCCUPIED,  # chair monitor
    "0045": EventType.PENDANT,  # controller
    "0048": EventType.PENDANT,  # local unit
}

#: Status code (``stc``) that names the condition itself -> (event, phase); wins over dty.
STC_EVENTS: Final[dict[str, tuple[EventType, Phase]]] = {
    "0014": (EventType.LOW_BATTERY, Phase.ALARM),  # battery failure
    "0016": (EventType.LOW_BATTERY, Phase.ALARM),  # battery low
    "0015": (EventType.LOW_BATTERY, Phase.RESTORE),  # battery ok
    "0085": (EventType.MAINS_FAIL, Phase.ALARM),  # power failure
    "0086": (EventType.MAINS_FAIL, Phase.RESTORE),  # power restored
    "0100": (EventType.TEMPERATURE_HIGH, Phase.ALARM),
    "0126": (EventType.TEMPERATURE_HIGH, Phase.ALARM),  # temperature rate of rise
    "0101": (EventType.TEMPERATURE_LOW, Phase.ALARM),
    "0125": (EventType.TAMPER, Phase.ALARM),
    "0052": (EventType.JAMMING, Phase.ALARM),  # jammed
    "0095": (EventType.JAMMING, Phase.ALARM),  # RF interference
    "0122": (EventType.JAMMING, Phase.ALARM),  # radio interference
    "0123": (EventType.SUPERVISION, Phase.ALARM),  # radio test transmission missing
    "0124": (EventType.SUPERVISION, Phase.RESTORE),  # ... re-established
    "0023": (EventType.SUPERVISION, Phase.ALARM),  # IP connection failure
    "0024": (EventType.SUPERVISION, Phase.ALARM),  # mobile network connection failure
    "0026": (EventType.SUPERVISION, Phase.ALARM),  # primary communication link failure
    "0112": (EventType.SUPERVISION, Phase.RESTORE),  # IP connection re-established
    "0113": (EventType.SUPERVISION, Phase.RESTORE),  # mobile network re-established
    "0115": (EventType.SUPERVISION, Phase.RESTORE),  # primary link re-established
    "0019": (EventType.CANCEL, Phase.ALARM),  # cancel
    "0102": (EventType.PERIODIC_TEST, Phase.ALARM),  # test transmission, primary channel
    "0103": (EventType.PERIODIC_TEST, Phase.ALARM),  # test transmission, redundant channel
    "0111": (EventType.CARER_ARRIVED, Phase.ALARM),  # intervention complete
    "0088": (EventType.CARER_ARRIVED, Phase.ALARM),  # presence after alarm
}
#: Status codes that report the end of a condition (restore of the device's alarm).
RESTORE_STC: Final = frozenset({"0070", "0092", "0094"})  # normal, automatic reset, restoral
#: A manual reset at the unit is the taxonomy's cancel/reset.
MANUAL_RESET_STC: Final = "0093"


def classify(m: Mrq) -> tuple[EventType, Phase]:
    """The taxonomy event for a request (see docs/devices.md for the table):

    * ``PI`` -> periodic test (the heartbeat; feeds the missed-heartbeat rule, no alert);
    * ``ME`` -> the condition ``stc`` names, else a restore for a restore code, else an
      alarm of the device type's event; an unknown device type raises a pendant-priority
      alarm (an alarm is never dropped for a code we do not know);
    * ``RE`` -> cancel for a manual reset or cancel code, carer arrived for intervention
      complete / presence, else the restore of the condition or device type's alarm;
    * ``IN`` -> the condition ``stc`` names (battery, mains, supervision ...), else
      ``information`` (stored, never an alert).
    """
    named = STC_EVENTS.get(m.stc)
    typed = DTY_EVENTS.get(m.dty, EventType.PENDANT)
    if m.mty is MessageType.HEARTBEAT:
        return EventType.PERIODIC_TEST, Phase.ALARM
    if m.mty is MessageType.ALARM:
        if named is not None:
            return named
        if m.stc in RESTORE_STC:
            return typed, Phase.RESTORE
        if m.stc == MANUAL_RESET_STC:
            return EventType.CANCEL, Phase.ALARM
        return typed, Phase.ALARM
    if m.mty is MessageType.RESET:
        if m.stc in ("0019", MANUAL_RESET_STC):
            return EventType.CANCEL, Phase.ALARM
        if named is not None and named[0] is EventType.CARER_ARRIVED:
            return named
        if named is not None and named[0] not in (EventType.CANCEL, EventType.PERIODIC_TEST):
            return named[0], Phase.RESTORE
        return typed, Phase.RESTORE
    if named is not None:
        return named
    return EventType.INFORMATION, Phase.ALARM


_SAFE_REF = re.compile(r"^[A-Za-z0-9_.:\-]{1,48}$")


def msg_id_for_ref(ref: str) -> str:
    """The event's ``msg_id``: ``scaip-<ref>`` when ``ref`` is a safe identifier, else
    ``scaip-h<digest of ref>``; the same ``ref`` always gives the same id."""
    if _SAFE_REF.match(ref):
        return f"scaip-{ref}"
    return "scaip-h" + hashlib.blake2b(ref.encode(), digest_size=12).hexdigest()


def to_event(
    m: Mrq,
    *,
    device_id: str,
    ts: datetime,
    site_id: str | None = None,
    resident_id: str | None = None,
) -> AlarmEvent:
    """The canonical event for ``m`` received at ``ts`` (SCAIP carries no time).

    ``zone`` is the peripheral's ``did``, ``code`` the status code, ``device_type`` the
    ``dty`` and ``location`` the ``lco``; ``msg_id`` comes from ``ref``.
    """
    event_type, phase = classify(m)
    try:
        return AlarmEvent(
            device_id=device_id,
            type=event_type,
            phase=phase,
            ts=ts,
            msg_id=msg_id_for_ref(m.ref),
            site_id=site_id,
            resident_id=resident_id,
            zone=m.did[:32] if m.did else None,
            source="scaip",
            code=int(m.stc),
            device_type=m.dty,
            location=m.lco,
        )
    except ModelError as exc:
        raise ScaipError(f"SCAIP event rejected: {exc}", Snu.WRONG_DATA_CONTENT, m.ref) from None


# ----------------------------------------------------------------------------- SIP side

ALLOW: Final = "MESSAGE, OPTIONS"


@dataclass(frozen=True, slots=True)
class Reply:
    """A response to send at once (no pipeline involved): a SIP status, extra headers and,
    for ``200``, an ``<mrs>`` body."""

    status: int
    reason: str
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    content_type: str = ""


def reject(exc: ScaipError) -> Reply:
    """``200 OK`` carrying the ``<mrs>`` with the error's status number."""
    return Reply(
        200, "OK", body=encode_mrs(exc.ref, exc.snu, exc.reason), content_type=CONTENT_TYPE
    )


def accepted(ref: str) -> Reply:
    """``200 OK`` with ``<mrs>`` status 0: what the listener sends once the event is stored."""
    return Reply(200, "OK", body=encode_mrs(ref, Snu.OK), content_type=CONTENT_TYPE)


def check_request(request: sip.SipRequest) -> Mrq | Reply | None:
    """What to do with one SIP request: an :class:`Mrq` to process (its From user equals
    its ``cid``), a :class:`Reply` to send now, or ``None`` (an ACK: never answered).

    * ``OPTIONS`` -> 200 with ``Allow``/``Accept`` (units use it as a keep-alive);
    * another method -> 405 with ``Allow``;
    * Via, From, To, Call-ID or CSeq missing, or a CSeq for another method -> 400;
    * a body that is not ``application/scaip+xml`` -> 415 with ``Accept``;
    * an ``<mrq>`` that does not decode -> 200 with the ``<mrs>`` status (2, 1, 7, 3);
    * a From user other than ``cid`` -> 200 with ``<mrs>`` status 3.
    """
    method = request.method
    if method == "ACK":
        return None
    missing = [h for h in ("via", "from", "to", "call-id", "cseq") if request.header(h) is None]
    if missing:
        return Reply(400, f"Bad Request (missing {', '.join(missing)})")
    cseq = (request.header("cseq") or "").split()
    if len(cseq) != 2 or not cseq[0].isdigit() or cseq[1] != method:
        return Reply(400, "Bad Request (CSeq)")
    if method == "OPTIONS":
        return Reply(200, "OK", (("Allow", ALLOW), ("Accept", CONTENT_TYPE)))
    if method != "MESSAGE":
        return Reply(405, "Method Not Allowed", (("Allow", ALLOW),))
    if request.content_type != CONTENT_TYPE:
        return Reply(415, "Unsupported Media Type", (("Accept", CONTENT_TYPE),))
    try:
        mrq = decode_mrq(request.body)
    except ScaipError as exc:
        return reject(exc)
    caller = sip.uri_user(request.header("from") or "")
    if caller != mrq.cid:
        return reject(
            ScaipError("SIP From user does not match <cid>", Snu.WRONG_DATA_CONTENT, mrq.ref)
        )
    return mrq
