"""SCAIP receiver: a SIP listener (UDP, TCP, optionally TLS) for social-alarm units.

A unit sends a SIP ``MESSAGE`` with an ``<mrq>`` body; the receiver answers ``200 OK``
with an ``<mrs>`` echoing ``ref`` once the alarm is stored. The listener only moves
bytes: every datagram, and every chunk read from a TCP/TLS connection, becomes an
:class:`~telecare.gateway.envelope.Envelope` (``source="scaip"``, origin
``<udp|tcp|tls>:<peer address>:<peer port>``, the receive time) handed to the decode
stage (:class:`~telecare.gateway.decode_scaip.ScaipDecoding`: SIP framing and
transactions, the SCAIP checks, ``cid`` -> device, storing), and what the stage answers
is sent back. The stage answers an alarm only once it is stored (or spooled). Responses
go to the datagram's source address (``rport`` behaviour: what NATed units need).

Resource handling
    :class:`ScaipReceiver` is an async context manager owning the UDP endpoint, the TCP
    and TLS servers and one task per request or connection; it enters its decode stage
    (the store writer ``scaip:store``) first and leaves it last. Leaving stops
    accepting, lets requests in flight finish (up to ``drain_s``), then cancels the rest
    and leaves the stage.

Error handling
    Bad input never raises out of the receiver: the stage answers and dead-letters it. A
    TCP connection whose bytes cannot be framed is answered nothing and closed. A
    connection lost (or a TLS error) ends that connection only, logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ssl
from collections import Counter
from collections.abc import Awaitable
from types import TracebackType
from typing import Any, Self

from telecare.gateway.config import ScaipConfig
from telecare.gateway.decode_scaip import Later, ScaipDecoding
from telecare.gateway.envelope import Envelope
from telecare.gateway.logging import get_logger
from telecare.rules.clock import Clock

__all__ = ["ScaipReceiver"]

log = get_logger("telecare.ingest.scaip")

READ_SIZE = 65536
#: Stop waiting for in-flight requests this long after leaving.
DRAIN_S = 5.0


class ScaipReceiver:
    """The SCAIP listener (see the module docstring). ``udp_address`` / ``tcp_address`` /
    ``tls_address`` are the bound ``(host, port)`` once entered."""

    def __init__(
        self,
        config: ScaipConfig,
        decoding: ScaipDecoding,
        clock: Clock,
        *,
        ssl_context: ssl.SSLContext | None = None,
        drain_s: float = DRAIN_S,
    ) -> None:
        self.config = config
        self.decoding = decoding
        self.clock = clock
        self.ssl_context = ssl_context
        self.drain_s = drain_s
        self.udp_address: tuple[str, int] | None = None
        self.tcp_address: tuple[str, int] | None = None
        self.tls_address: tuple[str, int] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        #: TCP/TLS connection tasks -> whether a request is being processed on it.
        self._connections: dict[asyncio.Task[Any], bool] = {}
        self._udp: asyncio.DatagramTransport | None = None
        self._servers: list[asyncio.Server] = []

    @property
    def counters(self) -> Counter[str]:
        """The figures of the listener and its decode stage (one counter)."""
        return self.decoding.counters

    # -- lifetime ----------------------------------------------------------------------
    async def __aenter__(self) -> Self:
        cfg = self.config
        await self.decoding.__aenter__()
        # With port 0 (any free port) UDP and TCP share the port UDP got; if another
        # process holds that TCP port, try again with another one.
        attempts = 20 if cfg.port == 0 else 1
        for attempt in range(attempts):
            try:
                await self._listen(cfg)
                break
            except OSError as exc:
                await self._close(final=exc.errno != errno.EADDRINUSE or attempt == attempts - 1)
                if exc.errno != errno.EADDRINUSE or attempt == attempts - 1:
                    raise
            except BaseException:
                await self._close()
                raise
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

    async def _close(self, *, final: bool = True) -> None:
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
        for server in self._servers:
            with contextlib.suppress(Exception):
                await server.wait_closed()
        self._servers.clear()
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if final:
            await self.decoding.__aexit__(None, None, None)

    def _spawn(self, coro: Awaitable[None], name: str) -> None:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- UDP ---------------------------------------------------------------------------
    def datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        """One datagram arrived (called by the protocol, synchronously)."""
        env = Envelope("scaip", f"udp:{addr[0]}:{addr[1]}", data, self.clock.now())
        answer = self.decoding.datagram(env)
        if isinstance(answer, bytes):
            self._send_udp(answer, addr)
        elif answer is not None:
            self._spawn(self._answer_later(answer, addr), "scaip:udp")

    async def _answer_later(self, work: Later, addr: tuple[str, int]) -> None:
        response = await work
        if response is not None:
            self._send_udp(response, addr)

    def _send_udp(self, data: bytes, addr: tuple[str, int]) -> None:
        if self._udp is not None and not self._udp.is_closing():
            self._udp.sendto(data, addr)

    # -- TCP / TLS ---------------------------------------------------------------------
    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections[task] = False
            task.add_done_callback(self._connections.pop)
        peer = writer.get_extra_info("peername") or ("?", 0)
        scheme = "tls" if writer.get_extra_info("sslcontext") is not None else "tcp"
        origin = f"{scheme}:{peer[0]}:{peer[1]}"
        stream = self.decoding.stream(origin)
        try:
            while not stream.broken:
                try:
                    async with asyncio.timeout(self.config.idle_timeout_s):
                        chunk = await reader.read(READ_SIZE)
                except TimeoutError:
                    return
                if not chunk:
                    return
                env = Envelope("scaip", origin, chunk, self.clock.now())
                if task is not None:
                    self._connections[task] = True  # busy: let it finish on exit
                async with contextlib.aclosing(stream.feed(env)) as responses:
                    async for response in responses:
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


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, receiver: ScaipReceiver) -> None:
        self.receiver = receiver

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.receiver.datagram(data, (str(addr[0]), int(addr[1])))

    def error_received(self, exc: Exception) -> None:
        log.warning("scaip_udp_error", error=str(exc))


def _tls_context(cfg: ScaipConfig) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cfg.tls_cert, cfg.tls_key)
    return context


def _bound(sockname: Any) -> tuple[str, int]:
    return str(sockname[0]), int(sockname[1])


def _fmt(address: tuple[str, int] | None) -> str | None:
    return f"{address[0]}:{address[1]}" if address else None
