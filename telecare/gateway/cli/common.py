"""Helpers shared by every CLI module (kept apart from ``main`` to avoid import cycles):
the configuration option, exit codes, ``--json`` output, ``--by`` and running a store
action without a traceback for anything the user can fix.

Exit codes: one scheme, :class:`ExitCode`, for every command (the table is in
``docs/cli.md``; scripts may rely on it). No command exits with a bare number.
"""

from __future__ import annotations

import asyncio
import getpass
import inspect
import json
import logging
import os
from collections.abc import Awaitable, Callable
from enum import IntEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console

from telecare.gateway.config import Config, load_config
from telecare.gateway.errors import ConfigError

__all__ = [
    "ByOption",
    "ConfigOption",
    "ExitCode",
    "JsonOption",
    "actor",
    "err_console",
    "fail",
    "first_sentence",
    "load_cli_config",
    "print_json",
    "reflow_help",
    "run_store",
    "store_location",
    "unwrap",
    "with_store",
]

_T = TypeVar("_T")

err_console = Console(stderr=True)


class ExitCode(IntEnum):
    """Why a command ended: the same number means the same thing for every command."""

    #: Done (``doctor``: every check ok; ``serial probe``: a device answered).
    OK = 0
    #: An invalid value: a bad id, kind, format, date, codec or combination of options.
    INVALID = 1
    #: Usage or configuration error: unknown option, missing argument, config invalid.
    USAGE = 2
    #: The site, resident, responder, device or receiver account does not exist.
    NOT_FOUND = 3
    #: Refused while still in use (open alarms, paired devices, cascades; says which).
    IN_USE = 4
    #: The store cannot be reached (database down, refusing connections, wrong DSN).
    STORE_UNAVAILABLE = 5
    #: The import file is invalid (every error listed with its line; nothing written).
    IMPORT_INVALID = 6
    #: A check found something to fix (``doctor``, ``audit verify``).
    CHECK_FAILED = 7
    #: A peer did not answer or refused: the broker, the gateway (``device test``), an
    #: IP receiver (``receiver test``), the device on a serial port (``serial probe``).
    NO_ANSWER = 8
    #: A local file or port cannot be read or written (``--output``, a serial port).
    IO_ERROR = 9
    #: A bug: a traceback follows; please report it.
    INTERNAL = 70


ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="TOML configuration file (env TELECARE_* overrides it)."),
]
JsonOption = Annotated[
    bool, typer.Option("--json", help="Print JSON for scripts (shape in docs/cli.md).")
]
ByOption = Annotated[
    str | None,
    typer.Option("--by", help="Who is making the change, for the audit (default: OS user)."),
]


def reflow_help(app: typer.Typer) -> None:
    """Give every command of ``app`` (recursively) its docstring as help with each
    paragraph on one line, so the terminal wraps it at its own width (at 80 columns the
    source's line breaks otherwise show up as odd short lines), and ``x`` as 'x'."""
    for command in app.registered_commands:
        if command.help is None and command.callback is not None:
            command.help = unwrap(command.callback.__doc__ or "")
        if command.short_help is None and command.help:
            command.short_help = first_sentence(command.help)
    for group in app.registered_groups:
        if group.typer_instance is not None:
            reflow_help(group.typer_instance)


def unwrap(doc: str) -> str:
    """A docstring's paragraphs, each on one line, separated by blank lines."""
    paragraphs = inspect.cleandoc(doc).split("\n\n")
    text = "\n\n".join(" ".join(p.split()) for p in paragraphs if p.strip())
    return text.replace("``", "'")


def first_sentence(text: str) -> str:
    """The first sentence of the first paragraph (the one-line summary in command lists)."""
    first = text.split("\n\n", 1)[0]
    end = first.find(". ")
    return first if end < 0 else first[: end + 1]


def load_cli_config(path: Path | None) -> Config:
    """The configuration, or exit 2 with the error (shared by every command)."""
    try:
        return load_config(path, os.environ)
    except ConfigError as exc:
        err_console.print(f"[red]configuration error:[/red] {exc}")
        raise typer.Exit(ExitCode.USAGE) from None


def fail(message: str, code: ExitCode = ExitCode.INVALID) -> NoReturn:
    """Print ``error: message`` on stderr and exit with ``code`` (no traceback). One
    logical line: the terminal wraps it, so paths and names are never broken by us."""
    err_console.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def actor(by: str | None) -> str:
    """The person a change is audited to: ``--by``, else the OS user."""
    if by is not None and by.strip():
        return by.strip()
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        fail("cannot tell who you are: pass --by NAME", ExitCode.USAGE)


def print_json(value: Any) -> None:
    """One JSON document on stdout (never wrapped or coloured, whatever the terminal)."""
    typer.echo(json.dumps(value, indent=2, sort_keys=True, default=str))


def with_store(cfg: Config, action: Callable[[Any], Awaitable[_T]]) -> _T:
    """Open the configured store, migrate it and run ``action``; exit 5 (no traceback)
    when the database cannot be reached."""
    from telecare.gateway.app import open_store, prepare_store

    async def main() -> _T:
        async with open_store(cfg) as store:
            await prepare_store(cfg, store)
            return await action(store)

    return run_store(cfg, main)


def run_store(cfg: Config, main: Callable[[], Awaitable[_T]]) -> _T:
    """``asyncio.run(main())``, exiting 5 (no traceback) when the store it opens cannot
    be reached."""
    from telecare.gateway.store.errors import is_unavailable

    # The pool logs every failed attempt (several lines each); one error line says it.
    pool_log = logging.getLogger("psycopg.pool")
    level = pool_log.level
    pool_log.setLevel(logging.CRITICAL)
    try:
        return asyncio.run(main())  # type: ignore[arg-type]
    except Exception as exc:
        if is_unavailable(exc) or isinstance(exc, OSError):
            fail(
                f"store unavailable: cannot reach {store_location(cfg)} ({exc}); check"
                " store.dsn / store.sqlite_path and that the server is running",
                ExitCode.STORE_UNAVAILABLE,
            )
        raise
    finally:
        pool_log.setLevel(level)


def store_location(cfg: Config) -> str:
    """Where the store is, for messages: never the DSN itself (it may hold a password)."""
    if cfg.store.backend == "sqlite":
        return f"SQLite {cfg.store.sqlite_path}"
    from psycopg.conninfo import conninfo_to_dict

    try:
        parts = conninfo_to_dict(cfg.store.dsn.reveal())
    except Exception:
        return "PostgreSQL (store.dsn does not parse)"
    host = parts.get("host") or "localhost"
    return f"PostgreSQL {host}:{parts.get('port') or 5432}/{parts.get('dbname') or ''}"
