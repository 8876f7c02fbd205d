"""A running gateway on SQLite and the installer CLI in a process of its own: what the
"registry changed while the gateway runs" tests (site areas, responders) share."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path

from telecare.gateway.app import Gateway
from telecare.gateway.config import Config, MqttConfig, RulesSection, StoreConfig
from tests.services import MqttServer


def sqlite_gateway(tmp_path: Path, mqtt: MqttServer, topic_prefix: str) -> tuple[Config, Path]:
    """The gateway's configuration on ``tmp_path/gw.sqlite3`` and a TOML file with the
    same store for the CLI."""
    db = tmp_path / "gw.sqlite3"
    config = Config(
        mqtt=MqttConfig(
            host=mqtt.host,
            port=mqtt.port,
            topic_prefix=topic_prefix,
            client_id=f"gw-{uuid.uuid4().hex[:8]}",
        ),
        store=StoreConfig(backend="sqlite", sqlite_path=str(db)),
        rules=RulesSection(tick_s=3600.0),
    )
    toml = tmp_path / "gateway.toml"
    toml.write_text(f'[store]\nbackend = "sqlite"\nsqlite_path = "{db}"\n')
    return config, toml


async def cli(toml: Path, *command: str) -> None:
    """``telecare <command> --config <toml>`` in a process of its own; it must succeed."""
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "telecare.gateway.cli", *command, "--config", str(toml)],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


async def connected(gw: Gateway) -> bool:
    return gw.mqtt.connected.is_set()
