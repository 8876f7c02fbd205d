"""``telecare export fhir``: a resident's observations as a FHIR R4 Bundle.

    telecare export fhir --resident res1 --since 7d --output res1.json
    telecare export fhir --resident res1 --since 2026-11-01 > bundle.json

Without ``--output`` the Bundle goes to stdout (and nothing else does). With it, a
summary follows (a table, or ``--json``: ``{"output", "resident_id", "since", "until",
"observations", "by_code"}``). The resident's name is never read into the export, its
filename or the logs. Exit codes (``ExitCode``, as every command): 1 bad argument
(``--since``, ``--site`` not the resident's site, too many readings), 2 configuration,
3 unknown resident, 5 store unreachable, 9 cannot write ``--output``.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.table import Column, Table

from telecare.gateway.cli.common import ConfigOption, ExitCode, fail, load_cli_config, with_store
from telecare.gateway.cli.logs import command_logging
from telecare.gateway.fhir_export import RESIDENT_SYSTEM, build_bundle, patient_identifier
from telecare.gateway.store.base import Store

__all__ = ["app", "parse_since"]

#: Readings one export holds at most (about 70 days of a 1/min oximeter's two metrics);
#: beyond it the command refuses rather than hand over a truncated record.
MAX_READINGS = 100_000

#: Everything stored before this is older than the gateway itself.
_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_DURATION = re.compile(r"^(\d+)\s*([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}

console = Console()
app = typer.Typer(help="Export data to other systems.", no_args_is_help=True)


def parse_since(text: str, now: datetime) -> datetime:
    """``--since``: an ISO 8601 date or date-time (UTC when no offset is given) or a
    duration back from now (``30m``, ``24h``, ``7d``, ``2w``)."""
    match = _DURATION.match(text.strip())
    if match:
        amount, unit = int(match.group(1)), match.group(2)
        return now - timedelta(**{_UNITS[unit]: amount})
    try:
        ts = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"--since {text!r} is neither an ISO 8601 date/time nor a duration like 24h or 7d"
        ) from None
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


async def _export(
    store: Store, resident_id: str, site: str | None, since: datetime, now: datetime, system: str
) -> dict[str, Any]:
    resident = await store.get_resident(resident_id)
    if resident is None:
        fail(f"no resident {resident_id!r}", ExitCode.NOT_FOUND)
    if site is not None and resident.site_id != site:
        fail(f"resident {resident_id!r} is not a resident of site {site!r}", ExitCode.INVALID)
    readings = await store.resident_readings(resident_id, since, now, MAX_READINGS + 1)
    if len(readings) > MAX_READINGS:
        fail(
            f"more than {MAX_READINGS} readings since {since.isoformat()}:"
            " export a shorter period (--since) in several files",
            ExitCode.INVALID,
        )
    scores = await store.news2_history(resident_id, since, now)
    return build_bundle(
        subject=patient_identifier(resident_id, resident.nhs_number, system),
        readings=readings,
        scores=scores,
        generated_at=now,
    )


@app.command("fhir")
def export_fhir(
    resident: Annotated[str, typer.Option("--resident", "-r", help="Resident id.")],
    since: Annotated[
        str | None,
        typer.Option(help="From: an ISO date/time (UTC if no offset) or 24h, 7d. Default: all."),
    ] = None,
    site: Annotated[
        str | None, typer.Option(help="Refuse unless the resident lives at this site.")
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write here (default: stdout).")
    ] = None,
    identifier_system: Annotated[
        str, typer.Option(help="System URI of resident ids (used without an NHS number).")
    ] = RESIDENT_SYSTEM,
    json_out: Annotated[
        bool, typer.Option("--json", help="With --output: the summary as JSON.")
    ] = False,
    config: ConfigOption = None,
) -> None:
    """A resident's vital signs, NEWS2 scores and ACVPU levels as a FHIR R4 Bundle
    (type collection). The Patient is referenced by NHS number when one is stored,
    else by the resident id; never by name."""
    cfg = load_cli_config(config)
    now = datetime.now(UTC)
    try:
        start = parse_since(since, now) if since else _EPOCH
    except ValueError as exc:
        fail(str(exc), ExitCode.INVALID)
    with command_logging():  # stderr; stdout carries only the Bundle
        bundle = with_store(
            cfg, lambda store: _export(store, resident, site, start, now, identifier_system)
        )
    text = json.dumps(bundle, indent=2)
    if output is None:
        typer.echo(text)
        return
    try:
        output.write_text(text + "\n", encoding="utf-8")
    except OSError as exc:
        fail(f"cannot write {output}: {exc.strerror}", ExitCode.IO_ERROR)
    by_code = Counter(e["resource"]["code"]["coding"][0]["code"] for e in bundle["entry"])
    summary = {
        "output": str(output),
        "resident_id": resident,
        "since": start.isoformat(),
        "until": now.isoformat(),
        "observations": len(bundle["entry"]),
        "by_code": dict(sorted(by_code.items())),
    }
    if json_out:
        typer.echo(json.dumps(summary))
        return
    n = len(bundle["entry"])
    console.print(
        f"FHIR export: {n} observation(s) since {start:%Y-%m-%d %H:%M} UTC", highlight=False
    )
    console.print(f"written to {output}", highlight=False, soft_wrap=True)  # a path unbroken
    if not n:
        return
    table = Table("code", "what", Column("count", justify="right"), box=box.SIMPLE_HEAD)
    names = {
        e["resource"]["code"]["coding"][0]["code"]: e["resource"]["code"]["text"]
        for e in bundle["entry"]
    }
    for code, count in sorted(by_code.items()):
        table.add_row(code, names[code], str(count))
    console.print(table)
