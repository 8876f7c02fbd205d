"""The decode stage of the SCAIP receiver: envelopes in, SIP responses out.

The receiver (``gateway/ingest/scaip.py``) only moves bytes: every UDP datagram, and
every chunk read from a TCP or TLS connection, becomes an
:class:`~telecare.gateway.envelope.Envelope` (``source="scaip"``, origin
``<udp|tcp|tls>:<peer address>:<peer port>``, the receive time) handed here; what comes
back are the bytes to send. Everything between happens here, next to the pipeline's
provisioning registry: SIP framing and parsing (``devices.codecs.sip``), the SIP
transaction layer (retransmissions, ``max_in_flight``), the SCAIP checks
(``devices.codecs.scaip``), the ``cid`` -> device mapping, the event, storing it.

For each ``MESSAGE``:

1. ``scaip.check_request``: not a SCAIP MESSAGE -> 405 / 415 / 400 at once; an ``<mrq>``
   that does not decode, or whose ``cid`` is not the SIP From user -> ``200`` with the
   ``<mrs>`` status number (2, 1, 7, 3). Each is dead-lettered with its reason.
2. ``cid`` (and ``did`` as the zone) -> the provisioned device through the receiver
   account mapping (kind ``scaip``); none -> ``<mrs>`` status 5 (not treated) and a dead
   letter: the unit knows the alarm was not taken and falls back (voice call, other ARC).
3. The event (``scaip.to_event``; time = when the datagram or the message arrived, as
   SCAIP carries none; ``msg_id`` from ``ref``) goes to the stage's
   :class:`~telecare.gateway.decode_receivers.EventWriter` (``scaip:store``), which
   stores every waiting request's event with one ``Pipeline.handle_events``.
4. **Only once the event and the alert it raised are stored** (or spooled) is ``200`` +
   ``<mrs>`` status 0 the answer. A unit that gets no answer (the gateway was
   killed) resends the same ``ref``: the store's idempotency key recognises it and the
   pipeline finishes whatever the first attempt left undone. A ``ref`` reused for other
   content is refused: ``<mrs>`` status 3 and a dead letter.

UDP retransmissions (RFC 3261 timer E) of a request being processed are absorbed (no
answer); once answered, a retransmission gets the same response again from a cache kept
32 s (64*T1). ``PI`` heartbeats are events too (``periodic_test``, no alert): they prove
the unit alive to the missed-heartbeat rule and update its device status.

Resource handling
    :class:`ScaipDecoding` is an async context manager: entering starts its writer,
    leaving stops it (a request still waiting gets no answer: its unit resends). The
    receiver enters it before listening and leaves it once requests in flight are done.

Error handling
    Bad input is answered (and dead-lettered), never raised. More than
    ``max_in_flight`` requests at once -> ``503`` with ``Retry-After: 1`` (the unit
    retries). Storage unavailable (``gateway.failures``) -> ``503`` with
    ``Retry-After: 5`` (nothing acknowledged), logged. A poison request (the pipeline's
    ``poison``: anything else raised) is dead-lettered with the stage and exception
    class and answered ``<mrs>`` 5 (not treated) when it failed in processing, ``500``
    when it failed before. A TCP stream that cannot be framed is dead-lettered
    and marked broken (:attr:`ScaipStream.broken`: the receiver closes it unanswered).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter, OrderedDict
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine
from datetime import datetime
from types import TracebackType
from typing import Any, Final, Self

from telecare.devices.codecs import Incomplete, Malformed, scaip, sip
from telecare.devices.model import Device, EventType, ReceiverKind
from telecare.gateway.config import ScaipConfig
from telecare.gateway.decode import Registry, Rejected
from telecare.gateway.decode_receivers import EventWriter, Sink
from telecare.gateway.envelope import Envelope
from telecare.gateway.failures import is_storage_unavailable
from telecare.gateway.logging import get_logger
from telecare.gateway.store.rows import StatusItem
from telecare.gateway.tasks import Supervisor
from telecare.rules.clock import Clock

__all__ = ["AccountLookup", "Later", "ScaipDecoding", "ScaipStream"]

log = get_logger("telecare.decode.scaip")

#: ``(kind, account, zone) -> device`` (``Registry.receiver_device``).
AccountLookup = Callable[[ReceiverKind, str, str], Awaitable[Device | None]]
#: ``(device, now)``: let the heartbeat rule watch a device heard for the first time.
Watch = Callable[[Device, datetime], None]
#: ``Store.write_status`` for heartbeats (best effort: the event is what is durable).
Status = Callable[[StatusItem], Awaitable[None]]
#: The answer to a datagram that needs work first: run it, send what it returns.
Later = Coroutine[Any, Any, bytes | None]
#: How long an answered UDP transaction's response is kept for retransmissions (64*T1).
ANSWERED_TTL_S: Final = 32.0
#: At most this many answered transactions are remembered.
ANSWERED_MAX: Final = 8192


class ScaipDecoding:
    """The decode stage of ``[receivers.scaip]`` (see the module docstring)."""

    def __init__(
        self,
        config: ScaipConfig,
        sink: Sink,
        lookup: AccountLookup,
        clock: Clock,
        *,
        watch: Watch | None = None,
        status: Status | None = None,
        supervisor: Supervisor | None = None,
    ) -> None:
        self.config = config
        self.sink = sink
        self.lookup = lookup
        self.clock = clock
        self.watch = watch
        self.status = status
        self.counters: Counter[str] = Counter()
        self.writer = EventWriter("scaip:store", sink, clock, supervisor=supervisor)
        #: Requests being processed at once (UDP and TCP): at most ``max_in_flight``.
        self.slots = asyncio.Semaphore(max(1, config.max_in_flight))
        self._pending: dict[tuple[Any, ...], float] = {}
        self._answered: OrderedDict[tuple[Any, ...], tuple[float, bytes]] = OrderedDict()
        self._watched: set[str] = set()
        self._to_tag = uuid.uuid4().hex[:10]

    @classmethod
    def with_registry(
        cls,
        config: ScaipConfig,
        sink: Sink,
        registry: Registry,
        clock: Clock,
        *,
        watch: Watch | None = None,
        status: Status | None = None,
        supervisor: Supervisor | None = None,
    ) -> ScaipDecoding:
        """The stage mapping ``cid`` through ``registry`` (the pipeline's: one
        provisioning check for every source)."""
        return cls(
            config,
            sink,
            registry.receiver_device,
            clock,
            watch=watch,
            status=status,
            supervisor=supervisor,
        )

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

    # -- UDP ---------------------------------------------------------------------------
    def datagram(self, env: Envelope) -> bytes | Later | None:
        """What to do with one datagram, decided at once: ``None`` (send nothing),
        bytes to send now (a retransmission's answer, 503 busy, a SIP error), or the
        :data:`Later` work whose result is the answer (a request to process)."""
        self.counters["datagrams"] += 1
        try:
            message, _ = sip.parse(env.payload, stream=False)
        except Malformed as exc:
            if exc.reason.startswith("keep-alive"):
                return None
            return self.reject_bytes(env.payload, env, f"SIP: {exc.reason}")
        if not isinstance(message, sip.SipRequest):
            return None  # a response: we send no requests
        key = (env.origin, *message.transaction_key)
        answered = self._answered.get(key)
        if answered is not None and time.monotonic() - answered[0] < ANSWERED_TTL_S:
            self.counters["retransmissions"] += 1
            return answered[1]
        if key in self._pending:
            self.counters["retransmissions"] += 1
            return None  # still being processed: it will be answered
        if len(self._pending) >= self.config.max_in_flight:
            self.counters["busy"] += 1  # bounded: a flood cannot pile up work
            return self.busy_reply(message)
        self._pending[key] = env.received_at.timestamp()
        return self._transaction(message, env, key)

    async def _transaction(
        self, message: sip.SipRequest, env: Envelope, key: tuple[Any, ...]
    ) -> bytes | None:
        try:
            async with self.slots:
                response = await self.respond(message, env)
        finally:
            self._pending.pop(key, None)
        if response is not None:
            self._remember(key, response)
        return response

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
    def stream(self, origin: str) -> ScaipStream:
        """The framing state of one TCP or TLS connection from ``origin``."""
        return ScaipStream(self, origin)

    def busy(self) -> bool:
        """Whether ``max_in_flight`` requests are being processed."""
        return self.slots.locked()

    # -- the request -------------------------------------------------------------------
    async def respond(self, request: sip.SipRequest, env: Envelope) -> bytes | None:
        """The response to one request (``None`` for an ACK), after storing what it
        carried. Never raises for bad input."""
        self.counters["requests"] += 1
        try:
            return await self._respond(request, env)
        except Exception as exc:
            if is_storage_unavailable(exc):  # the registry or a dead letter: not now
                return self._store_failed(request, env, exc)
            await self._poison(request.body, env, "decode", exc)
            return self._build(request, scaip.Reply(500, "Server Internal Error"))

    async def _respond(self, request: sip.SipRequest, env: Envelope) -> bytes | None:
        checked = scaip.check_request(request)
        if checked is None:
            return None
        if isinstance(checked, scaip.Reply):
            if request.method != "OPTIONS":
                await self._dead_letter(request.body, env, _reply_reason(checked))
            return self._build(request, checked)
        return await self._mrq(request, checked, env)

    async def _mrq(self, request: sip.SipRequest, mrq: scaip.Mrq, env: Envelope) -> bytes:
        received_at = env.received_at
        device = await self.lookup(ReceiverKind.SCAIP, mrq.cid, mrq.did or "")
        if device is None:
            self.counters["unknown_cid"] += 1
            return await self._refuse(
                request,
                env,
                scaip.ScaipError(
                    f"SCAIP cid {mrq.cid!r} is not mapped to a device "
                    f"(telecare device map-account DEVICE scaip:{mrq.cid})",
                    scaip.Snu.NOT_TREATED,
                    mrq.ref,
                ),
            )
        try:
            event = scaip.to_event(
                mrq,
                device_id=device.device_id,
                ts=received_at,
                site_id=device.site_id,
                resident_id=device.resident_id,
            ).received(received_at)
        except scaip.ScaipError as exc:
            return await self._refuse(request, env, exc, device)
        if self.watch is not None and device.device_id not in self._watched:
            self.watch(device, received_at)
            self._watched.add(device.device_id)
        try:
            await self.writer.store([event])
        except Rejected as exc:
            error = scaip.ScaipError(exc.reason, scaip.Snu.WRONG_DATA_CONTENT, mrq.ref)
            return await self._refuse(request, env, error, device)
        except Exception as exc:
            if is_storage_unavailable(exc):
                return self._store_failed(request, env, exc)
            # A poison event: never taken, so the unit must not believe it was (it falls
            # back); retrying would fail again.
            await self._poison(request.body, env, "process", exc, device.device_id)
            refusal = scaip.ScaipError("not processed", scaip.Snu.NOT_TREATED, mrq.ref)
            return self._build(request, scaip.reject(refusal))
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
                await self.status(StatusItem(device.device_id, received_at, heartbeat=True))
            except Exception as exc:  # the event is stored: the status is a convenience
                log.warning("scaip_status_failed", device_id=device.device_id, error=repr(exc))
        return self._build(request, scaip.accepted(mrq.ref))

    async def _refuse(
        self,
        request: sip.SipRequest,
        env: Envelope,
        exc: scaip.ScaipError,
        device: Device | None = None,
    ) -> bytes:
        await self._dead_letter(request.body, env, exc.reason, device)
        return self._build(request, scaip.reject(exc))

    def _store_failed(self, request: sip.SipRequest, env: Envelope, exc: Exception) -> bytes:
        self.counters["store_failed"] += 1
        log.error("scaip_store_failed", origin=env.origin, error=repr(exc))
        return self._build(request, _unavailable())

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

    def busy_reply(self, request: sip.SipRequest) -> bytes:
        return self._build(
            request, scaip.Reply(503, "Service Unavailable", (("Retry-After", "1"),))
        )

    async def reject_bytes(self, payload: bytes, env: Envelope, reason: str) -> None:
        """Dead-letter bytes that are not SIP (nothing is answered)."""
        await self._dead_letter(payload, env, reason)

    async def _dead_letter(
        self, payload: bytes, env: Envelope, reason: str, device: Device | None = None
    ) -> None:
        self.counters["dead_letters"] += 1
        letter = self._letter(payload, env)
        try:
            await self.sink.dead_letter(letter, reason, device.device_id if device else None)
        except Exception as exc:  # the unit has its answer; losing the letter is logged
            log.error("scaip_dead_letter_failed", origin=env.origin, error=repr(exc))

    async def _poison(
        self,
        payload: bytes,
        env: Envelope,
        stage: str,
        exc: Exception,
        device_id: str | None = None,
    ) -> None:
        self.counters["poison"] += 1
        try:
            await self.sink.poison(self._letter(payload, env), stage, exc, device_id)
        except Exception as error:  # the unit has its answer; losing the letter is logged
            log.error("scaip_dead_letter_failed", origin=env.origin, error=repr(error))

    @staticmethod
    def _letter(payload: bytes, env: Envelope) -> Envelope:
        """What a dead letter keeps of a request: its first 4 KiB."""
        return Envelope("scaip", env.origin, payload[:4096], env.received_at)


class ScaipStream:
    """One TCP or TLS connection's bytes: SIP messages framed by ``Content-Length``,
    answered in order."""

    def __init__(self, decoding: ScaipDecoding, origin: str) -> None:
        self.decoding = decoding
        self.origin = origin
        #: The stream cannot be framed any more: close it (it was dead-lettered).
        self.broken = False
        self._buf = b""

    async def feed(self, env: Envelope) -> AsyncGenerator[bytes, None]:
        """The responses to the requests ``env``'s chunk completes, each once what it
        carried is stored; past ``max_in_flight`` a request gets ``503`` at once."""
        decoding = self.decoding
        self._buf += env.payload
        while self._buf and not self.broken:
            try:
                message, used = sip.parse(self._buf, stream=True)
            except Incomplete:
                return
            except Malformed as exc:
                if exc.reason.startswith("keep-alive"):
                    self._buf = self._buf[exc.skip :]
                    continue
                self.broken = True  # cannot find the next message on this stream
                await decoding.reject_bytes(self._buf, env, f"SIP: {exc.reason}")
                return
            self._buf = self._buf[used:]
            if not isinstance(message, sip.SipRequest):
                continue
            if decoding.busy():
                decoding.counters["busy"] += 1
                response: bytes | None = decoding.busy_reply(message)
            else:
                async with decoding.slots:
                    response = await decoding.respond(message, env)
            if response is not None:
                yield response


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
