"""Secrets never in a repr or a log, and the PostgreSQL schema name only as a plain
identifier (issue 9, finding 8)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import structlog
from structlog.testing import capture_logs

from telecare.gateway.config import Secret, load_config
from telecare.gateway.errors import ConfigError
from telecare.gateway.logging import configure_logging, get_logger
from telecare.gateway.store.postgres import PostgresStore

MQTT_PASSWORD = "mqtt-pw-5f2b9c"
DSN_PASSWORD = "dsn-pw-8d1e4a"
OWNER_PASSWORD = "owner-pw-77aa01"
WEBHOOK_SECRET = "webhook-secret-0123456789abcdef0123456789"
SMTP_PASSWORD = "smtp-pw-c0ffee"
SECRETS = (MQTT_PASSWORD, DSN_PASSWORD, OWNER_PASSWORD, WEBHOOK_SECRET, SMTP_PASSWORD)


def secret_config(tmp_path: Path) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(
        f'[mqtt]\nusername = "gw"\npassword = "{MQTT_PASSWORD}"\n'
        f'[store]\nbackend = "postgres"\n'
        f'dsn = "postgresql://telecare_app:{DSN_PASSWORD}@db.example.test/telecare"\n'
        f'migrate_dsn = "postgresql://telecare_owner:{OWNER_PASSWORD}@db.example.test/telecare"\n'
        f'[dispatch]\nwebhook_secret = "{WEBHOOK_SECRET}"\nsmtp_host = "mail.example.test"\n'
        f'smtp_username = "gw"\nsmtp_password = "{SMTP_PASSWORD}"\n'
    )
    return path


def test_secrets_are_masked_in_repr_and_str(tmp_path: Path) -> None:
    cfg = load_config(secret_config(tmp_path))
    text = repr(cfg) + str(cfg) + repr(cfg.store) + f"{cfg.dispatch}"
    for secret in SECRETS:
        assert secret not in text
    assert "Secret('**********')" in text
    assert cfg.mqtt.password.reveal() == MQTT_PASSWORD
    assert cfg.store.runtime_role == "telecare_app"
    assert repr(Secret()) == "Secret('')"


def test_secrets_never_reach_a_log(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = load_config(secret_config(tmp_path))
    log = get_logger("test")
    with capture_logs() as captured:
        log.info("config_loaded", config=cfg, dsn=cfg.store.dsn, secret=cfg.dispatch.webhook_secret)
    rendered = repr(captured)
    assert captured[0]["event"] == "config_loaded"
    for secret in SECRETS:
        assert secret not in rendered
    # And through the production JSON renderer, as the running gateway writes it.
    configure_logging("info", "json")
    try:
        buffer = io.StringIO()
        structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=buffer))
        get_logger("test").info("config_loaded", config=cfg, password=cfg.mqtt.password)
        line = json.loads(buffer.getvalue())
    finally:
        structlog.reset_defaults()
    assert line["event"] == "config_loaded"
    for secret in SECRETS:
        assert secret not in buffer.getvalue()


@pytest.mark.parametrize(
    "schema", ["x -c log_statement=none", "Telecare", "a;b", "1abc", "", "a" * 64, "tele\ncare"]
)
def test_a_schema_that_is_not_a_plain_identifier_is_refused(schema: str) -> None:
    with pytest.raises(
        ConfigError, match=r"Config 'store\.schema' has value .* Not a valid identifier"
    ):
        load_config(None, {"TELECARE_STORE__SCHEMA": schema})
    with pytest.raises(ValueError, match="is not a valid identifier"):
        PostgresStore("postgresql://telecare_app@127.0.0.1/telecare", schema=schema)


def test_the_shipped_example_and_the_default_dsn_are_not_a_superuser() -> None:
    example = Path(__file__).parents[2] / "docs" / "examples" / "gateway.toml"
    cfg = load_config(example)
    for dsn in (load_config().store.dsn, cfg.store.dsn):
        assert "postgres@" not in dsn.reveal()
        assert "telecare_app@" in dsn.reveal()


def test_the_runtime_role_must_differ_from_the_owner() -> None:
    with pytest.raises(ConfigError, match="both log in as 'telecare_owner'"):
        load_config(
            None,
            {
                "TELECARE_STORE__BACKEND": "postgres",
                "TELECARE_STORE__DSN": "postgresql://telecare_owner@h/db",
                "TELECARE_STORE__MIGRATE_DSN": "postgresql://telecare_owner@h/db",
            },
        )
