"""``telecare report responses``: the response-time report (``dispatch/reports.py``), each
route against its own attend target."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from telecare.dispatch.reports import PeriodFigures, RouteFigures, build_report
from telecare.gateway.cli.common import ConfigOption, ExitCode, fail, load_cli_config, run_store
from telecare.gateway.config import Config

__all__ = ["PERIODS", "Period", "app", "period_json", "print_period"]

app = typer.Typer(help="Reports from the audit trail.", no_args_is_help=True)


class Period(StrEnum):
    HOUR = "hour"
    DAY = "day"
    WEEK = "week"


PERIODS = {
    Period.HOUR: timedelta(hours=1),
    Period.DAY: timedelta(days=1),
    Period.WEEK: timedelta(weeks=1),
}


def _when(text: str, option: str) -> datetime:
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        fail(f"{option} {text!r} is not an ISO date or date-time", ExitCode.INVALID)
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} %"


def _route_dict(r: RouteFigures) -> dict[str, Any]:
    return {
        "route": r.route,
        "measure": r.measure.value,
        "target_min": r.target_min,
        "goal_pct": r.goal_pct,
        "all_within_min": r.all_within_min,
        "needing": r.needing,
        "done": r.done,
        "within_target": r.within_target,
        "pct_within_target": r.pct_within_target,
        "within_all": r.within_all if r.all_within_min is not None else None,
        "pct_within_all": r.pct_within_all,
        "meets_goal": r.meets_goal,
    }


def period_json(p: PeriodFigures) -> dict[str, Any]:
    return {
        "start": p.start.isoformat(),
        "end": p.end.isoformat(),
        "alarms": p.alarms,
        "abandoned": p.abandoned,
        "answered": p.answered,
        "pct_answered_60s": p.pct_answered_60s,
        "pct_answered_180s": p.pct_answered_180s,
        "routes": [_route_dict(r) for r in p.routes],
    }


def print_period(console: Console, p: PeriodFigures) -> None:
    # Two short lines rather than one that an 80-column terminal breaks mid-figure.
    console.print(
        f"[bold]{p.start:%Y-%m-%d %H:%M} to {p.end:%Y-%m-%d %H:%M}[/bold]: {p.alarms} alarms,"
        f" {p.abandoned} abandoned",
        highlight=False,
    )
    console.print(
        f"  answered within 60 s: {_pct(p.pct_answered_60s)} (target 97.5 %);"
        f" within 180 s: {_pct(p.pct_answered_180s)} (target 99 %)",
        highlight=False,
    )
    if not p.routes:
        return
    table = Table(show_lines=False)
    for col in ("route", "measure", "target", "n", "within target", "goal", "all within"):
        table.add_column(col)
    for r in p.routes:
        measure = "on scene" if r.measure == "on_scene" else "handed to 999"
        met = {True: " (met)", False: " (missed)", None: ""}[r.meets_goal]
        all_within = "-"
        if r.all_within_min is not None:
            all_within = f"{r.all_within_min} min: {_pct(r.pct_within_all)}"
        table.add_row(
            r.route,
            measure,
            f"{r.target_min} min",
            str(r.needing),
            f"{r.within_target} ({_pct(r.pct_within_target)})",
            ("-" if r.goal_pct is None else f"{r.goal_pct:g} %") + met,
            all_within,
        )
    console.print(table)


async def _figures(
    cfg: Config, start: datetime, end: datetime, period: timedelta
) -> list[PeriodFigures]:
    from telecare.gateway.app import open_store

    # Imported here: building the dispatcher pulls in the registry cache and the rule
    # engine (numpy), which ``telecare --help`` and every other command need not load.
    from telecare.gateway.dispatching import attend_config, dispatch_repository

    attend = attend_config(cfg)
    async with open_store(cfg) as store:
        return await build_report(dispatch_repository(store), start, end, period, attend)


@app.command("responses")
def responses(
    start: Annotated[str, typer.Option("--from", help="Start (ISO date/time, UTC if bare).")],
    end: Annotated[str, typer.Option("--to", help="End, exclusive (ISO date/time).")],
    period: Annotated[Period, typer.Option(help="Bucket size.")] = Period.DAY,
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of tables.")] = False,
    config: ConfigOption = None,
) -> None:
    """Answer times (TSA: 60 s / 180 s) and attendance per route, each route against its
    own attend target (docs/dispatch.md), by the time alarms were presented."""
    cfg = load_cli_config(config)
    first, last = _when(start, "--from"), _when(end, "--to")
    if last <= first:
        fail("--to must be after --from", ExitCode.INVALID)
    figures = run_store(cfg, lambda: _figures(cfg, first, last, PERIODS[period]))
    if as_json:
        typer.echo(json.dumps([period_json(p) for p in figures], indent=2))
        return
    console = Console()
    for p in figures:
        print_period(console, p)
