"""Files and directories only the gateway's own user may read: the SQLite database (and
its WAL), the spool database and the rule-state file hold personal data (who pressed what,
vital signs), so they are created ``0600`` in directories created ``0700``, whatever the
process umask.

A directory that already exists and is not the gateway's own (``/tmp``, ``/var/lib``) is
left alone; a file the gateway opens is always tightened to ``0600``, so a file written
world-readable by an older version is fixed at the next start.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

__all__ = ["DIR_MODE", "FILE_MODE", "private_dir", "private_file"]

FILE_MODE: Final = 0o600
DIR_MODE: Final = 0o700


def private_dir(path: Path, *, own: bool = False) -> Path:
    """Create ``path`` (and missing parents) ``0700``. ``own``: the directory belongs to
    the gateway alone (the spool), so an existing one is tightened to ``0700`` too."""
    missing = [p for p in (path, *path.parents) if not p.exists()]
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    for created in missing:
        created.chmod(DIR_MODE)  # mkdir's mode is filtered through the umask
    if own:
        path.chmod(DIR_MODE)
    return path


def private_file(path: Path) -> Path:
    """Create ``path`` empty if it is missing; either way leave it ``0600``.

    An existing file is changed by name, never opened: closing a descriptor of a file
    drops every POSIX lock this process holds on it, so opening and closing a SQLite
    database another connection of this process has open (a second store, the alarm
    lane's) made that connection lose its locks and stop seeing other processes'
    commits (a running gateway no longer saw the CLI's registry changes)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        os.chmod(path, FILE_MODE)
        return path
    try:
        os.fchmod(fd, FILE_MODE)  # the umask filtered open's mode
    finally:
        os.close(fd)
    return path
