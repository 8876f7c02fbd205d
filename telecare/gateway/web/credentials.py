"""Credentials without the web stack: argon2id password hashes, SHA-256 digests of
high-entropy secrets (session cookies, API tokens) and new care-home API tokens.

Kept apart from :mod:`telecare.gateway.web.auth` (which re-exports them) so that the
CLI's ``user`` and ``token`` commands hash and mint them without importing FastAPI:
every ``telecare`` process would otherwise pay for the web stack at start.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import secrets
from typing import Final

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

__all__ = [
    "TOKEN_PREFIX",
    "digest",
    "dummy_hash",
    "hash_password",
    "new_api_token",
    "verify_password",
]

TOKEN_PREFIX: Final = "tc_"

_hasher = PasswordHasher()


@functools.cache
def dummy_hash() -> str:
    """Verified against when the user does not exist, so a login takes as long either
    way. Made on first use, not at import: every process importing the web face (each
    CLI command) would otherwise pay one argon2 hash at start."""
    return _hasher.hash(secrets.token_urlsafe(16))


def hash_password(password: str) -> str:
    """An argon2id hash (salted, with the library's current cost parameters)."""
    return _hasher.hash(password)


async def verify_password(password_hash: str, password: str) -> bool:
    """Check a password in a worker thread (argon2 takes tens of milliseconds)."""

    def check() -> bool:
        try:
            return _hasher.verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            return False

    return await asyncio.to_thread(check)


def digest(secret: str) -> str:
    """SHA-256 hex of a high-entropy secret (session cookie, API token)."""
    return hashlib.sha256(secret.encode()).hexdigest()


def new_api_token() -> tuple[str, str, str]:
    """``(token_id, secret, bearer)``: store the id and ``digest(secret)``, show the
    bearer once."""
    token_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    return token_id, secret, f"{TOKEN_PREFIX}{token_id}_{secret}"
