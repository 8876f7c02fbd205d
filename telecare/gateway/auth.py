"""Per-device secrets: generate, hash, verify, and write a Mosquitto password file.

Hash format: Mosquitto's own PBKDF2-SHA512 format, ``$7$<iterations>$<salt b64>$<hash
b64>`` (12-byte salt, 64-byte derived key), so the stored hash *is* the password-file
entry: ``telecare device mosquitto-passwd FILE`` writes ``<device_id>:<hash>`` lines
straight from the store, and the plaintext exists only once, on the installer's screen.

Iterations: device secrets are 192-bit random tokens (:func:`new_secret`), so brute force
is out of reach whatever the iteration count; :data:`ITERATIONS` (10 000) keeps the
broker's cost per connection small (a reconnect storm of every device at once) while
still slowing down a guessed human password if an operator sets one by hand.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import stat
from collections.abc import Iterable
from pathlib import Path

__all__ = [
    "ITERATIONS",
    "hash_secret",
    "new_secret",
    "read_password_file",
    "verify_secret",
    "write_password_file",
]

ITERATIONS = 10_000
_SALT_BYTES = 12
_PREFIX = "$7$"


def new_secret() -> str:
    """A fresh random device password (32 URL-safe characters, 192 bits)."""
    return secrets.token_urlsafe(24)


def hash_secret(secret: str, *, iterations: int = ITERATIONS, salt: bytes | None = None) -> str:
    """The ``$7$`` PBKDF2-SHA512 hash of ``secret`` with a random salt."""
    salt = os.urandom(_SALT_BYTES) if salt is None else salt
    key = hashlib.pbkdf2_hmac("sha512", secret.encode(), salt, iterations)
    return (
        f"{_PREFIX}{iterations}${base64.b64encode(salt).decode()}${base64.b64encode(key).decode()}"
    )


def verify_secret(secret: str, hashed: str) -> bool:
    """Whether ``secret`` matches ``hashed`` (constant-time; ``False`` for a bad hash)."""
    try:
        _, kind, iterations, salt_b64, key_b64 = hashed.split("$")
        if kind != "7":
            return False
        salt, key = base64.b64decode(salt_b64), base64.b64decode(key_b64)
        candidate = hashlib.pbkdf2_hmac("sha512", secret.encode(), salt, int(iterations))
    except ValueError:
        return False
    return hmac.compare_digest(candidate, key)


def read_password_file(path: Path) -> dict[str, str]:
    """``user -> hash`` from a Mosquitto password file (empty if it does not exist)."""
    if not path.exists():
        return {}
    entries: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        user, sep, hashed = line.strip().partition(":")
        if sep and user and not user.startswith("#"):
            entries[user] = hashed
    return entries


def write_password_file(
    path: Path, entries: Iterable[tuple[str, str]], *, group: int | None = None
) -> int:
    """Write ``user:hash`` lines atomically; return how many were written.

    The broker reads the file as its own user (``mosquitto``), so the new file keeps the
    owner, group and mode of the file it replaces (never readable by others). A new file
    is ``0640``, owned by this process's user and by ``group`` (a gid) when given.
    ``group`` given for an existing file changes its group.
    """
    lines = [f"{user}:{hashed}\n" for user, hashed in sorted(entries)]
    for line in lines:
        if line.count(":") != 1 or any(c.isspace() for c in line.rstrip("\n")):
            raise ValueError(f"invalid password-file entry for {line.split(':', 1)[0]!r}")
    try:
        st = path.stat()
        uid, gid, mode = st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode) & 0o660
    except FileNotFoundError:
        uid, gid, mode = os.geteuid(), os.getegid(), 0o640
    if group is not None:
        gid = group
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        if (uid, gid) != (os.geteuid(), os.getegid()):
            os.fchown(f.fileno(), uid, gid)
        os.fchmod(f.fileno(), mode | 0o600)
        f.writelines(lines)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return len(lines)
