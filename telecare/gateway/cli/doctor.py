"""``telecare doctor``: what is right and what to fix in an installation.

    telecare doctor --config /etc/telecare/gateway.toml      (as root: throwaway probe)
    telecare doctor -c gateway.toml --probe-device doctor-probe --probe-password ... --json

Exit codes (``ExitCode``, as every command): 0 every check ok (warnings and skips
allowed), 7 at least one check failed, 2 the configuration does not parse (its row says
why).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from telecare.gateway.cli.common import ConfigOption, ExitCode
from telecare.gateway.cli.logs import command_logging
from telecare.gateway.config import load_config
from telecare.gateway.doctor import Check, DoctorOptions, run_checks
from telecare.gateway.errors import ConfigError

__all__ = ["doctor"]

console = Console()
_STYLE = {"ok": "green", "warn": "yellow", "fail": "bold red", "skip": "dim"}


def _table(checks: list[Check]) -> Table:
    """Check, status, and what was found with the fix under it (three columns that
    wrap at spaces, so that the table reads at 80 columns)."""
    table = Table(title="telecare doctor", box=box.SIMPLE_HEAD, expand=True)
    table.add_column("check", ratio=3, overflow="fold")
    table.add_column("status", no_wrap=True)
    table.add_column("found / fix", ratio=7, overflow="fold")
    for c in checks:
        found = Text(c.detail)
        if c.fix:
            found.append("\nfix: ", style="bold").append(c.fix)
        table.add_row(c.name, f"[{_STYLE[c.status]}]{c.status}[/]", found)
    return table


def doctor(
    config: ConfigOption = None,
    password_file: Annotated[
        Path,
        typer.Option(help="The broker's password file.", metavar="FILE"),
    ] = Path("/etc/mosquitto/telecare.passwd"),
    broker_user: Annotated[
        str, typer.Option(help="System user Mosquitto runs as.", metavar="USER")
    ] = "mosquitto",
    probe_device: Annotated[
        str,
        typer.Option(
            help="A device provisioned for the broker checks (login, ACL). Default: a"
            " throwaway one, added to --password-file and removed after.",
            metavar="ID",
        ),
    ] = "",
    probe_password: Annotated[
        str,
        typer.Option(
            help="Its MQTT password.",
            metavar="PW",
            envvar="TELECARE_DOCTOR_PROBE_PASSWORD",
        ),
    ] = "",
    reload_command: Annotated[
        str,
        typer.Option(
            help="Makes the broker re-read --password-file (for the throwaway probe).",
            metavar="CMD",
        ),
    ] = "systemctl reload mosquitto",
    no_throwaway: Annotated[
        bool,
        typer.Option(
            "--no-throwaway",
            help="Without --probe-device, skip the broker checks instead of using a"
            " throwaway probe.",
        ),
    ] = False,
    cert: Annotated[
        list[Path] | None,
        typer.Option(help="Another PEM certificate to check (repeatable).", metavar="FILE"),
    ] = None,
    max_skew: Annotated[
        float, typer.Option(help="Largest clock skew allowed, seconds.", metavar="S")
    ] = 2.0,
    min_free_mb: Annotated[
        int, typer.Option(help="Free space wanted for the spool, MB.", metavar="MB")
    ] = 200,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON object.")] = False,
) -> None:
    """Check an installation end to end: configuration, store (reachable, migrated,
    mode, TimescaleDB jobs, clock), spool, broker (login, client-id binding, ACL),
    password file and TLS files. Exit code 7 when anything must be fixed (2 when the
    configuration does not parse)."""
    try:
        cfg = load_config(config, os.environ)
    except ConfigError as exc:
        checks = [Check("config", "fail", str(exc), "fix the file or TELECARE_* variable")]
    else:
        opts = DoctorOptions(
            password_file=password_file,
            broker_user=broker_user,
            probe_device=probe_device,
            probe_password=probe_password,
            reload_command=reload_command,
            throwaway_probe=not no_throwaway,
            certs=tuple(cert or ()),
            max_skew_s=max_skew,
            min_free_mb=min_free_mb,
        )
        with command_logging("error"):
            checks = run_checks(cfg, opts)
    failed = [c for c in checks if c.status == "fail"]
    if json_out:
        typer.echo(json.dumps({"ok": not failed, "checks": [c.as_dict() for c in checks]}))
    else:
        console.print(_table(checks))
        if failed:
            console.print(f"[bold red]{len(failed)} to fix[/bold red]")
        else:
            console.print("[green]all checks passed[/green]")
    if any(c.name == "config" for c in failed):
        raise typer.Exit(ExitCode.USAGE)
    if failed:
        raise typer.Exit(ExitCode.CHECK_FAILED)
