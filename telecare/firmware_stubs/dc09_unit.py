"""A simulated SIA DC-09 alarm unit (a dispersed alarm / social-alarm dialler on IP).

It builds its frames itself (its own CRC, framing and AES), independently of
``devices.codecs.dc09``, so round-trip tests check one implementation against another;
and it behaves as a unit does on the wire:

* each message gets the next sequence number ``0001``..``9999``;
* it waits for the receiver's reply and **retries the same frame** (same sequence,
  timestamp and event time) until it gets an ``ACK``: after a timeout, a dropped
  connection or a refused connection (the receiver restarting);
* on a ``NAK`` it takes the receiver's time from it, corrects its clock and re-sends
  with a new timestamp (as the standard says); a ``DUH`` ends the attempt.

    unit = Dc09Unit("1234", key=bytes(16))
    msg = unit.adm_cid(1, 101, zone=3, event_time=pressed_at)
    reply = await unit.deliver("127.0.0.1", 12345, msg)      # "ACK", "DUH"
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

__all__ = ["Dc09Unit", "Message", "Reply", "crc16_arc", "parse_reply"]

_TS = "%H:%M:%S,%m-%d-%Y"


def crc16_arc(data: bytes) -> int:
    """CRC-16/ARC, bit by bit (the unit's own implementation)."""
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def _aes(key: bytes) -> Cipher[modes.CBC]:
    return Cipher(algorithms.AES(key), modes.CBC(b"\x00" * 16))


@dataclass(frozen=True, slots=True)
class Message:
    """One message as the unit will (re)send it."""

    token: str  # "ADM-CID", "SIA-DCS", "NULL"
    seq: int
    data: str  # "#acct|...]" + extended data, without the timestamp
    event_time: datetime | None = None


@dataclass(frozen=True, slots=True)
class Reply:
    token: str  # "ACK", "NAK", "DUH"
    seq: str
    timestamp: datetime | None
    raw: bytes


def parse_reply(raw: bytes, key: bytes | None = None) -> Reply:
    """Check a reply's framing and CRC, decrypt it when it is ``*``-encrypted."""
    if len(raw) < 10 or raw[:1] != b"\n" or raw[-1:] != b"\r":
        raise ValueError(f"reply is not LF..CR framed: {raw!r}")
    body = raw[9:-1]
    if int(raw[5:9], 16) != len(body):
        raise ValueError(f"reply length field {raw[5:9]!r} != {len(body)}")
    if int(raw[1:5], 16) != crc16_arc(body):
        raise ValueError(f"reply CRC {raw[1:5]!r} != {crc16_arc(body):04X}")
    text = body.decode("ascii")
    star = text[1] == "*"
    token = text[1 + star : text.index('"', 1)]
    seq = text[text.index('"', 1) + 1 :][:4]
    data = text[text.index("[") + 1 :]
    if star:
        if key is None:
            raise ValueError("encrypted reply and no key")
        d = _aes(key).decryptor()
        data = (d.update(bytes.fromhex(data)) + d.finalize()).decode("ascii")
        data = data[data.index("|") + 1 :]
    stamp = None
    if "]_" in data:
        stamp = datetime.strptime(data[data.index("]_") + 2 :], _TS).replace(tzinfo=UTC)
    return Reply(token, seq, stamp, raw)


@dataclass
class Dc09Unit:
    """A unit with one account (and optionally an AES key: 16, 24 or 32 bytes)."""

    account: str
    key: bytes | None = None
    receiver: int | None = None
    line: int | None = 0
    #: Seconds the unit's clock is off (positive: fast); a NAK corrects it.
    clock_offset_s: float = 0.0
    seq: int = 0
    rng: random.Random = field(default_factory=random.Random)
    #: Frames sent, replies got (for tests and the bench).
    sent: int = 0
    replies: list[str] = field(default_factory=list)

    # -- messages ---------------------------------------------------------------------
    def _next(self) -> int:
        self.seq = self.seq % 9999 + 1
        return self.seq

    @staticmethod
    def _extended(event_time: datetime | None) -> str:
        if event_time is None:
            return ""
        return "[H" + event_time.astimezone(UTC).strftime(_TS) + "]"

    def adm_cid(
        self,
        qualifier: int,
        code: int,
        *,
        group: int = 0,
        zone: int = 0,
        event_time: datetime | None = None,
    ) -> Message:
        """A Contact ID event: ``ADM-CID`` ``#acct|QXYZ GG CCC]``."""
        body = f"#{self.account}|{qualifier}{code:03d} {group:02d} {zone:03d}]"
        return Message("ADM-CID", self._next(), body + self._extended(event_time), event_time)

    def sia_dcs(
        self,
        code: str,
        zone: int | None = None,
        *,
        area: int | None = None,
        event_time: datetime | None = None,
    ) -> Message:
        """A SIA event: ``SIA-DCS`` ``#acct|N[ri<area>/]<CODE><zone>]``."""
        ri = f"ri{area}/" if area is not None else ""
        z = f"{zone:02d}" if zone is not None else ""
        body = f"#{self.account}|N{ri}{code}{z}]"
        return Message("SIA-DCS", self._next(), body + self._extended(event_time), event_time)

    def null(self) -> Message:
        """A link test."""
        return Message("NULL", self._next(), "]")

    # -- frames -----------------------------------------------------------------------
    def now(self) -> datetime:
        return datetime.now(UTC) + timedelta(seconds=self.clock_offset_s)

    def frame(
        self, msg: Message, *, stamp: datetime | None = None, timestamp: bool = True
    ) -> bytes:
        """The frame for ``msg``; the timestamp is ``stamp`` (default: the unit's now).
        Plain frames may go without one (``timestamp=False``); encrypted ones may not."""
        ids = f"{msg.seq:04d}"
        if self.receiver is not None:
            ids += f"R{self.receiver:X}"
        if self.line is not None:
            ids += f"L{self.line:X}"
        ids += f"#{self.account}["
        ts = "_" + (stamp or self.now()).astimezone(UTC).strftime(_TS)
        if self.key is None:
            content = f'"{msg.token}"{ids}{msg.data}{ts if timestamp else ""}'
        else:
            text = "|" + msg.data + ts
            n = 16 - len(text) % 16 or 16
            pad = "".join(
                self.rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
                for _ in range(n)
            )
            e = _aes(self.key).encryptor()
            hexed = (e.update((pad + text).encode("ascii")) + e.finalize()).hex().upper()
            content = f'"*{msg.token}"{ids}{hexed}'
        raw = content.encode("ascii")
        return b"\n%04X%04X%s\r" % (crc16_arc(raw), len(raw), raw)

    # -- transport --------------------------------------------------------------------
    async def exchange_tcp(self, host: str, port: int, frame: bytes, timeout: float) -> Reply:
        """Send one frame on a new connection and read the reply."""
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        try:
            writer.write(frame)
            await writer.drain()
            raw = await asyncio.wait_for(reader.readuntil(b"\r"), timeout)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        self.sent += 1
        return parse_reply(raw, self.key)

    async def exchange_udp(self, host: str, port: int, frame: bytes, timeout: float) -> Reply:
        """Send one datagram and wait for the reply datagram."""
        loop = asyncio.get_running_loop()
        got: asyncio.Future[bytes] = loop.create_future()

        class _Proto(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: object) -> None:
                if not got.done():
                    got.set_result(data)

        transport, _ = await loop.create_datagram_endpoint(_Proto, remote_addr=(host, port))
        try:
            transport.sendto(frame)
            self.sent += 1
            raw = await asyncio.wait_for(got, timeout)
        finally:
            transport.close()
        return parse_reply(raw, self.key)

    async def deliver(
        self,
        host: str,
        port: int,
        msg: Message,
        *,
        udp: bool = False,
        timeout: float = 2.0,
        attempts: int = 50,
        retry_delay: float = 0.1,
        timestamp: bool = True,
    ) -> Reply:
        """Send ``msg`` until the receiver answers ``ACK`` or ``DUH`` (returned); the same
        frame is repeated after a timeout or a connection failure, a new timestamp is
        taken only after a ``NAK``. Raises ``TimeoutError`` after ``attempts``."""
        frame = self.frame(msg, timestamp=timestamp)
        exchange = self.exchange_udp if udp else self.exchange_tcp
        for _ in range(attempts):
            try:
                reply = await exchange(host, port, frame, timeout)
            except (OSError, TimeoutError, asyncio.IncompleteReadError):
                await asyncio.sleep(retry_delay)
                continue
            self.replies.append(reply.token)
            if reply.token == "NAK":
                if reply.timestamp is not None:
                    self.clock_offset_s = (reply.timestamp - datetime.now(UTC)).total_seconds()
                frame = self.frame(msg, timestamp=timestamp)
                continue
            if reply.token in ("ACK", "DUH"):
                if reply.token == "ACK" and reply.seq != f"{msg.seq:04d}":
                    raise ValueError(f"ACK for sequence {reply.seq}, sent {msg.seq:04d}")
                return reply
        raise TimeoutError(f"no ACK for {msg.token} {msg.seq:04d} after {attempts} attempts")
