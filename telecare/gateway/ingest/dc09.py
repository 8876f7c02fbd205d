"""SIA DC-09 receiver: TCP and UDP listeners for IP alarm units (dispersed alarms).

Bytes in, replies out. Every UDP datagram and every chunk read from a TCP connection
becomes an :class:`~telecare.gateway.envelope.Envelope` (``source="dc09"``, origin
``dc09/<tcp|udp>/<peer address>``, the receive time) handed to the decode stage
(:class:`~telecare.gateway.decode_dc09.Dc09Decoding`: framing, codec, keys, checks,
account -> device, storing); the listener sends back what the stage answers. The stage
answers a frame only once what it carried is stored (or spooled), so the ``ACK`` goes out
**only after the store**. Frames on one TCP connection are handled one after the other,
in order.

Resource handling
    :class:`Dc09Receiver` is an async context manager. Entering enters the decode stage
    (its store writer), binds the TCP server and the UDP endpoint and starts
    ``UDP_WORKERS`` supervised loops (``dc09:udp:N``, :mod:`telecare.gateway.tasks`) fed
    by a bounded queue; every TCP connection runs in its own task (at most
    ``max_connections``). Leaving stops accepting, cancels the connections and workers
    and awaits them, then leaves the stage; an alarm being stored when that happens is
    not acknowledged and the unit resends it.

Error handling
    Bad input is answered by the stage (NAK or DUH) and never ends a connection. A
    storage error (the stage raised): logged, no reply, the TCP connection is closed;
    the unit retries. A full UDP queue: the datagram is dropped unanswered (counted);
    the unit retries. Nothing else is caught.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from types import TracebackType
from typing import Final, Self

from telecare.gateway.config import Dc09Config
from telecare.gateway.decode_dc09 import Dc09Decoding
from telecare.gateway.envelope import Envelope
from telecare.gateway.logging import get_logger
from telecare.gateway.tasks import Loop, Loops, Supervisor
from telecare.rules.clock import Clock

__all__ = ["Dc09Receiver"]

log = get_logger("telecare.ingest.dc09")

#: Bytes asked for per TCP read (a frame is under 200 bytes; a unit sends one at a time).
READ_SIZE: Final = 4096
#: Datagrams waiting for a UDP worker. Units wait for the reply before sending the next
#: message, so this only fills when many units send at once; past it a datagram is
#: dropped unanswered and its unit retries.
UDP_QUEUE: Final = 1024
UDP_WORKERS: Final = 8


class Dc09Receiver:
    """The TCP and UDP listeners of ``[receivers.dc09]`` (see the module docstring)."""

    def __init__(
        self,
        config: Dc09Config,
        decoding: Dc09Decoding,
        clock: Clock,
        *,
        supervisor: Supervisor | None = None,
    ) -> None:
        self.config = config
        self.decoding = decoding
        self.clock = clock
        self._loops = Loops(supervisor)
        self.tcp_port: int | None = None
        self.udp_port: int | None = None
        self._server: asyncio.Server | None = None
        self._udp: asyncio.DatagramTransport | None = None
        self._queue: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue(UDP_QUEUE)
        self._tasks: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(config.max_connections)

    @property
    def counters(self) -> Counter[str]:
        """The figures of the listeners and their decode stage (one counter)."""
        return self.decoding.counters

    async def __aenter__(self) -> Self:
        c = self.config
        await self.decoding.__aenter__()
        try:
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
        await self.decoding.__aexit__(exc_type, exc, tb)

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
        stream = self.decoding.stream(origin)
        while True:
            async with asyncio.timeout(self.config.idle_timeout_s):
                chunk = await reader.read(READ_SIZE)
            if not chunk:
                return
            env = Envelope("dc09", origin, chunk, self.clock.now())
            async with contextlib.aclosing(stream.feed(env)) as replies:
                async for reply in replies:
                    writer.write(reply)
                    await writer.drain()

    # -- UDP --------------------------------------------------------------------------
    def _datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            self._queue.put_nowait((data, addr))
        except asyncio.QueueFull:
            self.counters["udp_dropped"] += 1

    async def _udp_step(self) -> None:
        """Answer the next datagram (one step of a ``dc09:udp:N`` loop)."""
        data, addr = await self._queue.get()
        origin = f"dc09/udp/{addr[0]}"
        try:
            reply = await self.decoding.datagram(Envelope("dc09", origin, data, self.clock.now()))
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
