"""``telecare``: the command line for operators of the gateway and for installers.

telecare run --config gateway.toml       the gateway process
telecare demo                            everything embedded, simulated devices
telecare simulate --config gateway.toml  simulated devices against a real broker
telecare db migrate --config ...         apply schema migrations
telecare site|resident|responder|device add ...   provisioning
telecare receiver test --protocol dc09 ...   one message to a running IP receiver
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console

from gateway.cli.common import ConfigOption, load_cli_config
from gateway.logging import configure_logging

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
    from gateway.app import Gateway

    async def main() -> None:
        async with Gateway(cfg) as gw:
            _install_stop(gw.stop)
            await gw.wait_closed()

    _run(main)


@db_app.command("migrate")
def db_migrate(config: ConfigOption = None) -> None:
    """Apply pending schema migrations (idempotent; the gateway also runs them at start)."""
    cfg = load_cli_config(config)
    configure_logging(cfg.log.level, "console")
    from gateway.app import open_store

    async def main() -> None:
        async with open_store(cfg) as store:
            applied = await store.migrate()
            console.print(f"store mode: [bold]{store.mode}[/bold]")
            if applied:
                for name in applied:
                    console.print(f"applied {name}")
            else:
                console.print("schema is up to date")

    _run(main)


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
    from gateway.demo import run_demo

    configure_logging("warning", "console")
    counters = _run(lambda: run_demo(console, data_dir, residents, interval, duration))
    console.print(
        f"[bold]demo stopped[/bold]: {counters.get('alerts', 0)} alerts, "
        f"{counters.get('dispatches', 0)} dispatches, {counters.get('readings', 0)} readings, "
        f"{counters.get('dead_letters', 0)} dead letters; store in {data_dir}"
    )


def _mount() -> None:
    """Command groups that live in their own modules (imported late: they import this)."""
    from gateway.cli import provision, receiver, rules_cmd, simulate

    app.add_typer(provision.site_app, name="site")
    app.add_typer(provision.resident_app, name="resident")
    app.add_typer(provision.responder_app, name="responder")
    app.add_typer(provision.device_app, name="device")
    app.add_typer(simulate.app, name="simulate")
    app.add_typer(rules_cmd.app, name="rules")
    app.add_typer(receiver.app, name="receiver")


_mount()


def main() -> None:
    app()
