"""Provisioning CLI and per-device credentials against the real Mosquitto binary, run
with the shipped ``deploy/mosquitto`` configuration and ACL: the generated password file
lets the right password in and keeps a wrong one out, and a device can publish only on
its own topic."""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import pytest
from typer.testing import CliRunner

from telecare.gateway.auth import hash_secret, read_password_file, verify_secret
from telecare.gateway.cli.provision import app
from tests.services import free_port, port_open

ROOT = Path(__file__).resolve().parents[2]
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
runner = CliRunner()


def test_hash_roundtrip_and_mosquitto_format() -> None:
    hashed = hash_secret("s3cret")
    assert re.fullmatch(r"\$7\$10000\$[A-Za-z0-9+/=]{16}\$[A-Za-z0-9+/=]{88}", hashed)
    assert verify_secret("s3cret", hashed)
    assert not verify_secret("s3cret!", hashed)
    assert not verify_secret("s3cret", "garbage")
    assert hash_secret("s3cret") != hashed  # salted


@pytest.mark.skipif(shutil.which("mosquitto_passwd") is None, reason="needs mosquitto_passwd")
def test_verify_accepts_what_mosquitto_passwd_writes(tmp_path: Path) -> None:
    file = tmp_path / "pw"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(file), "dev1", "s3cret"], check=True)
    hashed = read_password_file(file)["dev1"]
    assert verify_secret("s3cret", hashed)
    assert not verify_secret("wrong", hashed)


def _cli(config: Path, *args: str) -> str:
    result = runner.invoke(app, [*args, "--config", str(config)])
    assert result.exit_code == 0, result.output
    return result.output


def _password(output: str) -> str:
    match = re.search(r"MQTT password: (\S+)", output)
    assert match, output
    return match.group(1)


@contextlib.contextmanager
def shipped_broker(
    directory: Path, prefix: str, password_file: Path, *, open_modes: bool = True
) -> Iterator[int]:
    """Mosquitto with deploy/mosquitto's config and ACL (paths, port and topic prefix
    substituted), so the tests exercise the files we ship; its pid is in
    ``directory/mosquitto.pid`` (SIGHUP reloads it). ``open_modes`` makes every
    file in ``directory`` world-readable; without it the password file keeps the owner,
    group and mode it has (the broker, started as root, reads it as ``mosquitto``)."""
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
    lines.append("log_dest stderr")
    lines.append(f"pid_file {directory / 'mosquitto.pid'}")  # for tests that reload it
    (directory / "mosquitto.conf").write_text("\n".join(lines) + "\n")
    for path in directory.iterdir():
        if open_modes or path != password_file:
            path.chmod(0o644)
    directory.chmod(0o777)  # mosquitto drops to its own user when started as root
    proc = subprocess.Popen([MOSQUITTO, "-c", str(directory / "mosquitto.conf")])
    try:
        deadline = time.monotonic() + 10
        while not port_open("127.0.0.1", port):
            assert proc.poll() is None, "mosquitto refused the shipped configuration"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


async def _connects(port: int, user: str, password: str) -> bool:
    try:
        async with aiomqtt.Client("127.0.0.1", port, username=user, password=password):
            return True
    except aiomqtt.MqttError:
        return False


async def _acl_check(port: int, prefix: str, gw_password: str, pend1: str) -> list[str]:
    """Topics the gateway user receives after pend1 publishes on its own and on others'."""
    received: list[str] = []
    async with aiomqtt.Client(
        "127.0.0.1", port, username="telecare-gateway", password=gw_password
    ) as gw:
        await gw.subscribe(f"{prefix}/#", qos=1)
        async with aiomqtt.Client("127.0.0.1", port, username="pend1", password=pend1) as device:
            for topic in (
                f"{prefix}/s1/pend2/event",  # another device's topic: dropped by the ACL
                f"{prefix}/_gateway/deadletter",  # the gateway's topic: dropped
                f"{prefix}/s1/pend1/event",  # its own: delivered
            ):
                await device.publish(topic, b"{}", qos=1)
        # The gateway's outbound publisher (its own user, same password) may write there.
        async with aiomqtt.Client(
            "127.0.0.1", port, username="telecare-gateway-out", password=gw_password
        ) as publisher:
            await publisher.publish(f"{prefix}/_gateway/deadletter", b"{}", qos=1)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):
                async for message in gw.messages:
                    received.append(str(message.topic))
                    if str(message.topic).endswith("/_gateway/deadletter"):
                        break
    return received


def test_provisioned_credentials_and_acl_on_the_real_broker(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(f'[store]\nbackend = "sqlite"\nsqlite_path = "{tmp_path / "t.db"}"\n')
    _cli(config, "site", "add", "s1", "--kind", "care_home")
    _cli(config, "responder", "add", "kh1", "--kind", "keyholder", "--name", "Neighbour")
    out = _cli(config, "resident", "add", "res1", "--site", "s1", "--name", "Mrs Secret")
    assert "Mrs Secret" not in out
    pend1 = _password(
        _cli(config, "device", "add", "pend1", "--site", "s1", "--resident", "res1",
             "--kind", "pendant")
    )  # fmt: skip
    pend2_old = _password(_cli(config, "device", "add", "pend2", "--site", "s1", "--kind", "pir"))
    pend2 = _password(_cli(config, "device", "passwd", "pend2"))
    assert pend2 != pend2_old
    listing = _cli(config, "device", "list")
    assert "pend1" in listing
    assert "pend2" in listing
    assert "res1" in listing

    bad = runner.invoke(
        app,
        ["device", "add", "x1", "--site", "nowhere", "--kind", "pendant", "--config", str(config)],
    )
    assert bad.exit_code == 3  # not found
    assert "site 'nowhere' does not exist" in bad.output

    broker_dir = Path(tempfile.mkdtemp(prefix="telecare-mqtt-auth-"))
    try:
        pwfile = broker_dir / "telecare.passwd"
        out = _cli(config, "device", "mosquitto-passwd", str(pwfile), "--gateway-user",
                   "telecare-gateway")  # fmt: skip
        gw_password = re.search(r"password: (\S+)", out.split("gateway user")[1])
        assert gw_password is not None
        entries = read_password_file(pwfile)
        # the gateway's user, its outbound publisher's and its alarm lane's (same password)
        gateway_users = {"telecare-gateway", "telecare-gateway-out", "telecare-gateway-alarms"}
        assert set(entries) == {"pend1", "pend2", *gateway_users}
        assert {entries[u] for u in gateway_users} == {entries["telecare-gateway"]}
        assert verify_secret(pend1, entries["pend1"])

        prefix = "acltest/telecare/v1"
        with shipped_broker(broker_dir, prefix, pwfile) as port:
            assert asyncio.run(_connects(port, "pend1", pend1))
            assert not asyncio.run(_connects(port, "pend1", pend1 + "x"))
            assert not asyncio.run(_connects(port, "pend2", pend2_old))  # rotated away
            assert asyncio.run(_connects(port, "pend2", pend2))
            assert not asyncio.run(_connects(port, "ghost", pend1))
            lane = ("telecare-gateway-alarms", gw_password.group(1))
            assert asyncio.run(_connects(port, *lane))
            received = asyncio.run(_acl_check(port, prefix, gw_password.group(1), pend1))
        assert received == [f"{prefix}/s1/pend1/event", f"{prefix}/_gateway/deadletter"]
    finally:
        shutil.rmtree(broker_dir, ignore_errors=True)
