"""SIA DC-09 receiver: TCP and UDP listeners for IP alarm units (dispersed alarms).

Bytes in, envelopes and events out. Each frame is parsed with the sans-IO codec
(``devices.codecs.dc09``), decrypted with its account's key, checked (CRC, length,
timestamp window), attributed through the receiver-account mapping (``contact_id`` for
``ADM-CID``, ``sia`` for ``SIA-DCS``) and handed to the pipeline; the ``ACK`` is sent
**only after the pipeline returned**, i.e. once the event is stored (or spooled). Frames
on one TCP connection are handled one after the other, in order.

Replies (see the codec's docstring for their layout):

* ``ACK``: stored (or a duplicate of something stored: the unit retried);
* ``NAK``: bad CRC, length or layout, or a timestamp outside the window; nothing is
  stored and the unit resends (correcting its clock from the NAK's timestamp);
* ``DUH``: a valid frame we refuse for good (no key for an encrypted account, a plain
  frame from an account that has a key, the wrong key, an unmapped event code, an
  account not mapped to a device): **dead-lettered** with the reason, never acknowledged.

Idempotency: an event's ``msg_id`` is ``dc09-<account>-<seq>-<time>-<digest of the
content>``, the time being the
event time the unit sent (``[H...]``) or else its DC-09 timestamp, so a retried frame is
recognised as a duplicate by the store, also across a restart. A unit that re-stamps a
retry (new timestamp, same sequence and content) is recognised within this process for
``RETRY_MEMO_S`` seconds. A plain frame with neither time is keyed by its content and the
UTC day. The event's time is the unit's event time when it sent one, else its timestamp,
else the receive time.

Storing: frames' events go through one writer task (``dc09:store``) that takes every
frame queued while its previous write ran and stores them with
``Pipeline.handle_events`` (one transaction), then wakes each frame's connection for its
ACK.

Resource handling
    :class:`Dc09Receiver` is an async context manager. Entering starts the writer (the
    supervised loop ``dc09:store``, :mod:`telecare.gateway.tasks`), binds the TCP server
    and the UDP endpoint and starts ``UDP_WORKERS`` supervised loops (``dc09:udp:N``)
    fed by a bounded queue; every TCP connection runs in its own task
    (at most ``max_connections``). Leaving stops accepting, cancels the connections and workers
    and awaits them; an alarm being stored when that happens is not acknowledged and the
    unit resends it.

Error handling
    Bad input gets a NAK or DUH (and a dead letter for DUH) and never ends a connection.
    A storage error (the pipeline raised): logged, no reply, the TCP connection is
    closed; the unit retries. A full UDP queue: the datagram is dropped unanswered
    (counted); the unit retries. Nothing else is caught.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from types import TracebackType
from typing import Final, Protocol, Self

from telecare.devices.codecs import Incomplete, Malformed, dc09
from telecare.devices.model import AlarmEvent, Device, ModelError, ReceiverKind
from telecare.gateway.config import Dc09Config
from telecare.gateway.decode import Rejected
from telecare.gateway.envelope import Envelope
from telecare.gateway.logging import get_logger
from telecare.gateway.tasks import Loop, Loops, Supervisor
from telecare.rules.clock import Clock

__all__ = ["Dc09Handler", "Dc09Receiver", "Dc09Sink"]

log = get_logger("telecare.ingest.dc09")

#: Bytes asked for per TCP read (a frame is under 200 bytes; a unit sends one at a time).
READ_SIZE: Final = 4096
#: Datagrams waiting for a UDP worker. Units wait for the reply before sending the next
#: message, so this only fills when many units send at once; past it a datagram is
#: dropped unanswered and its unit retries.
UDP_QUEUE: Final = 1024
UDP_WORKERS: Final = 8
#: Frames whose events wait for the store writer; and how many frames one write takes.
#: The writer takes what has queued while the previous write ran ("natural batching"):
#: no added delay when quiet, one commit for many units' alarms when busy.
STORE_QUEUE: Final = 1024
STORE_BATCH_MAX: Final = 256
#: How long a re-stamped retry is recognised in memory, and how many are remembered.
RETRY_MEMO_S: Final = 600.0
RETRY_MEMO_MAX: Final = 65536

AccountLookup = Callable[[ReceiverKind, str, str], Awaitable[Device | None]]


class Dc09Sink(Protocol):
    """What the receiver needs from the pipeline."""

    async def handle_events(
        self, events: Sequence[AlarmEvent], *, received_at: datetime | None = None
    ) -> None: ...

    async def dead_letter(
        self, env: Envelope, reason: str, device_id: str | None = None
    ) -> None: ...


class _Refuse(Exception):
    """Answer ``reply``; dead-letter ``reason`` when the reply is DUH."""

    def __init__(self, reason: str, reply: dc09.Reply) -> None:
        super().__init__(reason)
        self.reason = reason
        self.reply = reply


class Dc09Handler:
    """Frames -> events -> replies; shared by the TCP and UDP listeners (and the bench).

    Stateless per connection except for the retry memo."""

    def __init__(
        self, config: Dc09Config, sink: Dc09Sink, accounts: AccountLookup, clock: Clock
    ) -> None:
        self.config = config
        self.sink = sink
        self.accounts = accounts
        self.clock = clock
        #: How events are stored before the ACK; the receiver swaps in its batching writer.
        self.store_events: Callable[[list[AlarmEvent]], Awaitable[None]] = sink.handle_events
        self.counters: Counter[str] = Counter()
        self._past = timedelta(seconds=config.window_past_s)
        self._future = timedelta(seconds=config.window_future_s)
        self._memo: OrderedDict[tuple[str, str, str, str], tuple[float, str]] = OrderedDict()

    async def refused(self, exc: dc09.Refused, raw: bytes, origin: str) -> bytes:
        """The reply to a frame the codec refused (dead-lettered when it is a DUH)."""
        now = self.clock.now()
        if exc.reply is dc09.Reply.DUH:
            await self._dead_letter(Envelope("dc09", origin, raw, now), exc.reason)
            return self._reply(dc09.duh(exc.block), "duh")
        log.info("dc09_nak", origin=origin, reason=exc.reason)
        return self._reply(dc09.nak(now), "nak")

    async def on_block(self, block: dc09.Block, raw: bytes, origin: str) -> bytes:
        """Handle one parsed frame; return the reply once what it carried is stored.

        A storage error propagates (no reply: the unit retries)."""
        self.counters["frames"] += 1
        env = Envelope("dc09", origin, raw, self.clock.now())
        key = self.config.key_for(block.account)
        try:
            events = await self._events(block, key, env)
        except dc09.Refused as exc:
            return await self.refused(exc, raw, origin)
        except _Refuse as exc:
            if exc.reply is dc09.Reply.DUH:
                await self._dead_letter(env, exc.reason)
                return self._reply(dc09.duh(block), "duh")
            log.info("dc09_nak", origin=origin, account=block.account, reason=exc.reason)
            return self._reply(dc09.nak(self.clock.now()), "nak")
        if events:
            try:
                await self.store_events(events)
            except Rejected as exc:
                await self._dead_letter(env, exc.reason, exc.device_id)
                return self._reply(dc09.duh(block), "duh")
        for event in events:
            self.counters["events"] += 1
            log.info(
                "dc09_event",
                origin=origin,
                seq=block.seq,
                device_id=event.device_id,
                event_type=event.type,
                phase=event.phase,
            )
        return self._reply(dc09.ack(block, key, self.clock.now()), "ack")

    def _reply(self, data: bytes, kind: str) -> bytes:
        self.counters[kind] += 1
        return data

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
        try:
            if block.token == "ADM-CID":
                return [await self._cid_event(content, account, msg_base, event_ts)]
            return await self._sia_events(content, account, msg_base, event_ts)
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
        self, content: dc09.Content, account: str, msg_id: str, ts: datetime
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
        )

    async def _sia_events(
        self, content: dc09.Content, account: str, msg_id: str, ts: datetime
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
            )
            for i, (e, device) in enumerate(zip(found, devices, strict=True))
        ]


class Dc09Receiver:
    """The TCP and UDP listeners of ``[receivers.dc09]`` (see the module docstring)."""

    def __init__(
        self,
        config: Dc09Config,
        sink: Dc09Sink,
        accounts: AccountLookup,
        clock: Clock,
        *,
        supervisor: Supervisor | None = None,
    ) -> None:
        self.config = config
        self.sink = sink
        self._loops = Loops(supervisor)
        self.handler = Dc09Handler(config, sink, accounts, clock)
        self.handler.store_events = self._stored
        self._batches: asyncio.Queue[tuple[list[AlarmEvent], asyncio.Future[None]]] = asyncio.Queue(
            STORE_QUEUE
        )
        self.tcp_port: int | None = None
        self.udp_port: int | None = None
        self._server: asyncio.Server | None = None
        self._udp: asyncio.DatagramTransport | None = None
        self._queue: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue(UDP_QUEUE)
        self._tasks: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(config.max_connections)

    @property
    def counters(self) -> Counter[str]:
        return self.handler.counters

    async def __aenter__(self) -> Self:
        c = self.config
        try:
            await self._loops.start(Loop("dc09:store", self._write_step))
            if c.tcp:
                self._server = await asyncio.start_server(
                    self._connection, c.host, c.port, reuse_address=True, backlog=1024
                )
                self.tcp_port = self._server.sockets[0].getsockname()[1]
            if c.udp:
                loop = asyncio.get_running_loop()
                # With both, UDP takes the TCP port number (port 0: the one TCP got).
                port = self.tcp_port if self.tcp_port is not None else c.port
                transport, _ = await loop.create_datagram_endpoint(
                    lambda: _Datagrams(self), local_addr=(c.host, port)
                )
                self._udp = transport
                self.udp_port = transport.get_extra_info("sockname")[1]
                await self._loops.start(
                    *(Loop(f"dc09:udp:{i}", self._udp_step) for i in range(UDP_WORKERS))
                )
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        log.info("dc09_listening", host=c.host, tcp_port=self.tcp_port, udp_port=self.udp_port)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._server is not None:
            self._server.close()
        if self._udp is not None:
            self._udp.close()
        tasks, self._tasks = set(self._tasks), set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._loops.stop()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    # -- storing ----------------------------------------------------------------------
    async def _stored(self, events: list[AlarmEvent]) -> None:
        """Return once ``events`` are stored (raise what storing raised)."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await self._batches.put((events, done))
        await done

    async def _write_step(self) -> None:
        """Store what frames have queued, many frames in one write (one step of the
        ``dc09:store`` loop)."""
        batches = self._batches
        batch = [await batches.get()]
        while len(batch) < STORE_BATCH_MAX and not batches.empty():
            batch.append(batches.get_nowait())
        events = [e for evs, _ in batch for e in evs]
        self.counters["store_writes"] += 1
        # The receive time lets the rules check the unit's clock (a late alarm keeps
        # its true time and is shown as late).
        now = self.handler.clock.now()
        try:
            await self.sink.handle_events(events, received_at=now)
        except Rejected:
            # One frame's event was refused (a reused id with other content): take the
            # frames one by one so only that frame is refused; the others' events are
            # stored already and go through as duplicates.
            for evs, done in batch:
                try:
                    await self.sink.handle_events(evs, received_at=now)
                except Exception as exc:
                    if not done.done():
                        done.set_exception(exc)
                else:
                    if not done.done():
                        done.set_result(None)
            return
        except Exception as exc:
            for _, done in batch:
                if not done.done():
                    done.set_exception(exc)
            return
        except BaseException:
            for _, done in batch:
                done.cancel()
            raise
        for _, done in batch:
            if not done.done():
                done.set_result(None)

    # -- TCP --------------------------------------------------------------------------
    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        peer = writer.get_extra_info("peername")
        origin = f"dc09/tcp/{peer[0]}" if peer else "dc09/tcp"
        self.counters["connections"] += 1
        try:
            async with self._slots:
                await self._serve(reader, writer, origin)
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            # Shutdown: a leaf task we own and await in __aexit__. Ending normally keeps
            # asyncio's stream callback from logging the cancellation as an error; a
            # frame being stored is not acknowledged and its unit resends it.
            pass
        except Exception as exc:  # a storage error: no ACK, the unit retries
            self.counters["store_failures"] += 1
            log.error("dc09_not_stored", origin=origin, error=repr(exc))
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, origin: str
    ) -> None:
        buffer = bytearray()
        handler = self.handler
        while True:
            async with asyncio.timeout(self.config.idle_timeout_s):
                chunk = await reader.read(READ_SIZE)
            if not chunk:
                return
            buffer += chunk
            while buffer:
                try:
                    block, used = dc09.parse(bytes(buffer))
                except Incomplete:
                    break
                except dc09.Refused as exc:
                    raw = bytes(buffer[: exc.skip])
                    del buffer[: exc.skip]
                    writer.write(await handler.refused(exc, raw, origin))
                    await writer.drain()
                    continue
                except Malformed as exc:  # noise between frames: skip quietly
                    handler.counters["noise_bytes"] += exc.skip
                    del buffer[: exc.skip]
                    continue
                raw = bytes(buffer[:used])
                del buffer[:used]
                writer.write(await handler.on_block(block, raw, origin))
                await writer.drain()

    # -- UDP --------------------------------------------------------------------------
    def _datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            self._queue.put_nowait((data, addr))
        except asyncio.QueueFull:
            self.counters["udp_dropped"] += 1

    async def _udp_step(self) -> None:
        """Answer the next datagram (one step of a ``dc09:udp:N`` loop)."""
        handler = self.handler
        data, addr = await self._queue.get()
        origin = f"dc09/udp/{addr[0]}"
        try:
            try:
                block = dc09.parse_datagram(data)
            except dc09.Refused as exc:
                reply = await handler.refused(exc, data, origin)
            else:
                reply = await handler.on_block(block, data, origin)
        except Exception as exc:  # a storage error: no ACK, the unit retries
            self.counters["store_failures"] += 1
            log.error("dc09_not_stored", origin=origin, error=repr(exc))
            return
        if self._udp is not None and not self._udp.is_closing():
            self._udp.sendto(reply, addr)


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, receiver: Dc09Receiver) -> None:
        self.receiver = receiver

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.receiver._datagram(data, addr)
