"""Helpers shared by every CLI module (kept apart from ``main`` to avoid import cycles)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from gateway.config import Config, load_config
from gateway.errors import ConfigError

__all__ = ["ConfigOption", "err_console", "load_cli_config"]

err_console = Console(stderr=True)

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="TOML configuration file (env TELECARE_* overrides it)."),
]


def load_cli_config(path: Path | None) -> Config:
    """The configuration, or exit 2 with the error (shared by every command)."""
    try:
        return load_config(path, os.environ)
    except ConfigError as exc:
        err_console.print(f"[red]configuration error:[/red] {exc}")
        raise typer.Exit(2) from None
