"""``telecare serial probe PORT`` (issue 13) over real pseudo-terminals: each supported
device's frames, written by the firmware stubs' encoders while the probe listens, are
recognised; noise, silence, a missing port and an unknown codec are reported."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from telecare.firmware_stubs.alarm_receiver import encode_contact_id
from telecare.firmware_stubs.bp_cuff import encode_ua767pbt
from telecare.firmware_stubs.oximeter import (
    encode_cms50d,
    encode_masimo,
    encode_nonin2,
    encode_nonin8,
)
from telecare.gateway.cli.common import ExitCode
from telecare.gateway.cli.main import app
from tests.ingest.ptys import PtyPort

TELECARE = [sys.executable, "-m", "telecare.gateway.cli"]
WHEN = datetime(2026, 11, 23, 9, 0, 0)

#: device -> (one unit of what it sends, the line settings PRODUCT.md/docs give it,
#: values the probe's sample must show).
DEVICES: dict[str, tuple[bytes, str, list[str]]] = {
    "cms50d": (encode_cms50d(97, 72), "19200 8-O-1", ["spo2=97 %", "pulse=72 /min"]),
    "nonin2": (encode_nonin2(96, 80), "9600 8-N-1", ["spo2=96 %", "pulse=80 /min"]),
    "nonin8": (encode_nonin8(95, 70), "9600 8-N-1", ["spo2=95 %", "pulse=70 /min"]),
    "masimo_rad8": (
        encode_masimo(98, 97, when=WHEN),
        "9600 8-N-1",
        ["spo2=98 %", "pulse=97 /min"],
    ),
    "contact_id": (encode_contact_id("1234", 1, 101, zone=15), "9600 8-N-1", ["code 101"]),
    "ua767pbt": (
        encode_ua767pbt(128, 82, 70, measured_at=WHEN, sent_at=WHEN),
        "9600 8-N-1",
        ["systolic_bp=128 mm[Hg]", "diastolic_bp=82 mm[Hg]"],
    ),
}


class Sender:
    """A device on the pty: writes ``unit`` over and over (paced) until stopped. The
    master is non-blocking: what nobody reads is dropped, as on a real line."""

    def __init__(self, pty: PtyPort, make: Callable[[], bytes]) -> None:
        self._pty = pty
        self._make = make
        self._stop = threading.Event()
        os.set_blocking(pty.master, False)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.01):  # pacing of the simulated device
            try:
                os.write(self._pty.master, self._make())
            except BlockingIOError:
                continue

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


@pytest.fixture
def pty(tmp_path: Path) -> Iterator[PtyPort]:
    port = PtyPort(tmp_path)
    yield port
    port.unplug()


def _sending(pty: PtyPort, make: Callable[[], bytes]) -> Iterator[Sender]:
    sender = Sender(pty, make)
    try:
        yield sender
    finally:
        sender.stop()


@pytest.mark.parametrize("device", sorted(DEVICES))
def test_probe_recognises_each_supported_device(pty: PtyPort, device: str) -> None:
    unit, line, sample = DEVICES[device]
    for _ in _sending(pty, lambda: unit * 4):
        result = CliRunner().invoke(
            app, ["serial", "probe", str(pty.path), "--seconds", "1.5", "--json"]
        )
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)
    assert found["matched"] is True
    assert found["codec"] == device
    lo = found["line"]
    assert f"{lo['baudrate']} {lo['bytesize']}-{lo['parity']}-{lo['stopbits']}" == line
    for value in sample:
        assert any(value in s for s in found["sample"]), (value, found["sample"])
    assert found["pseudo_terminal"] is True
    assert found["decided_by"].startswith("clean decoding")
    # Every codec was tried, and the winner decoded more cleanly than any other.
    tried = {a["codec"] for a in found["attempts"]}
    assert tried == set(DEVICES)
    best = next(a for a in found["attempts"] if a["codec"] == device)
    assert all(
        a["clean"] < best["clean"] or a["frames"] < 2
        for a in found["attempts"]
        if a["codec"] != device
    )


def test_probe_table_names_the_device_line_settings_and_the_pty_caveat(pty: PtyPort) -> None:
    unit, _, _ = DEVICES["masimo_rad8"]
    for _ in _sending(pty, lambda: unit):
        result = CliRunner().invoke(app, ["serial", "probe", str(pty.path), "--seconds", "1.5"])
    assert result.exit_code == 0, result.output
    assert "answered: masimo_rad8 at 9600 8-N-1" in result.stdout
    assert "spo2=98 %" in result.stdout
    assert "pseudo-terminal" in result.stdout
    assert "line settings are not tested" in " ".join(result.stdout.split())


def test_probe_reports_what_it_saw_when_nothing_matches(pty: PtyPort) -> None:
    rng = random.Random(7)
    for _ in _sending(pty, lambda: bytes(rng.randrange(256) for _ in range(64))):
        result = CliRunner().invoke(
            app, ["serial", "probe", str(pty.path), "--seconds", "1", "--json"]
        )
    assert result.exit_code == ExitCode.NO_ANSWER, result.output
    found = json.loads(result.stdout)
    assert found["matched"] is False
    assert found["codec"] is None
    assert found["seen"]["bytes"] > 0
    assert len(found["seen"]["hex"].split()) == found["seen"]["bytes"]


def test_probe_says_nothing_was_received_from_a_silent_port(pty: PtyPort) -> None:
    result = CliRunner().invoke(app, ["serial", "probe", str(pty.path), "--seconds", "0.5"])
    assert result.exit_code == ExitCode.NO_ANSWER
    assert "nothing received" in result.stdout


def test_probe_user_mistakes_exit_without_traceback(tmp_path: Path) -> None:
    missing = CliRunner().invoke(app, ["serial", "probe", str(tmp_path / "ttyNONE")])
    assert missing.exit_code == ExitCode.IO_ERROR
    assert "cannot open" in missing.stderr
    unknown = CliRunner().invoke(app, ["serial", "probe", "/dev/null", "--codec", "ble_2a35"])
    assert unknown.exit_code == ExitCode.INVALID
    assert "not a serial codec: ble_2a35" in unknown.stderr
    for r in (missing, unknown):
        assert "Traceback" not in r.output


@pytest.mark.parametrize("device", ["cms50d", "contact_id"])
def test_probe_as_a_subprocess(pty: PtyPort, device: str) -> None:
    unit, _, _ = DEVICES[device]
    for _ in _sending(pty, lambda: unit * 2):
        done = subprocess.run(
            [*TELECARE, "serial", "probe", str(pty.path), "--seconds", "2", "--json"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["codec"] == device


def test_probe_help_reads_at_80_columns() -> None:
    done = subprocess.run(
        [*TELECARE, "serial", "probe", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "80"},
    )
    assert done.returncode == 0
    assert all(len(line) <= 80 for line in done.stdout.splitlines())
    assert "--seconds" in done.stdout
