"""Helpers for the ingest tests: a gateway in a subprocess (so a test can SIGKILL it),
provisioning, and a listener on the dead-letter topic."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiomqtt
import psycopg

from telecare.devices.model import (
    Device,
    DeviceKind,
    ReceiverAccount,
    ReceiverKind,
    Resident,
    Site,
    SiteKind,
)
from telecare.gateway.store.base import Store

ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")


async def provision(store: Store, *, pendants: int = 1) -> list[str]:
    """Sites s1 and s2, resident res1 at s1, ``pendants`` pendants pend1.. at s1, a hub
    hub1 and an oximeter ox1 registered to it, an alarm receiver arc1 at s1, a pendant
    other1 at s2.
    Returns the pendant ids."""
    await store.upsert_site(Site("s1", SiteKind.HOME))
    await store.upsert_site(Site("s2", SiteKind.HOME))
    await store.upsert_resident(Resident("res1", "s1", "Mrs A"))
    ids = [f"pend{i}" for i in range(1, pendants + 1)]
    for device_id in ids:
        await store.upsert_device(Device(device_id, "s1", DeviceKind.PENDANT, "res1"))
    await store.upsert_device(Device("hub1", "s1", DeviceKind.HUB))
    await store.upsert_device(
        Device("ox1", "s1", DeviceKind.OXIMETER, "res1", format="ble", hub_id="hub1")
    )
    await store.upsert_device(
        Device("arc1", "s1", DeviceKind.ALARM_RECEIVER, "res1", format="contact_id")
    )
    await store.upsert_receiver_account(ReceiverAccount(ReceiverKind.CONTACT_ID, "1234", "arc1"))
    await store.upsert_device(Device("other1", "s2", DeviceKind.PENDANT))
    return ids


def write_config(
    path: Path,
    *,
    mqtt_port: int,
    client_id: str,
    topic_prefix: str,
    dsn: str,
    schema: str,
    extra: str = "",
    mqtt_host: str = "127.0.0.1",
) -> Path:
    """A gateway configuration on a PostgreSQL schema; ``extra``: more TOML sections."""
    path.write_text(
        "[mqtt]\n"
        f'host = "{mqtt_host}"\nport = {mqtt_port}\nclient_id = "{client_id}"\n'
        f'topic_prefix = "{topic_prefix}"\n\n'
        "[store]\n"
        f'backend = "postgres"\ndsn = "{dsn}"\nschema = "{schema}"\ntimescale = false\n\n'
        f"{extra}"
        '[log]\nlevel = "info"\nformat = "json"\n',
        encoding="utf-8",
    )
    return path


def dc09_section(port: int, keys: str = "") -> str:
    """The DC-09 receiver's section for :func:`write_config` (``keys``: a TOML table)."""
    keys_line = f"keys = {keys}\n" if keys else ""
    return f'[receivers.dc09]\nenabled = true\nhost = "127.0.0.1"\nport = {port}\n{keys_line}\n'


def blocked_pids(conn: psycopg.Connection, schema: str, table: str = "alerts") -> list[int]:
    """Sessions waiting for a lock on ``schema.table`` (a test holds it)."""
    rows = conn.execute(
        "SELECT pid FROM pg_locks WHERE NOT granted AND relation = to_regclass(%s)",
        (f'"{schema}".{table}',),
    ).fetchall()
    return [int(r[0]) for r in rows]


def count_rows(conn: psycopg.Connection, schema: str, table: str) -> int:
    row = conn.execute(f'SELECT count(*) FROM "{schema}".{table}').fetchone()
    assert row is not None
    return int(row[0])


async def awaitable(fn: Callable[..., T], *args: object) -> T:
    """``fn(*args)`` as a coroutine (a synchronous probe inside ``eventually``)."""
    return fn(*args)


@dataclass
class GatewayProcess:
    """``telecare run --config`` in a child process, its log in a file."""

    config: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from telecare.gateway.cli.main import main; main()",
                "run",
                "--config",
                str(self.config),
            ],
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={k: v for k, v in os.environ.items() if not k.startswith("TELECARE_")},
        )

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    async def wait_for_log(self, needle: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.log_text():
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"gateway exited ({self.proc.returncode}):\n{self.log_text()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{needle!r} not logged in {timeout}s:\n{self.log_text()}")
            await asyncio.sleep(0.05)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self._log.close()

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            if self.proc is not None:
                self._log.close()
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


@dataclass
class DeadLetterListener:
    """Collects what the gateway publishes on its dead-letter topic."""

    messages: list[dict[str, Any]] = field(default_factory=list)

    async def wait_for(self, reason_part: str, timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            for m in self.messages:
                if reason_part in m["reason"]:
                    return m
            if time.monotonic() > deadline:
                reasons = [m["reason"] for m in self.messages]
                raise AssertionError(f"no dead letter with {reason_part!r}; got {reasons}")
            await asyncio.sleep(0.02)


@asynccontextmanager
async def listen_dead_letters(
    host: str, port: int, topic: str
) -> AsyncIterator[DeadLetterListener]:
    listener = DeadLetterListener()
    async with aiomqtt.Client(host, port) as client:
        await client.subscribe(topic, qos=1)

        async def collect() -> None:
            async for message in client.messages:
                assert isinstance(message.payload, bytes)
                listener.messages.append(json.loads(message.payload))

        task = asyncio.create_task(collect())
        try:
            yield listener
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
