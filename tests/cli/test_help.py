"""Every command's ``--help`` at 80 columns: nothing wider than the terminal, every
paragraph reflowed by the terminal (no hard line breaks from the source), and a short
one-sentence summary in command lists."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import typer
from typer.testing import CliRunner

from telecare.gateway.cli.main import app


def _commands(group: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for name, command in group.commands.items():
        yield (*path, name)
        if hasattr(command, "commands"):
            yield from _commands(command, (*path, name))


def _walk(cmd: Any, path: tuple[str, ...]) -> Any:
    for name in path:
        cmd = cmd.commands[name]
    return cmd


def test_every_help_reads_well_at_80_columns() -> None:
    root = typer.main.get_command(app)  # typer's own (vendored) click group
    paths = list(_commands(root))
    assert ("device", "pair") in paths
    assert ("report", "response-times") in paths
    assert ("import",) in paths
    runner = CliRunner()
    for path in [(), *paths]:
        result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "80"}, terminal_width=80)
        assert result.exit_code == 0, (path, result.output)
        wide = [line for line in result.output.splitlines() if len(line.rstrip()) > 80]
        assert not wide, (path, wide)
        command = _walk(root, path)
        text = command.help or ""
        for paragraph in text.split("\n\n"):
            assert "\n" not in paragraph, (path, paragraph)
        assert "``" not in text, path
        if path and not hasattr(command, "commands"):
            summary = command.short_help or ""
            assert summary, path
            assert "\n" not in summary, path
