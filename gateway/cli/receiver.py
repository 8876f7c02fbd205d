"""``telecare receiver test``: send one message to the running receiver as a unit would.

    telecare receiver test --protocol dc09 --account 1234             periodic test call
    telecare receiver test --protocol dc09 --account 1234 --code 101  a real pendant alarm
    telecare receiver test --protocol dc09 --account 1234 --udp --sia

It proves the listener, the account's key, the account -> device mapping, the pipeline
and the store in one go: the receiver only acknowledges what it stored, so ``ACK`` means
stored. ``DUH`` names the reason in the dead letters (``telecare`` console, or the
``dead_letters`` table). The host, port and key come from the configuration unless
given. Protocols: ``dc09`` (SIA DC-09); other receivers add theirs to ``PROTOCOLS``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated

import typer
from rich.console import Console

from devices.codecs import Malformed, dc09
from gateway.cli.common import ConfigOption, load_cli_config
from gateway.config import Config

__all__ = ["PROTOCOLS", "Protocol", "app"]

app = typer.Typer(help="IP alarm receivers (SIA DC-09).", no_args_is_help=True)
console = Console()
err_console = Console(stderr=True)


class Protocol(StrEnum):
    DC09 = "dc09"


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


def _fail(message: str) -> typer.Exit:
    err_console.print(f"[red]error:[/red] {message}")
    return typer.Exit(1)


@app.command("test")
def receiver_test(
    protocol: Annotated[Protocol, typer.Option(help="The receiver to test.")],
    account: Annotated[str, typer.Option(help="The unit's account (DC-09).")] = "",
    code: Annotated[
        str | None,
        typer.Option(help="Event code: Contact ID (default 602, test call) or SIA (RP)."),
    ] = None,
    zone: Annotated[int, typer.Option(help="Zone.")] = 0,
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
        raise _fail(f"no reply from the {protocol.value} receiver: {exc}") from None
    elapsed = time.monotonic() - started
    if token != "ACK":
        raise _fail(
            f"the receiver answered {token} after {elapsed:.2f}s: refused (see the dead letters"
            " for the reason; is the account mapped with 'telecare device map-account'?)"
        )
    console.print(f"[green]OK[/green]: ACK after {elapsed:.2f}s (stored)")


async def _send(
    send: Callable[[Config, dict[str, object]], Awaitable[str]],
    cfg: Config,
    opts: dict[str, object],
) -> str:
    return await send(cfg, opts)
