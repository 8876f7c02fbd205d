"""One exit-code scheme for every command (issue 13): ``ExitCode`` in
``telecare/gateway/cli/common.py``, the table in docs/cli.md. The walk below drives each
command into its failure modes against a real SQLite store, a closed port, a silent pty
and an unreachable PostgreSQL, and checks the code; every code of the scheme is reached
by at least one command, and no command module exits with a number of its own."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from telecare.gateway.cli.common import ExitCode
from telecare.gateway.cli.main import app
from tests.cli.conftest import Cli
from tests.helpers import run_together
from tests.ingest.ptys import PtyPort
from tests.services import free_port

ROOT = Path(__file__).resolve().parents[2]
CLI_DIR = ROOT / "telecare/gateway/cli"
TELECARE = [sys.executable, "-m", "telecare.gateway.cli"]

#: What docs/cli.md promises (not read from the enum: the test pins the numbers).
DOCUMENTED = {
    0: "OK",
    1: "INVALID",
    2: "USAGE",
    3: "NOT_FOUND",
    4: "IN_USE",
    5: "STORE_UNAVAILABLE",
    6: "IMPORT_INVALID",
    7: "CHECK_FAILED",
    8: "NO_ANSWER",
    9: "IO_ERROR",
    70: "INTERNAL",
}


@pytest.fixture
def home(cli: Cli) -> Cli:
    """A site with a resident, a paired device and nothing listening on the MQTT port."""
    mqtt = f'[mqtt]\nhost = "127.0.0.1"\nport = {free_port()}\nusername = "gw"\npassword = "x"\n'
    cli.config.write_text(cli.config.read_text() + mqtt)
    cli("site", "add", "s1", "--kind", "care_home")
    cli("resident", "add", "r1", "--site", "s1")
    cli("device", "add", "p1", "--site", "s1", "--kind", "pendant", "--resident", "r1")
    return cli


def test_the_scheme_is_the_documented_table() -> None:
    assert {int(c): c.name for c in ExitCode} == DOCUMENTED
    doc = (ROOT / "docs/cli.md").read_text()
    rows = dict(re.findall(r"^\| (\d+) \| `(\w+)` \|", doc, re.MULTILINE))
    assert {int(k): v for k, v in rows.items()} == DOCUMENTED


def test_no_command_exits_with_a_number_of_its_own() -> None:
    """``typer.Exit`` / ``sys.exit`` / ``fail`` take an ``ExitCode`` member, never a literal."""
    offenders = []
    for path in sorted(CLI_DIR.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            name, last = ast.unparse(node.func), node.args[-1]
            if (
                name.endswith(("Exit", "exit", "fail"))
                and isinstance(last, ast.Constant)
                and isinstance(last.value, int)
            ):
                offenders.append(f"{path.name}:{node.lineno}: {ast.unparse(node)}")
        offenders += [
            f"{path.name}: defines {m}"
            for m in re.findall(r"^(EXIT_\w+) = \d+", path.read_text(), re.MULTILINE)
        ]
    assert offenders == []


def test_every_command_fails_with_the_code_of_its_failure(home: Cli, tmp_path: Path) -> None:
    cli = home
    seen: set[int] = set()

    def expect(code: ExitCode, *args: str) -> None:
        out = cli(*args, code=int(code))
        assert "Traceback" not in out
        seen.add(int(code))

    def expect_with(config: Path | None, code: ExitCode, *args: str) -> None:
        more = ["--config", str(config)] if config else []
        result = CliRunner().invoke(app, [*args, *more])
        assert result.exit_code == code, (args, result.output, result.exception)
        assert "Traceback" not in result.output
        seen.add(int(code))

    bad_config = tmp_path / "bad.toml"
    bad_config.write_text('[mqtt]\nport = "eighteen"\n')
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("site,resident,device,kind\ns1,,d9,toaster\n")
    rules = tmp_path / "rules.toml"
    rules.write_text("[nonsense\n")
    pty = PtyPort(tmp_path)
    try:
        # 1 invalid value
        expect(ExitCode.INVALID, "site", "add", "bad id!")
        expect(ExitCode.INVALID, "device", "set", "p1", "--format", "nonsense")
        expect(ExitCode.INVALID, "export", "fhir", "-r", "r1", "--since", "last tuesday")
        expect(ExitCode.INVALID, "export", "fhir", "-r", "r1", "--site", "s9")
        expect(ExitCode.INVALID, "report", "responses", "--from", "2026-11-24", "--to", "x")
        expect(ExitCode.INVALID, "report", "response-times", "--since", "last tuesday")
        expect(ExitCode.INVALID, "audit", "verify", "--anchor", "garbage")
        expect(ExitCode.INVALID, "receiver", "test", "--protocol", "dc09")
        # 2 usage or configuration
        expect(ExitCode.USAGE, "site", "list", "--bogus")
        for command in (
            ["site", "list"],
            ["import", str(bad_csv)],
            ["export", "fhir", "-r", "r1"],
            ["report", "response-times", "--since", "7d"],
            ["audit", "verify"],
            ["db", "migrate"],
            ["device", "test", "p1"],
            ["doctor"],
        ):
            expect_with(bad_config, ExitCode.USAGE, *command)
        # 3 not found
        expect(ExitCode.NOT_FOUND, "site", "show", "nowhere")
        expect(ExitCode.NOT_FOUND, "resident", "remove", "nobody")
        expect(ExitCode.NOT_FOUND, "export", "fhir", "-r", "nobody")
        expect(ExitCode.NOT_FOUND, "device", "test", "nothing")
        expect(ExitCode.NOT_FOUND, "report", "response-times", "--since", "7d", "--site", "nowhere")
        # 4 in use
        expect(ExitCode.IN_USE, "site", "remove", "s1")
        expect(ExitCode.IN_USE, "resident", "remove", "r1")
        # 6 import file invalid
        expect(ExitCode.IMPORT_INVALID, "import", str(bad_csv))
        # 7 a check failed (nothing listens on the broker port)
        expect(ExitCode.CHECK_FAILED, "doctor", "--password-file", str(tmp_path / "none"))
        # 8 no answer: the broker, an IP receiver, a serial device
        expect(ExitCode.NO_ANSWER, "device", "test", "p1", "--password", "x")
        expect(
            ExitCode.NO_ANSWER, "receiver", "test", "--protocol", "dc09", "--account", "1234",
            "--port", str(free_port()), "--timeout", "1",
        )  # fmt: skip
        expect_with(None, ExitCode.NO_ANSWER, "serial", "probe", str(pty.path), "--seconds", "0.3")
        # 9 a local file or port
        expect_with(None, ExitCode.IO_ERROR, "serial", "probe", str(tmp_path / "ttyNONE"))
        expect(ExitCode.IO_ERROR, "export", "fhir", "-r", "r1", "-o", str(tmp_path / "no/x"))
    finally:
        pty.unplug()
    expect_with(None, ExitCode.INVALID, "rules", "check", str(rules))
    expect_with(None, ExitCode.USAGE, "serial", "probe")  # the port is missing
    seen.add(ExitCode.OK)
    # 5 and 70 are walked below (slow: a pool timeout; a subprocess).
    assert seen | {5, 70} == set(DOCUMENTED)


def test_an_unreachable_store_exits_5_for_every_store_command(tmp_path: Path) -> None:
    """Each command that opens the store (PostgreSQL that refuses connections): exit 5,
    one error line naming where the store is, never the DSN's password."""
    cfg = tmp_path / "down.toml"
    cfg.write_text('[store]\nbackend = "postgres"\ndsn = "postgresql://u:hunter2@127.0.0.1:1/x"\n')
    csv = tmp_path / "ok.csv"
    csv.write_text("site,resident\ns1,r1\n")
    commands = (["site", "list"], ["import", str(csv)], ["db", "migrate"])
    # All at once: each waits out its own pool timeout, so the waits overlap.
    results = run_together(
        *([*TELECARE, *command, "--config", str(cfg)] for command in commands),
        env={**os.environ, "COLUMNS": "200"},
    )
    for command, done in zip(commands, results, strict=True):
        assert done.returncode == ExitCode.STORE_UNAVAILABLE, (command, done.stderr)
        assert "cannot reach PostgreSQL 127.0.0.1:1/x" in done.stderr
        assert "hunter2" not in done.stderr
        assert "Traceback" not in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr  # no pool warnings


def test_a_bug_exits_70_with_its_traceback() -> None:
    """Anything escaping a command is not a user mistake: a traceback, then 70."""
    program = (
        "from telecare.gateway.cli.main import app, main\n"
        "@app.command('boom')\n"
        "def boom() -> None:\n"
        "    raise RuntimeError('a bug')\n"
        "main()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program, "boom"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == ExitCode.INTERNAL
    assert "RuntimeError" in done.stderr
    assert "internal error" in done.stderr
