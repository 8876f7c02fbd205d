"""``telecare import FILE.csv [--dry-run]``: see ``gateway.cli.importer`` and docs/cli.md."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import psycopg
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from telecare.gateway.auth import hash_secret, new_secret
from telecare.gateway.cli.common import (
    ByOption,
    ConfigOption,
    ExitCode,
    JsonOption,
    actor,
    err_console,
    load_cli_config,
    print_json,
    with_store,
)
from telecare.gateway.cli.importer import ImportError_, Plan, apply_plan, parse_file, plan_changes
from telecare.gateway.store.base import Store
from telecare.gateway.store.errors import is_unavailable
from telecare.gateway.store.registry import Kind, RegistryChange

__all__ = ["import_csv"]

console = Console()


def import_csv(
    file: Annotated[Path, typer.Argument(help="The CSV file (columns in docs/cli.md).")],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Validate and show what would change; write nothing.")
    ] = False,
    by: ByOption = None,
    json_out: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Import a care home's residents, devices and pairings from one CSV file.

    The whole file is checked first and every error is reported with its line and
    column; if there is any, nothing is written (exit 6). Only what differs from the
    store is written, in one transaction: all of it or, if the store refuses any of it,
    none (exit 6 too). Importing the same file again reports 0 changed. New devices get
    MQTT passwords, printed once.
    """
    cfg = load_cli_config(config)
    who = actor(by)
    passwords: dict[str, str] = {}

    def secret_hash(device_id: str) -> str:
        passwords[device_id] = new_secret()
        return hash_secret(passwords[device_id])

    def change(action: str, kind: Kind, entity_id: str) -> RegistryChange:
        return RegistryChange(
            datetime.now(UTC),
            who,
            action,
            kind,
            entity_id,
            {"file": file.name},
        )

    parsed = parse_file(file)

    async def run(store: Store) -> Plan:
        plan = await plan_changes(store, parsed)
        if plan.errors or dry_run or not plan.changed:
            return plan
        with Progress(
            TextColumn("importing"),
            BarColumn(),
            MofNCompleteColumn(),
            console=err_console,
            disable=json_out or not err_console.is_terminal,  # a log gets no blank lines
            transient=True,
        ) as progress:
            task = progress.add_task("import", total=plan.changed)
            try:
                await apply_plan(store, plan, change, secret_hash, lambda: progress.advance(task))
            except (sqlite3.Error, psycopg.Error) as exc:
                if is_unavailable(exc):
                    raise  # exit 5, "store unavailable"
                # One transaction: rolled back, nothing of the file is in the store.
                passwords.clear()
                why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                refused = f"the store refused a write ({why}); rolled back, nothing written"
                return Plan(errors=[ImportError_(0, "-", refused)])
        return plan

    plan = with_store(cfg, run) if not parsed.errors else Plan(errors=parsed.errors)
    if json_out:
        print_json(_summary(plan, parsed.lines, dry_run, passwords))
    else:
        _print(plan, parsed.lines, dry_run, passwords)
    if plan.errors:
        raise typer.Exit(ExitCode.IMPORT_INVALID)


def _summary(plan: Plan, lines: int, dry_run: bool, passwords: dict[str, str]) -> dict[str, Any]:
    return {
        "lines": lines,
        "dry_run": dry_run,
        "written": not dry_run and not plan.errors,
        "changed": 0 if plan.errors else plan.changed,
        "created": [{"kind": k, "id": i} for k, i in plan.created] if not plan.errors else [],
        "updated": [{"kind": k, "id": i} for k, i in plan.updated] if not plan.errors else [],
        "unchanged": plan.unchanged,
        "errors": [_error_json(e) for e in plan.errors],
        "passwords": passwords,
    }


def _error_json(e: ImportError_) -> dict[str, Any]:
    return {"line": e.line, "column": e.column, "message": e.message}


def _print(plan: Plan, lines: int, dry_run: bool, passwords: dict[str, str]) -> None:
    if plan.errors:
        for e in plan.errors:
            err_console.print(f"[red]error:[/red] {e}", highlight=False)
        err_console.print(
            f"{len(plan.errors)} error(s) in {lines} line(s): nothing written", highlight=False
        )
        return
    verb = "would change" if dry_run else "changed"
    for kind, entity in plan.created:
        console.print(f"{'would create' if dry_run else 'created'} {kind} {entity}")
    for kind, entity in plan.updated:
        console.print(f"{'would update' if dry_run else 'updated'} {kind} {entity}")
    console.print(
        f"{lines} line(s): [bold]{plan.changed} {verb}[/bold]"
        f" ({len(plan.created)} new, {len(plan.updated)} updated), {plan.unchanged} unchanged"
    )
    if dry_run:
        console.print("dry run: nothing written")
    if passwords:
        table = Table("MQTT username", "MQTT password", title="new device credentials")
        for device_id, secret in passwords.items():
            table.add_row(device_id, secret)
        console.print(table)
        console.print(
            "[yellow]Shown once, not stored: configure the devices, then regenerate\n"
            "the broker's password file (telecare device mosquitto-passwd FILE).[/yellow]"
        )
