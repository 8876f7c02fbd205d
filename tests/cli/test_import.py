"""``telecare import``: through Typer's runner on SQLite, and as a subprocess against
real PostgreSQL. Errors carry line and column and write nothing; re-importing the same
file changes nothing."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from telecare.devices.model import Responder, ResponderKind, Site, SiteKind
from telecare.gateway.store.postgres import PostgresStore
from telecare.gateway.store.sqlite import SqliteStore
from tests.cli.conftest import Cli
from tests.store.helpers import registry_changes

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "docs/examples/care-home.csv"
TELECARE = [sys.executable, "-m", "telecare.gateway.cli"]


def _prepare(cli: Cli) -> None:
    cli("site", "add", "oakhouse", "--kind", "care_home")
    cli("responder", "add", "warden1", "--kind", "mobile_warden")
    cli("responder", "add", "kh-smith")


def test_the_example_file_imports_and_reimporting_changes_nothing(cli: Cli) -> None:
    _prepare(cli)
    dry = json.loads(cli("import", str(EXAMPLE), "--dry-run", "--json"))
    assert (dry["changed"], dry["written"], dry["errors"]) == (10, False, [])
    assert cli.json("device", "list") == []
    first = cli("import", str(EXAMPLE), "--by", "installer-jo")
    assert "10 changed (10 new, 0 updated)" in first
    assert "Mrs Ada Example" not in first
    devices = {d["device_id"]: d for d in cli.json("device", "list")}
    assert devices["ox01"]["format"] == "cms50d"
    assert devices["ox01"]["resident_id"] == "res01"
    assert devices["smoke-hall"]["resident_id"] is None
    assert all(d["credentials"] for d in devices.values())
    res01 = cli.json("resident", "show", "res01", "--personal")
    assert (res01["name"], res01["responders"]) == ("Mrs Ada Example", ["warden1", "kh-smith"])
    again = cli("import", str(EXAMPLE))
    assert "0 changed" in again
    assert json.loads(cli("import", str(EXAMPLE), "--json"))["changed"] == 0

    async def audit() -> set[str]:
        async with SqliteStore(cli.db) as store:
            return {c.actor for c in await registry_changes(store)}

    assert asyncio.run(audit()) == {"installer-jo"}


def test_a_changed_line_updates_only_that_thing(cli: Cli, tmp_path: Path) -> None:
    _prepare(cli)
    cli("import", str(EXAMPLE))
    edited = tmp_path / "edited.csv"
    edited.write_text(
        EXAMPLE.read_text().replace("pend02,pendant,,room 2,", "pend02,pendant,,room 9,")
    )
    out = json.loads(cli("import", str(edited), "--json"))
    assert (out["changed"], out["updated"]) == (1, [{"kind": "device", "id": "pend02"}])
    assert out["passwords"] == {}  # an existing device keeps its credentials


BAD = """site,resident,name,nhs_number,notes,responders,device,kind,format,location,heartbeat_s
oakhouse,res01,Ada,,,warden1,pend01,pendant,,room 1,
oakhouse,res02,,,,nobody,pend02,pendent,,room 2,
oakhouse,,,,,,pend01,pendant,,hall,
nowhere,res09,,,,,,,,,
oakhouse,res01,Bea,,,,ox1,oximeter,xyz,,
oakhouse,,,,,,door1,door_sensor,,,soon
"""


def test_every_error_has_its_line_and_column_and_nothing_is_written(
    cli: Cli, tmp_path: Path
) -> None:
    _prepare(cli)
    bad = tmp_path / "bad.csv"
    bad.write_text(BAD)
    out = cli("import", str(bad), code=6)
    for expected in (
        "line 3, column kind: unknown device kind 'pendent'",
        "line 4, column device: device pend01 is already on line 2",
        "line 6, column name: differs from line 2 for resident res01",
        "line 6, column format: unknown format 'xyz'",
        "line 7, column heartbeat_s: 'soon' is not a whole number",
    ):
        assert expected in out, out
    assert "nothing written" in out
    assert cli.json("device", "list") == []
    assert cli.json("resident", "list") == []
    # shape errors fixed, the store-level ones remain (site, responder): still nothing
    fixed = tmp_path / "store-errors.csv"
    fixed.write_text(
        "site,resident,responders,device,kind\n"
        "oakhouse,res01,warden1,pend01,pendant\n"
        "oakhouse,res02,nobody,,\n"
        "nowhere,res09,,,\n"
    )
    result = json.loads(cli("import", str(fixed), "--json", code=6))
    assert [(e["line"], e["column"]) for e in result["errors"]] == [
        (3, "responders"),
        (4, "site"),
    ]
    assert result["written"] is False
    assert cli.json("resident", "list") == []
    header = tmp_path / "header.csv"
    header.write_text("site,room\noakhouse,1\n")
    assert "line 1, column room: unknown column" in cli("import", str(header), code=6)


async def _prepare_pg(dsn: str, schema: str) -> None:
    """What ``_prepare`` does, in-process: a loaded machine runs few subprocesses in the
    test's 120 s, and only the import itself needs to be one."""
    async with PostgresStore(dsn, schema=schema, use_timescale=False) as store:
        await store.migrate()
        await store.upsert_site(Site("oakhouse", SiteKind.CARE_HOME))
        await store.upsert_responder(Responder("warden1", ResponderKind.MOBILE_WARDEN))
        await store.upsert_responder(Responder("kh-smith", ResponderKind.KEYHOLDER))


@pytest.mark.postgres
def test_import_as_a_subprocess_against_postgresql(
    pg_dsn: str, pg_schema: str, tmp_path: Path
) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(
        f'[store]\nbackend = "postgres"\ndsn = "{pg_dsn}"\nschema = "{pg_schema}"\n'
        "timescale = false\n"
    )

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*TELECARE, *args, "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    asyncio.run(_prepare_pg(pg_dsn, pg_schema))
    bad = tmp_path / "bad.csv"
    bad.write_text(BAD)
    failed = run("import", str(bad))
    assert failed.returncode == 6
    assert "Traceback" not in failed.stderr
    assert "line 3, column kind" in failed.stderr
    first = run("import", str(EXAMPLE), "--by", "installer-jo", "--json")
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["changed"] == 10
    again = run("import", str(EXAMPLE), "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["changed"] == 0

    async def stored() -> tuple[int, int]:
        async with PostgresStore(pg_dsn, schema=pg_schema) as store:
            return len(await store.list_devices()), len(await registry_changes(store))

    assert asyncio.run(stored()) == (7, 10)


#: A failure the validation cannot foresee, half-way through the file: the database
#: itself refuses the fourth device (a trigger, as a constraint added by a DBA would).
SQLITE_REFUSE_FALL02 = (
    "CREATE TRIGGER refuse_fall02 BEFORE INSERT ON devices WHEN NEW.device_id = 'fall02'"
    " BEGIN SELECT RAISE(ABORT, 'fall02 refused by the database'); END"
)
PG_REFUSE_FALL02 = """
CREATE FUNCTION {schema}.refuse_fall02() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.device_id = 'fall02' THEN
        RAISE EXCEPTION 'fall02 refused by the database';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER refuse_fall02 BEFORE INSERT ON {schema}.devices
    FOR EACH ROW EXECUTE FUNCTION {schema}.refuse_fall02();
"""


def test_a_failure_mid_file_leaves_nothing(cli: Cli) -> None:
    """Residents and three devices are written before the database refuses the fourth:
    one transaction, so none of them (nor their audit rows) stays; exit 6, no passwords
    printed; once the obstacle is gone the same file imports whole."""
    _prepare(cli)
    with sqlite3.connect(cli.db) as conn:
        conn.execute(SQLITE_REFUSE_FALL02)
    result = json.loads(cli("import", str(EXAMPLE), "--json", code=6))
    assert result["written"] is False
    assert result["passwords"] == {}
    [error] = result["errors"]
    assert "fall02 refused by the database" in error["message"]
    assert "nothing written" in error["message"]
    assert cli.json("resident", "list") == []
    assert cli.json("device", "list") == []

    async def audit() -> list[str]:
        async with SqliteStore(cli.db) as store:
            return [c.action for c in await registry_changes(store)]

    assert asyncio.run(audit()) == []
    text = cli("import", str(EXAMPLE), code=6)
    assert "error: the store refused a write (fall02 refused by the database)" in text
    assert "MQTT password" not in text
    with sqlite3.connect(cli.db) as conn:
        conn.execute("DROP TRIGGER refuse_fall02")
    assert json.loads(cli("import", str(EXAMPLE), "--json"))["changed"] == 10


@pytest.mark.postgres
def test_a_failure_mid_file_leaves_nothing_on_postgresql(
    pg_dsn: str, pg_schema: str, tmp_path: Path
) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(
        f'[store]\nbackend = "postgres"\ndsn = "{pg_dsn}"\nschema = "{pg_schema}"\n'
        "timescale = false\n"
    )

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*TELECARE, *args, "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    asyncio.run(_prepare_pg(pg_dsn, pg_schema))
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(PG_REFUSE_FALL02.format(schema=pg_schema).encode())
    failed = run("import", str(EXAMPLE), "--json")
    assert failed.returncode == 6, failed.stderr
    assert "Traceback" not in failed.stderr
    assert "fall02 refused by the database" in json.loads(failed.stdout)["errors"][0]["message"]

    async def stored() -> tuple[int, int, int]:
        async with PostgresStore(pg_dsn, schema=pg_schema) as store:
            return (
                len(await store.list_residents()),
                len(await store.list_devices()),
                len(await registry_changes(store)),
            )

    assert asyncio.run(stored()) == (0, 0, 0)
