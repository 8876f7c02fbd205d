"""A scratch SQLite installation for CLI tests, and a runner that checks exit codes."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from telecare.gateway.cli.main import app


@dataclass
class Cli:
    config: Path
    db: Path
    runner: CliRunner

    def __call__(self, *args: str, code: int = 0) -> str:
        result = self.runner.invoke(app, [*args, "--config", str(self.config)])
        assert result.exit_code == code, (result.exit_code, result.output, result.exception)
        assert "Traceback" not in result.output
        return result.output

    def json(self, *args: str) -> Any:
        return json.loads(self(*args, "--json"))


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    db = tmp_path / "telecare.sqlite3"
    config = tmp_path / "gateway.toml"
    config.write_text(f'[store]\nbackend = "sqlite"\nsqlite_path = "{db}"\n')
    return Cli(config, db, CliRunner())
