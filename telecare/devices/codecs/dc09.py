"""SIA DC-09 (ANSI/SIA DC-09-2013, IP transport of alarm messages): frames and replies.

Sans-IO: bytes in, a :class:`Block` (the frame's header and raw data) or a specific error
out; :func:`open_block` decrypts and splits the data; :func:`adm_cid` and
:func:`sia_dcs` decode the two payloads; :func:`ack`, :func:`nak` and :func:`duh`
build the replies. The receiver (``gateway/ingest/dc09.py``) only moves bytes.

A frame (every field ASCII)::

    LF  crc(4 hex)  0LLL(4 hex)  "id"  seq(4)  [Rrcvr]  [Lpref]  #acct  [data  CR

* ``crc`` is CRC-16/ARC (polynomial 0x8005 reflected = 0xA001, initial value 0) and
  ``0LLL`` the length, both over everything from the first ``"`` to just before CR.
* ``id`` is ``SIA-DCS``, ``ADM-CID`` or ``NULL`` (a link test), prefixed ``*`` when the
  data is encrypted; replies use ``ACK``, ``NAK``, ``DUH`` (and ``RSP``).
* ``seq`` is ``0001``-``9999`` (the unit repeats it when it retries), ``rcvr`` and
  ``pref`` 1-6 hex digits, ``acct`` 3-16 characters (hex digits by the standard; we also
  take letters, which real diallers send).
* Plain data: ``[#acct|<payload>]`` then optional extended data ``[X..]``, ``[Y..]``,
  ``[H..]`` ... then an optional timestamp ``_HH:MM:SS,MM-DD-YYYY`` (UTC).
* Encrypted data (``*`` ids): ``[`` then the hex of AES-CBC (zero IV, 128/192/256-bit
  key per account) over ``<pad>|<payload>]<extended>_<timestamp>``, the pad being random
  characters (no ``|``, ``[``, ``]``) that make the length a multiple of 16. The
  timestamp is mandatory when encrypted.

Payloads: ``ADM-CID`` is Contact ID as ``QXYZ GG CCC`` (qualifier, event code, group,
zone/user; the spaces are optional, and ``E``/``R``/``P`` are accepted for the
qualifiers 1/3/6), mapped with ``devices.codecs.contact_id``; ``SIA-DCS`` is SIA DC-03:
``[N][ri<area>/][id<user>/][ti<HH:MM>/]<CODE><zone>[/<CODE><zone>...]``, codes mapped
in :data:`SIA_CODES`.

Replies (section 5.5 of the standard):

* ``ACK``: ``"ACK"seq[Rrcvr][Lpref]#acct[]``, echoing the frame's fields; encrypted
  (``"*ACK"``, same key) when the frame was, its data being ``<pad>|]_<timestamp>``.
* ``NAK``: ``"NAK"0000R0L0A0[]_<timestamp>``, never encrypted: for a frame with a bad
  CRC, length or format, or a timestamp outside the receiver's window (the unit resends,
  correcting its clock from the timestamp).
* ``DUH``: ``"DUH"seq[Rrcvr][Lpref]#acct[]``: a valid frame the receiver will not act
  on (an unknown id token, no key for an encrypted account, an event code it does not
  map, an account it does not know). The unit does not repeat it on this path.

Errors: ``Incomplete`` (need more bytes), ``Malformed`` (noise before a frame: skip and
say nothing), and :class:`Refused` (a ``Malformed`` carrying the :class:`Reply` to send
and, when the header could be read, the :class:`Block`).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Final

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from telecare.devices.codecs import Incomplete, Malformed
from telecare.devices.codecs import contact_id as cid
from telecare.devices.model import EventType, Phase

__all__ = [
    "MAX_LENGTH",
    "SIA_CODES",
    "Block",
    "Content",
    "Refused",
    "Reply",
    "SiaEvent",
    "ack",
    "adm_cid",
    "crc16",
    "decrypt",
    "duh",
    "encrypt",
    "format_timestamp",
    "frame",
    "nak",
    "open_block",
    "parse",
    "parse_datagram",
    "parse_timestamp",
    "random_pad",
    "sia_dcs",
]

LF: Final = 0x0A
CR: Final = 0x0D
#: Longest content (``"id"`` .. timestamp) we accept. The standard's length field has
#: three significant hex digits; real frames are well under 200 bytes, so anything longer
#: is garbage or an attack and is refused at once, not buffered.
MAX_LENGTH: Final = 1024
#: Ids that carry an event (or a link test) from a unit.
EVENT_TOKENS: Final = frozenset({"SIA-DCS", "ADM-CID", "NULL"})
#: Ids a receiver answers with.
REPLY_TOKENS: Final = frozenset({"ACK", "NAK", "DUH", "RSP"})
_KEY_SIZES: Final = frozenset({16, 24, 32})
_ZERO_IV: Final = bytes(16)
_PAD_ALPHABET: Final = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in "|[]")
_TS_FORMAT: Final = "%H:%M:%S,%m-%d-%Y"
_TS_LEN: Final = 19

_HEADER = re.compile(
    r'"(?P<star>\*?)(?P<token>[A-Z][A-Z-]{1,15})"'
    r"(?P<seq>[0-9]{4})"
    r"(?:R(?P<receiver>[0-9A-Fa-f]{1,6}))?"
    r"(?:L(?P<line>[0-9A-Fa-f]{1,6}))?"
    r"(?:#(?P<account>[0-9A-Za-z]{3,16})|A(?P<noacct>0))?"
    r"\["
)
_CID_BODY = re.compile(
    r"^(?P<q>[0-9ERP])(?P<code>[0-9]{3}) ?(?P<group>[0-9A-Fa-f]{2}) ?(?P<zone>[0-9A-Fa-f]{3})$"
)
_CID_QUALIFIERS: Final = {"E": "1", "R": "3", "P": "6"}
#: One SIA DC-03 field: a separator, area (ri), user (id), time (ti), ... or an event
#: code with its zone; names between carets are skipped.
_SIA_TOKEN = re.compile(
    r"(?P<sep>/)"
    r"|ri(?P<ri>[0-9]{1,6})(?:\^[^^]*\^)?"
    r"|id(?P<id>[0-9]{1,6})(?:\^[^^]*\^)?"
    r"|ti[0-9]{2}:[0-9]{2}(?::[0-9]{2})?"
    r"|pi[0-9]{1,6}"
    r"|(?P<code>[A-Z]{2})(?P<zone>[0-9]{0,6})(?:\^[^^]*\^)?"
)
#: A leading "N" (new event) before a field or an event code: "Nri1/MA01", "NMA01"; but
#: "NA01" is the code NA (no activity), zone 01.
_NEW_EVENT = re.compile(r"^N(?:[A-Z]{2}|ri|id|ti|pi)")


class Reply(StrEnum):
    ACK = "ACK"
    NAK = "NAK"
    DUH = "DUH"


class Refused(Malformed):
    """A frame (or what looks like one) to answer with ``reply`` instead of ``ACK``."""

    def __init__(
        self, reason: str, reply: Reply, *, skip: int = 1, block: Block | None = None
    ) -> None:
        super().__init__(reason, skip=skip)
        self.reply = reply
        self.block = block


@dataclass(frozen=True, slots=True)
class Block:
    """One frame's header and its data as sent (still encrypted when ``encrypted``)."""

    token: str
    encrypted: bool
    seq: str
    account: str
    data: str
    receiver: str | None = None
    line: str | None = None

    @property
    def label(self) -> str:
        """``*ADM-CID 0007 #1234``: safe to log (no payload)."""
        return f"{'*' if self.encrypted else ''}{self.token} {self.seq} #{self.account}"


@dataclass(frozen=True, slots=True)
class Content:
    """A block's data, decrypted and split."""

    payload: str
    #: The account inside the data (``#acct|``), when the unit repeated it there.
    account: str | None = None
    extended: tuple[tuple[str, str], ...] = ()
    timestamp: datetime | None = None

    def extension(self, key: str) -> str | None:
        for k, v in self.extended:
            if k == key:
                return v
        return None


@dataclass(frozen=True, slots=True)
class SiaEvent:
    """One event of a SIA DC-03 payload."""

    code: str
    zone: str
    event_type: EventType
    phase: Phase
    area: str | None = None
    user: str | None = None


#: SIA DC-03 event codes we map -> (event type, phase). Others are refused (``DUH``)
#: and dead-lettered, never guessed.
SIA_CODES: Final[dict[str, tuple[EventType, Phase]]] = {
    "MA": (EventType.PENDANT, Phase.ALARM),  # medical alarm
    "MH": (EventType.PENDANT, Phase.RESTORE),  # medical alarm restoral
    "MR": (EventType.PENDANT, Phase.RESTORE),  # medical restoral
    "PA": (EventType.PENDANT, Phase.ALARM),  # panic alarm
    "PH": (EventType.PENDANT, Phase.RESTORE),
    "PR": (EventType.PENDANT, Phase.RESTORE),
    "FA": (EventType.SMOKE, Phase.ALARM),  # fire alarm
    "FH": (EventType.SMOKE, Phase.RESTORE),
    "FR": (EventType.SMOKE, Phase.RESTORE),
    "GA": (EventType.CO, Phase.ALARM),  # gas alarm
    "GH": (EventType.CO, Phase.RESTORE),
    "GR": (EventType.CO, Phase.RESTORE),
    "WA": (EventType.FLOOD, Phase.ALARM),  # water alarm
    "WH": (EventType.FLOOD, Phase.RESTORE),
    "WR": (EventType.FLOOD, Phase.RESTORE),
    "KA": (EventType.TEMPERATURE_HIGH, Phase.ALARM),  # heat alarm
    "KH": (EventType.TEMPERATURE_HIGH, Phase.RESTORE),
    "KR": (EventType.TEMPERATURE_HIGH, Phase.RESTORE),
    "ZA": (EventType.TEMPERATURE_LOW, Phase.ALARM),  # freeze alarm
    "ZH": (EventType.TEMPERATURE_LOW, Phase.RESTORE),
    "ZR": (EventType.TEMPERATURE_LOW, Phase.RESTORE),
    "NA": (EventType.INACTIVITY, Phase.ALARM),  # no activity
    "AT": (EventType.MAINS_FAIL, Phase.ALARM),  # AC trouble
    "AR": (EventType.MAINS_FAIL, Phase.RESTORE),  # AC restoral
    "YT": (EventType.LOW_BATTERY, Phase.ALARM),  # system battery trouble
    "YR": (EventType.LOW_BATTERY, Phase.RESTORE),
    "XT": (EventType.LOW_BATTERY, Phase.ALARM),  # transmitter battery trouble
    "XR": (EventType.LOW_BATTERY, Phase.RESTORE),
    "TA": (EventType.TAMPER, Phase.ALARM),  # tamper alarm
    "TR": (EventType.TAMPER, Phase.RESTORE),
    "XQ": (EventType.JAMMING, Phase.ALARM),  # RF interference
    "XH": (EventType.JAMMING, Phase.RESTORE),
    "RP": (EventType.PERIODIC_TEST, Phase.ALARM),  # automatic test
    "RX": (EventType.PERIODIC_TEST, Phase.ALARM),  # manual test
    "OC": (EventType.CANCEL, Phase.ALARM),  # cancel report
}


# --------------------------------------------------------------------------- CRC


def _crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC_TABLE: Final = _crc_table()


def crc16(data: bytes) -> int:
    """CRC-16/ARC as DC-09 uses it (``crc16(b"123456789") == 0xBB3D``)."""
    crc = 0
    table = _CRC_TABLE
    for b in data:
        crc = (crc >> 8) ^ table[(crc ^ b) & 0xFF]
    return crc


def frame(content: str) -> bytes:
    """``content`` (``"id"`` .. timestamp) with its LF, CRC, length and CR."""
    body = content.encode("ascii")
    if len(body) > MAX_LENGTH:
        raise ValueError(f"DC-09 content is {len(body)} bytes, more than {MAX_LENGTH}")
    return b"\n%04X%04X%s\r" % (crc16(body), len(body), body)


# --------------------------------------------------------------------------- frames


def parse(buffer: bytes) -> tuple[Block, int]:
    """Parse one frame from the start of a TCP stream's ``buffer``."""
    if not buffer:
        raise Incomplete("empty buffer")
    if buffer[0] != LF:
        n = buffer.find(b"\n")
        raise Malformed(
            f"byte 0x{buffer[0]:02x} cannot start a DC-09 frame",
            skip=n if n > 0 else len(buffer),
        )
    if len(buffer) < 9:
        raise Incomplete(f"{len(buffer)} of 9 header bytes")
    length = _hex_field(buffer[5:9], "length")
    if length > MAX_LENGTH or length < 8:
        raise Refused(f"DC-09 length {length} is outside 8..{MAX_LENGTH}", Reply.NAK)
    end = 9 + length
    cr = buffer.find(b"\r", 9, end + 1)
    if 0 <= cr < end:
        raise Refused(
            f"DC-09 frame ends after {cr - 9} bytes, its length field says {length}",
            Reply.NAK,
            skip=cr + 1,
        )
    if len(buffer) <= end:
        raise Incomplete(f"{len(buffer) - 9} of {length} content bytes and CR")
    if buffer[end] != CR:
        raise Refused(f"DC-09 frame of length {length} does not end in CR", Reply.NAK)
    return _block(buffer[:9], buffer[9:end], end + 1), end + 1


def parse_datagram(datagram: bytes) -> Block:
    """Parse a UDP datagram: exactly one frame (a trailing LF or CR LF is tolerated)."""
    try:
        block, used = parse(datagram)
    except Incomplete as exc:
        raise Refused(f"DC-09 datagram cut short: {exc}", Reply.NAK) from None
    except Refused:
        raise
    except Malformed as exc:
        raise Refused(exc.reason, Reply.NAK) from None
    if datagram[used:].strip(b"\r\n"):
        raise Refused(f"{len(datagram) - used} bytes after the DC-09 frame", Reply.NAK)
    return block


def _hex_field(raw: bytes, name: str) -> int:
    try:
        text = raw.decode("ascii")
        if len(text) != 4 or not all(c in "0123456789ABCDEFabcdef" for c in text):
            raise ValueError
        return int(text, 16)
    except (UnicodeDecodeError, ValueError):
        raise Refused(f"DC-09 {name} field {raw!r} is not 4 hex digits", Reply.NAK) from None


def _block(head: bytes, content: bytes, used: int) -> Block:
    crc = _hex_field(head[1:5], "CRC")
    if crc16(content) != crc:
        raise Refused(
            f"DC-09 CRC {crc:04X} does not match the content ({crc16(content):04X})",
            Reply.NAK,
            skip=used,
        )
    try:
        text = content.decode("ascii")
    except UnicodeDecodeError:
        raise Refused("DC-09 content is not ASCII", Reply.NAK, skip=used) from None
    m = _HEADER.match(text)
    if m is None:
        raise Refused('DC-09 header is not "id"seq[Rrcvr][Lpref]#acct[', Reply.NAK, skip=used)
    block = Block(
        token=m["token"],
        encrypted=bool(m["star"]),
        seq=m["seq"],
        account=(m["account"] or "").upper(),
        data=text[m.end() :],
        receiver=m["receiver"],
        line=m["line"],
    )
    if block.token not in EVENT_TOKENS | REPLY_TOKENS:
        raise Refused(f"DC-09 id token {block.token!r} is not supported", Reply.DUH, block=block)
    if block.token in EVENT_TOKENS and not block.account:
        raise Refused("DC-09 frame has no #account", Reply.NAK, skip=used, block=block)
    return block


# --------------------------------------------------------------------------- data


def open_block(block: Block, key: bytes | None) -> Content:
    """Decrypt (when ``block.encrypted``; ``key`` is the account's) and split the data.

    Raises :class:`Refused`: ``DUH`` when it cannot be decrypted (no key, or the wrong
    one), ``NAK`` when it is not laid out as the standard says.
    """
    data = block.data
    if block.encrypted:
        if key is None:
            raise Refused(
                f"encrypted DC-09 frame from account {block.account}, which has no key",
                Reply.DUH,
                block=block,
            )
        plain = decrypt(data, key, block)
        bar = plain.find("|")  # the pad never contains "|" (it may hold control bytes)
        if bar < 0 or not plain[bar + 1 :].isprintable():
            raise Refused(
                "decrypted DC-09 data is not '<pad>|<data>' (wrong key?)", Reply.DUH, block=block
            )
        content = _split(plain[bar + 1 :], block)
        if content.timestamp is None:
            raise Refused("encrypted DC-09 frame has no timestamp", Reply.NAK, block=block)
        return content
    return _split(data, block)


def _split(data: str, block: Block) -> Content:
    account = None
    if data.startswith("#"):
        bar = data.find("|")
        if bar < 0:
            raise Refused("DC-09 data '#account' is not followed by '|'", Reply.NAK, block=block)
        account = data[1:bar].upper()
        data = data[bar + 1 :]
    end = data.find("]")
    if end < 0:
        raise Refused("DC-09 data has no closing ']'", Reply.NAK, block=block)
    payload, rest = data[:end], data[end + 1 :]
    extended: list[tuple[str, str]] = []
    while rest.startswith("["):
        close = rest.find("]")
        if close < 2:
            raise Refused("DC-09 extended data block is not [Xvalue]", Reply.NAK, block=block)
        inner = rest[1:close]
        extended.append((inner[0], inner[1:]))
        rest = rest[close + 1 :]
    timestamp = None
    if rest.startswith("_"):
        timestamp = parse_timestamp(rest[1 : 1 + _TS_LEN], block)
        rest = rest[1 + _TS_LEN :]
    if rest:
        raise Refused(
            f"{len(rest)} unexpected characters after the DC-09 data", Reply.NAK, block=block
        )
    return Content(payload, account, tuple(extended), timestamp)


def parse_timestamp(text: str, block: Block | None = None) -> datetime:
    """``HH:MM:SS,MM-DD-YYYY`` (UTC) as an aware datetime."""
    try:
        # HH:MM:SS,MM-DD-YYYY by position (strptime is a tenth of a frame's cost)
        if len(text) != _TS_LEN or text[2::3][:3] != "::," or text[11] != "-" or text[14] != "-":
            raise ValueError
        fields = (text[15:19], text[9:11], text[12:14], text[0:2], text[3:5], text[6:8])
        if not all(f.isdigit() and f.isascii() for f in fields):
            raise ValueError
        y, mo, d, h, mi, sec = (int(f) for f in fields)
        return datetime(y, mo, d, h, mi, sec, tzinfo=UTC)
    except ValueError:
        raise Refused(
            "DC-09 timestamp is not HH:MM:SS,MM-DD-YYYY", Reply.NAK, block=block
        ) from None


def format_timestamp(when: datetime) -> str:
    """``_HH:MM:SS,MM-DD-YYYY`` in UTC."""
    return "_" + when.astimezone(UTC).strftime(_TS_FORMAT)


def _cipher(key: bytes) -> Cipher[modes.CBC]:
    if len(key) not in _KEY_SIZES:
        raise ValueError(f"a DC-09 key is 16, 24 or 32 bytes, not {len(key)}")
    return Cipher(algorithms.AES(key), modes.CBC(_ZERO_IV))


def decrypt(hex_text: str, key: bytes, block: Block | None = None) -> str:
    """The plain text of an encrypted block's data."""
    try:
        raw = bytes.fromhex(hex_text)
    except ValueError:
        raise Refused("encrypted DC-09 data is not hex", Reply.NAK, block=block) from None
    if not raw or len(raw) % 16:
        raise Refused(
            f"encrypted DC-09 data is {len(raw)} bytes, not a multiple of 16",
            Reply.NAK,
            block=block,
        )
    d = _cipher(key).decryptor()
    plain = d.update(raw) + d.finalize()
    try:
        text = plain.decode("ascii")
    except UnicodeDecodeError:
        raise Refused(
            "decrypted DC-09 data is not ASCII (wrong key?)", Reply.DUH, block=block
        ) from None
    return text


def random_pad(n: int) -> str:
    """``n`` random pad characters (none of ``|``, ``[``, ``]``)."""
    return "".join(secrets.choice(_PAD_ALPHABET) for _ in range(n))


def encrypt(text: str, key: bytes, pad: Callable[[int], str] = random_pad) -> str:
    """Hex (upper case) of ``<pad>|text`` encrypted, padded to a multiple of 16 with at
    least one pad character."""
    n = 16 - (len(text) + 1) % 16 or 16
    e = _cipher(key).encryptor()
    raw = (pad(n) + "|" + text).encode("ascii")
    return (e.update(raw) + e.finalize()).hex().upper()


# --------------------------------------------------------------------------- payloads


def adm_cid(content: Content, account: str) -> cid.ContactIdMessage:
    """The Contact ID event of an ``ADM-CID`` payload (``QXYZ GG CCC``)."""
    m = _CID_BODY.match(content.payload.strip())
    if m is None:
        raise Malformed("ADM-CID payload is not 'QXYZ GG CCC' (qualifier, code, group, zone)")
    q = _CID_QUALIFIERS.get(m["q"], m["q"])
    return cid.from_fields(content.account or account, q, m["code"], m["group"], m["zone"])


def sia_dcs(content: Content) -> list[SiaEvent]:
    """The events of a ``SIA-DCS`` payload (one or more, in order). A trailing text
    (``|A...``) is ignored: it may hold names and is never stored or logged."""
    payload = content.payload.strip()
    if _NEW_EVENT.match(payload):
        payload = payload[1:]  # "N": new event (the only kind a unit sends over DC-09)
    area = user = None
    events: list[SiaEvent] = []
    pos = 0
    while pos < len(payload):
        if payload.startswith(("|A", '*"'), pos):
            break
        m = _SIA_TOKEN.match(payload, pos)
        if m is None:
            raise Malformed(f"SIA-DCS data has an unknown field at character {pos}")
        pos = m.end()
        if m["ri"] is not None:
            area = m["ri"]
        elif m["id"] is not None:
            user = m["id"]
        elif m["code"] is not None:
            code = m["code"]
            mapped = SIA_CODES.get(code)
            if mapped is None:
                raise Malformed(f"SIA event code {code} is not one we map (see docs/devices.md)")
            events.append(SiaEvent(code, m["zone"], mapped[0], mapped[1], area, user))
    if not events:
        raise Malformed("SIA-DCS payload carries no event code")
    return events


# --------------------------------------------------------------------------- replies


def _ids(block: Block) -> str:
    r = f"R{block.receiver}" if block.receiver is not None else ""
    line = f"L{block.line}" if block.line is not None else ""
    return f"{block.seq}{r}{line}#{block.account}"


def ack(
    block: Block,
    key: bytes | None,
    now: datetime,
    pad: Callable[[int], str] = random_pad,
) -> bytes:
    """The ``ACK`` for ``block`` (encrypted with ``key`` when the block was)."""
    if block.encrypted:
        if key is None:
            raise ValueError("an encrypted block is acknowledged with its account's key")
        data = encrypt("]" + format_timestamp(now), key, pad)
        return frame(f'"*ACK"{_ids(block)}[{data}')
    return frame(f'"ACK"{_ids(block)}[]')


def nak(now: datetime) -> bytes:
    """The ``NAK`` (never encrypted; carries the receiver's time)."""
    return frame(f'"NAK"0000R0L0A0[]{format_timestamp(now)}')


def duh(block: Block | None) -> bytes:
    """The ``DUH`` for a frame we understood but will not act on."""
    if block is None or not block.account:
        return frame('"DUH"0000R0L0A0[]')
    return frame(f'"DUH"{_ids(block)}[]')
