"""Files holding personal data are the gateway user's alone: the SQLite database and its
WAL and the spool database are created 0600 in directories created 0700,
whatever the umask; a world-readable file left by an older version is tightened."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from telecare.devices.model import AlarmEvent, EventType, Phase
from telecare.gateway.store.spool import Spool
from telecare.gateway.store.sqlite import SqliteStore


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(autouse=True)
def permissive_umask() -> Iterator[None]:
    """The usual umask (022) would make new files world-readable."""
    old = os.umask(0o022)
    yield
    os.umask(old)


async def test_sqlite_database_and_its_wal_are_private(tmp_path: Path) -> None:
    path = tmp_path / "data" / "telecare.sqlite3"
    async with SqliteStore(path) as store:
        await store.migrate()
        event = AlarmEvent(
            "pend1", EventType.PENDANT, Phase.ALARM, datetime.now(UTC), "m1", site_id="s1"
        )
        await store.write_events([event])
        files = [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]
        for file in files:
            assert file.exists(), file
            assert _mode(file) == 0o600, (file, oct(_mode(file)))
    assert _mode(path.parent) == 0o700


async def test_an_existing_world_readable_database_is_tightened(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o644))
    os.chmod(tmp_path, 0o755)
    async with SqliteStore(path) as store:
        await store.migrate()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert (
        stat.S_IMODE(os.stat(tmp_path).st_mode) == 0o755
    )  # a directory the gateway did not create is left alone


async def test_the_spool_database_and_directory_are_private(tmp_path: Path) -> None:
    directory = tmp_path / "spool"
    async with Spool(directory) as spool:
        await spool.append([b"a record with personal data"])
        files = list(directory.iterdir())  # spool.db and, while open, its -wal and -shm
        assert {f.name for f in files} >= {"spool.db", "spool.db-wal"}
        for file in files:
            assert _mode(file) == 0o600, (file, oct(_mode(file)))
    assert _mode(directory / "spool.db") == 0o600
    assert _mode(directory) == 0o700


async def test_an_existing_spool_directory_and_database_are_tightened(tmp_path: Path) -> None:
    directory = tmp_path / "spool"
    async with Spool(directory):
        pass
    directory.chmod(0o755)
    (directory / "spool.db").chmod(0o644)
    async with Spool(directory):
        pass
    assert _mode(directory) == 0o700
    assert _mode(directory / "spool.db") == 0o600
