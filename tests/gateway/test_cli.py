"""The CLI as a user runs it: real processes, real signals."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from telecare.devices.model import (
    Device,
    DeviceKind,
    Resident,
    Responder,
    ResponderKind,
    Site,
    SiteKind,
)
from telecare.gateway.store.sqlite import SqliteStore
from tests.services import MqttServer

TELECARE = [sys.executable, "-m", "telecare.gateway.cli"]


def _wait_for_line(proc: subprocess.Popen[str], needle: str, timeout: float = 20) -> list[str]:
    assert proc.stderr is not None
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        seen.append(line)
        if needle in line:
            return seen
    raise AssertionError(f"{needle!r} not seen; stderr was:\n{''.join(seen)}")


@pytest.mark.mosquitto
def test_run_stores_an_alarm_and_stops_cleanly_on_sigterm(
    tmp_path: Path, mqtt_server: MqttServer, topic_prefix: str
) -> None:
    db = tmp_path / "gw.sqlite3"
    config = tmp_path / "gateway.toml"
    config.write_text(
        f'[mqtt]\nhost = "{mqtt_server.host}"\nport = {mqtt_server.port}\n'
        f'topic_prefix = "{topic_prefix}"\nclient_id = "cli-{tmp_path.name[-8:]}"\n'
        f'[store]\nbackend = "sqlite"\nsqlite_path = "{db}"\n'
    )

    async def provision() -> None:
        async with SqliteStore(db) as store:
            await store.migrate()
            await store.upsert_site(Site("s1", SiteKind.HOME))
            await store.upsert_responder(Responder("kh", ResponderKind.KEYHOLDER))
            await store.upsert_resident(Resident("r1", "s1", responders=("kh",)))
            await store.upsert_device(Device("p1", "s1", DeviceKind.PENDANT, "r1"))

    asyncio.run(provision())
    proc = subprocess.Popen(
        [*TELECARE, "run", "--config", str(config)],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TELECARE_LOG__FORMAT": "json"},
    )
    try:
        _wait_for_line(proc, "mqtt_connected")

        pressed = subprocess.run(
            [*TELECARE, "simulate", "press", "--site", "s1", "--device", "p1", "-c", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert pressed.returncode == 0, pressed.stderr
        assert "pendant sent by p1" in pressed.stdout
        _wait_for_line(proc, "dispatch_opened")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        rest = proc.stderr.read() if proc.stderr else ""
        assert "gateway_stopped" in rest
    finally:
        if proc.poll() is None:
            proc.kill()
        if proc.stderr:
            proc.stderr.close()
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM dispatches").fetchone() == (1,)
        assert conn.execute("SELECT type, phase FROM alarm_events").fetchall() == [
            ("pendant", "alarm")
        ]


def test_run_reports_a_bad_config(tmp_path: Path) -> None:
    result = subprocess.run(
        [*TELECARE, "run"],
        capture_output=True,
        text=True,
        env={**os.environ, "TELECARE_MQTT__PORT": "eighteen"},
        timeout=60,
    )
    assert result.returncode == 2
    assert "Config 'mqtt.port' has value 'eighteen'" in result.stderr


# The demo takes port 8080 when it is free: never two demos at once (test workers).
@pytest.mark.xdist_group("demo-port-8080")
def test_demo_shows_alarms_becoming_dispatches_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [*TELECARE, "demo", "--data-dir", str(tmp_path / "demo"), "--interval", "0.2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert proc.stdout is not None
    lines: list[str] = []
    device_alarm = re.compile(r" alert +P1 (pendant|fall) alarm from device ")
    alarmed = False
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        alarmed = alarmed or device_alarm.search(line) is not None
        if alarmed and " dispatch " in line:
            break
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=30)
    text = "".join(lines) + out
    # The whole output on failure (pytest would shorten an `in text` comparison).
    assert proc.returncode == 0, text
    assert "telecare demo" in text, text
    assert device_alarm.search(text), text
    assert "raised (route " in text, text
    assert "proposed responder" in text, text
    assert "demo stopped" in text, text
    with sqlite3.connect(tmp_path / "demo" / "telecare.sqlite3") as conn:
        (dispatches,) = conn.execute("SELECT count(*) FROM dispatches").fetchone()
        (residents,) = conn.execute("SELECT count(*) FROM residents").fetchone()
    assert dispatches >= 1
    assert residents >= 6


def test_device_user_maps_a_shared_cuffs_user_to_a_resident(tmp_path: Path) -> None:
    db = tmp_path / "gw.sqlite3"
    config = tmp_path / "gateway.toml"
    config.write_text(f'[store]\nbackend = "sqlite"\nsqlite_path = "{db}"\n')

    async def provision() -> None:
        async with SqliteStore(db) as store:
            await store.migrate()
            await store.upsert_site(Site("s1", SiteKind.HOME))
            await store.upsert_site(Site("s2", SiteKind.HOME))
            await store.upsert_resident(Resident("r1", "s1"))
            await store.upsert_resident(Resident("r2", "s1"))
            await store.upsert_resident(Resident("r9", "s2"))
            await store.upsert_device(Device("cuff1", "s1", DeviceKind.BP_CUFF, "r1", "ble"))

    asyncio.run(provision())

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*TELECARE, "device", "user", *args, "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    ok = run("cuff1", "--user-id", "2", "--resident", "r2")
    assert ok.returncode == 0, ok.stderr
    assert run("cuff1", "--user-id", "3", "--resident", "r9").returncode == 3  # other site
    assert run("cuff1", "--user-id", "255", "--resident", "r2").returncode == 1

    async def users() -> dict[int, str]:
        async with SqliteStore(db) as store:
            return await store.device_users("cuff1")

    assert asyncio.run(users()) == {2: "r2"}
