"""``telecare demo`` (issue 12 part 7): it serves the console and the care-home page,
prints their URL and working demo logins, and its care home has a tablet taking NEWS2
rounds whose results come back to it, so scores (and a trend) exist within a minute."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

TELECARE = [sys.executable, "-m", "telecare.gateway.cli"]


# The demo takes port 8080 when it is free: never two demos at once (test workers).
@pytest.mark.xdist_group("demo-port-8080")
def test_demo_prints_the_console_and_logins_and_a_tablet_takes_rounds(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [*TELECARE, "demo", "--data-dir", str(tmp_path / "demo"), "--interval", "0.3"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "COLUMNS": "250"},
    )
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if sum("tablet reply" in x for x in lines) >= 3:
                break
        text = "".join(lines)
        url = re.search(r"console: (http://127\.0\.0\.1:\d+)/", text)
        operator = re.search(r"user operator password (\S+)", text)
        carer = re.search(r"user carer password (\S+)", text)
        assert url, text
        assert operator, text
        assert carer, text
        with httpx.Client(base_url=url.group(1), timeout=10) as client:
            r = client.post(
                "/api/v1/session", json={"username": "operator", "password": operator.group(1)}
            )
            assert r.status_code == 200, r.text
            assert r.json()["role"] == "operator"
            console = client.get("/console", headers={"accept": "text/html"})
            assert console.status_code == 200  # the live console is served
        with httpx.Client(base_url=url.group(1), timeout=10) as client:
            r = client.post(
                "/api/v1/session", json={"username": "carer", "password": carer.group(1)}
            )
            assert r.status_code == 200, r.text
            page = client.get("/tablet", headers={"accept": "text/html"})
            assert page.status_code == 200
            assert "NEWS2 " in page.text  # residents scored by the tablet's rounds
        assert re.search(r"tablet reply\s+oakhouse-r\d+: NEWS2 \d+ \(\w", text), text
        assert re.search(r"news2\s+NEWS2 \d+", text), text
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, "".join(lines) + out
    assert "demo stopped" in out
