"""``device add --hub`` and the ``tablet`` kind (issue 9 finding 3): who may forward for
whom is set at provisioning, checked there, and kept by the store."""

from __future__ import annotations

import asyncio
from pathlib import Path

from typer.testing import CliRunner

from telecare.devices.model import DeviceKind
from telecare.gateway.cli.provision import app
from telecare.gateway.store.sqlite import SqliteStore

runner = CliRunner()


def _cli(config: Path, *args: str) -> tuple[int, str]:
    result = runner.invoke(app, [*args, "--config", str(config)])
    return result.exit_code, result.output


def test_devices_are_registered_to_a_hub_of_their_site(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    config = tmp_path / "gateway.toml"
    config.write_text(f'[store]\nbackend = "sqlite"\nsqlite_path = "{db}"\n')
    for site in ("s1", "s2"):
        assert _cli(config, "site", "add", site, "--kind", "care_home")[0] == 0
    for device, site, kind in [
        ("hub1", "s1", "hub"),
        ("hub2", "s2", "hub"),
        ("pend1", "s1", "pendant"),
        ("tab1", "s1", "tablet"),
    ]:
        code, out = _cli(config, "device", "add", device, "--site", site, "--kind", kind)
        assert code == 0, out
    code, out = _cli(config, "device", "add", "ox1", "--site", "s1", "--kind", "oximeter",
                     "--hub", "hub1")  # fmt: skip
    assert code == 0, out

    refused = [
        (["--hub", "nohub"], "hub 'nohub' does not exist at site 's1'", 3),  # not found
        (["--hub", "hub2"], "hub 'hub2' does not exist at site 's1'", 3),
        (["--hub", "pend1"], "device 'pend1' is a pendant, not one of: alarm_receiver, hub", 1),
    ]
    for extra, message, expected in refused:
        code, out = _cli(config, "device", "add", "ox2", "--site", "s1", "--kind", "oximeter",
                         *extra)  # fmt: skip
        assert code == expected
        assert message in out

    code, listing = _cli(config, "device", "list")
    assert code == 0
    assert "tablet" in listing

    async def stored() -> tuple[str | None, DeviceKind | None, bool]:
        async with SqliteStore(db) as store:
            ox1, tab1 = await store.get_device("ox1"), await store.get_device("tab1")
            ox2 = await store.get_device("ox2")
        assert ox1 is not None
        assert tab1 is not None
        return ox1.hub_id, tab1.kind, ox2 is None

    assert asyncio.run(stored()) == ("hub1", DeviceKind.TABLET, True)
