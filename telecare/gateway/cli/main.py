"""``telecare``: the command line for operators of the gateway and for installers.

telecare run --config gateway.toml       the gateway process
telecare demo                            everything embedded, simulated devices
telecare simulate --config gateway.toml  simulated devices against a real broker
telecare db migrate --config ...         apply schema migrations (owner role)
telecare db roles --config ...           SQL creating the owner and runtime roles
telecare audit verify --config ...       prove the dispatch audit trail is intact
telecare site|resident|responder|device add ...   provisioning
telecare report responses --from ... --to ...     response times, each route vs its target
telecare report response-times --since 7d --site S   the same figures, for one site
telecare import care-home.csv [--dry-run]         residents, devices, pairings (docs/cli.md)
telecare receiver test --protocol dc09 ...   one message to a running IP receiver
telecare export fhir --resident R        a FHIR R4 Bundle of a resident's observations
telecare serial probe PORT               which supported device answers on a serial port
telecare doctor --config ...             check an installation end to end
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sqlite3
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, TypeVar

import psycopg
import typer
from rich.console import Console

from telecare.dispatch.audit_chain import ChainReport
from telecare.gateway.cli.common import (
    ConfigOption,
    ExitCode,
    err_console,
    fail,
    load_cli_config,
    reflow_help,
    run_store,
)
from telecare.gateway.cli.logs import command_logging
from telecare.gateway.config import Config
from telecare.gateway.logging import configure_logging

__all__ = ["app", "main"]

_T = TypeVar("_T")

app = typer.Typer(
    name="telecare",
    help="Telecare and teletriage telemetry gateway.",
    no_args_is_help=True,
    add_completion=False,
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")
audit_app = typer.Typer(help="The dispatch audit trail.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")

console = Console()


def _run(main: Callable[[], Awaitable[_T]]) -> _T:
    return asyncio.run(main())  # type: ignore[arg-type]


def _install_stop(stop: Callable[[], None]) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop)


@app.command()
def run(config: ConfigOption = None) -> None:
    """Run the gateway: MQTT ingest -> rules -> store + dispatch. SIGINT/SIGTERM stop it
    cleanly, flushing everything it accepted."""
    cfg = load_cli_config(config)
    configure_logging(cfg.log.level, cfg.log.format)
    from telecare.gateway.app import Gateway
    from telecare.gateway.tasks import LoopFailed

    async def main() -> None:
        async with Gateway(cfg) as gw:
            _install_stop(gw.stop)
            await gw.wait_closed()

    try:
        _run(main)
    except LoopFailed as exc:  # logged with its traceback (loop_failed); stop loudly
        err_console.print(f"[red]gateway stopped:[/red] {exc}")
        raise typer.Exit(ExitCode.INTERNAL) from None


@db_app.command("migrate")
def db_migrate(config: ConfigOption = None) -> None:
    """Apply pending schema migrations (idempotent; the gateway also runs them at start)."""
    cfg = load_cli_config(config)
    from telecare.gateway.app import open_store

    async def main() -> None:
        # Logging for this command only: in-process (tests) no logger stays bound to
        # the runner's streams.
        with command_logging(cfg.log.level):
            await _migrate(cfg)

    async def _migrate(cfg: Config) -> None:
        async with open_store(cfg, owner=True) as store:
            applied = await store.migrate()
            console.print(f"store mode: [bold]{store.mode}[/bold]")
            if applied:
                for name in applied:
                    console.print(f"applied {name}")
            else:
                console.print("schema is up to date")

    run_store(cfg, main)


@db_app.command("roles")
def db_roles(
    config: ConfigOption = None,
    owner: Annotated[
        str | None,
        typer.Option(help="The owner role (default: the user in store.migrate_dsn)."),
    ] = None,
    runtime: Annotated[
        str | None, typer.Option(help="The runtime role (default: the user in store.dsn).")
    ] = None,
    database: Annotated[
        str | None, typer.Option(help="The database (default: the one in store.dsn).")
    ] = None,
    apply: Annotated[
        bool, typer.Option("--apply", help="Run the SQL through --admin-dsn instead of printing.")
    ] = False,
    admin_dsn: Annotated[
        str | None,
        typer.Option(
            envvar="TELECARE_ADMIN_DSN",
            help="A superuser (or CREATEROLE) DSN for --apply; prefer the environment variable.",
        ),
    ] = None,
) -> None:
    """The one-time SQL that creates the owner and runtime roles and the schema (see
    docs/security.md). Printed by default; --apply runs it. Passwords are never part of
    it: set them with psql's \\password."""
    from psycopg.conninfo import conninfo_to_dict

    from telecare.gateway.store.roles import setup_script

    cfg = load_cli_config(config)
    parts = conninfo_to_dict(cfg.store.dsn.reveal())
    runtime = runtime or str(parts.get("user") or "telecare_app")
    owner_parts = conninfo_to_dict(cfg.store.migrate_dsn.reveal() or "")
    owner = owner or str(owner_parts.get("user") or "telecare_owner")
    database = database or str(parts.get("dbname") or "telecare")
    try:
        script = setup_script(database, cfg.store.schema, owner, runtime)
    except ValueError as exc:
        fail(str(exc), ExitCode.INVALID)
    if not apply:
        typer.echo(script, nl=False)
        return
    if not admin_dsn:
        fail("--apply needs --admin-dsn (or TELECARE_ADMIN_DSN)", ExitCode.USAGE)
    try:
        with psycopg.connect(admin_dsn, autocommit=True, connect_timeout=10) as conn:
            conn.execute(script.encode())
    except psycopg.OperationalError as exc:
        fail(f"--admin-dsn: {exc}".strip(), ExitCode.STORE_UNAVAILABLE)
    console.print(
        f"roles [bold]{owner}[/bold] (owner) and [bold]{runtime}[/bold] (runtime) ready in"
        f" database {database}, schema {cfg.store.schema}; now set their passwords and run"
        " 'telecare db migrate' with store.migrate_dsn"
    )


@audit_app.command("verify")
def audit_verify(
    config: ConfigOption = None,
    anchor: Annotated[
        str | None,
        typer.Option(
            help="A head printed by an earlier run (<seq>:<hash>): it must still be there."
        ),
    ] = None,
) -> None:
    """Walk the hash-chained audit trail: exit 0 when every row is intact, 7 naming each
    changed or removed row. Read-only (the runtime role's SELECT is enough)."""
    from telecare.dispatch.audit_chain import Anchor
    from telecare.gateway.app import open_store

    cfg = load_cli_config(config)
    try:
        expected = Anchor.parse(anchor) if anchor else None
    except ValueError as exc:
        fail(str(exc), ExitCode.INVALID)

    if cfg.store.backend == "sqlite" and not Path(cfg.store.sqlite_path).exists():
        fail(f"no SQLite store at {cfg.store.sqlite_path}", ExitCode.STORE_UNAVAILABLE)

    async def main() -> ChainReport:
        with command_logging(cfg.log.level):  # for this command only (see db migrate)
            async with open_store(cfg) as store:
                return await store.dispatches.verify_audit(expected)

    try:
        report = run_store(cfg, main)
    except (sqlite3.OperationalError, psycopg.errors.UndefinedColumn) as exc:
        # A store from before migration 0008: nothing is chained yet.
        fail(f"the store has no audit chain ({exc}): run 'telecare db migrate'", ExitCode.USAGE)
    for problem in report.problems:
        console.print(f"[red]FAIL[/red] {problem}", highlight=False, soft_wrap=True)
    if report.unchained:
        console.print(
            f"{report.unchained} audit rows predate the hash chain (migration 0008) and are"
            " not covered by it"
        )
    head = f"head {report.head}" if report.head else "no chained rows yet"
    if not report.ok:
        console.print(f"audit trail [red]NOT intact[/red]: {len(report.problems)} problems")
        raise typer.Exit(ExitCode.CHECK_FAILED)
    console.print(
        f"audit trail intact: {report.rows} rows; {head}", highlight=False, soft_wrap=True
    )
    if report.head:
        console.print(
            f"record it to detect removal of the last rows later: --anchor {report.head}",
            highlight=False,
            soft_wrap=True,
        )


@app.command()
def demo(
    data_dir: Annotated[Path, typer.Option(help="Where the SQLite store lives.")] = Path(
        "data/demo"
    ),
    residents: Annotated[int, typer.Option(min=1, help="Residents in the care home.")] = 6,
    interval: Annotated[float, typer.Option(help="Seconds between simulated actions.")] = 2.0,
    duration: Annotated[
        float | None, typer.Option(help="Stop after this many seconds (default: Ctrl-C).")
    ] = None,
) -> None:
    """Run everything on the embedded default: an amqtt broker on a free local port, an
    SQLite store, the gateway, and simulated devices for a care home and a private home.
    Alarms and dispatches are shown as they happen. Ctrl-C stops it cleanly."""
    from telecare.gateway.demo import run_demo

    configure_logging("warning", "console")
    counters = _run(lambda: run_demo(console, data_dir, residents, interval, duration))
    console.print(
        f"[bold]demo stopped[/bold]: {counters.get('alerts', 0)} alerts, "
        f"{counters.get('dispatches', 0)} dispatches, {counters.get('readings', 0)} readings, "
        f"{counters.get('dead_letters', 0)} dead letters; store in {data_dir}"
    )


def _mount() -> None:
    """Command groups that live in their own modules (imported late: they import this)."""
    from telecare.gateway.cli import (
        doctor,
        export_fhir,
        import_cmd,
        provision,
        receiver,
        report,
        response_times,
        rules_cmd,
        serial_cmd,
        simulate,
        users,
    )

    app.add_typer(provision.site_app, name="site")
    app.add_typer(provision.resident_app, name="resident")
    app.add_typer(provision.responder_app, name="responder")
    app.add_typer(provision.device_app, name="device")
    app.add_typer(simulate.app, name="simulate")
    app.add_typer(rules_cmd.app, name="rules")
    app.add_typer(report.app, name="report")
    app.add_typer(receiver.app, name="receiver")
    app.add_typer(export_fhir.app, name="export")
    app.add_typer(serial_cmd.app, name="serial")
    app.command("doctor")(doctor.doctor)
    app.command("import")(import_cmd.import_csv)
    report.app.command("response-times")(response_times.response_times)
    users.mount(app)


_mount()
reflow_help(app)


def main() -> None:
    """The ``telecare`` entry point. Logs go to stderr, warnings and worse, unless a
    command configures them (``run`` from its config): stdout is for results and
    ``--json`` only. (Not done per command: in-process runners swap stderr.) Anything
    escaping a command is a bug: its traceback, then exit 70 (``ExitCode.INTERNAL``),
    distinct from every user mistake."""
    configure_logging("warning", "console")
    try:
        app()
    except Exception:
        sys.excepthook(*sys.exc_info())  # Typer's (pretty) traceback
        err_console.print("[red]internal error[/red]: please report it with the traceback above")
        sys.exit(ExitCode.INTERNAL)
