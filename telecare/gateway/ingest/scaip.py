"""SCAIP receiver: a SIP listener (UDP, TCP, optionally TLS) for social-alarm units.

A unit sends a SIP ``MESSAGE`` with an ``<mrq>`` body (``devices.codecs.scaip``); the
receiver answers ``200 OK`` with an ``<mrs>`` echoing ``ref``. The listener only moves
bytes and makes events: parsing and every SIP/SCAIP decision is in the sans-IO codecs
(``devices.codecs.sip``, ``devices.codecs.scaip``).

For each ``MESSAGE``:

1. ``scaip.check_request``: not a SCAIP MESSAGE -> 405 / 415 / 400 at once; an ``<mrq>``
   that does not decode, or whose ``cid`` is not the SIP From user -> ``200`` with the
   ``<mrs>`` status number (2, 1, 7, 3). Each is dead-lettered with its reason.
2. ``cid`` (and ``did`` as the zone) -> the provisioned device through the receiver
   account mapping (kind ``scaip``); none -> ``<mrs>`` status 5 (not treated) and a dead
   letter: the unit knows the alarm was not taken and falls back (voice call, other ARC).
3. The event (``scaip.to_event``; time = when the datagram or the message arrived, as
   SCAIP carries none; ``msg_id`` from ``ref``) is queued for the store writer, which
   hands every event waiting to ``Pipeline.handle_events`` in one write (one commit for
   many units' alarms under load).
4. **Only after that returned** (the event and what it raised are stored, or spooled) is
   ``200`` + ``<mrs>`` status 0 sent. A unit that gets no answer (the gateway was
   killed) resends the same ``ref``: the store's idempotency key recognises it and the
   pipeline finishes whatever the first attempt left undone.

UDP retransmissions (RFC 3261 timer E) of a request being processed are absorbed; once
answered, a retransmission gets the same response again from a cache kept 32 s (64*T1).
Responses go to the datagram's source address (``rport`` behaviour: what NATed units
need). ``PI`` heartbeats are events too (``periodic_test``, no alert): they prove the unit
alive to the missed-heartbeat rule and update its device status.

Resource handling
    :class:`ScaipReceiver` is an async context manager owning the UDP endpoint, the TCP
    and TLS servers, the store writer (the supervised loop ``scaip:store``,
    :mod:`telecare.gateway.tasks`) and one task per request or connection. Leaving stops
    accepting, lets requests in flight finish (up to ``drain_s``), then cancels the rest
    and the writer.

Error handling
    Bad input never raises out of the receiver: it is answered and dead-lettered. More
    than ``max_in_flight`` requests at once -> ``503`` with ``Retry-After`` (the unit
    retries). A storage error from the pipeline -> ``503`` (nothing acknowledged), logged.
    A TCP connection whose bytes cannot be framed is answered nothing and closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ssl
import time
import uuid
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Protocol, Self

from telecare.devices.codecs import Incomplete, Malformed, scaip, sip
from telecare.devices.model import AlarmEvent, Device, EventType, ReceiverKind
from telecare.gateway.config import ScaipConfig
from telecare.gateway.envelope import Envelope
from telecare.gateway.logging import get_logger
from telecare.gateway.tasks import Loop, Loops, Supervisor
from telecare.rules.clock import Clock

__all__ = ["ScaipReceiver", "Sink"]

log = get_logger("telecare.ingest.scaip")

#: ``(kind, account, zone) -> device`` (``Registry.receiver_device``).
AccountLookup = Callable[[ReceiverKind, str, str], Awaitable[Device | None]]
#: ``(device, now)``: let the heartbeat rule watch a device heard for the first time.
Watch = Callable[[Device, datetime], None]
#: ``Store.set_device_status`` for heartbeats (best effort: the event is what is durable).
Status = Callable[..., Awaitable[None]]
#: How long an answered UDP transaction's response is kept for retransmissions (64*T1).
ANSWERED_TTL_S = 32.0
#: At most this many answered transactions are remembered.
ANSWERED_MAX = 8192
READ_SIZE = 65536
#: Stop waiting for in-flight requests this long after leaving.
DRAIN_S = 5.0
#: At most this many events in one store write.
STORE_BATCH_MAX = 256


class Sink(Protocol):
    """What the receiver needs from the pipeline."""

    async def handle_events(self, events: Sequence[AlarmEvent]) -> None: ...

    async def dead_letter(
        self, env: Envelope, reason: str, device_id: str | None = None
    ) -> None: ...


class ScaipReceiver:
    """The SCAIP listener (see the module docstring). ``udp_address`` / ``tcp_address`` /
    ``tls_address`` are the bound ``(host, port)`` once entered."""

    def __init__(
        self,
        config: ScaipConfig,
        sink: Sink,
        lookup: AccountLookup,
        clock: Clock,
        *,
        watch: Watch | None = None,
        status: Status | None = None,
        ssl_context: ssl.SSLContext | None = None,
        drain_s: float = DRAIN_S,
        supervisor: Supervisor | None = None,
    ) -> None:
        self.config = config
        self.sink = sink
        self.lookup = lookup
        self.clock = clock
        self.watch = watch
        self.status = status
        self.ssl_context = ssl_context
        self.drain_s = drain_s
        self.counters: Counter[str] = Counter()
        self.udp_address: tuple[str, int] | None = None
        self.tcp_address: tuple[str, int] | None = None
        self.tls_address: tuple[str, int] | None = None
        self._slots = asyncio.Semaphore(max(1, config.max_in_flight))
        self._tasks: set[asyncio.Task[None]] = set()
        #: TCP/TLS connection tasks -> whether a request is being processed on it.
        self._connections: dict[asyncio.Task[Any], bool] = {}
        self._udp: asyncio.DatagramTransport | None = None
        self._servers: list[asyncio.Server] = []
        self._pending: dict[tuple[Any, ...], float] = {}
        self._answered: OrderedDict[tuple[Any, ...], tuple[float, bytes]] = OrderedDict()
        self._watched: set[str] = set()
        self._to_tag = uuid.uuid4().hex[:10]
        #: Events waiting for the writer. Unbounded on purpose: at most ``max_in_flight``
        #: requests can be waiting (the slots bound it), each with one event.
        self._batch: asyncio.Queue[tuple[AlarmEvent, asyncio.Future[None]]] = asyncio.Queue()
        self._loops = Loops(supervisor)

    # -- lifetime ----------------------------------------------------------------------
    async def __aenter__(self) -> Self:
        cfg = self.config
        # With port 0 (any free port) UDP and TCP share the port UDP got; if another
        # process holds that TCP port, try again with another one.
        attempts = 20 if cfg.port == 0 else 1
        for attempt in range(attempts):
            try:
                await self._listen(cfg)
                break
            except OSError as exc:
                await self._close()
                if exc.errno != errno.EADDRINUSE or attempt == attempts - 1:
                    raise
            except BaseException:
                await self._close()
                raise
        await self._loops.start(Loop("scaip:store", self._write_events))
        log.info(
            "scaip_listening",
            udp=_fmt(self.udp_address),
            tcp=_fmt(self.tcp_address),
            tls=_fmt(self.tls_address),
        )
        return self

    async def _listen(self, cfg: ScaipConfig) -> None:
        loop = asyncio.get_running_loop()
        self.udp_address = self.tcp_address = self.tls_address = None
        if cfg.udp:
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _Udp(self), local_addr=(cfg.host, cfg.port)
            )
            self._udp = transport
            self.udp_address = _bound(transport.get_extra_info("sockname"))
        if cfg.tcp:
            port = self.udp_address[1] if self.udp_address and cfg.port == 0 else cfg.port
            server = await asyncio.start_server(self._connection, cfg.host, port)
            self._servers.append(server)
            self.tcp_address = _bound(server.sockets[0].getsockname())
        if cfg.tls:
            context = self.ssl_context or _tls_context(cfg)
            server = await asyncio.start_server(
                self._connection, cfg.host, cfg.tls_port, ssl=context
            )
            self._servers.append(server)
            self.tls_address = _bound(server.sockets[0].getsockname())

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._close()

    async def _close(self) -> None:
        for server in self._servers:
            server.close()
        idle = [t for t, busy in self._connections.items() if not busy]
        for task in idle:
            task.cancel()
        waiting = set(self._tasks) | {t for t, busy in self._connections.items() if busy}
        if waiting:
            # requests in flight finish and are answered: nothing stored goes unacknowledged
            _, late = await asyncio.wait(waiting, timeout=self.drain_s)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        await asyncio.gather(*idle, return_exceptions=True)
        await self._loops.stop()
        for server in self._servers:
            with contextlib.suppress(Exception):
                await server.wait_closed()
        self._servers.clear()
        if self._udp is not None:
            self._udp.close()
            self._udp = None

    def _spawn(self, coro: Awaitable[None], name: str) -> None:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- UDP ---------------------------------------------------------------------------
    def datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        """One datagram arrived (called by the protocol, synchronously)."""
        received_at = self.clock.now()
        self.counters["datagrams"] += 1
        try:
            message, _ = sip.parse(data, stream=False)
        except Malformed as exc:
            if not exc.reason.startswith("keep-alive"):
                self._spawn(
                    self._reject_bytes(data, f"udp:{addr[0]}:{addr[1]}", exc.reason, received_at),
                    "scaip:reject",
                )
            return
        if not isinstance(message, sip.SipRequest):
            return  # a response: we send no requests
        key = ("udp", addr, *message.transaction_key)
        answered = self._answered.get(key)
        if answered is not None and time.monotonic() - answered[0] < ANSWERED_TTL_S:
            self.counters["retransmissions"] += 1
            self._send_udp(answered[1], addr)
            return
        if key in self._pending:
            self.counters["retransmissions"] += 1
            return  # still being processed: it will be answered
        if len(self._pending) >= self.config.max_in_flight:
            self.counters["busy"] += 1  # bounded: a flood cannot pile up tasks
            self._send_udp(self._busy(message), addr)
            return
        self._pending[key] = received_at.timestamp()
        self._spawn(self._udp_request(message, addr, key, received_at), "scaip:udp")

    async def _udp_request(
        self,
        message: sip.SipRequest,
        addr: tuple[str, int],
        key: tuple[Any, ...],
        received_at: datetime,
    ) -> None:
        try:
            async with self._slots:
                response = await self.respond(message, f"udp:{addr[0]}:{addr[1]}", received_at)
        finally:
            self._pending.pop(key, None)
        if response is None:
            return
        self._remember(key, response)
        self._send_udp(response, addr)

    def _send_udp(self, data: bytes, addr: tuple[str, int]) -> None:
        if self._udp is not None and not self._udp.is_closing():
            self._udp.sendto(data, addr)

    def _remember(self, key: tuple[Any, ...], response: bytes) -> None:
        now = time.monotonic()
        answered = self._answered
        answered[key] = (now, response)
        while answered:
            oldest_key, (at, _) = next(iter(answered.items()))
            if len(answered) <= ANSWERED_MAX and now - at < ANSWERED_TTL_S:
                break
            del answered[oldest_key]

    # -- TCP / TLS ---------------------------------------------------------------------
    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections[task] = False
            task.add_done_callback(self._connections.pop)
        peer = writer.get_extra_info("peername") or ("?", 0)
        scheme = "tls" if writer.get_extra_info("sslcontext") is not None else "tcp"
        origin = f"{scheme}:{peer[0]}:{peer[1]}"
        buf = b""
        try:
            while True:
                try:
                    async with asyncio.timeout(self.config.idle_timeout_s):
                        chunk = await reader.read(READ_SIZE)
                except TimeoutError:
                    return
                if not chunk:
                    return
                received_at = self.clock.now()
                buf += chunk
                while buf:
                    try:
                        message, used = sip.parse(buf, stream=True)
                    except Incomplete:
                        break
                    except Malformed as exc:
                        if exc.reason.startswith("keep-alive"):
                            buf = buf[exc.skip :]
                            continue
                        await self._reject_bytes(buf, origin, exc.reason, received_at)
                        return  # cannot find the next message on this stream: close
                    buf = buf[used:]
                    if not isinstance(message, sip.SipRequest):
                        continue
                    if self._slots.locked():
                        self.counters["busy"] += 1
                        response: bytes | None = self._busy(message)
                    else:
                        if task is not None:
                            self._connections[task] = True  # busy: let it finish on exit
                        async with self._slots:
                            response = await self.respond(message, origin, received_at)
                    if response is not None:
                        writer.write(response)
                        await writer.drain()
                    if task is not None:
                        self._connections[task] = False
        except (ConnectionError, ssl.SSLError) as exc:
            log.info("scaip_connection_lost", origin=origin, error=str(exc))
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    # -- the request -------------------------------------------------------------------
    async def respond(
        self, request: sip.SipRequest, origin: str, received_at: datetime
    ) -> bytes | None:
        """The response to one request (``None`` for an ACK), after storing what it
        carried. Never raises for bad input."""
        self.counters["requests"] += 1
        checked = scaip.check_request(request)
        if checked is None:
            return None
        if isinstance(checked, scaip.Reply):
            if request.method != "OPTIONS":
                reason = _reply_reason(checked)
                await self._dead_letter(request.body, origin, reason, received_at)
            return self._build(request, checked)
        mrq = checked
        device = await self.lookup(ReceiverKind.SCAIP, mrq.cid, mrq.did or "")
        if device is None:
            exc = scaip.ScaipError(
                f"SCAIP cid {mrq.cid!r} is not mapped to a device "
                f"(telecare device map-account DEVICE scaip:{mrq.cid})",
                scaip.Snu.NOT_TREATED,
                mrq.ref,
            )
            self.counters["unknown_cid"] += 1
            await self._dead_letter(request.body, origin, exc.reason, received_at)
            return self._build(request, scaip.reject(exc))
        try:
            event = scaip.to_event(
                mrq,
                device_id=device.device_id,
                ts=received_at,
                site_id=device.site_id,
                resident_id=device.resident_id,
            )
        except scaip.ScaipError as exc:
            await self._dead_letter(request.body, origin, exc.reason, received_at, device)
            return self._build(request, scaip.reject(exc))
        if self.watch is not None and device.device_id not in self._watched:
            self.watch(device, received_at)
            self._watched.add(device.device_id)
        try:
            await self._store(event)
        except Exception as exc:
            self.counters["store_failed"] += 1
            log.error("scaip_store_failed", device_id=device.device_id, error=repr(exc))
            return self._build(request, _unavailable())
        self.counters["events"] += 1
        log.info(
            "scaip_event",
            device_id=device.device_id,
            event_type=event.type,
            phase=event.phase,
            msg_id=event.msg_id,
        )
        if event.type is EventType.PERIODIC_TEST and self.status is not None:
            try:
                await self.status(device.device_id, at=received_at, heartbeat=True)
            except Exception as exc:  # the event is stored: the status is a convenience
                log.warning("scaip_status_failed", device_id=device.device_id, error=repr(exc))
        return self._build(request, scaip.accepted(mrq.ref))

    # -- storing ----------------------------------------------------------------------
    async def _store(self, event: AlarmEvent) -> None:
        """Return once ``event`` is stored (raise what storing raised)."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._batch.put_nowait((event, done))
        await done

    async def _write_events(self) -> None:
        """Store the events requests have queued, all waiting ones in one write
        (``Pipeline.handle_events``: one commit): one step of the ``scaip:store`` loop.
        Natural batching: under load the queue fills while a write is under way; idle,
        an event goes alone."""
        batch_queue = self._batch
        batch = [await batch_queue.get()]
        while len(batch) < STORE_BATCH_MAX and not batch_queue.empty():
            batch.append(batch_queue.get_nowait())
        self.counters["store_writes"] += 1
        try:
            await self.sink.handle_events([event for event, _ in batch])
        except Exception as exc:  # every request of the batch answers 503; units retry
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

    def _build(self, request: sip.SipRequest, reply: scaip.Reply) -> bytes:
        return sip.build_response(
            request,
            reply.status,
            reply.reason,
            to_tag=self._to_tag,
            headers=reply.headers,
            body=reply.body,
            content_type=reply.content_type,
        )

    def _busy(self, request: sip.SipRequest) -> bytes:
        return self._build(
            request, scaip.Reply(503, "Service Unavailable", (("Retry-After", "1"),))
        )

    async def _reject_bytes(
        self, data: bytes, origin: str, reason: str, received_at: datetime
    ) -> None:
        await self._dead_letter(data, origin, f"SIP: {reason}", received_at)

    async def _dead_letter(
        self,
        payload: bytes,
        origin: str,
        reason: str,
        received_at: datetime,
        device: Device | None = None,
    ) -> None:
        self.counters["dead_letters"] += 1
        env = Envelope("scaip", origin, payload[:4096], received_at)
        try:
            await self.sink.dead_letter(env, reason, device.device_id if device else None)
        except Exception as exc:  # the unit has its answer; losing the letter is logged
            log.error("scaip_dead_letter_failed", origin=origin, error=repr(exc))


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, receiver: ScaipReceiver) -> None:
        self.receiver = receiver

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.receiver.datagram(data, (str(addr[0]), int(addr[1])))

    def error_received(self, exc: Exception) -> None:
        log.warning("scaip_udp_error", error=str(exc))


def _unavailable() -> scaip.Reply:
    return scaip.Reply(503, "Service Unavailable", (("Retry-After", "5"),))


def _reply_reason(reply: scaip.Reply) -> str:
    if reply.status == 200 and reply.body:
        try:
            mrs = scaip.decode_mrs(reply.body)
        except scaip.ScaipError:  # pragma: no cover - we encoded it
            return "SCAIP request rejected"
        return f"SCAIP <mrs> status {mrs.snu}: {mrs.ste}"
    return f"SIP {reply.status} {reply.reason}"


def _tls_context(cfg: ScaipConfig) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cfg.tls_cert, cfg.tls_key)
    return context


def _bound(sockname: Any) -> tuple[str, int]:
    return str(sockname[0]), int(sockname[1])


def _fmt(address: tuple[str, int] | None) -> str | None:
    return f"{address[0]}:{address[1]}" if address else None
