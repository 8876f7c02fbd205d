"""``telecare doctor`` (issue 13) against a private Mosquitto started with the shipped
deploy/mosquitto configuration and ACL, and a real PostgreSQL schema: a healthy
installation, and failing checks (wrong broker port, unmigrated schema, wrong gateway
password, expired certificate, bad configuration) that make the exit code non-zero; the
throwaway probe device the doctor adds to the password file itself (and removes)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from psycopg import sql
from typer.testing import CliRunner

from telecare.gateway.auth import hash_secret, write_password_file
from telecare.gateway.cli.common import ExitCode
from telecare.gateway.cli.main import app
from telecare.gateway.store.postgres import PostgresStore
from tests.helpers import run_together
from tests.ingest.test_provision import ROOT, shipped_broker
from tests.services import free_port
from tests.store.helpers import message
from tests.store.test_timescale import _first_scheduled_run_ended, _probe

TELECARE = [sys.executable, "-m", "telecare.gateway.cli"]
GW_USER, GW_PASSWORD = "telecare-gateway", "gw-secret-1"
PROBE, PROBE_PASSWORD = "doctor-probe", "probe-secret-1"


def _shipped_binds_client_ids() -> bool:
    conf = (ROOT / "deploy/mosquitto/mosquitto.conf").read_text().splitlines()
    return any(line.strip() == "use_username_as_clientid true" for line in conf)


@dataclass
class Install:
    config: Path
    password_file: Path
    port: int
    prefix: str


def _cert(path: Path, days_left: int) -> Path:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "broker.test")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=400))
        .not_valid_after(now + timedelta(days=days_left))
        .sign(key, hashes.SHA256())
    )
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def _write_config(tmp_path: Path, *, port: int, prefix: str, dsn: str, schema: str,
                  password: str = GW_PASSWORD) -> Path:  # fmt: skip
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(
        f'[mqtt]\nhost = "127.0.0.1"\nport = {port}\nusername = "{GW_USER}"\n'
        f'password = "{password}"\ntopic_prefix = "{prefix}"\n'
        f'[store]\nbackend = "postgres"\ndsn = "{dsn}"\nschema = "{schema}"\n'
        f'timescale = false\nspool_dir = "{tmp_path / "spool"}"\n'
    )
    return cfg


@pytest.fixture
def install(tmp_path: Path, broker_dir: Path, pg_dsn: str, pg_schema: str) -> Iterator[Install]:
    """A migrated schema, a password file with the gateway and a probe device, and the
    shipped broker configuration running on a free port."""

    async def migrate() -> None:
        async with PostgresStore(pg_dsn, schema=pg_schema, use_timescale=False) as store:
            await store.migrate()

    asyncio.run(migrate())
    pwfile = broker_dir / "telecare.passwd"
    write_password_file(
        pwfile, [(GW_USER, hash_secret(GW_PASSWORD)), (PROBE, hash_secret(PROBE_PASSWORD))]
    )
    prefix = f"doc-{tmp_path.name[-6:]}/telecare/v1"
    with shipped_broker(broker_dir, prefix, pwfile) as port:
        cfg = _write_config(tmp_path, port=port, prefix=prefix, dsn=pg_dsn, schema=pg_schema)
        yield Install(cfg, pwfile, port, prefix)


def _args(inst: Install, config: Path | None = None, *extra: str) -> list[str]:
    return [
        "doctor",
        "--config", str(config or inst.config),
        "--password-file", str(inst.password_file),
        "--probe-device", PROBE,
        "--probe-password", PROBE_PASSWORD,
        "--json",
        *extra,
    ]  # fmt: skip


def _by_name(out: str) -> dict[str, dict[str, Any]]:
    doc = json.loads(out)
    return {c["check"]: c for c in doc["checks"]}


def test_doctor_on_a_healthy_installation(install: Install, tmp_path: Path) -> None:
    good = _cert(tmp_path / "server.crt", days_left=365)
    result = CliRunner().invoke(app, _args(install, None, "--cert", str(good)))
    checks = _by_name(result.stdout)
    for name in (
        "config",
        "store reachable",
        "store migrated",
        "clock skew",
        "spool directory",
        "broker reachable",
        "broker refuses anonymous",
        "probe device login",
        "ACL denies impersonation",
        "gateway credentials",
        "TLS server.crt",
    ):
        assert checks[name]["status"] == "ok", checks[name]
    assert checks["store mode"]["detail"].startswith("plain PostgreSQL")
    assert "not authorized" in checks["ACL denies impersonation"]["detail"]
    # The shipped configuration decides whether client ids are bound to usernames.
    bound = _shipped_binds_client_ids()
    assert checks["client id bound to username"]["status"] == ("ok" if bound else "fail")
    # The tests' broker directory is world-readable: readable, but flagged.
    assert checks["password file readable by broker"]["status"] == "warn"
    assert result.exit_code == (0 if bound else ExitCode.CHECK_FAILED), result.output
    assert json.loads(result.stdout)["ok"] is bound


def test_doctor_failing_checks_exit_non_zero(install: Install, tmp_path: Path, pg_dsn: str) -> None:
    """Wrong broker port, an unmigrated schema, a wrong gateway password and an expired
    certificate: each is reported with its fix, and the exit code is 7."""
    fresh = f"t_unmigrated_{tmp_path.name[-6:]}".lower().replace("-", "_")
    bad = tmp_path / "bad"
    bad.mkdir()
    cfg = _write_config(
        bad,
        port=free_port(),
        prefix=install.prefix,
        dsn=pg_dsn,
        schema=fresh,
        password="wrong",
    )
    expired = _cert(tmp_path / "old.crt", days_left=-1)
    result = CliRunner().invoke(app, _args(install, cfg, "--cert", str(expired)))
    assert result.exit_code == ExitCode.CHECK_FAILED, result.output
    checks = _by_name(result.stdout)
    assert checks["broker reachable"]["status"] == "fail"
    assert "mqtt.port" in checks["broker reachable"]["fix"]
    migrated = checks["store migrated"]
    assert migrated["status"] == "fail"
    assert "0001_core.sql" in migrated["detail"]
    assert "0013_news2_acvpu.sql" in migrated["detail"]
    assert migrated["fix"].startswith("telecare db migrate")
    assert checks["gateway credentials"]["status"] == "fail"
    assert checks["TLS old.crt"]["status"] == "fail"
    assert "expired" in checks["TLS old.crt"]["detail"]
    assert json.loads(result.stdout)["ok"] is False
    assert "wrong" not in result.stdout  # the password itself is never echoed


def test_doctor_subprocess_table_and_exit_code(install: Install, tmp_path: Path) -> None:
    down = tmp_path / "down"
    down.mkdir()
    cfg = _write_config(
        down, port=free_port(), prefix=install.prefix, dsn="postgresql://x@127.0.0.1:1/x",
        schema="s",
    )  # fmt: skip
    args = [a for a in _args(install, cfg) if a != "--json"]
    # Both at once: the failing one mostly waits out its checks' timeouts.
    done, ok = run_together(
        [*TELECARE, *args], [*TELECARE, *_args(install)], env={**os.environ, "COLUMNS": "120"}
    )
    assert done.returncode == ExitCode.CHECK_FAILED, done.stdout + done.stderr
    assert "telecare doctor" in done.stdout
    assert "store reachable" in done.stdout
    assert "to fix" in done.stdout
    assert "Traceback" not in done.stderr
    checks = _by_name(ok.stdout)
    assert checks["broker reachable"]["status"] == "ok"
    assert ok.returncode == (0 if _shipped_binds_client_ids() else ExitCode.CHECK_FAILED)


def test_doctor_reports_a_configuration_that_does_not_parse(tmp_path: Path) -> None:
    cfg = tmp_path / "gateway.toml"
    cfg.write_text('[mqtt]\nport = "abc"\n')
    result = CliRunner().invoke(app, ["doctor", "--config", str(cfg), "--json"])
    assert result.exit_code == ExitCode.USAGE
    [check] = json.loads(result.stdout)["checks"]
    assert check["check"] == "config"
    assert check["status"] == "fail"
    assert "mqtt.port" in check["detail"]


def test_doctor_help_reads_at_80_columns() -> None:
    done = subprocess.run(
        [*TELECARE, "doctor", "--help"], capture_output=True, text=True, timeout=60,
        env={**os.environ, "COLUMNS": "80"},
    )  # fmt: skip
    assert done.returncode == 0
    assert all(len(line) <= 80 for line in done.stdout.splitlines())


def _throwaway_args(inst: Install, reload_command: str) -> list[str]:
    return [
        "doctor",
        "--config", str(inst.config),
        "--password-file", str(inst.password_file),
        "--reload-command", reload_command,
        "--json",
    ]  # fmt: skip


def test_doctor_creates_and_removes_a_throwaway_probe_device(install: Install) -> None:
    """No --probe-device: the doctor adds a random probe user to the password file,
    reloads the broker (here SIGHUP to the test's Mosquitto), runs the login, client-id
    and ACL checks with it, then restores the file byte for byte, mode kept."""
    before, mode = install.password_file.read_bytes(), install.password_file.stat().st_mode
    pid = (install.password_file.parent / "mosquitto.pid").read_text().strip()
    result = CliRunner().invoke(app, _throwaway_args(install, f"kill -HUP {pid}"))
    checks = _by_name(result.stdout)
    probe = checks["probe device"]
    assert probe["status"] == "ok", probe
    assert "throwaway 'doctor-probe-" in probe["detail"]
    for name in ("probe device login", "ACL denies impersonation"):
        assert checks[name]["status"] == "ok", checks[name]
    assert "not authorized" in checks["ACL denies impersonation"]["detail"]
    bound = _shipped_binds_client_ids()
    assert checks["client id bound to username"]["status"] == ("ok" if bound else "fail")
    assert result.exit_code == (0 if bound else ExitCode.CHECK_FAILED), result.output
    assert install.password_file.read_bytes() == before
    assert install.password_file.stat().st_mode == mode
    assert b"doctor-probe-" not in install.password_file.read_bytes()


def test_doctor_restores_the_password_file_when_the_broker_cannot_be_reloaded(
    install: Install,
) -> None:
    before = install.password_file.read_bytes()
    result = CliRunner().invoke(app, _throwaway_args(install, "false"))
    assert result.exit_code == ExitCode.CHECK_FAILED, result.output
    probe = _by_name(result.stdout)["probe device"]
    assert probe["status"] == "fail"
    assert "cannot reload the broker" in probe["detail"]
    assert "--reload-command" in probe["fix"]
    assert install.password_file.read_bytes() == before


_SCHEMA_JOBS = """
SELECT job_id FROM timescaledb_information.jobs
WHERE hypertable_schema = %(schema)s OR (hypertable_schema, hypertable_name) IN (
    SELECT materialization_hypertable_schema, materialization_hypertable_name
    FROM timescaledb_information.continuous_aggregates WHERE view_schema = %(schema)s)
"""


async def _failing_retention_job(dsn: str, schema: str) -> int:
    """A TimescaleDB schema whose retention policy fails for sure: a view depends on the
    one chunk (60 days old) it must drop. The policy is added once the view exists, and
    the scheduler's first run of it (at once, a new job is due now) has ended."""
    old = [replace(r, ts=datetime.now(UTC) - timedelta(days=60)) for r in message(1)]
    async with PostgresStore(dsn, schema=schema, retain_for=None) as store:
        await store.migrate()
        await store.write_readings(old)
        async with store.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT chunk_schema, chunk_name FROM timescaledb_information.chunks"
                " WHERE hypertable_schema = %s AND hypertable_name = 'readings'",
                (schema,),
            )
            [(chunk_schema, chunk)] = await cur.fetchall()
            await conn.execute(
                sql.SQL("CREATE VIEW {} AS SELECT * FROM {}").format(
                    sql.Identifier(schema, "pin"), sql.Identifier(chunk_schema, chunk)
                )
            )
            # The schema's other policies (compression, the aggregate's refresh) must not
            # run beside the retention run: a deadlock with them would be its error
            # instead. Each has run once (a new job is due at once); then none again.
            cur = await conn.execute(
                "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n"
                " ON n.oid = e.extnamespace WHERE e.extname = 'timescaledb'"
            )
            [(ts_schema,)] = await cur.fetchall()
            cur = await conn.execute(_SCHEMA_JOBS, {"schema": schema})
            for (other,) in await cur.fetchall():
                await _first_scheduled_run_ended(conn, other)
                await conn.execute(
                    sql.SQL("SELECT {}(%s::int, scheduled => false)").format(
                        sql.Identifier(ts_schema, "alter_job")
                    ),
                    (other,),
                )
        store.retain_for = timedelta(days=30)
        await store.migrate()
        async with store.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT job_id FROM timescaledb_information.jobs WHERE hypertable_schema = %s"
                " AND proc_name = 'policy_retention'",
                (schema,),
            )
            [(job,)] = await cur.fetchall()
            await _first_scheduled_run_ended(conn, job)
    return int(job)


def test_doctor_warns_of_failing_timescaledb_jobs(
    tmp_path: Path, pg_dsn: str, pg_schema: str
) -> None:
    """A policy job of the schema whose last scheduled run failed: a warning (storage
    still works) naming the job and its error, with where to read more."""
    if not _probe(pg_dsn)[1]:
        pytest.skip("needs TimescaleDB preloaded (point TELECARE_TEST_PG_DSN at one)")
    job = asyncio.run(_failing_retention_job(pg_dsn, pg_schema))
    cfg = _write_config(
        tmp_path, port=free_port(), prefix="doc/telecare/v1", dsn=pg_dsn, schema=pg_schema
    )
    cfg.write_text(cfg.read_text().replace("timescale = false", "timescale = true"))
    args = ["doctor", "--config", str(cfg), "--password-file", str(tmp_path / "passwd")]
    result = CliRunner().invoke(app, [*args, "--no-throwaway", "--json"])
    checks = _by_name(result.stdout)
    assert checks["store mode"]["detail"].startswith("TimescaleDB"), checks["store mode"]
    jobs = checks["timescaledb jobs"]
    assert jobs["status"] == "warn"
    assert f"Retention Policy [{job}]: cannot drop table" in jobs["detail"]
    assert "other objects depend on it" in jobs["detail"]
    listed = jobs["fix"].split("job_id IN (")[1].split(")")[0]
    assert str(job) in listed.split(", ")
