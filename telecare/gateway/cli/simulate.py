"""``telecare simulate``: simulated devices against the configured broker.

telecare simulate carehome --residents 8     a care home plus a private home, running
telecare simulate press --site S --device D  one pendant press
telecare simulate fall --site S --device D   one fall
telecare simulate heartbeat --site S --device D
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from telecare.devices.model import EventType
from telecare.firmware_stubs.mqtt_device import MqttDevice
from telecare.firmware_stubs.scenario import care_home, private_home, run_population
from telecare.gateway.cli.common import load_cli_config
from telecare.gateway.config import Config

__all__ = ["app"]

app = typer.Typer(help="Simulated devices speaking protocol v1.", no_args_is_help=True)
console = Console()

ConfigOption = Annotated[Path | None, typer.Option("--config", "-c", help="TOML configuration.")]
SiteOption = Annotated[str, typer.Option("--site", help="Site id of the device.")]
DeviceOption = Annotated[str, typer.Option("--device", help="Device id (provisioned).")]
PasswordOption = Annotated[
    str | None,
    typer.Option("--password", help="The device's MQTT password, if the broker needs one."),
]


def _load(config: Path | None) -> Config:
    return load_cli_config(config)


@app.command()
def carehome(
    config: ConfigOption = None,
    residents: Annotated[int, typer.Option(min=1, help="Residents in the care home.")] = 6,
    site: Annotated[str, typer.Option(help="Care home site id.")] = "oakhouse",
    count: Annotated[int | None, typer.Option(help="Stop after N actions.")] = None,
    interval: Annotated[float, typer.Option(help="Seconds between actions.")] = 1.0,
    provision_store: Annotated[
        bool, typer.Option("--provision/--no-provision", help="Provision the devices first.")
    ] = True,
) -> None:
    """A care home of N residents and a private home: presses, falls, vitals, heartbeats."""
    cfg = _load(config)
    pop = care_home(site, residents).extend(private_home())

    async def main() -> int:
        # Imported here: the gateway (and its web app) is heavy, and every other
        # command, even --help, would pay for it at start.
        from telecare.gateway.app import open_store, prepare_store
        from telecare.gateway.demo import provision

        if provision_store:
            async with open_store(cfg) as store:
                await prepare_store(cfg, store)
                await provision(store, pop)
        return await run_population(
            pop,
            host=cfg.mqtt.host,
            port=cfg.mqtt.port,
            prefix=cfg.mqtt.topic_prefix,
            interval=interval,
            count=count,
            on_action=console.print,
        )

    with contextlib.suppress(KeyboardInterrupt):
        console.print(f"{asyncio.run(main())} simulated actions sent")


def _one(config: Path | None, site: str, device: str, password: str | None, what: str) -> None:
    cfg = _load(config)

    async def main() -> str:
        async with MqttDevice(
            site,
            device,
            host=cfg.mqtt.host,
            port=cfg.mqtt.port,
            prefix=cfg.mqtt.topic_prefix,
            password=password,
        ) as dev:
            if what == "heartbeat":
                return await dev.heartbeat()
            return await dev.event(EventType(what))

    msg_id = asyncio.run(main())
    console.print(f"{what} sent by {device} (msg_id {msg_id})")


@app.command()
def press(
    site: SiteOption,
    device: DeviceOption,
    config: ConfigOption = None,
    password: PasswordOption = None,
) -> None:
    """One pendant press."""
    _one(config, site, device, password, EventType.PENDANT.value)


@app.command()
def fall(
    site: SiteOption,
    device: DeviceOption,
    config: ConfigOption = None,
    password: PasswordOption = None,
) -> None:
    """One fall detected."""
    _one(config, site, device, password, EventType.FALL.value)


@app.command()
def heartbeat(
    site: SiteOption,
    device: DeviceOption,
    config: ConfigOption = None,
    password: PasswordOption = None,
) -> None:
    """One heartbeat."""
    _one(config, site, device, password, "heartbeat")
