"""Typed settings, built once at the edge from a TOML file plus environment variables.

Precedence: defaults < TOML file < environment. An environment variable names a key as
``TELECARE_<SECTION>__<KEY>`` (``TELECARE_MQTT__PORT=1884``,
``TELECARE_STORE__DSN=postgresql://...``). No other module reads the environment.

Errors name the key and the value: ``Config 'mqtt.port' has value 'abc'. Not a valid int.``
(never the value of a secret).

Secrets (``mqtt.password``, ``store.dsn``, ``store.migrate_dsn``,
``dispatch.webhook_secret``, ``dispatch.smtp_password``) are :class:`Secret` objects:
their ``repr``/``str`` is masked, so a logged or printed config never shows them; the
value is read with :meth:`Secret.reveal` only where it is handed to a client library.
"""

from __future__ import annotations

import dataclasses
import hmac
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from psycopg.conninfo import conninfo_to_dict

from telecare.gateway.errors import ConfigError
from telecare.gateway.store import roles

__all__ = [
    "ALARM_LANE_SUFFIX",
    "MIN_WEBHOOK_SECRET_BYTES",
    "Config",
    "Dc09Config",
    "DispatchSection",
    "IngestSection",
    "LogConfig",
    "MqttConfig",
    "ReceiversSection",
    "RulesSection",
    "ScaipConfig",
    "Secret",
    "SerialPortConfig",
    "StoreConfig",
    "WebConfig",
    "check_identifier",
    "load_config",
]

ENV_PREFIX = "TELECARE_"
#: HMAC keys shorter than this are refused (RFC 2104: at least the hash output length).
MIN_WEBHOOK_SECRET_BYTES = 32


class Secret:
    """A password, key or DSN with a password: masked in ``repr``/``str`` (and therefore
    in logs, tracebacks' locals and printed configs). :meth:`reveal` gives the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str = "") -> None:
        self._value = str(value)

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __len__(self) -> int:
        """Length in bytes (UTF-8): what a key-length rule counts."""
        return len(self._value.encode())

    def __repr__(self) -> str:
        return "Secret('**********')" if self._value else "Secret('')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash((Secret, self._value))


_NO_SECRET = Secret()
_DEFAULT_DSN = Secret("postgresql://telecare_app@127.0.0.1:5432/telecare")


def check_identifier(key: str, value: str) -> str:
    """``value`` if it is a plain lower-case identifier, else a ConfigError naming ``key``."""
    if not roles.IDENTIFIER.fullmatch(value):
        raise ConfigError(
            f"Config '{key}' has value {value!r}. Not a valid identifier: use 1-63 lower-case"
            " letters, digits and underscores, not starting with a digit."
        )
    return value


def _secret(obj: Any, name: str) -> None:
    """Let callers (tests, other code) pass a plain string for a secret field."""
    value = getattr(obj, name)
    if not isinstance(value, Secret):
        object.__setattr__(obj, name, Secret(value))


def dsn_user(dsn: str) -> str | None:
    """The role a DSN logs in as, when it names one."""
    try:
        user = conninfo_to_dict(dsn).get("user")
    except Exception:
        raise ConfigError("Config 'store.dsn' is not a valid PostgreSQL DSN") from None
    return str(user) if user else None


#: The gateway's broker user and client id in the shipped broker configuration.
DEFAULT_CLIENT_ID = "telecare-gateway"
#: Appended to the gateway's username and client id for the alarm lane's own MQTT session
#: (``telecare-gateway-alarms``; see ``gateway/ingest/lanes.py`` and docs/security.md).
ALARM_LANE_SUFFIX = "-alarms"


@dataclass(frozen=True)
class MqttConfig:
    host: str = "127.0.0.1"
    port: int = 1883
    username: str = ""
    password: Secret = _NO_SECRET
    #: Stable client id: with ``clean_session = false`` the broker keeps our
    #: subscription and queues QoS 1 messages while the gateway is down. The shipped
    #: broker binds client ids to usernames (``use_username_as_clientid``), so a device
    #: cannot take the gateway's session over: empty means the username (or
    #: ``telecare-gateway`` when connecting without one), and a value that differs from
    #: a set username is refused.
    client_id: str = ""
    clean_session: bool = False
    topic_prefix: str = "telecare/v1"
    keepalive: int = 30
    #: Messages in flight between the broker and the pipeline (receive maximum).
    max_inflight: int = 1000
    tls: bool = False
    ca_file: str = ""
    #: Alarm-class messages (events, observation sets, status, hubs' ``urgent`` batches)
    #: on their own MQTT session, queue and store path (``gateway/ingest/lanes.py``). The
    #: lane logs in as ``<username>-alarms`` (client id ``<client_id>-alarms``) with the
    #: same password; ``telecare device mosquitto-passwd --gateway-user`` writes both.
    alarm_lane: bool = True

    def __post_init__(self) -> None:
        _secret(self, "password")
        if not self.client_id:
            object.__setattr__(self, "client_id", self.username or DEFAULT_CLIENT_ID)
        elif self.username and self.client_id != self.username:
            raise ConfigError(
                f"Config 'mqtt.client_id' has value {self.client_id!r}. The broker binds "
                f"client ids to usernames (use_username_as_clientid): leave it empty or set "
                f"it to mqtt.username {self.username!r}."
            )


@dataclass(frozen=True)
class StoreConfig:
    #: ``sqlite`` (embedded default) or ``postgres``.
    backend: str = "sqlite"
    sqlite_path: str = "data/telecare.sqlite3"
    #: The gateway's runtime connection: a role with only the rights it needs (no
    #: superuser, not the tables' owner; see docs/security.md, ``telecare db roles``).
    dsn: Secret = _DEFAULT_DSN
    #: The owner role's connection, used only to migrate (``telecare db migrate`` and at
    #: start). When set, each migration is followed by the runtime role's grants, the
    #: runtime role being the user named in ``dsn``. Empty: migrate through ``dsn``.
    migrate_dsn: Secret = _NO_SECRET
    schema: str = "telecare"
    #: TimescaleDB for a new schema when the server has it installed and preloaded
    #: (plain partitions otherwise, logged with the reason); see docs/storage.md.
    timescale: bool = True
    pool_max: int = 8
    #: Local spool used while PostgreSQL is away. Empty: ``spool/`` next to the SQLite
    #: file, or ``data/spool-<schema>`` for PostgreSQL (one spool per store, never shared).
    spool_dir: str = ""
    #: Days a dead letter is kept (deleted by the daily maintenance); 0 keeps them for ever.
    dead_letter_retention_days: int = 30

    def __post_init__(self) -> None:
        _secret(self, "dsn")
        _secret(self, "migrate_dsn")
        check_identifier("store.schema", self.schema)
        if self.backend == "postgres" and self.migrate_dsn:
            runtime = dsn_user(self.dsn.reveal())
            owner = dsn_user(self.migrate_dsn.reveal())
            if runtime is None:
                raise ConfigError(
                    "Config 'store.migrate_dsn' is set, so 'store.dsn' must name the runtime"
                    " role (postgresql://telecare_app@host/db): it receives the grants"
                )
            check_identifier("store.dsn (user)", runtime)
            if runtime == owner:
                raise ConfigError(
                    f"Config 'store.dsn' and 'store.migrate_dsn' both log in as {runtime!r}:"
                    " the runtime role must not be the owner role"
                )

    @property
    def runtime_role(self) -> str | None:
        """The role that receives the runtime grants (only with a separate owner DSN)."""
        return dsn_user(self.dsn.reveal()) if self.migrate_dsn else None


@dataclass(frozen=True)
class SerialPortConfig:
    port: str
    codec: str
    device_id: str


@dataclass(frozen=True)
class WebConfig:
    """``[web]``: the console, care-home API and metrics, served by ``telecare run``."""

    enabled: bool = False
    host: str = "127.0.0.1"
    #: 0 = any free port (tests; the ``web_listening`` log line says which).
    port: int = 8080
    #: Session cookies carry ``Secure``: browsers send them over HTTPS and to
    #: ``localhost`` only. Turn off only behind a TLS-terminating proxy that rewrites them.
    secure_cookies: bool = True
    #: Minutes a console session lasts without use.
    session_idle_min: int = 12 * 60


@dataclass(frozen=True)
class RulesSection:
    #: Declarative rules file (``docs/examples/rules.toml``); empty = built-in defaults.
    file: str = ""
    #: The rule-state JSON file of older versions: rule state (open alarms, timers,
    #: trends) now lives in the store (``rule_state``); this file, when the table is still
    #: empty, is read into it once and renamed ``.migrated``. Empty: next to the SQLite
    #: file, or ``data/rules-state-<schema>.json`` for PostgreSQL.
    state_file: str = ""
    #: Seconds between runs of the time-driven rules.
    tick_s: float = 10.0


@dataclass(frozen=True)
class DispatchSection:
    #: TOML with ``[dispatch]`` (routes, cascades per site/resident, attend targets per
    #: route and site in ``[dispatch.attend]``) and ``[[responders]]``
    #: (availability, areas, contact channels); see docs/dispatch.md. Empty = defaults.
    file: str = ""
    #: HMAC-SHA256 key for signed webhooks (set TELECARE_DISPATCH__WEBHOOK_SECRET), at
    #: least 32 bytes: ``python -c "import secrets; print(secrets.token_urlsafe(32))"``.
    webhook_secret: Secret = _NO_SECRET
    smtp_host: str = ""
    #: 587 (submission) with STARTTLS; 25 only to a relay on this machine.
    smtp_port: int = 587
    smtp_sender: str = "telecare@localhost"
    #: Upgrade with STARTTLS (certificate verified) before sending or logging in. May be
    #: off only for a relay on loopback.
    smtp_starttls: bool = True
    #: CA bundle for the SMTP server's certificate (empty: the system's trust store).
    smtp_ca_file: str = ""
    smtp_username: str = ""
    smtp_password: Secret = _NO_SECRET
    #: E-mail address told when a dispatch escalates (unacknowledged, cascade exhausted).
    supervisor_email: str = ""
    #: Seconds an alarm may stay unacknowledged before it escalates.
    ack_within_s: int = 60
    #: Seconds between sweeps for stored alerts that have no dispatch (gateway/sweeper.py).
    sweep_s: float = 30.0

    def __post_init__(self) -> None:
        _secret(self, "webhook_secret")
        _secret(self, "smtp_password")
        if self.webhook_secret and len(self.webhook_secret) < MIN_WEBHOOK_SECRET_BYTES:
            raise ConfigError(
                f"Config 'dispatch.webhook_secret' is {len(self.webhook_secret)} bytes; a"
                f" webhook secret must be at least {MIN_WEBHOOK_SECRET_BYTES} bytes. Generate"
                ' one with: python -c "import secrets; print(secrets.token_urlsafe(32))"'
            )
        loopback = self.smtp_host in ("localhost", "127.0.0.1", "::1")
        if self.smtp_host and not self.smtp_starttls and not loopback:
            raise ConfigError(
                f"Config 'dispatch.smtp_starttls' is off for {self.smtp_host!r}: mail (and any"
                " login) would cross the network in clear. Turn it on, or relay through a"
                " server on this machine."
            )
        if bool(self.smtp_username) != bool(self.smtp_password):
            raise ConfigError(
                "Config 'dispatch.smtp_username' and 'dispatch.smtp_password' go together:"
                " set both or neither"
            )


@dataclass(frozen=True)
class IngestSection:
    """Bounds on what devices may send (docs/protocol.md, "Limits")."""

    #: Seconds a message's timestamp may be ahead of the gateway's clock (device clock
    #: skew); further ahead it is dead-lettered. Alarm events, heartbeats and observation
    #: sets are re-timed by the rules instead (a clock fault) up to ``max_age_s`` ahead.
    max_future_skew_s: float = 300.0
    #: Seconds a message's timestamp may be behind the gateway's clock; older is
    #: dead-lettered. 14 days: a hub flushing what it buffered through a long outage is
    #: still accepted, and it matches the broker's ``persistent_client_expiration``.
    max_age_s: float = 14 * 86400.0

    def __post_init__(self) -> None:
        for name in ("max_future_skew_s", "max_age_s"):
            value = getattr(self, name)
            if not value > 0:
                raise ConfigError(f"Config 'ingest.{name}' has value {value!r}. Must be > 0.")


@dataclass(frozen=True)
class Dc09Config:
    """``[receivers.dc09]``: the SIA DC-09 alarm receiver (gateway/ingest/dc09.py)."""

    enabled: bool = False
    host: str = "127.0.0.1"
    #: DC-09 has no registered port: use the one the units are set to dial.
    port: int = 9009
    tcp: bool = True
    udp: bool = True
    #: AES keys per account, hex (32, 48 or 64 digits = AES-128/192/256):
    #: ``keys = { "1234" = "00112233..." }``. An account with a key must send encrypted.
    keys: dict[str, str] = field(default_factory=dict)
    #: A frame's timestamp may be this many seconds behind the receiver's clock...
    window_past_s: float = 40.0
    #: ...or this many ahead (the standard's -40 s / +20 s); outside: NAK with our time.
    window_future_s: float = 20.0
    #: Refuse plain frames without a timestamp (encrypted ones always need one).
    require_timestamp: bool = False
    #: TCP connections served at once; more wait in the kernel's accept queue.
    max_connections: int = 256
    #: A TCP connection silent this long is closed.
    idle_timeout_s: float = 60.0

    def key_for(self, account: str) -> bytes | None:
        """The AES key of ``account`` (``None`` when it sends in the clear)."""
        wanted = account.upper()
        for name, hexed in self.keys.items():
            if name.upper() == wanted:
                return bytes.fromhex(hexed)
        return None


@dataclass(frozen=True)
class ScaipConfig:
    """``[receivers.scaip]``: the SCAIP receiver, a SIP listener (gateway/ingest/scaip.py)."""

    enabled: bool = False
    host: str = "127.0.0.1"
    #: SIP's registered port; 0 = any free port (tests; the ``scaip_listening`` log says).
    port: int = 5060
    udp: bool = True
    tcp: bool = True
    #: SIP over TLS on ``tls_port`` (SIP's 5061) with this certificate chain and key (PEM).
    tls: bool = False
    tls_port: int = 5061
    tls_cert: str = ""
    tls_key: str = ""
    #: Requests processed at once; beyond that a unit gets 503 and retries.
    max_in_flight: int = 256
    #: A TCP/TLS connection silent this long is closed.
    idle_timeout_s: float = 300.0


@dataclass(frozen=True)
class ReceiversSection:
    """``[receivers.*]``: IP alarm receivers."""

    dc09: Dc09Config = field(default_factory=Dc09Config)
    scaip: ScaipConfig = field(default_factory=ScaipConfig)


@dataclass(frozen=True)
class LogConfig:
    level: str = "info"
    #: ``json`` (production) or ``console`` (pretty, for a terminal).
    format: str = "json"


@dataclass(frozen=True)
class Config:
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    web: WebConfig = field(default_factory=WebConfig)
    log: LogConfig = field(default_factory=LogConfig)
    rules: RulesSection = field(default_factory=RulesSection)
    dispatch: DispatchSection = field(default_factory=DispatchSection)
    ingest: IngestSection = field(default_factory=IngestSection)
    serial: tuple[SerialPortConfig, ...] = ()
    receivers: ReceiversSection = field(default_factory=ReceiversSection)


def spool_path(config: Config) -> Path:
    if config.store.spool_dir:
        return Path(config.store.spool_dir)
    if config.store.backend == "sqlite":
        return Path(config.store.sqlite_path).with_name("spool")
    return Path("data") / f"spool-{config.store.schema}"


def rule_state_path(config: Config) -> Path:
    if config.rules.state_file:
        return Path(config.rules.state_file)
    if config.store.backend == "sqlite":
        return Path(config.store.sqlite_path).with_name("rules-state.json")
    return Path("data") / f"rules-state-{config.store.schema}.json"


def load_config(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Build a :class:`Config` from an optional TOML file and an environment mapping."""
    raw: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        try:
            raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"Config file {path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"Config file {path} is not valid TOML: {exc}") from None
    for key, value in (env or {}).items():
        if not key.startswith(ENV_PREFIX) or "__" not in key:
            continue
        section, _, name = key[len(ENV_PREFIX) :].lower().partition("__")
        raw.setdefault(section, {})
        if not isinstance(raw[section], dict):
            raise ConfigError(f"Config '{section}' in {source} is not a table")
        raw[section][name] = value
    config: Config = _build(Config, raw, "", source)
    _check_dc09_keys(config.receivers.dc09)
    _check_scaip(config.receivers.scaip)
    return config


def _check_dc09_keys(dc09: Dc09Config) -> None:
    for account, hexed in dc09.keys.items():
        try:
            size = len(bytes.fromhex(hexed))
        except ValueError:
            size = -1
        if size not in (16, 24, 32):
            raise ConfigError(
                f"Config 'receivers.dc09.keys.{account}' is not an AES key: use 32, 48 or 64"
                " hex digits (AES-128/192/256)"
            )


def _check_scaip(scaip: ScaipConfig) -> None:
    if scaip.enabled and scaip.tls and not (scaip.tls_cert and scaip.tls_key):
        raise ConfigError(
            "Config 'receivers.scaip.tls' is true but 'receivers.scaip.tls_cert' or"
            " 'tls_key' is empty: give the PEM certificate chain and key"
        )


def _build(cls: type[Any], raw: Mapping[str, Any], prefix: str, source: str) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(raw) - known
    if unknown:
        names = ", ".join(sorted(f"'{prefix}{u}'" for u in unknown))
        raise ConfigError(f"Unknown config key {names} in {source}; known: {sorted(known)}")
    kwargs: dict[str, Any] = {}
    for name, value in raw.items():
        kwargs[name] = _coerce(hints[name], value, f"{prefix}{name}", source)
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, key: str, source: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, Mapping):
            raise ConfigError(f"Config '{key}' in {source} must be a table")
        return _build(tp, value, f"{key}.", source)
    if origin is dict:
        if not isinstance(value, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            raise ConfigError(f"Config '{key}' in {source} must be a table of strings")
        return dict(value)
    if origin is tuple:
        (item_tp, _) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"Config '{key}' in {source} must be an array of tables")
        return tuple(_coerce(item_tp, v, f"{key}[{i}]", source) for i, v in enumerate(value))
    if origin in (types.UnionType, typing.Union):
        tp = next(t for t in typing.get_args(tp) if t is not type(None))
    try:
        if tp is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if tp is int:
            if isinstance(value, bool):
                raise ValueError
            return int(value)
        if tp is float:
            return float(value)
        if tp is str:
            if not isinstance(value, str | int | float):
                raise ValueError
            return str(value)
        if tp is Secret:
            if not isinstance(value, str):
                raise ConfigError(f"Config '{key}' in {source} must be a string") from None
            return Secret(value)
    except ValueError:
        raise ConfigError(
            f"Config '{key}' has value {str(value)!r}. Not a valid {tp.__name__}."
        ) from None
    raise ConfigError(f"Config '{key}': unsupported type {tp!r}")  # pragma: no cover
