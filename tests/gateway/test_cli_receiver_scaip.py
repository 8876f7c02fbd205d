"""``telecare receiver test --protocol scaip`` against a running gateway (SQLite store,
real Mosquitto, the SCAIP receiver on a loopback port)."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from typer.testing import CliRunner, Result

from telecare.devices.model import Device, DeviceKind, ReceiverAccount, ReceiverKind, Site, SiteKind
from telecare.gateway.app import Gateway
from telecare.gateway.cli.main import app
from telecare.gateway.config import load_config
from tests.services import MqttServer, free_port

runner = CliRunner()


async def test_receiver_test_scaip_over_tcp_and_udp(
    tmp_path: Path, mqtt_server: MqttServer
) -> None:
    path = tmp_path / "gw.toml"
    path.write_text(
        f'[mqtt]\nhost = "{mqtt_server.host}"\nport = {mqtt_server.port}\n'
        f'client_id = "gw-{uuid.uuid4().hex[:8]}"\ntopic_prefix = "t-{uuid.uuid4().hex[:8]}"\n'
        f'[store]\nbackend = "sqlite"\nsqlite_path = "{tmp_path / "t.sqlite3"}"\n'
        f"[receivers.scaip]\nenabled = true\nport = {free_port()}\n",
        encoding="utf-8",
    )
    cfg = load_config(path)

    def cli(*args: str) -> Result:
        return runner.invoke(
            app, ["receiver", "test", "--protocol", "scaip", *args, "-c", str(path)]
        )

    async with Gateway(cfg) as gw:
        await gw.store.upsert_site(Site("home1", SiteKind.HOME))
        await gw.store.upsert_device(Device("unit1", "home1", DeviceKind.PENDANT))
        await gw.store.upsert_receiver_account(
            ReceiverAccount(ReceiverKind.SCAIP, "26317", "unit1")
        )
        heartbeat = await asyncio.to_thread(cli, "--account", "26317")
        alarm = await asyncio.to_thread(cli, "--account", "26317", "--code", "0010", "--udp")
        unknown = await asyncio.to_thread(cli, "--account", "99999")
        missing = await asyncio.to_thread(cli)
        events = await gw.store.count("alarm_events")
        alerts = await gw.store.recent_alerts()
        letters = await gw.store.dead_letters()
    assert heartbeat.exit_code == 0, heartbeat.output
    assert "ACK after" in heartbeat.output
    assert alarm.exit_code == 0, alarm.output
    assert unknown.exit_code == 8  # ExitCode.NO_ANSWER: refused
    assert "<mrs> status 5" in unknown.output
    assert missing.exit_code == 1
    assert events == 2
    assert [a.device_id for a in alerts] == ["unit1"]  # the alarm; the heartbeat raises none
    assert "SCAIP cid '99999' is not mapped to a device" in letters[0].reason
