"""The decode stage of the SIA DC-09 receiver: envelopes in, replies out.

The receiver (``gateway/ingest/dc09.py``) only moves bytes: every UDP datagram, and every
chunk read from a TCP connection, becomes an :class:`~telecare.gateway.envelope.Envelope`
(``source="dc09"``, origin ``dc09/<transport>/<peer address>``, the receive time) handed
here; what comes back are the bytes to send. Everything between happens here, next to
the pipeline's provisioning registry: framing (one :class:`Dc09Stream` per TCP
connection), the sans-IO codec (``devices.codecs.dc09``), decryption with the account's
key, the CRC, length and timestamp-window checks, the account -> device mapping
(``contact_id`` for ``ADM-CID``, ``sia`` for ``SIA-DCS``), the events, and storing them.

Request/response: the reply to a frame is ready only once what it carried is stored (or
spooled), through the stage's :class:`~telecare.gateway.decode_receivers.EventWriter`
(``dc09:store``: the frames queued while a write ran share the next one), so the
receiver's ``ACK`` still waits for the store. Frames of one TCP connection are answered
one after the other, in order.

Replies (see the codec's docstring for their layout):

* ``ACK``: stored (or a duplicate of something stored: the unit retried);
* ``NAK``: bad CRC, length or layout, or a timestamp outside the window; nothing is
  stored and the unit resends (correcting its clock from the NAK's timestamp);
* ``DUH``: a valid frame we refuse for good (no key for an encrypted account, a plain
  frame from an account that has a key, the wrong key, an unmapped event code, an
  account not mapped to a device, an id reused for other content, or a *poison* frame
  whose decoding or processing raised something other than storage unavailable):
  **dead-lettered** with the reason, never acknowledged.

Idempotency: an event's ``msg_id`` is ``dc09-<account>-<seq>-<time>-<digest of the
content>``, the time being the event time the unit sent (``[H...]``) or else its DC-09
timestamp, so a retried frame is recognised as a duplicate by the store, also across a
restart. A unit that re-stamps a retry (new timestamp, same sequence and content) is
recognised within this process for ``RETRY_MEMO_S`` seconds. A plain frame with neither
time is keyed by its content and the UTC day. The event's time is the unit's event time
when it sent one, else its timestamp, else the receive time.

Resource handling
    :class:`Dc09Decoding` is an async context manager: entering starts its writer,
    leaving stops it (a frame still waiting gets no reply: its unit resends). The
    receiver enters it before listening and leaves it after the last connection ended.

Error handling
    Bad input is answered (NAK or DUH, and a dead letter for DUH), never raised; so is a
    poison frame (the pipeline's ``poison``: ``decode failed: <class> in <where>`` or
    ``process failed: ...``). Storage unavailable (``gateway.failures``) propagates from
    :meth:`Dc09Decoding.datagram` and :meth:`Dc09Stream.feed`: no reply, the unit
    retries.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections import Counter, OrderedDict
from collections.abc import AsyncGenerator, Awaitable, Callable
from datetime import datetime, timedelta
from types import TracebackType
from typing import Final, Self

from telecare.devices.codecs import Incomplete, Malformed, dc09
from telecare.devices.model import AlarmEvent, Device, ModelError, ReceiverKind
from telecare.gateway.config import Dc09Config
from telecare.gateway.decode import Registry, Rejected
from telecare.gateway.decode_receivers import EventWriter, Sink
from telecare.gateway.envelope import Envelope
from telecare.gateway.failures import is_storage_unavailable
from telecare.gateway.logging import get_logger
from telecare.gateway.tasks import Supervisor
from telecare.rules.clock import Clock

__all__ = ["AccountLookup", "Dc09Decoding", "Dc09Stream"]

log = get_logger("telecare.decode.dc09")

#: How long a re-stamped retry is recognised in memory, and how many are remembered.
RETRY_MEMO_S: Final = 600.0
RETRY_MEMO_MAX: Final = 65536

#: ``(kind, account, zone) -> device`` (``Registry.receiver_device``).
AccountLookup = Callable[[ReceiverKind, str, str], Awaitable[Device | None]]


class _Refuse(Exception):
    """Answer ``reply``; dead-letter ``reason`` when the reply is DUH."""

    def __init__(self, reason: str, reply: dc09.Reply) -> None:
        super().__init__(reason)
        self.reason = reason
        self.reply = reply


class Dc09Decoding:
    """The decode stage of ``[receivers.dc09]`` (see the module docstring)."""

    def __init__(
        self,
        config: Dc09Config,
        sink: Sink,
        accounts: AccountLookup,
        clock: Clock,
        *,
        supervisor: Supervisor | None = None,
    ) -> None:
        self.config = config
        self.sink = sink
        self.accounts = accounts
        self.clock = clock
        self.counters: Counter[str] = Counter()
        self.writer = EventWriter("dc09:store", sink, clock, supervisor=supervisor)
        self._past = timedelta(seconds=config.window_past_s)
        self._future = timedelta(seconds=config.window_future_s)
        self._memo: OrderedDict[tuple[str, str, str, str], tuple[float, str]] = OrderedDict()

    @classmethod
    def with_registry(
        cls,
        config: Dc09Config,
        sink: Sink,
        registry: Registry,
        clock: Clock,
        *,
        supervisor: Supervisor | None = None,
    ) -> Dc09Decoding:
        """The stage mapping accounts through ``registry`` (the pipeline's: one
        provisioning check for every source)."""
        return cls(config, sink, registry.receiver_device, clock, supervisor=supervisor)

    async def __aenter__(self) -> Self:
        await self.writer.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.writer.__aexit__(exc_type, exc, tb)

    # -- entry points -----------------------------------------------------------------
    def stream(self, origin: str) -> Dc09Stream:
        """The framing state of one TCP connection from ``origin``."""
        return Dc09Stream(self, origin)

    async def datagram(self, env: Envelope) -> bytes:
        """The reply to one UDP datagram, once what it carried is stored."""
        try:
            block = dc09.parse_datagram(env.payload)
        except dc09.Refused as exc:
            return await self.refused(exc, env)
        return await self.frame(block, env)

    async def refused(self, exc: dc09.Refused, env: Envelope) -> bytes:
        """The reply to a frame the codec refused (dead-lettered when it is a DUH)."""
        if exc.reply is dc09.Reply.DUH:
            await self._dead_letter(env, exc.reason)
            return self._reply(dc09.duh(exc.block), "duh")
        log.info("dc09_nak", origin=env.origin, reason=exc.reason)
        return self._reply(dc09.nak(self.clock.now()), "nak")

    async def frame(self, block: dc09.Block, env: Envelope) -> bytes:
        """Handle one parsed frame (``env`` carries its bytes); return the reply once
        what it carried is stored. A storage error propagates (no reply)."""
        self.counters["frames"] += 1
        key = self.config.key_for(block.account)
        try:
            events = await self._events(block, key, env)
        except dc09.Refused as exc:
            return await self.refused(exc, env)
        except _Refuse as exc:
            if exc.reply is dc09.Reply.DUH:
                await self._dead_letter(env, exc.reason)
                return self._reply(dc09.duh(block), "duh")
            log.info("dc09_nak", origin=env.origin, account=block.account, reason=exc.reason)
            return self._reply(dc09.nak(self.clock.now()), "nak")
        except Exception as exc:
            if is_storage_unavailable(exc):
                raise
            return await self._poisoned(block, env, "decode", exc)
        if events:
            try:
                await self.writer.store(events)
            except Rejected as exc:
                await self._dead_letter(env, exc.reason, exc.device_id)
                return self._reply(dc09.duh(block), "duh")
            except Exception as exc:
                if is_storage_unavailable(exc):
                    raise
                return await self._poisoned(block, env, "process", exc, events[0].device_id)
        self.counters["events"] += len(events)
        for event in events:
            log.info(
                "dc09_event",
                origin=env.origin,
                seq=block.seq,
                device_id=event.device_id,
                event_type=event.type,
                phase=event.phase,
            )
        return self._reply(dc09.ack(block, key, self.clock.now()), "ack")

    # -- decoding ---------------------------------------------------------------------
    def _reply(self, data: bytes, kind: str) -> bytes:
        self.counters[kind] += 1
        return data

    async def _poisoned(
        self,
        block: dc09.Block,
        env: Envelope,
        stage: str,
        exc: Exception,
        device_id: str | None = None,
    ) -> bytes:
        """A frame whose ``stage`` failed for a reason no retry cures: a dead letter
        (the stage and exception class) and DUH, so the unit takes its backup path."""
        self.counters["poison"] += 1
        await self.sink.poison(env, stage, exc, device_id)
        return self._reply(dc09.duh(block), "duh")

    async def _dead_letter(self, env: Envelope, reason: str, device_id: str | None = None) -> None:
        self.counters["dead_letters"] += 1
        await self.sink.dead_letter(env, f"DC-09: {reason}", device_id)

    async def _events(
        self, block: dc09.Block, key: bytes | None, env: Envelope
    ) -> list[AlarmEvent]:
        if block.token in dc09.REPLY_TOKENS:
            raise _Refuse(f"a {block.token} is a receiver's reply, not a unit's", dc09.Reply.DUH)
        if key is not None and not block.encrypted:
            raise _Refuse(
                f"account {block.account} has a key; its plain frames are refused",
                dc09.Reply.DUH,
            )
        content = dc09.open_block(block, key)
        self._check_time(content, env.received_at)
        if block.token == "NULL":
            self.counters["link_tests"] += 1
            return []
        account = content.account or block.account
        stamp, event_ts = self._times(content, env.received_at)
        msg_base = self._msg_id(block, content, account, stamp, env.received_at)
        got = env.received_at
        try:
            if block.token == "ADM-CID":
                return [await self._cid_event(content, account, msg_base, event_ts, got)]
            return await self._sia_events(content, account, msg_base, event_ts, got)
        except Malformed as exc:
            raise _Refuse(exc.reason, dc09.Reply.DUH) from None
        except ModelError as exc:
            raise _Refuse(f"event rejected: {exc}", dc09.Reply.DUH) from None

    def _check_time(self, content: dc09.Content, now: datetime) -> None:
        ts = content.timestamp
        if ts is None:
            if self.config.require_timestamp:
                raise _Refuse("frame has no timestamp", dc09.Reply.NAK)
            return
        if ts < now - self._past or ts > now + self._future:
            self.counters["out_of_window"] += 1
            raise _Refuse(
                f"timestamp is {(ts - now).total_seconds():+.0f} s from the receiver's clock"
                f" (window -{self._past.total_seconds():g}/+{self._future.total_seconds():g} s)",
                dc09.Reply.NAK,
            )

    def _times(self, content: dc09.Content, received: datetime) -> tuple[datetime | None, datetime]:
        """(the time that keys the message, the event's time)."""
        event_time = None
        h = content.extension("H")
        if h is not None:
            with contextlib.suppress(dc09.Refused):
                event_time = dc09.parse_timestamp(h)
            if event_time is not None and event_time > received + self._future:
                event_time = None  # an event in the future is a wrong clock, not a time
        stamp = event_time or content.timestamp
        return stamp, stamp or received

    def _msg_id(
        self,
        block: dc09.Block,
        content: dc09.Content,
        account: str,
        stamp: datetime | None,
        received: datetime,
    ) -> str:
        # The content is part of the key: two different messages that share a sequence
        # number and a second (a unit restarted its numbering) are never one.
        what = f"{block.token}|{content.payload}"
        if stamp is not None:
            digest = hashlib.sha256(what.encode()).hexdigest()[:8]
            key = f"dc09-{account}-{block.seq}-{stamp:%Y%m%dT%H%M%S}-{digest}"
        else:
            digest = hashlib.sha256(f"{what}|{received:%Y%m%d}".encode()).hexdigest()[:12]
            key = f"dc09-{account}-{block.seq}-c{digest}"
        return self._remember(block, content, key)

    def _remember(self, block: dc09.Block, content: dc09.Content, msg_id: str) -> str:
        """The id first given to this (account, seq, token, payload) within the memo
        window: a unit that re-stamps a retry gets the same id."""
        memo, now = self._memo, time.monotonic()
        k = (block.account, block.seq, block.token, content.payload)
        hit = memo.get(k)
        if hit is not None and now - hit[0] < RETRY_MEMO_S:
            return hit[1]
        memo[k] = (now, msg_id)
        memo.move_to_end(k)
        while len(memo) > RETRY_MEMO_MAX:
            memo.popitem(last=False)
        return msg_id

    async def _device(self, kind: ReceiverKind, account: str, zone: str) -> Device:
        device = await self.accounts(kind, account, zone)
        if device is None:
            raise _Refuse(
                f"{kind.value} account {account} zone {zone or '-'} is not mapped to a device"
                f" (telecare device map-account DEVICE {kind.value}:{account})",
                dc09.Reply.DUH,
            )
        return device

    async def _cid_event(
        self, content: dc09.Content, account: str, msg_id: str, ts: datetime, got: datetime
    ) -> AlarmEvent:
        message = dc09.adm_cid(content, account)
        device = await self._device(ReceiverKind.CONTACT_ID, account, message.zone)
        return AlarmEvent(
            device_id=device.device_id,
            type=message.event_type,
            phase=message.phase,
            ts=ts,
            msg_id=msg_id,
            site_id=device.site_id,
            resident_id=device.resident_id,
            zone=message.zone,
            source="dc09",
            code=message.code,
            received_at=got,
        )

    async def _sia_events(
        self, content: dc09.Content, account: str, msg_id: str, ts: datetime, got: datetime
    ) -> list[AlarmEvent]:
        found = dc09.sia_dcs(content)
        devices = [await self._device(ReceiverKind.SIA, account, e.zone) for e in found]
        return [
            AlarmEvent(
                device_id=device.device_id,
                type=e.event_type,
                phase=e.phase,
                ts=ts,
                msg_id=msg_id if len(found) == 1 else f"{msg_id}-{i}",
                site_id=device.site_id,
                resident_id=device.resident_id,
                zone=e.zone or None,
                source="dc09",
                received_at=got,
            )
            for i, (e, device) in enumerate(zip(found, devices, strict=True))
        ]


class Dc09Stream:
    """One TCP connection's bytes: frames found in the chunks fed, answered in order."""

    def __init__(self, decoding: Dc09Decoding, origin: str) -> None:
        self.decoding = decoding
        self.origin = origin
        self._buffer = bytearray()

    async def feed(self, env: Envelope) -> AsyncGenerator[bytes, None]:
        """The replies to the frames that ``env``'s chunk completes, each once what its
        frame carried is stored. Noise between frames is skipped (counted)."""
        buffer, decoding = self._buffer, self.decoding
        buffer += env.payload
        while buffer:
            try:
                block, used = dc09.parse(bytes(buffer))
            except Incomplete:
                return
            except dc09.Refused as exc:
                raw = bytes(buffer[: exc.skip])
                del buffer[: exc.skip]
                yield await decoding.refused(exc, _with(env, raw))
                continue
            except Malformed as exc:  # noise between frames: skip quietly
                decoding.counters["noise_bytes"] += exc.skip
                del buffer[: exc.skip]
                continue
            raw = bytes(buffer[:used])
            del buffer[:used]
            # The usual chunk is exactly one frame: its envelope as it is.
            yield await decoding.frame(block, env if raw == env.payload else _with(env, raw))


def _with(env: Envelope, payload: bytes) -> Envelope:
    """``env`` carrying one frame's bytes instead of the chunk's."""
    return Envelope(env.source, env.origin, payload, env.received_at)
