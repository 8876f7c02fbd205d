"""``telecare receiver test``: send one message to the running receiver as a unit would.

    telecare receiver test --protocol dc09 --account 1234             periodic test call
    telecare receiver test --protocol dc09 --account 1234 --code 101  a real pendant alarm
    telecare receiver test --protocol dc09 --account 1234 --udp --sia
    telecare receiver test --protocol scaip --account 26317             PI heartbeat (TCP)
    telecare receiver test --protocol scaip --account 26317 --code 0010 --udp   an alarm

It proves the listener, the account's key, the account -> device mapping, the pipeline
and the store in one go: the receiver only acknowledges what it stored, so ``ACK`` means
stored (exit 0); no reply or a refusal exits 8 (``ExitCode.NO_ANSWER``). ``DUH`` names
the reason in the dead letters (``telecare`` console, or the
``dead_letters`` table). The host, port and key come from the configuration unless
given. Protocols: ``dc09`` (SIA DC-09), ``scaip`` (SCAIP over SIP: ``ACK`` means ``<mrs>``
status 0); other receivers add theirs to ``PROTOCOLS``.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated

import typer
from rich.console import Console

from telecare.devices.codecs import Incomplete, Malformed, dc09, scaip, sip
from telecare.gateway.cli.common import ConfigOption, ExitCode, load_cli_config
from telecare.gateway.config import Config

__all__ = ["PROTOCOLS", "Protocol", "app"]

app = typer.Typer(help="IP alarm receivers (SIA DC-09, SCAIP).", no_args_is_help=True)
console = Console()
err_console = Console(stderr=True)


class Protocol(StrEnum):
    DC09 = "dc09"
    SCAIP = "scaip"


#: ``--protocol`` -> the coroutine that sends one test message and returns the reply
#: token. Receivers add their protocol here.
PROTOCOLS: dict[Protocol, Callable[[Config, dict[str, object]], Awaitable[str]]] = {}


def _dc09_frame(account: str, key: bytes | None, opts: dict[str, object]) -> bytes:
    """One frame as a unit sends it (sequence 0001, our clock as its timestamp)."""
    zone = int(str(opts["zone"]))
    if opts["sia"]:
        token, payload = "SIA-DCS", f"#{account}|N{opts['code'] or 'RP'}{zone:02d}]"
    else:
        token, payload = (
            "ADM-CID",
            f"#{account}|1{int(str(opts['code'] or 602)):03d} 00 {zone:03d}]",
        )
    stamp = dc09.format_timestamp(datetime.now(UTC))
    if key is None:
        return dc09.frame(f'"{token}"0001L0#{account}[{payload}{stamp}')
    return dc09.frame(f'"*{token}"0001L0#{account}[{dc09.encrypt(payload + stamp, key)}')


async def _dc09_exchange(host: str, port: int, frame: bytes, udp: bool, timeout: float) -> bytes:
    if not udp:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        try:
            writer.write(frame)
            await writer.drain()
            return await asyncio.wait_for(reader.readuntil(b"\r"), timeout)
        finally:
            writer.close()
    loop = asyncio.get_running_loop()
    got: asyncio.Future[bytes] = loop.create_future()

    class _Reply(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: object) -> None:
            if not got.done():
                got.set_result(data)

    transport, _ = await loop.create_datagram_endpoint(_Reply, remote_addr=(host, port))
    try:
        transport.sendto(frame)
        return await asyncio.wait_for(got, timeout)
    finally:
        transport.close()


async def _dc09(cfg: Config, opts: dict[str, object]) -> str:
    rc = cfg.receivers.dc09
    account = str(opts["account"] or "").upper()
    if not account:
        raise _fail("--account is required for dc09 (the unit's account, e.g. 1234)")
    key = bytes.fromhex(str(opts["key"])) if opts["key"] else rc.key_for(account)
    raw = await _dc09_exchange(
        str(opts["host"] or rc.host),
        int(str(opts["port"] or rc.port)),
        _dc09_frame(account, key, opts),
        bool(opts["udp"]),
        float(str(opts["timeout"])),
    )
    reply = dc09.parse_datagram(raw)  # checks the reply's CRC and length
    if reply.encrypted:
        if key is None:
            raise ValueError("encrypted reply, and no key")
        dc09.decrypt(reply.data, key, reply)
    return reply.token


PROTOCOLS[Protocol.DC09] = _dc09


def _scaip_request(cid: str, opts: dict[str, object], transport: str, local: str) -> bytes:
    """A SIP MESSAGE as a unit sends it: a ``PI`` heartbeat, or with ``--code`` an ``ME``
    alarm with that status code; From user = ``cid``; a fresh ``ref``."""
    code = opts["code"]
    mrq = scaip.Mrq(
        ref=f"test-{uuid.uuid4().hex[:12]}",
        cid=cid,
        dty="0003" if code else "0002",
        mty=scaip.MessageType.ALARM if code else scaip.MessageType.HEARTBEAT,
        stc=str(code) if code else "0102",
        did=str(opts["zone"]) if opts["zone"] else None,
    )
    host, port = str(opts["host"]), int(str(opts["port"]))
    headers = (
        ("Via", f"SIP/2.0/{transport} {local};branch=z9hG4bK{uuid.uuid4().hex[:16]}"),
        ("Max-Forwards", "70"),
        ("From", f"<sip:{cid}@{local.rsplit(':', 1)[0]}>;tag={uuid.uuid4().hex[:8]}"),
        ("To", f"<sip:arc@{host}:{port}>"),
        ("Call-ID", f"{uuid.uuid4().hex}@telecare"),
        ("CSeq", "1 MESSAGE"),
    )
    return sip.build_request(
        "MESSAGE", f"sip:arc@{host}:{port}", headers, scaip.encode_mrq(mrq), scaip.CONTENT_TYPE
    )


async def _scaip_exchange(cid: str, opts: dict[str, object], timeout: float) -> bytes:
    host, port = str(opts["host"]), int(str(opts["port"]))
    if not opts["udp"]:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        try:
            local = "{}:{}".format(*writer.get_extra_info("sockname")[:2])
            writer.write(_scaip_request(cid, opts, "TCP", local))
            await writer.drain()
            buffer = b""
            async with asyncio.timeout(timeout):
                while True:
                    chunk = await reader.read(4096)
                    if not chunk:
                        raise ConnectionError("the receiver closed the connection")
                    buffer += chunk
                    try:
                        sip.parse(buffer, stream=True)
                    except Incomplete:
                        continue
                    return buffer
        finally:
            writer.close()
    loop = asyncio.get_running_loop()
    got: asyncio.Future[bytes] = loop.create_future()

    class _Reply(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: object) -> None:
            if not got.done():
                got.set_result(data)

    transport, _ = await loop.create_datagram_endpoint(_Reply, remote_addr=(host, port))
    try:
        local = "{}:{}".format(*transport.get_extra_info("sockname")[:2])
        request = _scaip_request(cid, opts, "UDP", local)
        async with asyncio.timeout(timeout):
            wait = 0.5
            while True:  # resend the same request until answered (SIP timer E)
                transport.sendto(request)
                try:
                    return await asyncio.wait_for(asyncio.shield(got), wait)
                except TimeoutError:
                    wait = min(2 * wait, 4.0)
    finally:
        transport.close()


async def _scaip(cfg: Config, opts: dict[str, object]) -> str:
    """``ACK`` for ``200`` with ``<mrs>`` status 0; otherwise what came back."""
    rc = cfg.receivers.scaip
    cid = str(opts["account"] or "")
    if not cid:
        raise _fail("--account is required for scaip (the unit's controller id, cid)")
    opts = {**opts, "host": opts["host"] or rc.host, "port": opts["port"] or rc.port}
    raw = await _scaip_exchange(cid, opts, 3 * float(str(opts["timeout"])))
    try:
        response, _ = sip.parse(raw, stream=False)
        if not isinstance(response, sip.SipResponse):
            raise ValueError("the receiver sent a request, not a response")
        if response.status != 200 or not response.body:
            return f"SIP {response.status}"
        mrs = scaip.decode_mrs(response.body)
    except Malformed as exc:
        raise ValueError(f"unreadable reply: {exc.reason}") from None
    return "ACK" if mrs.snu == 0 else f"<mrs> status {mrs.snu} ({mrs.ste})"


PROTOCOLS[Protocol.SCAIP] = _scaip


def _fail(message: str, code: ExitCode = ExitCode.INVALID) -> typer.Exit:
    err_console.print(f"[red]error:[/red] {message}", highlight=False)
    return typer.Exit(code)


@app.command("test")
def receiver_test(
    protocol: Annotated[Protocol, typer.Option(help="The receiver to test.")],
    account: Annotated[
        str, typer.Option(help="The unit's account (DC-09) or controller id, cid (SCAIP).")
    ] = "",
    code: Annotated[
        str | None,
        typer.Option(
            help="Event code: Contact ID (default 602, test call) or SIA (RP); SCAIP: an"
            " alarm with this stc (default: a PI heartbeat)."
        ),
    ] = None,
    zone: Annotated[int, typer.Option(help="Zone (SCAIP: the did, 0 = none).")] = 0,
    sia: Annotated[bool, typer.Option("--sia", help="Send SIA-DCS instead of ADM-CID.")] = False,
    udp: Annotated[bool, typer.Option("--udp", help="UDP instead of TCP.")] = False,
    host: Annotated[str | None, typer.Option(help="Default: from the configuration.")] = None,
    port: Annotated[int | None, typer.Option(help="Default: from the configuration.")] = None,
    key: Annotated[
        str | None, typer.Option(help="AES key, hex (default: the account's key in the config).")
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for each reply.")] = 5.0,
    config: ConfigOption = None,
) -> None:
    """Send one message as a unit would and wait for the receiver's reply (exit 0 on ACK)."""
    cfg = load_cli_config(config)
    opts: dict[str, object] = {
        "account": account,
        "code": code,
        "zone": zone,
        "sia": sia,
        "udp": udp,
        "host": host,
        "port": port,
        "key": key,
        "timeout": timeout,
    }
    started = time.monotonic()
    try:
        token = asyncio.run(_send(PROTOCOLS[protocol], cfg, opts))
    except (TimeoutError, OSError, ValueError, Malformed) as exc:
        raise _fail(
            f"no reply from the {protocol.value} receiver: {exc}", ExitCode.NO_ANSWER
        ) from None
    elapsed = time.monotonic() - started
    if token != "ACK":
        raise _fail(
            f"the receiver answered {token} after {elapsed:.2f}s: refused (see the dead letters"
            " for the reason; is the account mapped with 'telecare device map-account'?)",
            ExitCode.NO_ANSWER,
        )
    console.print(f"[green]OK[/green]: ACK after {elapsed:.2f}s (stored)")


async def _send(
    send: Callable[[Config, dict[str, object]], Awaitable[str]],
    cfg: Config,
    opts: dict[str, object],
) -> str:
    return await send(cfg, opts)
