"""``telecare demo``: the embedded default end to end on one machine, no external server.

Starts an amqtt broker on a free local port, the gateway on an SQLite store, provisions a
care home and a private home, runs their simulated devices and prints the live activity
feed (alerts, dispatches, dead letters, device status) until Ctrl-C or ``duration``.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections import Counter
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from telecare.firmware_stubs.scenario import Population, care_home, private_home, run_population
from telecare.gateway.app import Gateway, open_store
from telecare.gateway.broker import EmbeddedBroker
from telecare.gateway.config import Config, MqttConfig, StoreConfig
from telecare.gateway.pipeline import Activity
from telecare.gateway.store.base import Store

__all__ = ["provision", "run_demo"]

_STYLE = {
    "alert": "bold red",
    "dispatch": "yellow",
    "dead_letter": "magenta",
    "status": "dim",
    "news2": "cyan",
    "folded": "red",
    "cleared": "green",
}


async def provision(store: Store, pop: Population) -> None:
    """Write a simulated population into the store (idempotent upserts)."""
    for site in pop.sites:
        await store.upsert_site(site)
    for responder in pop.responders:
        await store.upsert_responder(responder)
    for resident in pop.residents:
        await store.upsert_resident(resident)
    for device in pop.devices:
        await store.upsert_device(device)


def _show(console: Console, activity: Activity) -> None:
    style = _STYLE.get(activity.kind, "white")
    stamp = activity.ts.strftime("%H:%M:%S")
    console.print(f"{stamp} [{style}]{activity.kind:<11}[/{style}] {escape(activity.summary)}")


async def run_demo(
    console: Console,
    data_dir: Path,
    residents: int = 6,
    interval: float = 2.0,
    duration: float | None = None,
) -> Counter[str]:
    data_dir.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - once, at start
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    async with EmbeddedBroker() as broker:
        config = Config(
            mqtt=MqttConfig(port=broker.port, client_id="telecare-demo-gateway"),
            store=StoreConfig(
                backend="sqlite",
                sqlite_path=str(data_dir / "telecare.sqlite3"),
                spool_dir=str(data_dir / "spool"),
            ),
        )
        pop = care_home("oakhouse", residents).extend(private_home("home-12"))
        async with open_store(config) as store:
            await store.migrate()
            await provision(store, pop)
        async with Gateway(config) as gw:
            console.print(
                f"[bold green]telecare demo[/bold green]: broker 127.0.0.1:{broker.port}, "
                f"store {config.store.sqlite_path} ({gw.store.mode}), "
                f"{len(pop.sites)} sites, {len(pop.residents)} residents, "
                f"{len(pop.devices)} devices. Ctrl-C to stop."
            )
            await asyncio.wait_for(gw.mqtt.connected.wait(), timeout=10)
            feed = gw.feed.subscribe()

            async def show() -> None:
                while True:
                    _show(console, await feed.get())

            async with asyncio.TaskGroup() as tg:
                shower = tg.create_task(show(), name="demo-feed")
                devices = tg.create_task(
                    run_population(
                        pop,
                        host="127.0.0.1",
                        port=broker.port,
                        prefix=config.mqtt.topic_prefix,
                        interval=interval,
                        on_action=lambda line: console.print(f"[cyan]device[/cyan]      {line}"),
                    ),
                    name="demo-devices",
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=duration)
                devices.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await devices
                await asyncio.sleep(0.5)  # let the last messages through the pipeline
                shower.cancel()
            gw.feed.unsubscribe(feed)
            return gw.pipeline.counters
