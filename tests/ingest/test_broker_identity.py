"""Broker identities against the real Mosquitto with the shipped ``deploy/mosquitto``
configuration (issue 9, findings 2 and 4): a device cannot take over the gateway's
session, reach the gateway's topics or another responder app's dispatches, or replace
the gateway's password-file entry; ids are whole-string identifiers; regenerating the
password file keeps it readable by the broker."""

from __future__ import annotations

import asyncio
import contextlib
import grp
import re
import sqlite3
import stat
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiomqtt
import pytest
from typer.testing import CliRunner

from telecare.devices.model import (
    ID_PATTERN,
    Device,
    DeviceKind,
    ModelError,
    Responder,
    ResponderKind,
)
from telecare.firmware_stubs.mqtt_device import Pendant
from telecare.gateway.app import Gateway
from telecare.gateway.auth import hash_secret, read_password_file, write_password_file
from telecare.gateway.cli.provision import app
from telecare.gateway.config import Config, MqttConfig, StoreConfig, load_config
from telecare.gateway.errors import ConfigError
from tests.helpers import eventually
from tests.ingest.test_provision import shipped_broker

pytestmark = pytest.mark.mosquitto

runner = CliRunner()
MOSQUITTO_GID = next((g.gr_gid for g in grp.getgrall() if g.gr_name == "mosquitto"), None)


def _cli(config: Path, *args: str, ok: bool = True) -> str:
    result = runner.invoke(app, [*args, "--config", str(config)])
    if ok:
        assert result.exit_code == 0, result.output
    else:
        assert result.exit_code == 1, result.output
    return result.output


async def _acli(config: Path, *args: str, ok: bool = True) -> str:
    """:func:`_cli` from a test already running an event loop (the CLI runs its own)."""
    return await asyncio.to_thread(_cli, config, *args, ok=ok)


def _password(output: str) -> str:
    match = re.search(r"MQTT password: (\S+)", output)
    assert match, output
    return match.group(1)


def _gateway_password(output: str) -> str:
    match = re.search(r"gateway user \S+ password: (\S+)", output)
    assert match, output
    return match.group(1)


def _sqlite_config(tmp_path: Path, extra: str = "") -> tuple[Path, Path]:
    db = tmp_path / "t.sqlite3"
    config = tmp_path / "gateway.toml"
    config.write_text(f'[store]\nbackend = "sqlite"\nsqlite_path = "{db}"\n{extra}')
    return config, db


def _connected(gw: Gateway) -> Callable[[], Awaitable[bool]]:
    async def probe() -> bool:
        return gw.mqtt.connected.is_set()

    return probe


# --------------------------------------------------------------------------- finding 2


def test_the_gateway_client_id_is_its_username() -> None:
    assert MqttConfig().client_id == "telecare-gateway"
    assert MqttConfig(username="gw-oak").client_id == "gw-oak"
    assert MqttConfig(username="gw-oak", client_id="gw-oak").client_id == "gw-oak"
    assert load_config(None, {"TELECARE_MQTT__USERNAME": "gw-oak"}).mqtt.client_id == "gw-oak"
    with pytest.raises(ConfigError, match=r"Config 'mqtt\.client_id' has value 'other'"):
        MqttConfig(username="gw-oak", client_id="other")


async def test_a_device_cannot_take_over_the_gateway_session(
    tmp_path: Path, broker_dir: Path
) -> None:
    """A device connecting with the client id ``telecare-gateway`` (clean session) neither
    wipes the gateway's persistent session, so the alarm queued in it while the gateway
    was away is stored, nor kicks the connected gateway off."""
    config, db = _sqlite_config(tmp_path)
    await _acli(config, "site", "add", "s1")
    await _acli(config, "resident", "add", "res1", "--site", "s1")
    add = ("--site", "s1", "--kind", "pendant")
    pend1 = _password(await _acli(config, "device", "add", "pend1", *add, "--resident", "res1"))
    attacker = _password(await _acli(config, "device", "add", "pend2", *add))
    pwfile = broker_dir / "telecare.passwd"
    gw_password = _gateway_password(
        await _acli(
            config, "device", "mosquitto-passwd", str(pwfile), "--gateway-user", "telecare-gateway"
        )
    )
    prefix = f"takeover-{uuid.uuid4().hex[:8]}/telecare/v1"
    with shipped_broker(broker_dir, prefix, pwfile) as port:
        cfg = Config(
            mqtt=MqttConfig(
                port=port, username="telecare-gateway", password=gw_password, topic_prefix=prefix
            ),
            store=StoreConfig(backend="sqlite", sqlite_path=str(db)),
        )
        assert cfg.mqtt.client_id == "telecare-gateway"
        assert cfg.mqtt.clean_session is False

        def takeover() -> aiomqtt.Client:
            return aiomqtt.Client(
                "127.0.0.1",
                port,
                identifier="telecare-gateway",
                username="pend2",
                password=attacker,
                clean_session=True,
            )

        # The gateway subscribes with its persistent session, then stops.
        async with Gateway(cfg) as gw:
            await eventually(_connected(gw))
        # While it is away pend1 raises an alarm: the broker queues it for the gateway.
        async with Pendant("s1", "pend1", port=port, prefix=prefix, password=pend1) as pendant:
            queued = await pendant.press()
        # A device connects with the gateway's client id and a clean session.
        async with takeover(), Gateway(cfg) as gw:
            await eventually(_connected(gw))
            # Nothing lost: the queued alarm reaches the gateway and is stored.
            await eventually(lambda: gw.store.count("alarm_events"), lambda n: n == 1)
            connections = gw.mqtt.connections
            # A second attempt while the gateway is connected does not kick it off.
            async with takeover():
                async with Pendant("s1", "pend1", port=port, prefix=prefix, password=pend1) as p:
                    await p.press()
                # Stored (it folds into the open alarm of the first press).
                await eventually(lambda: gw.store.count("alarm_events"), lambda n: n == 2)
            assert gw.mqtt.connections == connections
            assert gw.mqtt.connected.is_set()
            alerts = await gw.store.recent_alerts()
        assert f"pend1/{queued}" in {a.source_key for a in alerts}


# --------------------------------------------------------------------------- finding 4


def test_ids_match_the_whole_string_and_gateway_names_are_reserved() -> None:
    assert ID_PATTERN.match("pend9")
    for bad in ("pend9\n", "pend9\r\n", "\npend9", "pend 9", "pend9/", ""):
        assert not ID_PATTERN.match(bad), repr(bad)
    with pytest.raises(ModelError, match="not a valid identifier"):
        Device("pend9\n", "s1", DeviceKind.PENDANT)
    with pytest.raises(ModelError) as refused:
        Device("s1", "s1", DeviceKind.PENDANT, resident_id="Edna Smith")
    assert "Edna" not in str(refused.value)  # described, not repeated
    assert "' ' at position 5 is not allowed" in str(refused.value)
    for reserved in ("status", "deadletter", "responders", "telecare-gateway", "Status"):
        with pytest.raises(ModelError, match="reserved for the gateway"):
            Device(reserved, "s1", DeviceKind.PENDANT)
        with pytest.raises(ModelError, match="reserved for the gateway"):
            Responder(reserved, ResponderKind.KEYHOLDER)


def test_provisioning_refuses_ids_that_are_other_broker_identities(tmp_path: Path) -> None:
    dispatch = tmp_path / "dispatch.toml"
    dispatch.write_text(
        '[[responders]]\nid = "warden1"\nkind = "mobile_warden"\n'
        'contacts = { mqtt = "warden1-app" }\n'
    )
    config, _ = _sqlite_config(
        tmp_path, f'[mqtt]\nusername = "gw-oak"\n[dispatch]\nfile = "{dispatch}"\n'
    )
    _cli(config, "site", "add", "s1")
    _cli(config, "responder", "add", "kh1")
    add = ("--site", "s1", "--kind", "pendant")
    for device_id, why in [
        ("status", "reserved for the gateway"),
        ("responders", "reserved for the gateway"),
        ("telecare-gateway", "reserved for the gateway"),
        ("gw-oak", "the gateway's MQTT user"),
        ("kh1", "a responder"),
        ("warden1", "a responder"),
        ("warden1-app", "a responder app"),
        ("pend9\n", "not a valid identifier"),
    ]:
        out = _cli(config, "device", "add", device_id, *add, ok=False)
        assert why in " ".join(out.split()), (device_id, out)
    _cli(config, "device", "add", "pend1", *add)
    out = _cli(config, "responder", "add", "pend1", ok=False)
    assert "is a device id" in out
    out = _cli(config, "responder", "add", "gw-oak", ok=False)
    assert "gateway's MQTT user" in out


@pytest.mark.skipif(MOSQUITTO_GID is None, reason="needs the mosquitto group")
async def test_password_file_refuses_non_devices_and_stays_readable_by_the_broker(
    tmp_path: Path, broker_dir: Path
) -> None:
    """Rows stored before ids were checked (a trailing newline, the gateway's user name)
    are refused one by one; the rest of the fleet is written, the gateway's entry is not
    replaced, and the file keeps root:mosquitto 0640 so the broker can still read it."""
    config, db = _sqlite_config(tmp_path)
    await _acli(config, "site", "add", "s1")
    pend1 = _password(
        await _acli(config, "device", "add", "pend1", "--site", "s1", "--kind", "pir")
    )
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        for legacy in ("pend9\n", "telecare-gateway"):
            conn.execute(
                "INSERT INTO devices (device_id, site_id, kind, secret_hash) VALUES (?,?,?,?)",
                (legacy, "s1", "pendant", hash_secret("device-chosen")),
            )
    pwfile = broker_dir / "telecare.passwd"
    gw_password = "gateway-secret-" + uuid.uuid4().hex
    assert MOSQUITTO_GID is not None
    write_password_file(
        pwfile, [("telecare-gateway", hash_secret(gw_password))], group=MOSQUITTO_GID
    )
    assert (pwfile.stat().st_uid, pwfile.stat().st_gid) == (0, MOSQUITTO_GID)
    gateway_entry = read_password_file(pwfile)["telecare-gateway"]

    out = await _acli(config, "device", "mosquitto-passwd", str(pwfile), ok=False)
    flat = " ".join(out.split())
    assert "refused device 'pend9\\n': not a valid identifier" in flat
    assert "refused device 'telecare-gateway': a name reserved for the gateway" in flat
    assert "2 device(s) not written" in flat
    entries = read_password_file(pwfile)
    assert set(entries) == {"pend1", "telecare-gateway"}
    assert entries["telecare-gateway"] == gateway_entry  # not the device's hash
    st = pwfile.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, MOSQUITTO_GID, 0o640)

    prefix = f"pwfile-{uuid.uuid4().hex[:8]}/telecare/v1"
    with shipped_broker(broker_dir, prefix, pwfile, open_modes=False) as port:
        assert await _connects(port, "pend1", pend1)
        assert await _connects(port, "telecare-gateway", gw_password)
        assert not await _connects(port, "telecare-gateway", "device-chosen")


@pytest.mark.skipif(MOSQUITTO_GID is None, reason="needs the mosquitto group")
def test_a_new_password_file_gets_the_broker_group(tmp_path: Path) -> None:
    config, _ = _sqlite_config(tmp_path)
    _cli(config, "site", "add", "s1")
    _cli(config, "device", "add", "pend1", "--site", "s1", "--kind", "pir")
    pwfile = tmp_path / "new.passwd"
    assert "cannot read" not in _cli(config, "device", "mosquitto-passwd", str(pwfile))
    st = pwfile.stat()
    assert (st.st_gid, stat.S_IMODE(st.st_mode)) == (MOSQUITTO_GID, 0o640)
    out = _cli(config, "device", "mosquitto-passwd", str(pwfile), "--group", "0")
    assert pwfile.stat().st_gid == 0
    assert "cannot read" in out  # root:root 0640: the installer is told
    out = _cli(
        config, "device", "mosquitto-passwd", str(pwfile), "--gateway-user", "pend1", ok=False
    )
    assert "is a device id" in out


async def _connects(port: int, user: str, password: str) -> bool:
    try:
        async with aiomqtt.Client("127.0.0.1", port, username=user, password=password):
            return True
    except aiomqtt.MqttError:
        return False


async def test_gateway_topics_are_out_of_reach_of_every_other_user(
    tmp_path: Path, broker_dir: Path
) -> None:
    """Even broker users named like the gateway's topic levels (as a device could have been
    called before the names were reserved) cannot write under ``_gateway/``, and a
    responder app reads its own dispatches only."""
    users = ("telecare-gateway", "status", "responders", "deadletter", "app1", "app2", "app3")
    passwords = {u: uuid.uuid4().hex for u in (*users, "pend1")}
    pwfile = broker_dir / "telecare.passwd"
    write_password_file(pwfile, [(u, hash_secret(p)) for u, p in passwords.items()])
    prefix = f"acl-{uuid.uuid4().hex[:8]}/telecare/v1"

    def client(user: str) -> aiomqtt.Client:
        return aiomqtt.Client("127.0.0.1", port, username=user, password=passwords[user])

    with shipped_broker(broker_dir, prefix, pwfile) as port:
        gateway_sees: list[str] = []
        app1_sees: list[str] = []
        app2_sees: list[str] = []
        async with (
            client("telecare-gateway") as gw,
            client("app1") as app1,
            client("app2") as app2,
        ):
            await gw.subscribe(f"{prefix}/#", qos=1)
            await app1.subscribe(f"{prefix}/_gateway/responders/app1/#", qos=1)
            # app2 tries to read every app's dispatches: the broker grants the filter but
            # delivers app2's own only (Mosquitto 2.0 checks read access per message).
            granted = await app2.subscribe(f"{prefix}/_gateway/responders/+/#", qos=1)
            assert list(granted) == [1]
            for user, topic in [
                ("status", f"{prefix}/_gateway/status"),
                ("deadletter", f"{prefix}/_gateway/deadletter"),
                ("responders", f"{prefix}/_gateway/responders/app1/dispatch"),
                ("app3", f"{prefix}/_gateway/responders/app1/dispatch"),
                ("pend1", f"{prefix}/_gateway/status"),
                ("pend1", f"{prefix}/_gateway/responders/app1/dispatch"),
            ]:
                async with client(user) as c:
                    await c.publish(topic, b"forged", qos=1)
            await gw.publish(f"{prefix}/_gateway/responders/app1/dispatch", b"for app1", qos=1)
            await gw.publish(f"{prefix}/_gateway/responders/app2/dispatch", b"for app2", qos=1)
            async with client("pend1") as device:
                await device.publish(f"{prefix}/s1/pend1/event", b"own topic", qos=1)

            async def collect(c: aiomqtt.Client, into: list[str], last: bytes) -> None:
                async for message in c.messages:
                    assert isinstance(message.payload, bytes)
                    into.append(f"{message.topic} {message.payload.decode()}")
                    if message.payload == last:
                        return

            async with asyncio.timeout(10):
                await collect(gw, gateway_sees, b"own topic")
                await collect(app1, app1_sees, b"for app1")
                await collect(app2, app2_sees, b"for app2")
        assert not [m for m in gateway_sees if "forged" in m], gateway_sees
        assert f"{prefix}/s1/pend1/event own topic" in gateway_sees
        assert app1_sees == [f"{prefix}/_gateway/responders/app1/dispatch for app1"]
        assert app2_sees == [f"{prefix}/_gateway/responders/app2/dispatch for app2"]
