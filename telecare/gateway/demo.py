"""``telecare demo``: the embedded default end to end on one machine, no external server.

Starts an amqtt broker on a free local port, the gateway on an SQLite store with its web
face (the operators' console and the care-home iPad page, on :data:`WEB_PORT` or a free
port when that is taken), provisions a care home and a private home, creates a demo
operator and a demo carer (new passwords printed at every start), runs their simulated
devices, including a care-home tablet taking NEWS2 rounds (``firmware_stubs.tablet``),
and prints the live activity feed (alerts, dispatches, NEWS2 scores, dead letters,
device status) until Ctrl-C or ``duration``.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import signal
import socket
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from rich.console import Console
from rich.markup import escape

from telecare.devices.model import Device, DeviceKind
from telecare.firmware_stubs.scenario import Population, care_home, private_home, run_population
from telecare.firmware_stubs.tablet import Tablet, run_rounds
from telecare.gateway.app import Gateway, open_store
from telecare.gateway.broker import EmbeddedBroker
from telecare.gateway.config import Config, MqttConfig, StoreConfig, WebConfig
from telecare.gateway.pipeline import Activity
from telecare.gateway.store.accounts import Accounts, Role
from telecare.gateway.store.base import Store
from telecare.gateway.web.auth import hash_password

__all__ = ["WEB_PORT", "DemoLogin", "demo_logins", "provision", "run_demo"]

#: The console's port when it is free (else any free port; the URL is printed).
WEB_PORT: Final = 8080
CARE_HOME: Final = "oakhouse"

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


@dataclass(frozen=True, slots=True)
class DemoLogin:
    username: str
    password: str
    role: Role
    site_id: str | None = None


async def demo_logins(store: Store, site_id: str = CARE_HOME) -> list[DemoLogin]:
    """A demo operator and a demo carer of ``site_id``, with new passwords (printed)."""
    accounts = Accounts(store.sql)
    logins = [
        DemoLogin("operator", secrets.token_urlsafe(9), Role.OPERATOR),
        DemoLogin("carer", secrets.token_urlsafe(9), Role.CARE_HOME, site_id),
    ]
    for login in logins:
        digest = await asyncio.to_thread(hash_password, login.password)
        if await accounts.password_hash(login.username) is None:
            name = "Demo operator" if login.role is Role.OPERATOR else "Demo carer"
            await accounts.add_user(
                login.username, name, login.role, digest, datetime.now(UTC), login.site_id
            )
        else:
            await accounts.set_password(login.username, digest)
    return logins


def _web_port(preferred: int) -> int:
    """``preferred`` if nothing listens there, else 0 (any free port)."""
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", preferred))
        except OSError:
            return 0
    return preferred


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
    web_port: int = WEB_PORT,
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
            # Plain http on this machine only: cookies without Secure (docs/tablet.md).
            web=WebConfig(
                enabled=True, host="127.0.0.1", port=_web_port(web_port), secure_cookies=False
            ),
        )
        pop = care_home(CARE_HOME, residents).extend(private_home("home-12"))
        tablet_id = f"{CARE_HOME}-tablet"
        pop.devices.append(Device(tablet_id, CARE_HOME, DeviceKind.TABLET))
        async with open_store(config) as store:
            await store.migrate()
            await provision(store, pop)
            logins = await demo_logins(store)
        async with Gateway(config) as gw:
            console.print(
                f"[bold green]telecare demo[/bold green]: broker 127.0.0.1:{broker.port}, "
                f"store {config.store.sqlite_path} ({gw.store.mode}), "
                f"{len(pop.sites)} sites, {len(pop.residents)} residents, "
                f"{len(pop.devices)} devices. Ctrl-C to stop."
            )
            _print_web(console, gw, logins)
            await asyncio.wait_for(gw.mqtt.connected.wait(), timeout=10)
            feed = gw.feed.subscribe()

            async def show() -> None:
                while True:
                    _show(console, await feed.get())

            def said(line: str) -> None:
                console.print(f"[cyan]device[/cyan]      {line}")

            async with asyncio.TaskGroup() as tg:
                shower = tg.create_task(show(), name="demo-feed")
                devices = tg.create_task(
                    run_population(
                        pop,
                        host="127.0.0.1",
                        port=broker.port,
                        prefix=config.mqtt.topic_prefix,
                        interval=interval,
                        on_action=said,
                    ),
                    name="demo-devices",
                )
                rounds = tg.create_task(
                    _tablet_rounds(pop, tablet_id, broker.port, config, interval, said),
                    name="demo-tablet",
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=duration)
                for task in (devices, rounds):
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                await asyncio.sleep(0.5)  # let the last messages through the pipeline
                shower.cancel()
            gw.feed.unsubscribe(feed)
            return gw.pipeline.counters


def _print_web(console: Console, gw: Gateway, logins: list[DemoLogin]) -> None:
    if gw.web is None:
        return
    url = gw.web.url
    console.print(f"[bold green]console[/bold green]: {url}/  (open it in a browser)")
    for login in logins:
        page = f"{url}/tablet" if login.role is Role.CARE_HOME else f"{url}/"
        who = "care-home iPad page" if login.role is Role.CARE_HOME else "operator console"
        console.print(
            f"  {who}: {page}  user [bold]{login.username}[/bold]"
            f" password [bold]{login.password}[/bold]"
        )


async def _tablet_rounds(
    pop: Population,
    tablet_id: str,
    port: int,
    config: Config,
    interval: float,
    said: Callable[[str], None],
) -> None:
    """The care home's tablet takes NEWS2 rounds (a set every ``interval`` + 1 s)."""
    residents = [r.resident_id for r in pop.residents if r.site_id == CARE_HOME]

    def heard(resident: str, reply: dict[str, Any]) -> None:
        news2 = reply["news2"]
        score = f"NEWS2 {news2['total']} ({news2['risk']})" if news2["complete"] else "partial"
        said(f"tablet reply   {resident}: {score}")

    async with Tablet(
        CARE_HOME, tablet_id, host="127.0.0.1", port=port, prefix=config.mqtt.topic_prefix
    ) as tablet:
        await run_rounds(tablet, residents, interval=interval + 1.0, on_result=heard)
