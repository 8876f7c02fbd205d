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
    "Dc09Config",
    "DispatchSection",
    "LogConfig",
    "MqttConfig",
    "ReceiversSection",
    "RulesSection",
    "SerialPortConfig",
    "StoreConfig",
    "load_config",
]

ENV_PREFIX = "TELECARE_"


@dataclass(frozen=True)
class MqttConfig:
    host: str = "127.0.0.1"
    port: int = 1883
    username: str = ""
    password: str = ""
    #: Stable client id: with ``clean_session = false`` the broker keeps our
    #: subscription and queues QoS 1 messages while the gateway is down.
    client_id: str = "telecare-gateway"
    clean_session: bool = False
    topic_prefix: str = "telecare/v1"
    keepalive: int = 30
    #: Messages in flight between the broker and the pipeline (receive maximum).
    max_inflight: int = 1000
    tls: bool = False
    ca_file: str = ""


@dataclass(frozen=True)
class StoreConfig:
    #: ``sqlite`` (embedded default) or ``postgres``.
    backend: str = "sqlite"
    sqlite_path: str = "data/telecare.sqlite3"
    dsn: str = "postgresql://postgres@127.0.0.1:5432/telecare"
    schema: str = "telecare"
    #: Try ``CREATE EXTENSION timescaledb`` (falls back to plain PostgreSQL).
    timescale: bool = True
    pool_max: int = 8
    #: Local spool used while PostgreSQL is away. Empty: ``spool/`` next to the SQLite
    #: file, or ``data/spool-<schema>`` for PostgreSQL (one spool per store, never shared).
    spool_dir: str = ""


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
    #: TOML with ``[dispatch]`` (routes, cascades per site/resident) and ``[[responders]]``
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
    #: Minutes from the alarm until a responder must be on scene.
    attend_within_min: int = 45
    #: Seconds between sweeps for stored alerts that have no dispatch (gateway/sweeper.py).
    sweep_s: float = 30.0


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
class ReceiversSection:
    """``[receivers.*]``: IP alarm receivers."""

    dc09: Dc09Config = field(default_factory=Dc09Config)


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
    except ValueError:
        raise ConfigError(
            f"Config '{key}' has value {str(value)!r}. Not a valid {tp.__name__}."
        ) from None
    raise ConfigError(f"Config '{key}': unsupported type {tp!r}")  # pragma: no cover
