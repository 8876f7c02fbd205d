"""Personal data never reaches a log line, even when a caller passes it by mistake."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import structlog
from structlog.testing import capture_logs

from telecare.gateway.logging import configure_logging, get_logger, processors


@pytest.fixture
def reset_logging() -> Iterator[None]:
    yield
    # The configuration holds this test's captured stderr: put the defaults back.
    structlog.reset_defaults()


@pytest.mark.usefixtures("reset_logging")
def test_personal_data_is_redacted_in_json_logs(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("info", "json")  # here, not in a fixture: capsys is active now
    log = get_logger("test")
    log.info(
        "resident_saved",
        resident_id="res-1",
        name="Edna Smith",
        nhs_number="943 476 5919",
        address="1 High Street",
        note="called back on 943-476-5919",
    )
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert line["resident_id"] == "res-1"
    assert line["name"] == "[redacted]"
    assert line["nhs_number"] == "[redacted]"
    assert line["address"] == "[redacted]"
    assert line["note"] == "called back on [redacted]"
    assert "Edna" not in json.dumps(line)


def test_redaction_is_recursive_and_covers_every_personal_field() -> None:
    """Nested dicts and lists, the fields a care record has, NHS numbers however written."""
    log = get_logger("test")
    with capture_logs(processors=processors()) as logs:
        log.warning(
            "profile",
            resident_id="res-1",
            resident={
                "full_name": "Edna Smith",
                "contacts": [{"phone_number": "07700 900123", "relation": "daughter"}],
                "medical_notes": "COPD, on 2 l/min O2",
                "postcode": "AB1 2CD",
                "FirstName": "Edna",
            },
            history=[("nhs", "NHS9434765919"), {"text": "nhs no. 943.476.5919"}],
            note="ring +44 7700 900123 or 943-476-5919",
            username="telecare-gateway",
            payload=b'{"resident_id": "Edna Smith", "spo2": 91}',
        )
    event = logs[0]
    text = repr(event)
    for secret in ("Edna", "Smith", "07700", "900123", "COPD", "AB1", "9434765919", "476"):
        assert secret not in text, secret
    assert event["resident_id"] == "res-1"
    assert event["resident"]["full_name"] == "[redacted]"
    assert event["resident"]["FirstName"] == "[redacted]"
    assert event["resident"]["contacts"][0] == {
        "phone_number": "[redacted]",
        "relation": "daughter",
    }
    assert event["resident"]["medical_notes"] == "[redacted]"
    assert event["resident"]["postcode"] == "[redacted]"
    assert event["history"][1] == {"text": "[redacted]"}
    assert event["note"] == "ring [redacted] or [redacted]"
    assert event["username"] == "telecare-gateway"  # not a person's name
    assert event["payload"] == "[41 bytes]"


def test_a_name_sent_as_an_id_is_not_logged() -> None:
    """The incident: a resident's name arrived as ``resident_id`` and was logged."""
    with capture_logs(processors=processors()) as logs:
        get_logger("test").warning("dead_letter", resident_id="Edna Smith", device_id="pend1")
    assert logs[0]["resident_id"] == "[redacted: not an id]"
    assert logs[0]["device_id"] == "pend1"


def test_exception_text_is_not_logged_but_the_frames_are() -> None:
    received = "Edna Smith " + "943 476 5919"  # what a device sent

    def decode() -> None:
        try:
            int(received)
        except ValueError as exc:
            raise RuntimeError(f"cannot decode {exc}") from exc

    log = get_logger("test")
    with capture_logs(processors=processors()) as logs:
        try:
            decode()
        except RuntimeError as exc:
            log.exception("decode_failed")
            log.warning("decode_failed_again", error=exc, errors=[exc])
    first, second = logs
    assert "Edna" not in first["exception"]
    assert "exc_info" not in first
    assert "builtins.ValueError: [redacted]" in first["exception"]
    assert "builtins.RuntimeError: [redacted]" in first["exception"]
    assert "in decode" in first["exception"]  # the frame stays: where it failed
    assert second["error"] == "builtins.RuntimeError"
    assert second["errors"] == ["builtins.RuntimeError"]


def test_deeply_nested_values_do_not_break_logging() -> None:
    deep: list[object] = []
    for _ in range(500):
        deep = [deep]
    with capture_logs(processors=processors()) as logs:
        get_logger("test").info("deep", value=deep, ok="943 476 5919")
    assert "[redacted]" in repr(logs[0]["value"])
    assert logs[0]["ok"] == "[redacted]"
