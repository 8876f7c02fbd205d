"""``telecare receiver test --protocol dc09`` against a running gateway (SQLite store,
real Mosquitto, the DC-09 receiver on a loopback port)."""

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
KEY = "00112233445566778899AABBCCDDEEFF"


async def test_receiver_test_sends_one_message_and_reports_the_reply(
    tmp_path: Path, mqtt_server: MqttServer
) -> None:
    path = tmp_path / "gw.toml"
    path.write_text(
        f'[mqtt]\nhost = "{mqtt_server.host}"\nport = {mqtt_server.port}\n'
        f'client_id = "gw-{uuid.uuid4().hex[:8]}"\ntopic_prefix = "t-{uuid.uuid4().hex[:8]}"\n'
        f'[store]\nbackend = "sqlite"\nsqlite_path = "{tmp_path / "t.sqlite3"}"\n'
        f'[receivers.dc09]\nenabled = true\nport = {free_port()}\nkeys = {{ "5678" = "{KEY}" }}\n',
        encoding="utf-8",
    )
    cfg = load_config(path)

    def cli(*args: str) -> Result:
        return runner.invoke(
            app, ["receiver", "test", "--protocol", "dc09", *args, "-c", str(path)]
        )

    async with Gateway(cfg) as gw:
        await gw.store.upsert_site(Site("home1", SiteKind.HOME))
        await gw.store.upsert_device(Device("unit1", "home1", DeviceKind.PENDANT))
        for account in ("1234", "5678"):
            mapping = ReceiverAccount(ReceiverKind.CONTACT_ID, account, "unit1")
            await gw.store.upsert_receiver_account(mapping)
        ok = await asyncio.to_thread(cli, "--account", "1234")
        encrypted_udp = await asyncio.to_thread(cli, "--account", "5678", "--udp")
        unknown = await asyncio.to_thread(cli, "--account", "9999")
        events = await gw.store.count("alarm_events")
        letters = await gw.store.dead_letters()
    assert ok.exit_code == 0, ok.output
    assert "ACK after" in ok.output
    assert encrypted_udp.exit_code == 0, encrypted_udp.output
    assert unknown.exit_code == 8  # ExitCode.NO_ANSWER: refused
    assert "answered DUH" in unknown.output
    assert events == 2
    assert [d.reason for d in letters] == [
        "DC-09: contact_id account 9999 zone 000 is not mapped to a device"
        " (telecare device map-account DEVICE contact_id:9999)"
    ]
