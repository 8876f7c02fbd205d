"""Fixtures for the ingest tests."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def broker_dir() -> Iterator[Path]:
    """A persistence directory a private Mosquitto can reach after dropping privileges
    (pytest's ``tmp_path`` sits under a root-only directory when tests run as root)."""
    path = Path(tempfile.mkdtemp(prefix="telecare-mqtt-persist-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)
