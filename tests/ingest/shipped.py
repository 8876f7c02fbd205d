"""Mosquitto run with the shipped ``deploy/mosquitto`` configuration and ACL (paths, port
and topic prefix substituted), a password file for the given users, and an in-process
gateway logged in as the gateway user: what an attacker holding one device's
credentials meets in production."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path

import aiomqtt

from telecare.gateway.app import Gateway
from telecare.gateway.auth import hash_secret, write_password_file
from telecare.gateway.config import Config, IngestSection, MqttConfig, StoreConfig
from telecare.gateway.publisher import PUBLISHER_SUFFIX
from tests.helpers import eventually
from tests.services import free_port, port_open

ROOT = Path(__file__).resolve().parents[2]
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
GATEWAY_USER = "telecare-gateway"
GATEWAY_PASSWORD = "gateway-secret-for-tests"


def device_password(device_id: str) -> str:
    return f"pw-{device_id}-for-tests"


@contextlib.contextmanager
def shipped_broker(prefix: str, users: Mapping[str, str]) -> Iterator[int]:
    """Start Mosquitto with the shipped files; yield its port. ``users``: name -> password."""
    directory = Path(tempfile.mkdtemp(prefix="telecare-mqtt-shipped-"))
    try:
        password_file = directory / "telecare.passwd"
        write_password_file(password_file, [(u, hash_secret(p)) for u, p in users.items()])
        port = free_port()
        acl = (ROOT / "deploy/mosquitto/telecare.acl").read_text().replace("telecare/v1", prefix)
        (directory / "telecare.acl").write_text(acl)
        lines = []
        for line in (ROOT / "deploy/mosquitto/mosquitto.conf").read_text().splitlines():
            key = line.split(" ", 1)[0]
            if key == "password_file":
                line = f"password_file {password_file}"
            elif key == "acl_file":
                line = f"acl_file {directory / 'telecare.acl'}"
            elif key == "persistence_location":
                line = f"persistence_location {directory}/"
            elif key == "listener":
                line = f"listener {port} 127.0.0.1"
            elif key in ("log_dest", "log_type", "connection_messages"):
                continue
            lines.append(line)
        lines.append("log_dest none")
        (directory / "mosquitto.conf").write_text("\n".join(lines) + "\n")
        for path in directory.iterdir():
            path.chmod(0o644)
        directory.chmod(0o777)  # mosquitto drops to its own user when started as root
        proc = subprocess.Popen([MOSQUITTO, "-c", str(directory / "mosquitto.conf")])
        try:
            deadline = time.monotonic() + 10
            while not port_open("127.0.0.1", port):
                assert proc.poll() is None, "mosquitto refused the shipped configuration"
                assert time.monotonic() < deadline, "mosquitto did not start"
                time.sleep(0.05)
            yield port
        finally:
            proc.terminate()
            proc.wait(10)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def users_for(device_ids: list[str]) -> dict[str, str]:
    """The gateway user and one user per device, with their passwords."""
    gateway = {
        GATEWAY_USER: GATEWAY_PASSWORD,
        f"{GATEWAY_USER}{PUBLISHER_SUFFIX}": GATEWAY_PASSWORD,
    }
    return {**gateway, **{d: device_password(d) for d in device_ids}}


def gateway_config(
    port: int, prefix: str, store: StoreConfig, ingest: IngestSection | None = None
) -> Config:
    return Config(
        mqtt=MqttConfig(
            host="127.0.0.1",
            port=port,
            username=GATEWAY_USER,
            password=GATEWAY_PASSWORD,
            client_id=GATEWAY_USER,
            topic_prefix=prefix,
            clean_session=True,
        ),
        store=store,
        ingest=ingest or IngestSection(),
    )


@contextlib.asynccontextmanager
async def running_gateway(config: Config) -> AsyncIterator[Gateway]:
    async with Gateway(config) as gw:

        async def connected() -> bool:
            return gw.mqtt.connected.is_set()

        await eventually(connected)
        yield gw


@contextlib.asynccontextmanager
async def device_client(port: int, device_id: str) -> AsyncIterator[aiomqtt.Client]:
    """A raw MQTT connection logged in as ``device_id`` (its own credentials)."""
    async with aiomqtt.Client(
        "127.0.0.1",
        port,
        identifier=f"{device_id}-{uuid.uuid4().hex[:6]}",
        username=device_id,
        password=device_password(device_id),
    ) as client:
        yield client
