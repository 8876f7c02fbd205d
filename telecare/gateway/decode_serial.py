"""The decode stage of serial byte streams: what a port's bytes mean.

The serial reader (``gateway.ingest.serial``) only moves bytes: every chunk it reads is
an :class:`~telecare.gateway.envelope.Envelope` (``source="serial"``, the port as its
origin, the receive time) handed to this stage's :meth:`StreamDecoder.feed`; it also
says when the port opened (:meth:`~StreamDecoder.start`), stayed quiet
(:meth:`~StreamDecoder.idle`) and closed (:meth:`~StreamDecoder.closed`). Everything
else happens here, once per port, next to the pipeline's provisioning registry
(``gateway.decode``): the codec's incremental framing, the device lookup, the model.

* oximeter samples go through :class:`devices.reduce.OximeterReducer` (a reading per
  metric per second, or at once on a significant change) -> ``handle_readings``;
* any other frame goes through the codec's ``to_model`` -> readings, or alarm events
  (Contact ID) -> ``handle_event``.

Readings and events are attributed to the device configured for the port and to the
resident and site that device is paired with in the store (looked up through the
pipeline's cached registry, so re-pairing takes effect within its TTL; while the
database is away the registry serves what it last knew).

Contact ID receiver lines are different: the port's device is the receiver, and each
message names the subscriber by its account (and zone). Each message is attributed to
the device its account maps to (``receiver_accounts``, kind ``contact_id``; a zone
mapping wins over the account-wide one). A message whose account maps to nothing is
dead-lettered (``Contact ID account ... is not mapped``), never attributed to the
receiver or to another subscriber.

Timestamps: a chunk read from the port may hold many frames (USB adapters deliver in
bursts). Frame ``i`` of ``n`` gets ``received_at - (n-1-i)/rate_hz`` (the codec's frame
rate), kept strictly increasing per port, so reduced readings keep distinct ids.

Resends: a device that sends a frame again (an A&D cuff that got no confirmation) gives
it the same message id; the stage remembers the last ``RECENT_IDS`` ids of non-oximeter
frames per port and drops such a frame instead of storing it under a new receive time.

Noise and partial frames: the framing resynchronises and reports what it skipped. Skips
are aggregated per port into at most one dead letter per ``report_interval`` seconds
(``serial noise: skipped N bytes in K bursts ...``; its payload is the first noisy chunk
of the period, truncated), never one per byte. A partial frame left in the buffer when
the port goes away is dead-lettered as ``partial frame``.

Error handling
    A device that is not provisioned -> its data is dead-lettered (rate-limited like
    noise) until it is. Storage unavailable (``gateway.failures``), for a write or for
    the device lookup (only a device the registry has never seen) -> retried with
    backoff until done (``retry_until_done``; the port is not read meanwhile: a serial
    line has no redelivery, so dropping would lose data). Any other exception while
    turning a frame into the model or processing what it carried -> that frame is a
    poison message: dead-lettered through the pipeline's one guarded stage
    (``Sink.guarded``: the stage and exception class as the reason, the chunk it came in
    as the payload) and the port reads on. A codec name that is unknown or not a stream
    codec -> :class:`~telecare.gateway.errors.ConfigError` when the stage is built.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any, Protocol, TypeVar

from telecare.devices.codecs import Malformed, registry
from telecare.devices.codecs.contact_id import ContactIdMessage
from telecare.devices.codecs.oximetry import OximeterSample
from telecare.devices.codecs.stream import FrameDecoder
from telecare.devices.model import AlarmEvent, Device, Reading, ReceiverKind
from telecare.devices.reduce import OximeterReducer
from telecare.gateway.backoff import Backoff
from telecare.gateway.config import SerialPortConfig
from telecare.gateway.decode import Registry
from telecare.gateway.envelope import Envelope
from telecare.gateway.errors import ConfigError
from telecare.gateway.failures import is_storage_unavailable
from telecare.gateway.logging import get_logger
from telecare.gateway.tasks import Loop, retry_until_done
from telecare.rules.clock import Clock

__all__ = ["AccountLookup", "Lookup", "PortStats", "SerialDecoding", "Sink", "StreamDecoder"]

log = get_logger("telecare.decode.serial")

#: Bytes of a noisy chunk kept as the dead letter's payload.
NOISE_SAMPLE_BYTES = 512
#: Message ids remembered per port to drop a frame the device resends.
RECENT_IDS = 256

Lookup = Callable[[str], Awaitable[Device | None]]
#: ``(kind, account, zone) -> device`` (``Registry.receiver_device``).
AccountLookup = Callable[[ReceiverKind, str, str], Awaitable[Device | None]]

_T = TypeVar("_T")


class Sink(Protocol):
    """What a serial reader needs from the pipeline."""

    async def handle_readings(self, readings: list[Reading]) -> None: ...

    async def handle_event(self, event: AlarmEvent) -> None: ...

    async def dead_letter(
        self, env: Envelope, reason: str, device_id: str | None = None
    ) -> None: ...

    async def guarded(
        self,
        env: Envelope,
        stage: str,
        work: Callable[[], Awaitable[object]],
        device_id: str | None = None,
    ) -> bool: ...

    async def poison(
        self, env: Envelope, stage: str, exc: BaseException, device_id: str | None = None
    ) -> None: ...


@dataclass
class PortStats:
    """Per-port figures (exposed as metrics)."""

    opened: int = 0
    bytes: int = 0
    frames: int = 0
    readings: int = 0
    events: int = 0
    skipped_bytes: int = 0
    dead_letters: int = 0


class _NoiseReport:
    """Skips and unprovisioned data aggregated into one dead letter per interval."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.nbytes = 0
        self.bursts = 0
        self.first_reason = ""
        self.sample = b""
        self.last_report = float("-inf")

    def add(self, nbytes: int, bursts: int, reason: str, chunk: bytes) -> None:
        if self.nbytes == 0:
            self.first_reason = reason
            self.sample = chunk[:NOISE_SAMPLE_BYTES]
        self.nbytes += nbytes
        self.bursts += bursts

    def due(self, now: float) -> bool:
        return self.nbytes > 0 and now - self.last_report >= self.interval

    def take(self, now: float) -> tuple[str, bytes]:
        reason = (
            f"serial noise: skipped {self.nbytes} bytes in {self.bursts} bursts"
            f" (first: {self.first_reason})"
        )
        sample = self.sample
        self.nbytes = self.bursts = 0
        self.first_reason, self.sample = "", b""
        self.last_report = now
        return reason, sample


class StreamDecoder:
    """The decode stage of one port (see the module docstring)."""

    def __init__(
        self,
        config: SerialPortConfig,
        sink: Sink,
        lookup: Lookup,
        clock: Clock,
        *,
        report_interval: float = 10.0,
        accounts: AccountLookup | None = None,
    ) -> None:
        self.config = config
        self.codec = _stream_codec(config)
        self.sink = sink
        self.lookup = lookup
        self.accounts = accounts
        self.clock = clock
        #: The port's figures (the reader adds what it opened and read).
        self.stats = PortStats()
        self._noise = _NoiseReport(report_interval)
        self._decoder: FrameDecoder[Any] | None = None
        self._last_ts: datetime | None = None
        self._reducer: OximeterReducer | None = None
        #: Message ids of recent non-oximeter frames: a device that resends a frame (an
        #: A&D cuff without a confirmation) carries the same id, with a new receive time.
        self._recent_ids: OrderedDict[str, None] = OrderedDict()

    @property
    def port(self) -> str:
        return self.config.port

    @property
    def report_interval(self) -> float:
        """Seconds between noise reports (the reader calls :meth:`idle` at least as often)."""
        return self._noise.interval

    def start(self) -> None:
        """The port was (re)opened: framing starts afresh."""
        self._decoder = self.codec.new_decoder()
        self._reducer = None

    async def idle(self) -> None:
        """Nothing arrived for ``report_interval``: report noise that is due."""
        await self._flush_noise()

    async def closed(self) -> None:
        """The port went away: report a partial frame and the noise not yet reported."""
        await self._partial_frame()
        await self._flush_noise(force=True)
        self._decoder = None

    async def feed(self, env: Envelope) -> None:
        """Decode one chunk read from the port and hand on what it carried; returns once
        that is stored or spooled (or dead-lettered), retrying while storage is away."""
        decoder = self._decoder
        if decoder is None:
            raise RuntimeError(f"{self.port}: start() the stream before feeding it")
        chunk = env.payload
        frames = decoder.feed(chunk)
        skips = decoder.pop_skips()
        if skips:
            n = sum(s.nbytes for s in skips)
            self.stats.skipped_bytes += n
            self._noise.add(n, len(skips), skips[0].reason, chunk)
        if frames:
            self.stats.frames += len(frames)
            device = await self._until_done("lookup", partial(self.lookup, self.config.device_id))
            if device is None:
                await self._unprovisioned(chunk, len(frames))
            else:
                await self._frames(frames, device, env)
        if self._noise.due(asyncio.get_running_loop().time()):
            await self._flush_noise()

    async def _frames(self, frames: Sequence[Any], device: Device, chunk: Envelope) -> None:
        readings: list[Reading] = []
        events: list[AlarmEvent] = []
        env = dataclasses.replace(chunk, payload=chunk.payload[:NOISE_SAMPLE_BYTES])
        for frame, ts in zip(frames, self._timestamps(len(frames), env.received_at), strict=True):
            try:
                if isinstance(frame, OximeterSample):
                    readings.extend(self._reducer_for(device).push(frame, ts))
                    continue
                owner = device
                if isinstance(frame, ContactIdMessage):
                    mapped = await self._subscriber(frame)
                    if mapped is None:
                        continue
                    owner = mapped
                items = self.codec.to_model(
                    frame,
                    device_id=owner.device_id,
                    ts=ts,
                    resident_id=owner.resident_id,
                    site_id=owner.site_id,
                )
                if items and self._resent(items[0].msg_id):
                    log.info("serial_resend_dropped", port=self.port, msg_id=items[0].msg_id)
                    continue
                for item in items:
                    if isinstance(item, AlarmEvent):
                        events.append(item)
                    else:
                        readings.append(item)
            except Malformed as exc:
                await self._dead_letter(exc.reason, repr(frame).encode()[:NOISE_SAMPLE_BYTES])
            except Exception as exc:  # a poison frame: dead-letter it, read on
                self.stats.dead_letters += 1
                await self._stored(partial(self._poison, env, exc))
        if readings:
            stored = await self._guarded(env, lambda: self.sink.handle_readings(readings))
            if stored:
                self.stats.readings += len(readings)
        for event in events:
            if not await self._guarded(env, partial(self.sink.handle_event, event)):
                continue
            self.stats.events += 1
            log.info(
                "serial_event",
                port=self.port,
                device_id=event.device_id,
                event_type=event.type,
                phase=event.phase,
            )

    async def _poison(self, env: Envelope, exc: BaseException, _: object) -> None:
        await self.sink.poison(env, "decode", exc, self.config.device_id)

    async def _guarded(self, env: Envelope, work: Callable[[], Awaitable[object]]) -> bool:
        """``work`` through the pipeline's guarded stage, retried while storage is away;
        ``False`` when it was dead-lettered instead."""
        done: list[bool] = []

        async def attempt(_: object) -> None:
            done.append(await self.sink.guarded(env, "process", work, self.config.device_id))

        await self._stored(attempt, None)
        if not done[-1]:
            self.stats.dead_letters += 1
        return done[-1]

    def _resent(self, msg_id: str) -> bool:
        """Whether ``msg_id`` came from this port recently (remembers the last 256)."""
        if msg_id in self._recent_ids:
            return True
        self._recent_ids[msg_id] = None
        if len(self._recent_ids) > RECENT_IDS:
            self._recent_ids.popitem(last=False)
        return False

    async def _subscriber(self, message: ContactIdMessage) -> Device | None:
        """The device a Contact ID message's account (and zone) maps to; dead-letters
        and returns ``None`` when it maps to nothing."""
        found = None
        if self.accounts is not None:
            found = await self.accounts(ReceiverKind.CONTACT_ID, message.account, message.zone)
        if found is None:
            await self._dead_letter(
                f"Contact ID account {message.account} zone {message.zone} on {self.port}"
                " is not mapped to a device (telecare device map-account DEVICE"
                f" contact_id:{message.account})",
                message.text.encode(),
            )
        return found

    def _reducer_for(self, device: Device) -> OximeterReducer:
        r = self._reducer
        if r is None or (r.resident_id, r.site_id) != (device.resident_id, device.site_id):
            r = self._reducer = OximeterReducer(
                device_id=device.device_id,
                msg_prefix=self.codec.name,
                resident_id=device.resident_id,
                site_id=device.site_id,
            )
        return r

    def _timestamps(self, n: int, now: datetime) -> list[datetime]:
        step = timedelta(seconds=1 / self.codec.rate_hz) if self.codec.rate_hz > 0 else None
        out: list[datetime] = []
        for i in range(n):
            ts = now - step * (n - 1 - i) if step is not None else now
            if self._last_ts is not None and ts <= self._last_ts:
                ts = self._last_ts + timedelta(milliseconds=1)
            out.append(ts)
            self._last_ts = ts
        return out

    async def _stored(self, write: Callable[[Any], Awaitable[None]], item: Any = None) -> None:
        """Write until it succeeds: a serial line cannot resend what we drop. Only
        storage-unavailable errors reach here (``Sink.guarded`` dead-letters the rest)."""
        await self._until_done("store", partial(write, item))

    async def _until_done(self, what: str, work: Callable[[], Awaitable[_T]]) -> _T:
        """``work`` retried while storage is unavailable (the port is not read meanwhile)."""
        backoff = Backoff(initial=0.2, cap=5.0)
        loop = Loop(f"serial:{self.port}:{what}", work, is_storage_unavailable, backoff)
        result: _T = await retry_until_done(loop)
        return result

    async def _unprovisioned(self, chunk: bytes, frames: int) -> None:
        reason = (
            f"device {self.config.device_id!r} on {self.port} is not provisioned;"
            f" {frames} frames dropped"
        )
        mono = asyncio.get_running_loop().time()
        if mono - self._noise.last_report >= self._noise.interval:
            self._noise.last_report = mono
            await self._dead_letter(reason, chunk[:NOISE_SAMPLE_BYTES])

    async def _partial_frame(self) -> None:
        pending = getattr(self._decoder, "pending", 0)
        if pending:
            await self._dead_letter(
                f"partial frame: {pending} bytes left when {self.port} closed", b""
            )

    async def _flush_noise(self, *, force: bool = False) -> None:
        mono = asyncio.get_running_loop().time()
        if self._noise.nbytes and (force or self._noise.due(mono)):
            reason, sample = self._noise.take(mono)
            await self._dead_letter(reason, sample)

    async def _dead_letter(self, reason: str, payload: bytes) -> None:
        env = Envelope("serial", self.port, payload, self.clock.now())
        self.stats.dead_letters += 1
        await self._stored(
            lambda _: self.sink.dead_letter(env, reason, self.config.device_id), None
        )


def _stream_codec(config: SerialPortConfig) -> registry.StreamCodec:
    try:
        codec = registry.get(config.codec)
    except KeyError as exc:
        raise ConfigError(f"Config 'serial' port {config.port}: {exc.args[0]}") from None
    if not isinstance(codec, registry.StreamCodec):
        raise ConfigError(
            f"Config 'serial' port {config.port}: codec {config.codec!r} is a message codec"
            " (BLE over MQTT), not a serial stream codec"
        )
    return codec


class SerialDecoding:
    """The decode stage of every configured port: one :class:`StreamDecoder` each."""

    def __init__(
        self,
        ports: Sequence[SerialPortConfig],
        sink: Sink,
        lookup: Lookup,
        clock: Clock,
        *,
        report_interval: float = 10.0,
        accounts: AccountLookup | None = None,
    ) -> None:
        self.streams = {
            p.port: StreamDecoder(
                p, sink, lookup, clock, report_interval=report_interval, accounts=accounts
            )
            for p in ports
        }

    @classmethod
    def with_registry(
        cls,
        ports: Sequence[SerialPortConfig],
        sink: Sink,
        registry: Registry,
        clock: Clock,
        *,
        report_interval: float = 10.0,
    ) -> SerialDecoding:
        """The stage for ``ports`` looking devices and accounts up in ``registry`` (the
        pipeline's: one provisioning check for every source)."""
        return cls(
            ports,
            sink,
            registry.device,
            clock,
            report_interval=report_interval,
            accounts=registry.receiver_device,
        )

    def __getitem__(self, port: str) -> StreamDecoder:
        return self.streams[port]
