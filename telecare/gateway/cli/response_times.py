"""``telecare report response-times --since T [--site S] [--json]``: the TSA response-time
figures. Every figure comes from :func:`dispatch.reports.response_report`, the one
implementation the console also uses; this module only selects the rows (a site's
dispatches) and prints them."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import typer
from rich.console import Console

from telecare.dispatch.reports import PeriodFigures, response_report
from telecare.gateway.cli import report
from telecare.gateway.cli.common import (
    ConfigOption,
    ExitCode,
    JsonOption,
    fail,
    load_cli_config,
    print_json,
    with_store,
)
from telecare.gateway.store.reports import DispatchFilter

__all__ = ["response_times"]

console = Console()


_RELATIVE = re.compile(r"^(\d+)([hdw])$")
_UNITS = {"h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1)}


def parse_when(text: str, option: str, now: datetime) -> datetime:
    """An ISO date or date-time (UTC when bare) or a span back from now: 24h, 7d, 4w."""
    match = _RELATIVE.match(text.strip())
    if match:
        return now - int(match.group(1)) * _UNITS[match.group(2)]
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        fail(f"{option} {text!r}: use an ISO date or date-time, or 24h, 7d, 4w")
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def response_times(
    since: Annotated[
        str, typer.Option(help="Start: ISO date/time (UTC if bare) or 24h, 7d, 4w ago.")
    ],
    until: Annotated[
        str | None, typer.Option(help="End, exclusive (default: now); same forms.")
    ] = None,
    site: Annotated[str | None, typer.Option(help="Only alarms raised at this site.")] = None,
    period: Annotated[
        report.Period, typer.Option(help="One row per hour, day or week.")
    ] = report.Period.DAY,
    json_out: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """TSA response-time figures: alarms answered within 60 s and 180 s (targets 97.5 %
    and 99 %) and attendance per route against its own target, per period, by the time
    each alarm was presented (definitions in docs/dispatch.md). 'report responses' with
    a relative start and a site filter."""
    cfg = load_cli_config(config)
    now = datetime.now(UTC)
    start = parse_when(since, "--since", now)
    end = now if until is None else parse_when(until, "--until", now)
    if end <= start:
        fail("--until must be after --since", ExitCode.INVALID)

    # Imported here: building the dispatcher pulls in the registry cache and the rule
    # engine (numpy), which ``telecare --help`` and every other command need not load.
    from telecare.gateway.dispatching import attend_config, dispatch_repository

    attend = attend_config(cfg)

    async def load(store: Any) -> list[PeriodFigures]:
        if site is not None and await store.get_site(site) is None:
            fail(f"site {site!r} does not exist", ExitCode.NOT_FOUND)
        records = await dispatch_repository(store).audit_between(start, end)
        if site is not None:
            found = await store.find_dispatches(DispatchFilter(site_id=site, limit=None))
            ids = {d.dispatch_id for d in found}
            records = [r for r in records if r.dispatch_id in ids]
        return response_report(records, start, end, report.PERIODS[period], attend)

    figures = with_store(cfg, load)
    if json_out:
        print_json(
            {
                "since": start.isoformat(),
                "until": end.isoformat(),
                "site": site,
                "periods": [report.period_json(p) for p in figures],
            }
        )
        return
    if site is not None:
        console.print(f"site [bold]{site}[/bold]")
    for p in figures:
        report.print_period(console, p)
