"""``telecare serial probe PORT``: which supported device answers on a serial port.

    telecare serial probe /dev/serial/by-id/usb-Prolific-if00-port0
    telecare serial probe /dev/ttyUSB0 --codec cms50d --codec nonin8 --seconds 6 --json

Exit codes (``ExitCode``): 0 a device answered, 8 nothing matched (what was seen is
shown), 9 the port cannot be opened or read, 1 an unknown or non-serial ``--codec``.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from telecare.gateway.cli.common import ExitCode, fail
from telecare.gateway.serial_probe import ProbeError, line_text, probe, stream_codecs

__all__ = ["app"]

console = Console()
app = typer.Typer(help="Serial ports.", no_args_is_help=True)

_NOTE = (
    "Decided by how cleanly each codec decodes what arrives (valid frames against "
    "malformed bytes). A pseudo-terminal ignores baud rate and parity, so there the "
    "line settings are not tested; on a real port a wrong setting decodes as garbage."
)


@app.command("probe")
def serial_probe(
    port: Annotated[str, typer.Argument(metavar="PORT", help="Serial device, e.g. /dev/ttyUSB0.")],
    codec: Annotated[
        list[str] | None,
        typer.Option(
            "--codec", metavar="NAME", help="Try only this codec (repeatable). Default: all."
        ),
    ] = None,
    seconds: Annotated[
        float,
        typer.Option(min=0.2, max=60.0, metavar="SECONDS", help="Longest listen per line setting."),
    ] = 4.0,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON object.")] = False,
) -> None:
    """Try every supported serial codec with its line settings and report which
    device answers (codec, line settings, sample values) or what was seen."""
    try:
        codecs = stream_codecs(codec)
    except KeyError as exc:
        fail(str(exc.args[0]), ExitCode.INVALID)
    try:
        result = probe(port, codecs, seconds=seconds)
    except ProbeError as exc:
        fail(str(exc), ExitCode.IO_ERROR)
    if json_out:
        typer.echo(json.dumps(result.as_dict()))
        raise typer.Exit(ExitCode.OK if result.match else ExitCode.NO_ANSWER)
    table = Table(title=f"serial probe {port}")
    for name, justify in (
        ("line", "left"),
        ("codec", "left"),
        ("bytes", "right"),
        ("frames", "right"),
        ("malformed", "right"),
        ("clean", "right"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for a in result.attempts:
        chosen = result.match is a
        style = "bold green" if chosen else None
        table.add_row(
            line_text(a.line),
            a.codec,
            str(a.bytes_read),
            str(a.frames),
            str(a.malformed_bytes),
            f"{a.clean:.0%}",
            style=style,
        )
    console.print(table)
    m = result.match
    if m is not None:
        console.print(
            f"[bold green]answered:[/bold green] {m.codec} at {line_text(m.line)}"
            f" ({m.frames} frames, {m.clean:.0%} clean); sample: {', '.join(m.sample)}"
        )
    elif not result.seen:
        console.print(
            "[bold red]nothing received[/bold red]: no device sent anything (is it on and"
            " sending? an alarm receiver prints only when an event arrives)"
        )
    else:
        console.print(
            f"[bold red]no supported device matched[/bold red]; first {len(result.seen)}"
            f" bytes seen: {result.seen.hex(' ')}"
        )
        console.print(f"as text: {result.as_dict()['seen']['text']}")
    if result.pseudo_terminal:
        console.print("[yellow]this port is a pseudo-terminal.[/yellow]")
    console.print(_NOTE, style="dim")
    if m is None:
        raise typer.Exit(ExitCode.NO_ANSWER)
