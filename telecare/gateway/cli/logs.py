"""Logging for one-shot commands whose stdout is data (a Bundle, JSON): only warnings,
on stderr, and the previous configuration restored afterwards, so that running the
command in-process (tests, Typer's runner) leaves no logger bound to its streams."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import structlog

from telecare.gateway.logging import configure_logging

__all__ = ["command_logging"]


@contextlib.contextmanager
def command_logging(level: str = "warning") -> Iterator[None]:
    """Configure console logging to stderr at ``level`` for the ``with`` block."""
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, root_level = list(root.handlers), root.level
    configure_logging(level, "console")
    try:
        yield
    finally:
        structlog.configure(**saved)
        for h in root.handlers:
            if h not in handlers:
                root.removeHandler(h)
        root.setLevel(root_level)
