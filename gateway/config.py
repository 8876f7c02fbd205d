"""Typed settings, built once at the edge from a TOML file plus environment variables.

Precedence: defaults < TOML file < environment. An environment variable names a key as
``TELECARE_<SECTION>__<KEY>`` (``TELECARE_MQTT__PORT=1884``,
``TELECARE_STORE__DSN=postgresql://...``). No other module reads the environment.

Errors name the key and the value: ``Config 'mqtt.port' has value 'abc'. Not a valid int.``
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.errors import ConfigError

__all__ = [
    "ApiConfig",
    "Config",
    "DispatchSection",
    "IngestSection",
    "LogConfig",
    "MqttConfig",
    "RulesSection",
    "SerialPortConfig",
    "StoreConfig",
    "load_config",
]

ENV_PREFIX = "TELECARE_"
#: The gateway's broker user and client id in the shipped broker configuration.
DEFAULT_CLIENT_ID = "telecare-gateway"


@dataclass(frozen=True)
class MqttConfig:
    host: str = "127.0.0.1"
    port: int = 1883
    username: str = ""
    password: str = ""
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

    def __post_init__(self) -> None:
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
    dsn: str = "postgresql://postgres@127.0.0.1:5432/telecare"
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


@dataclass(frozen=True)
class SerialPortConfig:
    port: str
    codec: str
    device_id: str


@dataclass(frozen=True)
class ApiConfig:
    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 8080


@dataclass(frozen=True)
class RulesSection:
    #: Declarative rules file (``docs/examples/rules.toml``); empty = built-in defaults.
    file: str = ""
    #: Where rule state (open alarms, timers, trends) is persisted across restarts.
    #: Empty: next to the SQLite file, or ``data/rules-state-<schema>.json`` for PostgreSQL.
    state_file: str = ""
    #: Seconds between runs of the time-driven rules.
    tick_s: float = 10.0


@dataclass(frozen=True)
class DispatchSection:
    #: TOML with ``[dispatch]`` (routes, cascades per site/resident, attend targets per
    #: route and site in ``[dispatch.attend]``) and ``[[responders]]``
    #: (availability, areas, contact channels); see docs/dispatch.md. Empty = defaults.
    file: str = ""
    #: HMAC-SHA256 key for signed webhooks (set TELECARE_DISPATCH__WEBHOOK_SECRET).
    webhook_secret: str = ""
    smtp_host: str = ""
    smtp_port: int = 25
    smtp_sender: str = "telecare@localhost"
    #: E-mail address told when a dispatch escalates (unacknowledged, cascade exhausted).
    supervisor_email: str = ""
    #: Seconds an alarm may stay unacknowledged before it escalates.
    ack_within_s: int = 60
    #: Seconds between sweeps for stored alerts that have no dispatch (gateway/sweeper.py).
    sweep_s: float = 30.0


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
class LogConfig:
    level: str = "info"
    #: ``json`` (production) or ``console`` (pretty, for a terminal).
    format: str = "json"


@dataclass(frozen=True)
class Config:
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    log: LogConfig = field(default_factory=LogConfig)
    rules: RulesSection = field(default_factory=RulesSection)
    dispatch: DispatchSection = field(default_factory=DispatchSection)
    ingest: IngestSection = field(default_factory=IngestSection)
    serial: tuple[SerialPortConfig, ...] = ()


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
    return config


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
    except ValueError:
        raise ConfigError(
            f"Config '{key}' has value {str(value)!r}. Not a valid {tp.__name__}."
        ) from None
    raise ConfigError(f"Config '{key}': unsupported type {tp!r}")  # pragma: no cover
