"""Serial ingest: one asyncio reader per configured port (pyserial-asyncio-fast).

A reader only moves bytes. It opens its port with the codec's line settings
(``devices.codecs.registry``: 19200 8-O-1 for a CMS50D+, 9600 8-N-1 for an alarm
receiver...), and hands every chunk it reads, as an
:class:`~telecare.gateway.envelope.Envelope` (``source="serial"``, the port as origin,
the receive time), to the port's decode stage
(:class:`~telecare.gateway.decode_serial.StreamDecoder`: framing, the device lookup,
the model, storing), waiting until that has stored it: a serial line has no
redelivery, so the port is not read while storage is away. It also tells the stage when
the port opened, stayed quiet for ``report_interval`` and closed.

Resource handling
    :class:`SerialIngest` is an async context manager running one supervised loop per
    port, ``serial:<port>`` (:mod:`telecare.gateway.tasks`), in the gateway's supervisor
    (or a private one when used alone). Leaving stops them and closes the ports.

Error handling
    Open failures and unplugs (``OSError``, ``SerialException``, ``termios.error``,
    EOF) -> close, wait the port's :class:`~telecare.gateway.backoff.Backoff`, reopen,
    forever, logged (``serial_closed``, ``loop_retry``). Storage unavailable escaping
    the stage (it retries writes itself) -> the same. Anything else -> ``loop_failed``
    and the gateway stops, loudly: a port never stops reading unseen.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import termios
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Self

import serial
import serial_asyncio_fast

from telecare.devices.codecs import registry
from telecare.gateway.backoff import Backoff
from telecare.gateway.decode_serial import PortStats, SerialDecoding, StreamDecoder
from telecare.gateway.envelope import Envelope
from telecare.gateway.failures import is_storage_unavailable
from telecare.gateway.logging import get_logger
from telecare.gateway.tasks import Loop, Loops, Supervisor, supervise
from telecare.rules.clock import Clock

__all__ = ["PORT_ERRORS", "PortClosed", "PortReader", "SerialIngest", "open_port"]

log = get_logger("telecare.ingest.serial")

#: Bytes asked for per read (a CMS50D+ sends 300 B/s; a burst from a USB adapter is
#: at most a few KiB).
READ_SIZE = 4096
Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]
Opener = Callable[[str, registry.LineSettings], Awaitable[Streams]]
#: What opening or reading a port raises when the device is away or refuses a setting.
PORT_ERRORS = (OSError, serial.SerialException, termios.error)


class PortClosed(Exception):
    """The port reached end of file or failed: the loop reopens it after its backoff."""


def _retried(exc: BaseException) -> bool:
    """What a port's loop retries: the port going away, and storage being unavailable."""
    return isinstance(exc, (*PORT_ERRORS, PortClosed)) or is_storage_unavailable(exc)


def _is_pty(url: str) -> bool:
    return os.path.realpath(url).startswith("/dev/pts/")


async def open_port(url: str, line: registry.LineSettings) -> Streams:
    """Open ``url`` with ``line`` settings as an asyncio stream pair.

    A pseudo-terminal (``/dev/pts/N``: simulators, tests, ``socat`` bridges) carries no
    parity: some kernels reject it with ``EINVAL`` once set. For a pty only, the port is
    then opened again without parity; a real port never gets settings it did not ask for.
    """
    kwargs: dict[str, Any] = {
        "url": url,
        "baudrate": line.baudrate,
        "bytesize": line.bytesize,
        "parity": line.parity,
        "stopbits": line.stopbits,
    }
    try:
        return await serial_asyncio_fast.open_serial_connection(**kwargs)
    except termios.error:
        if line.parity == "N" or not _is_pty(url):
            raise
    log.warning("serial_pty_parity_ignored", port=url, parity=line.parity)
    kwargs["parity"] = "N"
    return await serial_asyncio_fast.open_serial_connection(**kwargs)


class PortReader:
    """Reads one port until cancelled (see the module docstring)."""

    def __init__(
        self,
        stage: StreamDecoder,
        clock: Clock,
        *,
        backoff: Backoff | None = None,
        opener: Opener | None = None,
    ) -> None:
        self.stage = stage
        self.config = stage.config
        self.codec = stage.codec
        self.clock = clock
        self.backoff = backoff or Backoff()
        #: Set while the port is open (tests wait on it before writing).
        self.is_open = asyncio.Event()
        self._open = opener or open_port

    @property
    def stats(self) -> PortStats:
        return self.stage.stats

    @property
    def port(self) -> str:
        return self.config.port

    def loop(self) -> Loop:
        """This port's supervised loop, ``serial:<port>`` (see "Error handling" above)."""
        return Loop(f"serial:{self.port}", self._session, retry=_retried, backoff=self.backoff)

    async def run(self) -> None:
        """Read the port until cancelled (the supervised loop, run in the caller's task)."""
        await supervise(self.loop())

    async def _session(self) -> None:
        """Open the port and read it until it closes; always ends by raising (a port
        error, :class:`PortClosed`), which the loop retries after its backoff."""
        reader, writer = await self._open(self.port, self.codec.line)
        self.stats.opened += 1
        self.backoff.reset()
        self.is_open.set()
        log.info("serial_open", port=self.port, codec=self.codec.name, line=self.codec.line)
        self.stage.start()
        try:
            await self._read(reader)
            reason = "end of file"
        except PORT_ERRORS as exc:
            reason = str(exc)
        finally:
            self.is_open.clear()
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
        log.warning("serial_closed", port=self.port, reason=reason)
        await self.stage.closed()
        raise PortClosed(f"{self.port}: {reason}")

    async def _read(self, reader: asyncio.StreamReader) -> None:
        stage = self.stage
        timeout = max(0.05, stage.report_interval)
        while True:
            try:
                async with asyncio.timeout(timeout):
                    chunk = await reader.read(READ_SIZE)
            except TimeoutError:
                await stage.idle()
                continue
            if not chunk:
                return
            self.stats.bytes += len(chunk)
            await stage.feed(Envelope("serial", self.port, chunk, self.clock.now()))


class SerialIngest:
    """One :class:`PortReader` per port of ``decoding`` (the ports' decode stage)."""

    def __init__(
        self,
        decoding: SerialDecoding,
        clock: Clock,
        *,
        backoff: Callable[[], Backoff] = Backoff,
        supervisor: Supervisor | None = None,
    ) -> None:
        self.readers = [
            PortReader(stage, clock, backoff=backoff()) for stage in decoding.streams.values()
        ]
        self._loops = Loops(supervisor)

    async def __aenter__(self) -> Self:
        await self._loops.start(*(r.loop() for r in self.readers))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._loops.stop()

    def stats(self) -> dict[str, PortStats]:
        return {r.port: r.stats for r in self.readers}
