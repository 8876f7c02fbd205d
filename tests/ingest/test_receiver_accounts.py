"""Receiver account mapping: the installer CLI (``device add --receiver-account``,
``device map-account``/``unmap-account``/``accounts``) against a real SQLite store, and
the registry's lookup (zone mapping before the account-wide one, unknown -> None)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from typer.testing import CliRunner

from telecare.devices.model import (
    Device,
    DeviceKind,
    ModelError,
    ReceiverAccount,
    ReceiverKind,
    Site,
    SiteKind,
)
from telecare.gateway.cli.provision import app
from telecare.gateway.registry_cache import Registry
from telecare.gateway.store.postgres import PostgresStore
from telecare.gateway.store.sqlite import SqliteStore

runner = CliRunner()


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "gw.toml"
    path.write_text(f'[store]\nbackend = "sqlite"\nsqlite_path = "{tmp_path / "t.db"}"\n')
    return path


def _cli(config: Path, *args: str, code: int = 0) -> str:
    result = runner.invoke(app, [*args, "--config", str(config)])
    assert result.exit_code == code, result.output
    return result.output


def test_cli_maps_accounts_to_devices(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    _cli(cfg, "site", "add", "home1")
    out = _cli(
        cfg,
        "device", "add", "unit1", "--site", "home1", "--kind", "pendant",
        "--receiver-account", "contact_id:1234", "--receiver-account", "sia:00ab12",
    )  # fmt: skip
    assert "receiver account contact_id:1234 -> unit1" in out
    assert "receiver account sia:00AB12 -> unit1" in out
    _cli(cfg, "device", "add", "smoke1", "--site", "home1", "--kind", "smoke_detector")
    _cli(cfg, "device", "map-account", "smoke1", "contact_id:1234:005")
    # An account (and zone) already reporting as another device is not silently moved.
    err = _cli(cfg, "device", "map-account", "smoke1", "contact_id:1234", code=1)
    assert "already maps to device 'unit1'" in err
    assert "not KIND:ACCOUNT" in _cli(cfg, "device", "map-account", "smoke1", "1234", code=1)
    assert "is not one of" in _cli(cfg, "device", "map-account", "smoke1", "x10:1", code=1)
    assert "does not exist" in _cli(cfg, "device", "map-account", "nope", "scaip:c1", code=3)
    table = _cli(cfg, "device", "accounts")
    for text in ("1234", "005", "00AB12", "smoke1"):
        assert text in table

    async def stored() -> list[ReceiverAccount]:
        async with SqliteStore(tmp_path / "t.db") as store:
            return await store.list_receiver_accounts()

    assert asyncio.run(stored()) == [
        ReceiverAccount(ReceiverKind.CONTACT_ID, "1234", "unit1"),
        ReceiverAccount(ReceiverKind.CONTACT_ID, "1234", "smoke1", "005"),
        ReceiverAccount(ReceiverKind.SIA, "00AB12", "unit1"),
    ]
    _cli(cfg, "device", "unmap-account", "contact_id:1234:005")
    assert "is not mapped" in _cli(cfg, "device", "unmap-account", "contact_id:1234:005", code=1)
    assert len(asyncio.run(stored())) == 2


def test_account_model_validation() -> None:
    assert ReceiverAccount.parse("scaip:Ctrl-7a", "d1").account == "Ctrl-7a"  # case kept
    assert ReceiverAccount.parse("contact_id:12ab:0c", "d1").label == "contact_id:12AB:0C"
    for bad in ("contact_id:", "contact_id:12 34", "contact_id:1:2:3", ":1234"):
        with pytest.raises(ModelError):
            ReceiverAccount.parse(bad, "d1")


async def test_registry_resolves_zone_then_account_and_caches(
    store: PostgresStore | SqliteStore,
) -> None:
    await store.upsert_site(Site("h", SiteKind.HOME))
    for device_id, kind in (("u1", DeviceKind.PENDANT), ("s1", DeviceKind.SMOKE_DETECTOR)):
        await store.upsert_device(Device(device_id, "h", kind))
    cid = ReceiverKind.CONTACT_ID
    await store.upsert_receiver_account(ReceiverAccount(cid, "1234", "u1"))
    await store.upsert_receiver_account(ReceiverAccount(cid, "1234", "s1", "005"))
    await store.upsert_receiver_account(ReceiverAccount(ReceiverKind.SCAIP, "1234", "s1"))
    registry = Registry(store, negative_ttl=30.0)

    async def _device(r: Registry, kind: ReceiverKind, account: str, zone: str = "") -> str:
        found = await r.receiver_device(kind, account, zone)
        return found.device_id if found else "-"

    assert await _device(registry, cid, "1234", "005") == "s1"
    assert await _device(registry, cid, "1234", "001") == "u1"
    assert await _device(registry, cid, "1234") == "u1"
    assert await _device(registry, ReceiverKind.SCAIP, "1234") == "s1"
    assert await registry.receiver_device(ReceiverKind.SIA, "1234") is None  # kinds are apart
    assert await registry.receiver_device(cid, "9999") is None
    # Cached: a mapping removed in the store is still served until it is forgotten.
    await store.delete_receiver_account(cid, "1234", "005")
    assert await _device(registry, cid, "1234", "005") == "s1"
    registry.forget_accounts()
    assert await _device(registry, cid, "1234", "005") == "u1"
    # Primed at start: no store read needed.
    primed = Registry(store)
    primed.prime(await store.list_devices(), (), await store.list_receiver_accounts())
    await store.delete_receiver_account(cid, "1234", "")
    assert await _device(primed, cid, "1234") == "u1"
