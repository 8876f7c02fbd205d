"""Real services for the tests: use the running PostgreSQL / Mosquitto when they answer,
otherwise start private ones from the installed binaries, otherwise skip with a reason
that says what to install.

Environment overrides: ``TELECARE_TEST_PG_DSN`` (a DSN to use instead of
``postgresql://postgres@127.0.0.1:5432/test``), ``TELECARE_TEST_MQTT`` (``host:port``),
``TELECARE_TEST_OWN_SERVICES=1`` (ignore running servers and start private ones).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

DEFAULT_PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"


class ServiceUnavailable(Exception):
    """Neither a running server nor a binary to start one."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _own_services() -> bool:
    return os.environ.get("TELECARE_TEST_OWN_SERVICES") == "1"


# --------------------------------------------------------------------------- PostgreSQL


def _pg_answers(dsn: str) -> bool:
    try:
        with psycopg.connect(dsn, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
        return True
    except psycopg.Error:
        return False


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)
    return candidates[0] if candidates else None


@dataclass
class PgServer:
    dsn: str


def drop_pg_schema(dsn: str, name: str, timeout: float = 30.0) -> None:
    """``DROP SCHEMA name CASCADE``, retried until ``timeout`` while it collides with a
    concurrent catalog change: on TimescaleDB a policy job that just started on the
    schema's hypertables can make the drop fail with "tuple concurrently deleted"."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute(
                    sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name))
                )
            return
        except (psycopg.errors.InternalError, psycopg.errors.DeadlockDetected):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@contextlib.contextmanager
def postgres_server() -> Iterator[PgServer]:
    dsn = os.environ.get("TELECARE_TEST_PG_DSN", DEFAULT_PG_DSN)
    if not _own_services() and _pg_answers(dsn):
        yield PgServer(dsn)
        return
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not initdb or not pg_ctl:
        raise ServiceUnavailable(
            f"no PostgreSQL at {dsn} and no initdb/pg_ctl to start one: install PostgreSQL "
            "(Debian: apt install postgresql) or set TELECARE_TEST_PG_DSN"
        )
    tmp = Path(tempfile.mkdtemp(prefix="telecare-pg-"))
    prefix: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root: run as the postgres user
        user = pwd.getpwnam("postgres")
        os.chown(tmp, user.pw_uid, user.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    data, port = tmp / "data", free_port()
    subprocess.run(
        [*prefix, initdb, "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"],
        check=True,
        capture_output=True,
    )
    opts = f"-p {port} -k {tmp} -c listen_addresses=127.0.0.1 -c fsync=off"
    subprocess.run(
        [*prefix, pg_ctl, "-D", str(data), "-o", opts, "-l", str(tmp / "log"), "-w", "start"],
        check=True,
        capture_output=True,
    )
    try:
        admin = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("CREATE DATABASE test")
        yield PgServer(f"postgresql://postgres@127.0.0.1:{port}/test")
    finally:
        subprocess.run(
            [*prefix, pg_ctl, "-D", str(data), "-m", "immediate", "stop"], capture_output=True
        )
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------- Mosquitto


@dataclass
class MqttServer:
    host: str
    port: int


@contextlib.contextmanager
def mosquitto_server() -> Iterator[MqttServer]:
    configured = os.environ.get("TELECARE_TEST_MQTT", "127.0.0.1:1883")
    host, _, port_text = configured.rpartition(":")
    if not _own_services() and port_open(host, int(port_text)):
        yield MqttServer(host, int(port_text))
        return
    with start_mosquitto() as server:
        yield server


@contextlib.contextmanager
def start_mosquitto(
    port: int | None = None, *, persistence_dir: Path | None = None
) -> Iterator[MqttServer]:
    """Start a private Mosquitto (tests that restart the broker use this directly)."""
    binary = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None
    )
    if binary is None:
        raise ServiceUnavailable(
            "no MQTT broker on 127.0.0.1:1883 and no mosquitto binary to start one: "
            "install Mosquitto (Debian: apt install mosquitto) or set TELECARE_TEST_MQTT"
        )
    tmp = Path(tempfile.mkdtemp(prefix="telecare-mqtt-"))
    port = port or free_port()
    conf = tmp / "mosquitto.conf"
    lines = [
        f"listener {port} 127.0.0.1",
        "allow_anonymous true",
        "max_queued_messages 100000",
        "log_dest none",
    ]
    if persistence_dir is not None:
        persistence_dir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            with contextlib.suppress(KeyError):
                user = pwd.getpwnam("mosquitto")
                os.chown(persistence_dir, user.pw_uid, user.pw_gid)
        lines += ["persistence true", f"persistence_location {persistence_dir}/"]
    conf.write_text("\n".join(lines) + "\n")
    proc = subprocess.Popen([binary, "-c", str(conf)], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while not port_open("127.0.0.1", port):
            if proc.poll() is not None or time.monotonic() > deadline:
                err = proc.stderr.read().decode() if proc.stderr else ""
                raise RuntimeError(f"mosquitto did not start on port {port}: {err}")
            time.sleep(0.05)
        yield MqttServer("127.0.0.1", port)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()
        shutil.rmtree(tmp, ignore_errors=True)
