"""Personal data never reaches a log line, even when a caller passes it by mistake."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import structlog

from gateway.logging import configure_logging, get_logger


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
