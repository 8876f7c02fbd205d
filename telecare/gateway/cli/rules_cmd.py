"""``telecare rules``: check a rules file (mounted by the lead as a Typer sub-app)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from telecare.gateway.cli.common import ExitCode, fail
from telecare.rules.config import RulesConfig, RulesConfigError, load_rules_file

app = typer.Typer(help="Rule configuration (NEWS2 advice, alarm and temporal rules).")


@app.callback()
def _rules() -> None:
    """Rule configuration commands."""


def _summary(config: RulesConfig, console: Console) -> None:
    sites = Table(title="sites", show_lines=False)
    for col in ("site", "time zone", "fold s", "heartbeat x", "NEWS2 alert priority"):
        sites.add_column(col)
    for site in (config.defaults, *config.sites.values()):
        prio = ", ".join(f"{band}={p or '-'}" for band, p in site.news2_priority.items())
        sites.add_row(
            site.site_id,
            site.timezone,
            str(site.fold_window_s),
            f"{site.heartbeat_miss_multiple:g}",
            prio,
        )
    console.print(sites)
    residents = Table(title="residents")
    for col in ("resident", "site", "SpO2 scale", "target", "baseline", "inactivity windows"):
        residents.add_column(col)
    for r in config.residents.values():
        scale = str(r.spo2_scale)
        if r.spo2_scale == 2 and r.spo2_scale_set_at is not None:
            scale += f" ({r.spo2_scale_set_by}, {r.spo2_scale_set_at:%Y-%m-%d})"
        windows = ", ".join(f"{w.start:%H:%M}-{w.end:%H:%M}" for w in r.inactivity_windows)
        residents.add_row(
            r.resident_id,
            r.site_id or "-",
            scale,
            f"{r.spo2_target}%",
            r.baseline_consciousness.value,
            windows or "-",
        )
    console.print(residents)


@app.command()
def check(file: Path = typer.Argument(..., help="TOML rules file to validate")) -> None:
    """Validate a rules file and print a summary; exit 1 with the error if it is bad."""
    console = Console()
    try:
        config = load_rules_file(file)
    except RulesConfigError as exc:
        fail(str(exc), ExitCode.INVALID)
    _summary(config, console)
    console.print(
        f"[green]ok[/]: {file} ({len(config.sites)} sites, {len(config.residents)} residents)",
        highlight=False,
    )
