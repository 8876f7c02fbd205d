"""Owner and runtime roles on the real PostgreSQL (issue 9, finding 8): set up with
``telecare db roles --apply``, migrated by the owner with ``telecare db migrate``; the
runtime role (the gateway) stores dispatches and their audit but cannot TRUNCATE,
UPDATE or DELETE the audit nor disable its triggers; what the owner changes is caught
by ``telecare audit verify`` run as the runtime role.

Roles are cluster-wide, so the module uses a database and role names of its own and
drops them at its end (one ``DROP DATABASE``: it took 1-9 s a test on a loaded machine
when each test made its own). Each test still starts from nothing where it matters: a
schema of its own in that database, set up by ``db roles --apply`` (idempotent for the
roles, per schema for the grants) and migrated (or not) by the test itself."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo
from structlog.testing import capture_logs

from telecare.devices.model import (
    Device,
    DeviceKind,
    Resident,
    Responder,
    ResponderKind,
    Site,
    SiteKind,
)
from telecare.dispatch import DispatchService
from telecare.firmware_stubs.mqtt_device import Pendant
from telecare.gateway.app import Gateway, open_store, prepare_store
from telecare.gateway.config import load_config
from telecare.gateway.dispatching import dispatch_repository
from telecare.gateway.store.errors import SchemaNotReady
from telecare.gateway.store.postgres import PostgresStore
from telecare.rules.alarms import alarm_id_for
from telecare.rules.clock import FakeClock
from tests.dispatch.conftest import NOW, make_alert, seed
from tests.helpers import eventually
from tests.services import MqttServer, PgServer

pytestmark = pytest.mark.postgres

TELECARE = [sys.executable, "-m", "telecare.gateway.cli"]


@dataclass
class Install:
    admin: str
    owner: str
    runtime: str
    schema: str
    owner_role: str
    runtime_role: str
    config: Path

    def env(self) -> dict[str, str]:
        return {**os.environ, "TELECARE_ADMIN_DSN": self.admin}


@dataclass(frozen=True)
class Cluster:
    """The module's database and the owner and runtime role names (created by the first
    ``db roles --apply``)."""

    admin: str
    owner_role: str
    runtime_role: str


@pytest.fixture(scope="module")
def cluster(pg_server: PgServer) -> Iterator[Cluster]:
    tag = uuid.uuid4().hex[:10]
    database, owner, runtime = f"t_roles_{tag}", f"t_owner_{tag}", f"t_app_{tag}"
    with psycopg.connect(pg_server.dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {database}")
    try:
        yield Cluster(make_conninfo(pg_server.dsn, dbname=database), owner, runtime)
    finally:
        with psycopg.connect(pg_server.dsn, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
            conn.execute(f"DROP ROLE IF EXISTS {owner}")
            conn.execute(f"DROP ROLE IF EXISTS {runtime}")


@pytest.fixture
def install(cluster: Cluster, tmp_path: Path) -> Install:
    """An installation in a schema of its own (not yet created: ``db roles --apply``
    creates it, owned by the owner role)."""
    admin = cluster.admin
    inst = Install(
        admin=admin,
        owner=make_conninfo(admin, user=cluster.owner_role),
        runtime=make_conninfo(admin, user=cluster.runtime_role),
        schema=f"telecare_{uuid.uuid4().hex[:8]}",
        owner_role=cluster.owner_role,
        runtime_role=cluster.runtime_role,
        config=tmp_path / "gateway.toml",
    )
    inst.config.write_text(
        f'[store]\nbackend = "postgres"\ntimescale = false\nschema = "{inst.schema}"\n'
        f'dsn = "{inst.runtime}"\nmigrate_dsn = "{inst.owner}"\n'
    )
    return inst


def telecare(inst: Install, *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [*TELECARE, *args, "--config", str(inst.config)],
        capture_output=True,
        text=True,
        timeout=120,
        env=inst.env(),
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def set_up(inst: Install) -> None:
    telecare(inst, "db", "roles", "--apply")
    migrated = telecare(inst, "db", "migrate")
    assert "applied 0008_audit_chain.sql" in migrated.stdout


async def open_dispatches(inst: Install) -> list[str]:
    """As the gateway runs: the runtime role, schema prepared by the owner."""
    cfg = load_config(inst.config)
    async with open_store(cfg) as store:
        assert isinstance(store, PostgresStore)
        await prepare_store(cfg, store)
        assert await store.role_warnings() == []
        await seed(store)
        clock = FakeClock(NOW)
        service = DispatchService(dispatch_repository(store), store, clock)
        ids = []
        async with service:
            for _ in range(3):
                alert = make_alert()
                await store.write_alerts([alert])
                ids.append((await service.open(alert)).dispatch_id)
            await service.acknowledge(ids[0], "op1")
        return ids


def refused(dsn: str, schema: str, statement: str) -> type[BaseException]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"SET search_path = {schema}")
        with pytest.raises(psycopg.Error) as caught:
            conn.execute(statement.encode())
    return type(caught.value)


def test_the_runtime_role_may_append_to_the_audit_but_never_rewrite_it(
    install: Install,
) -> None:
    set_up(install)
    ids = asyncio.run(open_dispatches(install))
    rt = install.runtime
    with psycopg.connect(rt, autocommit=True) as conn:
        found = conn.execute(f"SELECT count(*) FROM {install.schema}.dispatch_audit").fetchone()
    (count,) = found or (0,)
    assert count == 4
    schema = install.schema
    denied = psycopg.errors.InsufficientPrivilege
    assert refused(rt, schema, "TRUNCATE dispatch_audit") is denied
    assert refused(rt, schema, "UPDATE dispatch_audit SET reason = 'x'") is denied
    assert refused(rt, schema, "DELETE FROM dispatch_audit") is denied
    assert refused(rt, schema, "ALTER TABLE dispatch_audit DISABLE TRIGGER USER") is denied
    assert refused(rt, schema, "DROP TABLE dispatch_audit") is denied
    assert refused(rt, schema, "DELETE FROM schema_migrations") is denied
    # The clinical settings history (who changed a resident's SpO2 scale) likewise.
    assert refused(rt, schema, "UPDATE resident_clinical_history SET reason = 'x'") is denied
    assert refused(rt, schema, "DELETE FROM resident_clinical_history") is denied
    # And the registry audit (who removed or changed a site, resident or device).
    assert refused(rt, schema, "UPDATE registry_audit SET actor = 'x'") is denied
    assert refused(rt, schema, "DELETE FROM registry_audit") is denied
    assert refused(rt, schema, "CREATE TABLE sneaky (x int)") is denied
    # The owner is stopped by the guard trigger, not by privileges.
    assert (
        refused(install.owner, schema, "TRUNCATE dispatch_audit") is psycopg.errors.RaiseException
    )
    # ... but can switch the triggers off: then the chain names what was changed.
    with psycopg.connect(install.owner, autocommit=True) as conn, conn.transaction():
        conn.execute(f"SET LOCAL search_path = {schema}")
        conn.execute("ALTER TABLE dispatch_audit DISABLE TRIGGER USER")
        conn.execute("UPDATE dispatch_audit SET actor = 'op9' WHERE seq = 4")
        conn.execute("DELETE FROM dispatch_audit WHERE seq = 2")
        conn.execute("ALTER TABLE dispatch_audit ENABLE TRIGGER USER")
        ((seq3,), (seq4,)) = conn.execute(
            "SELECT audit_id FROM dispatch_audit WHERE seq IN (3, 4) ORDER BY seq"
        ).fetchall()
    # Verification needs no more than the runtime role's SELECT.
    bad = subprocess.run(
        [*TELECARE, "audit", "verify", "--config", str(install.config)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert bad.returncode == 7, bad.stdout + bad.stderr  # ExitCode.CHECK_FAILED
    assert f"FAIL seq 2 missing before audit row {seq3} (seq 3, dispatch {ids[2]})" in bad.stdout
    assert f"FAIL audit row {seq4} (seq 4, dispatch {ids[0]}) was changed" in bad.stdout


def test_the_runtime_role_refuses_a_schema_it_may_not_migrate(install: Install) -> None:
    telecare(install, "db", "roles", "--apply")

    async def attach() -> None:
        async with PostgresStore(install.runtime, schema=install.schema) as store:
            await store.attach()

    with pytest.raises(SchemaNotReady, match="run 'telecare db migrate' with the owner role"):
        asyncio.run(attach())


def test_db_roles_prints_the_shipped_sql_file() -> None:
    done = subprocess.run(
        [*TELECARE, "db", "roles"], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    shipped = Path(__file__).parents[2] / "deploy" / "postgres" / "roles.sql"
    assert done.stdout == shipped.read_text()
    assert "telecare_app" in done.stdout
    assert "SUPERUSER" in done.stdout
    assert " NOSUPERUSER " in done.stdout


@pytest.mark.mosquitto
def test_the_gateway_runs_end_to_end_as_the_runtime_role(
    install: Install, mqtt_server: MqttServer, topic_prefix: str, tmp_path: Path
) -> None:
    """Owner migrates at start (store.migrate_dsn), the gateway itself connects as the
    runtime role: readings (COPY, staging table), status, an alarm, its dispatch, an
    operator's acknowledgement and the audit chain all work with only those rights."""
    with install.config.open("a") as f:
        f.write(
            f'[mqtt]\nhost = "{mqtt_server.host}"\nport = {mqtt_server.port}\n'
            f'topic_prefix = "{topic_prefix}"\nclient_id = "gw-{uuid.uuid4().hex[:8]}"\n'
            f'[rules]\nstate_file = "{tmp_path / "rules-state.json"}"\n'
        )
    telecare(install, "db", "roles", "--apply")
    cfg = load_config(install.config)

    async def scenario() -> None:
        with capture_logs() as logs:
            async with Gateway(cfg) as gw:
                store = gw.store
                await store.upsert_site(Site("s1", SiteKind.HOME))
                await store.upsert_responder(Responder("kh1", ResponderKind.KEYHOLDER))
                await store.upsert_resident(Resident("res1", "s1", responders=("kh1",)))
                await store.upsert_device(Device("pend1", "s1", DeviceKind.PENDANT, "res1"))
                await eventually(lambda: _true(gw.mqtt.connected.is_set()), timeout=10)
                async with Pendant(
                    "s1",
                    "pend1",
                    host=mqtt_server.host,
                    port=mqtt_server.port,
                    prefix=topic_prefix,
                ) as pendant:
                    await pendant.readings([("spo2", 97.0, "%"), ("pulse", 71.0, "/min")])
                    await pendant.heartbeat(battery=80.0)
                    msg_id = await pendant.press()
                alert_id = alarm_id_for("pend1", msg_id)
                d = await eventually(lambda: gw.dispatcher.repo.load_for_alert(alert_id))
                await gw.dispatcher.acknowledge(d.dispatch_id, "op1")
                await eventually(lambda: _counted(store, "readings", 2))
                report = await store.dispatches.verify_audit()
        assert report.ok, report.problems
        assert report.rows == 2
        assert not [e for e in logs if e["event"] == "store_role_too_powerful"]
        assert not [e for e in logs if e["log_level"] in ("error", "critical")], logs

    asyncio.run(scenario())

    async def maintain_far_ahead() -> list[str]:
        async with PostgresStore(
            install.runtime, schema=install.schema, use_timescale=False
        ) as store:
            await store.attach()
            return await store.maintain(datetime(2040, 6, 1, tzinfo=UTC))

    with capture_logs() as logs:
        assert asyncio.run(maintain_far_ahead()) == []
    assert [e["event"] for e in logs] == ["partitions_need_owner"]


async def _true(value: bool) -> bool:
    return value


async def _counted(store: Any, table: str, n: int) -> bool:
    return bool(await store.count(table) >= n)
