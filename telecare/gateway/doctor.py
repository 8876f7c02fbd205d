"""``telecare doctor``: check an installation end to end, read-only where it can be.

Each check returns a :class:`Check` (``ok``, ``warn``, ``fail`` or ``skip``) with what was
found and, when not ok, what to do. Nothing here migrates, writes to the store or
connects as the gateway's MQTT user: with ``use_username_as_clientid`` that connection
would take over the running gateway's persistent session. The gateway's credentials are
checked against the broker's password file instead, and the broker's behaviour (login,
client id binding, ACL) with a probe device: one provisioned for it
(``--probe-device``/``--probe-password``), or else a throwaway one the doctor creates
itself. The throwaway exists only in the broker's password file (a random
``doctor-probe-<hex>`` user with a random password, never in the store): added, the
broker reloaded (``--reload-command``), the checks run, then the file is restored byte
for byte (owner and mode kept) and the broker reloaded again, whatever the checks found.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import shlex
import shutil
import socket
import sqlite3
import stat
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import paho.mqtt.client as paho
import psycopg
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from psycopg import sql

from telecare.gateway.auth import hash_secret, new_secret, read_password_file, verify_secret
from telecare.gateway.config import Config
from telecare.gateway.store.migrations import migrations_for
from telecare.gateway.store.timescale import PRELOAD_FIX, extension_status

__all__ = ["Check", "DoctorOptions", "Status", "run_checks"]

Status = Literal["ok", "warn", "fail", "skip"]


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    status: Status
    detail: str
    fix: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"check": self.name, "status": self.status, "detail": self.detail, "fix": self.fix}


@dataclass(frozen=True, slots=True)
class DoctorOptions:
    password_file: Path = Path("/etc/mosquitto/telecare.passwd")
    broker_user: str = "mosquitto"
    probe_device: str = ""
    probe_password: str = ""
    certs: tuple[Path, ...] = ()
    max_skew_s: float = 2.0
    min_free_mb: int = 200
    cert_warn_days: int = 30
    timeout_s: float = 3.0
    #: Makes the broker re-read its password file (no shell; split like one).
    reload_command: str = "systemctl reload mosquitto"
    #: Without ``probe_device``: create a throwaway one (needs the password file writable).
    throwaway_probe: bool = True


def run_checks(cfg: Config, opts: DoctorOptions) -> list[Check]:
    """Every check, in the order a table shows them (blocking; seconds at most)."""
    import asyncio

    checks: list[Check] = [Check("config", "ok", "parses")]
    checks += asyncio.run(_store_checks(cfg, opts))
    checks.append(_spool_check(cfg, opts))
    checks += _broker_checks(cfg, opts)
    checks += _password_file_checks(cfg, opts)
    checks += _tls_checks(cfg, opts)
    return checks


# --------------------------------------------------------------------------- store


async def _store_checks(cfg: Config, opts: DoctorOptions) -> list[Check]:
    if cfg.store.backend == "sqlite":
        return _sqlite_checks(Path(cfg.store.sqlite_path))
    out: list[Check] = []
    try:
        conn = await psycopg.AsyncConnection.connect(
            cfg.store.dsn.reveal(), autocommit=True, connect_timeout=max(1, int(opts.timeout_s))
        )
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return [
            Check(
                "store reachable",
                "fail",
                f"PostgreSQL: {first}",
                "check store.dsn and that PostgreSQL is running and accepts this user",
            )
        ]
    async with conn:
        out.append(Check("store reachable", "ok", f"PostgreSQL, schema {cfg.store.schema!r}"))
        cur = await conn.execute(
            "SELECT 1 FROM information_schema.tables WHERE table_schema = %s"
            " AND table_name = 'schema_migrations'",
            (cfg.store.schema,),
        )
        done: dict[int, str] = {}
        if await cur.fetchone() is not None:
            cur = await conn.execute(
                sql.SQL("SELECT version, name FROM {}.schema_migrations").format(
                    sql.Identifier(cfg.store.schema)
                )
            )
            done = {int(v): str(n) for v, n in await cur.fetchall()}
        variant = "timescale" if any(".timescale." in n for n in done.values()) else "plain"
        pending = [m.name for m in migrations_for("postgres", variant) if m.version not in done]
        out.append(_migrated(pending))
        status = await extension_status(conn)
        if variant == "timescale":
            mode = f"TimescaleDB {status.version or '?'} (schema {status.schema})"
        elif done:
            mode = "plain PostgreSQL (monthly partitions)"
        else:
            mode = "not created yet"
        if not cfg.store.timescale:
            out.append(Check("store mode", "ok", f"{mode}; store.timescale = false"))
        elif status.available is None and status.version is None:
            out.append(
                Check(
                    "store mode",
                    "ok" if variant != "timescale" else "fail",
                    f"{mode}; TimescaleDB is not installed on this server",
                    "" if variant != "timescale" else "install TimescaleDB again",
                )
            )
        elif not status.preloaded:
            out.append(
                Check(
                    "store mode",
                    "warn" if variant != "timescale" else "fail",
                    f"{mode}; TimescaleDB installed but not preloaded"
                    f" (shared_preload_libraries = {status.preload_setting!r})",
                    PRELOAD_FIX,
                )
            )
        else:
            out.append(Check("store mode", "ok", f"{mode}; TimescaleDB preloaded"))
            if variant == "timescale":
                out.append(await _timescale_jobs(conn, cfg.store.schema))
        before = datetime.now(UTC)
        cur = await conn.execute("SELECT now()")
        row = await cur.fetchone()
        after = datetime.now(UTC)
        assert row is not None
        local = before + (after - before) / 2
        skew = abs((row[0] - local).total_seconds())
        out.append(
            Check(
                "clock skew",
                "ok" if skew <= opts.max_skew_s else "fail",
                f"{skew:.2f} s against the database server (limit {opts.max_skew_s:g} s)",
                "" if skew <= opts.max_skew_s else "run NTP (chrony/systemd-timesyncd) on both",
            )
        )
    return out


_FAILED_JOBS = """
SELECT j.job_id, j.application_name,
       (SELECT e.err_message FROM timescaledb_information.job_errors e
        WHERE e.job_id = j.job_id ORDER BY e.start_time DESC LIMIT 1)
FROM timescaledb_information.jobs j JOIN timescaledb_information.job_stats s USING (job_id)
WHERE s.last_run_status = 'Failed' AND (j.hypertable_schema = %(schema)s
   OR (j.hypertable_schema, j.hypertable_name) IN (
      SELECT materialization_hypertable_schema, materialization_hypertable_name
      FROM timescaledb_information.continuous_aggregates WHERE view_schema = %(schema)s))
ORDER BY j.job_id
"""


async def _timescale_jobs(conn: psycopg.AsyncConnection[Any], schema: str) -> Check:
    """The schema's TimescaleDB policy jobs (compression, retention, the continuous
    aggregate's refresh) whose last scheduled run failed: a warning with the last error
    of each (storage keeps working; old data may not be compressed or dropped)."""
    cur = await conn.execute(_FAILED_JOBS, {"schema": schema})
    failed = await cur.fetchall()
    if not failed:
        return Check("timescaledb jobs", "ok", "no policy job's last run failed")
    found = "; ".join(f"{name}: {error or 'see the server log'}" for _, name, error in failed)
    ids = ", ".join(str(job_id) for job_id, _, _ in failed)
    return Check(
        "timescaledb jobs",
        "warn",
        f"last run failed: {found}",
        f"SELECT * FROM timescaledb_information.job_errors WHERE job_id IN ({ids});"
        " 'cannot drop portal' is a TimescaleDB bug: the work was done, only the run is"
        " marked failed (docs/storage.md)",
    )


def _sqlite_checks(path: Path) -> list[Check]:
    if not path.exists():
        return [
            Check(
                "store reachable",
                "fail",
                f"no SQLite store at {path}",
                "check store.sqlite_path, or create it: telecare db migrate",
            )
        ]
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=2)
        try:
            rows = conn.execute("SELECT version FROM schema_migrations").fetchall()
        except sqlite3.OperationalError:
            rows = []
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return [Check("store reachable", "fail", f"SQLite {path}: {exc}", "check the file")]
    done = {int(r[0]) for r in rows}
    pending = [m.name for m in migrations_for("sqlite") if m.version not in done]
    return [
        Check("store reachable", "ok", f"SQLite {path}"),
        _migrated(pending),
        Check("store mode", "ok", "SQLite (embedded)"),
        Check("clock skew", "skip", "embedded store: the gateway's own clock"),
    ]


def _migrated(pending: list[str]) -> Check:
    if not pending:
        return Check("store migrated", "ok", "schema is up to date")
    return Check(
        "store migrated",
        "fail",
        f"{len(pending)} pending: {', '.join(pending)}",
        "telecare db migrate --config ...",
    )


# --------------------------------------------------------------------------- spool


def _spool_check(cfg: Config, opts: DoctorOptions) -> Check:
    from telecare.gateway.app import spool_path

    path = spool_path(cfg)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".doctor-{uuid.uuid4().hex[:8]}"
        probe.write_bytes(b"x")
        probe.unlink()
    except OSError as exc:
        return Check(
            "spool directory",
            "fail",
            f"{path} is not writable: {exc.strerror}",
            "create it, owned by the gateway's user (store.spool_dir)",
        )
    free_mb = shutil.disk_usage(path).free // (1024 * 1024)
    if free_mb < opts.min_free_mb:
        return Check(
            "spool directory",
            "fail",
            f"{path}: only {free_mb} MB free (want {opts.min_free_mb} MB)",
            "free disk space or move store.spool_dir",
        )
    return Check("spool directory", "ok", f"{path} writable, {free_mb} MB free")


# --------------------------------------------------------------------------- broker


def _broker_checks(cfg: Config, opts: DoctorOptions) -> list[Check]:
    host, port = cfg.mqtt.host, cfg.mqtt.port
    try:
        with socket.create_connection((host, port), timeout=opts.timeout_s):
            pass
    except OSError as exc:
        return [
            Check(
                "broker reachable",
                "fail",
                f"{host}:{port}: {exc.strerror or exc}",
                "check mqtt.host / mqtt.port and that Mosquitto is running",
            )
        ]
    out = [Check("broker reachable", "ok", f"{host}:{port} accepts connections")]
    anon = _Mqtt(cfg, opts, f"doctor-anon-{uuid.uuid4().hex[:6]}", None, None)
    accepted = anon.connect()
    anon.close()
    out.append(
        Check(
            "broker refuses anonymous",
            "fail" if accepted else "ok",
            "anonymous login accepted" if accepted else f"refused ({anon.reason})",
            "allow_anonymous false (deploy/mosquitto/mosquitto.conf)" if accepted else "",
        )
    )
    if opts.probe_device:
        return out + _probe_device_checks(cfg, opts)
    if not opts.throwaway_probe:
        return [*out, _no_probe("--no-throwaway and no --probe-device")]
    if not os.access(opts.password_file, os.W_OK) or not os.access(
        opts.password_file.parent, os.W_OK
    ):
        return [*out, _no_probe(f"cannot write {opts.password_file} for a throwaway probe")]
    return out + _throwaway_checks(cfg, opts)


def _no_probe(why: str) -> Check:
    return Check(
        "probe device",
        "skip",
        f"{why}: login, client-id binding and ACL not tried",
        "run as a user who may write --password-file and reload the broker (root), or"
        " pass --probe-device/--probe-password of a device provisioned for it",
    )


def _throwaway_checks(cfg: Config, opts: DoctorOptions) -> list[Check]:
    """The probe checks with a throwaway probe device, added to the password file and
    removed again (the file restored, the broker reloaded) whatever happens."""
    device, secret = f"doctor-probe-{uuid.uuid4().hex[:8]}", new_secret()
    out: list[Check] = []
    try:
        with _probe_entry(opts, device, secret):
            if _wait_login(cfg, opts, device, secret):
                out.append(
                    Check(
                        "probe device",
                        "ok",
                        f"throwaway {device!r} added to {opts.password_file.name} and the"
                        " broker reloaded; removed after the checks",
                    )
                )
            out += _probe_device_checks(cfg, replace(opts, probe_device=device,
                                                     probe_password=secret))  # fmt: skip
    except _ProbeSetupError as exc:
        out.append(Check("probe device", "fail", str(exc), exc.fix))
    return out


class _ProbeSetupError(Exception):
    def __init__(self, message: str, fix: str) -> None:
        super().__init__(message)
        self.fix = fix


@contextlib.contextmanager
def _probe_entry(opts: DoctorOptions, device: str, secret: str) -> Iterator[None]:
    """``device`` in the password file while the block runs; afterwards the file as it
    was (only our line dropped if someone rewrote it meanwhile) and the broker reloaded."""
    path = opts.password_file
    original, st = path.read_bytes(), path.stat()
    sep = b"" if not original or original.endswith(b"\n") else b"\n"
    line = f"{device}:{hash_secret(secret)}\n".encode()
    ours = original + sep + line
    _replace_file(path, ours, st)
    try:
        _reload(opts)
        yield
    finally:
        now = path.read_bytes() if path.exists() else b""
        if now == ours:
            _replace_file(path, original, st)
        elif line in now:
            _replace_file(path, now.replace(line, b""), path.stat())
        _reload(opts)


def _replace_file(path: Path, body: bytes, st: os.stat_result) -> None:
    """Atomically ``body`` at ``path`` with the owner, group and mode of ``st``."""
    tmp = path.with_name(f".{path.name}.doctor")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            if (st.st_uid, st.st_gid) != (os.geteuid(), os.getegid()):
                os.fchown(f.fileno(), st.st_uid, st.st_gid)
            os.fchmod(f.fileno(), stat.S_IMODE(st.st_mode))
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _reload(opts: DoctorOptions) -> None:
    try:
        done = subprocess.run(
            shlex.split(opts.reload_command), capture_output=True, text=True, timeout=15
        )
    except (OSError, ValueError, subprocess.TimeoutExpired) as exc:
        why = f"{opts.reload_command!r}: {exc}"
    else:
        if done.returncode == 0:
            return
        lines = (done.stderr or done.stdout).strip().splitlines()
        why = f"{opts.reload_command!r} exited {done.returncode}: {lines[-1] if lines else ''}"
    raise _ProbeSetupError(
        f"cannot reload the broker for a throwaway probe: {why}".rstrip(": "),
        "--reload-command (e.g. 'kill -HUP <mosquitto pid>'), or pass --probe-device",
    )


def _wait_login(cfg: Config, opts: DoctorOptions, device: str, secret: str) -> bool:
    """Whether the throwaway probe can log in within a few seconds of the reload (the
    broker re-reads the file on its next loop)."""
    deadline = time.monotonic() + max(5.0, opts.timeout_s)
    while True:
        client = _Mqtt(cfg, opts, f"{device}-doctor-w", device, secret)
        try:
            if client.connect():
                return True
        finally:
            client.close()
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)


def _probe_device_checks(cfg: Config, opts: DoctorOptions) -> list[Check]:
    dev = opts.probe_device
    first = _Mqtt(cfg, opts, f"{dev}-doctor-a", dev, opts.probe_password)
    if not first.connect():
        return [
            Check(
                "probe device login",
                "fail",
                f"{dev!r} refused ({first.reason})",
                "check the probe device's password and that the broker reloaded the"
                " password file (systemctl reload mosquitto)",
            )
        ]
    out = [Check("probe device login", "ok", f"{dev!r} logged in")]
    second = _Mqtt(cfg, opts, f"{dev}-doctor-b", dev, opts.probe_password)
    try:
        second.connect()
        taken_over = first.disconnected.wait(opts.timeout_s)
        out.append(
            Check(
                "client id bound to username",
                "ok" if taken_over else "fail",
                "a second login with another client id took over the first (same id)"
                if taken_over
                else "two logins of one user with different client ids coexist: a device"
                " could take over the gateway's session by using its client id",
                "" if taken_over else "use_username_as_clientid true under every listener",
            )
        )
        # Publish as another device: the ACL must refuse (MQTT 5 PUBACK 0x87).
        client = second if not taken_over else first
        if taken_over:
            client = _Mqtt(cfg, opts, f"{dev}-doctor-c", dev, opts.probe_password)
            client.connect()
        code = client.publish_qos1(
            f"{cfg.mqtt.topic_prefix}/_doctor/not-{dev}/event", b'{"doctor": true}'
        )
        denied = code is not None and code >= 0x80
        out.append(
            Check(
                "ACL denies impersonation",
                "ok" if denied else "fail",
                f"publishing as another device: {_reason_text(code)}",
                "" if denied else "acl_file with 'pattern write telecare/v1/+/%u/+'",
            )
        )
        if client is not first and client is not second:
            client.close()
    finally:
        second.close()
        first.close()
    return out


def _reason_text(code: int | None) -> str:
    if code is None:
        return "no acknowledgement"
    name = {0: "accepted", 0x10: "accepted (no subscribers)", 0x87: "not authorized"}
    return f"{name.get(code, 'reason')} (0x{code:02x})"


class _Mqtt:
    """A short-lived MQTT 5 client (paho, its own network thread)."""

    def __init__(
        self, cfg: Config, opts: DoctorOptions, client_id: str, user: str | None, pw: str | None
    ) -> None:
        self._cfg = cfg
        self._timeout = opts.timeout_s
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5
        )
        if user is not None:
            self.client.username_pw_set(user, pw)
        if cfg.mqtt.tls:
            self.client.tls_set(ca_certs=cfg.mqtt.ca_file or None)
        self.connected = threading.Event()
        self.disconnected = threading.Event()
        self.reason = "no answer"
        self._published: dict[int, int] = {}
        self._pub_done = threading.Condition()
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        self._started = False

    def _on_connect(self, _c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        self.reason = str(reason)
        if not reason.is_failure:
            self.connected.set()
        else:
            self.disconnected.set()

    def _on_disconnect(self, _c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        self.reason = str(reason)
        self.disconnected.set()

    def _on_publish(self, _c: Any, _u: Any, mid: int, reason: Any, _p: Any) -> None:
        with self._pub_done:
            self._published[mid] = int(reason.value)
            self._pub_done.notify_all()

    def connect(self) -> bool:
        try:
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = 0
            self.client.connect(
                self._cfg.mqtt.host,
                self._cfg.mqtt.port,
                keepalive=30,
                clean_start=True,
                properties=props,
            )
        except OSError as exc:
            self.reason = exc.strerror or str(exc)
            return False
        self.client.loop_start()
        self._started = True
        waited = _wait_any(self.connected, self.disconnected, self._timeout)
        return waited and self.connected.is_set() and not self.disconnected.is_set()

    def publish_qos1(self, topic: str, payload: bytes) -> int | None:
        info = self.client.publish(topic, payload, qos=1)
        with self._pub_done:
            self._pub_done.wait_for(lambda: info.mid in self._published, self._timeout)
            return self._published.get(info.mid)

    def close(self) -> None:
        if self._started:
            self.client.disconnect()
            self.client.loop_stop()
            self._started = False


def _wait_any(a: threading.Event, b: threading.Event, timeout: float) -> bool:
    """Until either event is set or ``timeout`` passes (polled, with a deadline)."""
    deadline = time.monotonic() + timeout
    while not (a.is_set() or b.is_set()):
        if time.monotonic() >= deadline:
            return False
        a.wait(0.02)
    return True


# --------------------------------------------------------------------------- password file


def _password_file_checks(cfg: Config, opts: DoctorOptions) -> list[Check]:
    path = opts.password_file
    try:
        st = path.stat()
    except OSError as exc:
        return [
            Check(
                "password file",
                "fail",
                f"{path}: {exc.strerror}",
                "telecare device mosquitto-passwd FILE --gateway-user ... (or --password-file)",
            )
        ]
    out: list[Check] = []
    try:
        user = pwd.getpwnam(opts.broker_user)
    except KeyError:
        out.append(
            Check(
                "password file readable by broker",
                "fail",
                f"no system user {opts.broker_user!r}",
                "--broker-user: the user Mosquitto runs as",
            )
        )
    else:
        groups = {g.gr_gid for g in grp.getgrall() if opts.broker_user in g.gr_mem}
        groups.add(user.pw_gid)
        mode = stat.S_IMODE(st.st_mode)
        readable = (
            (st.st_uid == user.pw_uid and mode & stat.S_IRUSR)
            or (st.st_gid in groups and mode & stat.S_IRGRP)
            or mode & stat.S_IROTH
        )
        if not readable:
            out.append(
                Check(
                    "password file readable by broker",
                    "fail",
                    f"{path} mode {mode:04o} is not readable by {opts.broker_user!r}",
                    f"chgrp {opts.broker_user} {path} && chmod 0640 {path}",
                )
            )
        elif mode & stat.S_IROTH:
            out.append(
                Check(
                    "password file readable by broker",
                    "warn",
                    f"{path} mode {mode:04o} is world-readable",
                    f"chgrp {opts.broker_user} {path} && chmod 0640 {path}",
                )
            )
        else:
            out.append(
                Check(
                    "password file readable by broker",
                    "ok",
                    f"{path} mode {mode:04o}, readable by {opts.broker_user!r}",
                )
            )
    out.append(_gateway_credentials(cfg, path))
    return out


def _gateway_credentials(cfg: Config, path: Path) -> Check:
    name = "gateway credentials"
    if not cfg.mqtt.username:
        return Check(name, "fail", "mqtt.username is empty", "set mqtt.username/password")
    try:
        entries = read_password_file(path)
    except OSError as exc:
        return Check(name, "skip", f"cannot read {path}: {exc.strerror}", "run as root")
    hashed = entries.get(cfg.mqtt.username)
    if hashed is None:
        return Check(
            name,
            "fail",
            f"user {cfg.mqtt.username!r} is not in {path}",
            "telecare device mosquitto-passwd FILE --gateway-user <mqtt.username>",
        )
    if not verify_secret(cfg.mqtt.password.reveal(), hashed):
        return Check(
            name,
            "fail",
            f"mqtt.password does not match {cfg.mqtt.username!r} in {path}",
            "set mqtt.password to the password printed by mosquitto-passwd",
        )
    return Check(name, "ok", f"{cfg.mqtt.username!r} matches the password file")


# --------------------------------------------------------------------------- TLS


def _tls_checks(cfg: Config, opts: DoctorOptions) -> list[Check]:
    files = list(opts.certs)
    if cfg.mqtt.tls and cfg.mqtt.ca_file:
        files.insert(0, Path(cfg.mqtt.ca_file))
    if not files:
        return [Check("TLS certificates", "skip", "none configured (mqtt.tls off, no --cert)")]
    return [_cert_check(p, opts.cert_warn_days) for p in files]


def _cert_check(path: Path, warn_days: int) -> Check:
    from cryptography import x509

    name = f"TLS {path.name}"
    try:
        certs = x509.load_pem_x509_certificates(path.read_bytes())
    except (OSError, ValueError) as exc:
        return Check(name, "fail", f"{path}: not a readable PEM certificate ({exc})", "")
    now = datetime.now(UTC)
    soonest = min(certs, key=lambda c: c.not_valid_after_utc)
    left = soonest.not_valid_after_utc - now
    when = soonest.not_valid_after_utc.date().isoformat()
    if soonest.not_valid_before_utc > now:
        return Check(name, "fail", f"not valid before {soonest.not_valid_before_utc}", "")
    if left <= timedelta(0):
        return Check(name, "fail", f"expired on {when}", "renew the certificate")
    if left < timedelta(days=warn_days):
        return Check(name, "warn", f"expires on {when} ({left.days} days)", "renew it soon")
    return Check(name, "ok", f"valid until {when}")
