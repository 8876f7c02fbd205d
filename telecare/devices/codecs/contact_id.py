"""Ademco Contact ID messages from an alarm receiver's serial output.

A message is 16 characters ``ACCT MT Q XYZ GG CCC S`` (spaces shown for reading only):
account (4), message type (2: ``18`` or ``98``), event qualifier (1), event code (3),
group/partition (2), zone or user (3), checksum (1). Digits are ``0``-``9`` and ``B``-``F``
(SIA DC-05: ``0`` counts as 10, ``B``..``F`` as 11..15; ``A`` is not used). The checksum
digit makes the sum of all 16 digit values a multiple of 15.

On the wire we expect each message on its own line (CR, LF or CR LF): a message is the
last 16 digits before a line end, so digits left over from a cut-off message are slid
past. Bytes that cannot start a message are noise and skipped. A well-formed message
whose qualifier or event code we do not map is Malformed with a specific reason
(dead-lettered, never guessed).

Qualifier -> phase: ``1`` new event / opening -> alarm; ``3`` restore / closing ->
restore; ``6`` previously reported, still present -> alarm (treated like a new alarm;
rules fold repeats).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from telecare.devices.codecs import Incomplete, Malformed
from telecare.devices.codecs.stream import StreamDecoder
from telecare.devices.model import AlarmEvent, EventType, ModelError, Phase

__all__ = [
    "EVENT_CODES",
    "MESSAGE_LEN",
    "ContactIdMessage",
    "decoder",
    "digit_value",
    "from_fields",
    "parse",
    "parse_message",
    "to_event",
]

MESSAGE_LEN = 16
_DIGITS = "0123456789BCDEF"
_DIGIT_BYTES = frozenset(b"0123456789BCDEFbcdef")
_TERMINATORS = frozenset(b"\r\n")

#: Contact ID event code -> telecare event type.
EVENT_CODES: dict[int, EventType] = {
    101: EventType.PENDANT,
    102: EventType.POST_FALL_INACTIVITY,  # no movement after a fall: priority 1, latching
    111: EventType.SMOKE,
    120: EventType.FALL,
    147: EventType.SUPERVISION,
    154: EventType.FLOOD,
    158: EventType.TEMPERATURE_HIGH,
    159: EventType.TEMPERATURE_LOW,
    162: EventType.CO,
    301: EventType.MAINS_FAIL,
    302: EventType.LOW_BATTERY,
    344: EventType.JAMMING,
    383: EventType.TAMPER,
    384: EventType.SENSOR_LOW_BATTERY,  # a peripheral's battery, not the unit's (302)
    406: EventType.CANCEL,
    602: EventType.PERIODIC_TEST,
    641: EventType.INACTIVITY,
}

_PHASES = {1: Phase.ALARM, 3: Phase.RESTORE, 6: Phase.ALARM}
_MESSAGE_TYPES = ("18", "98")


def digit_value(ch: str) -> int:
    """The checksum value of one Contact ID digit (``0`` is 10, ``B``..``F`` 11..15)."""
    c = ch.upper()
    if len(c) != 1 or c not in _DIGITS:
        raise ValueError(f"{ch!r} is not a Contact ID digit (0-9, B-F)")
    v = int(c, 16)
    return 10 if v == 0 else v


@dataclass(frozen=True, slots=True)
class ContactIdMessage:
    """One verified Contact ID message."""

    account: str
    message_type: str
    qualifier: int
    code: int
    group: str
    zone: str
    event_type: EventType
    phase: Phase

    @property
    def text(self) -> str:
        """The 15 digits without the checksum (``ACCTMTQXYZGGCCC``)."""
        return (
            f"{self.account}{self.message_type}{self.qualifier}{self.code:03d}"
            f"{self.group}{self.zone}"
        )


def parse_message(text: str) -> ContactIdMessage:
    """Verify and map one 16-character message (no terminator)."""
    t = text.upper()
    if len(t) != MESSAGE_LEN or any(c not in _DIGITS for c in t):
        raise Malformed(f"Contact ID message must be 16 digits 0-9/B-F, got {text[:20]!r}")
    total = sum(digit_value(c) for c in t)
    if total % 15:
        raise Malformed(f"Contact ID checksum fails for {t} (digit sum {total} mod 15 != 0)")
    account, mt, q, xyz, gg, ccc = t[0:4], t[4:6], t[6], t[7:10], t[10:12], t[12:15]
    if mt not in _MESSAGE_TYPES:
        raise Malformed(f"Contact ID message type {mt} is not 18 or 98")
    return from_fields(account, q, xyz, gg, ccc, message_type=mt)


def from_fields(
    account: str, qualifier: str, code: str, group: str, zone: str, *, message_type: str = "18"
) -> ContactIdMessage:
    """Map a Contact ID event given field by field (as SIA DC-09 ``ADM-CID`` carries it:
    no message type and no checksum, the transport checks integrity). Raises
    ``Malformed`` for a qualifier or event code we do not map."""
    q, xyz = qualifier, code.upper()
    if len(q) != 1 or not q.isdigit() or int(q) not in _PHASES:
        raise Malformed(f"Contact ID qualifier {q} is not 1 (new), 3 (restore) or 6 (repeat)")
    if len(xyz) != 3 or not xyz.isdigit() or int(xyz) not in EVENT_CODES:
        raise Malformed(f"Contact ID event code {xyz} is not one we map (see docs/devices.md)")
    n = int(xyz)
    return ContactIdMessage(
        account,
        message_type,
        int(q),
        n,
        group.upper(),
        zone.upper(),
        EVENT_CODES[n],
        _PHASES[int(q)],
    )


def parse(buffer: bytes) -> tuple[ContactIdMessage, int]:
    """Parse one line-terminated message from the start of ``buffer``."""
    if not buffer:
        raise Incomplete("empty buffer")
    if buffer[0] in _TERMINATORS:
        n = len(buffer) - len(buffer.lstrip(b"\r\n"))
        raise Malformed("blank line", skip=n)
    if buffer[0] not in _DIGIT_BYTES:
        n = 1
        while n < len(buffer) and buffer[n] not in _DIGIT_BYTES:
            n += 1
        raise Malformed(f"byte 0x{buffer[0]:02x} cannot start a Contact ID message", skip=n)
    head = buffer[: MESSAGE_LEN + 1]
    for i, b in enumerate(head):
        if b in _TERMINATORS:
            if i < MESSAGE_LEN:
                raise Malformed(f"Contact ID message cut short after {i} digits", skip=i + 1)
            break
        if i < MESSAGE_LEN and b not in _DIGIT_BYTES:
            raise Malformed(f"byte 0x{b:02x} inside a Contact ID message", skip=i + 1)
    if len(buffer) <= MESSAGE_LEN:
        raise Incomplete(f"{len(buffer)} of {MESSAGE_LEN} digits and a line end")
    if buffer[MESSAGE_LEN] not in _TERMINATORS:
        # slide: a message is the last 16 digits before a line end
        raise Malformed("Contact ID message longer than 16 digits", skip=1)
    used = MESSAGE_LEN + 1
    if buffer[MESSAGE_LEN] == 0x0D and len(buffer) > used and buffer[used] == 0x0A:
        used += 1
    text = buffer[:MESSAGE_LEN].decode("ascii")
    try:
        return parse_message(text), used
    except Malformed as exc:
        raise Malformed(exc.reason, skip=used) from None


def to_event(
    message: ContactIdMessage,
    *,
    device_id: str,
    ts: datetime,
    site_id: str | None = None,
    resident_id: str | None = None,
    msg_id: str | None = None,
) -> AlarmEvent:
    """The canonical event for ``message`` received at ``ts``.

    Contact ID carries no time, so the default ``msg_id`` is built from the message and
    the receive time in ms (``cid-ACCT-QXYZ-GGCCC-<ms>``): re-reading the same record
    gives the same id.
    """
    if msg_id is None:
        msg_id = (
            f"cid-{message.account}-{message.qualifier}{message.code:03d}-"
            f"{message.group}{message.zone}-{round(ts.timestamp() * 1000)}"
        )
    try:
        return AlarmEvent(
            device_id=device_id,
            type=message.event_type,
            phase=message.phase,
            ts=ts,
            msg_id=msg_id,
            site_id=site_id,
            resident_id=resident_id,
            zone=message.zone,
            source="serial",
            code=message.code,
        )
    except ModelError as exc:
        raise Malformed(f"Contact ID event rejected: {exc}") from None


def decoder() -> StreamDecoder[ContactIdMessage]:
    """A fresh incremental decoder for one alarm receiver's serial output."""
    return StreamDecoder(parse, max_buffer=256)
