"""Web accounts (migration 0017) on ``store.sql``: console users, their sessions,
care-home API tokens, and the answers kept for ``Idempotency-Key`` retries.

Nothing here hashes or checks a secret: the web layer (``gateway/web/auth.py``) hands in
argon2 password hashes and SHA-256 digests of session cookies and token secrets, so no
secret in the clear reaches a table.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from telecare.gateway.store.sql import Sql
from telecare.gateway.store.tables import INT, Table, plain
from telecare.gateway.store.tables import Column as C

__all__ = [
    "Accounts",
    "ApiToken",
    "DuplicateUser",
    "Role",
    "Session",
    "StoredAnswer",
    "User",
]


class Role(StrEnum):
    """What a console user may do (docs/api.md, "Roles")."""

    OPERATOR = "operator"
    SUPERVISOR = "supervisor"
    INSTALLER = "installer"
    CARE_HOME = "care_home"


class DuplicateUser(Exception):
    """A user of that name exists already."""


@dataclass(frozen=True, slots=True)
class User:
    user_id: int
    username: str
    display_name: str
    role: Role
    #: The one site a ``care_home`` user belongs to (``None`` for ARC staff).
    site_id: str | None = None
    disabled: bool = False


@dataclass(frozen=True, slots=True)
class Session:
    user: User
    csrf_token: str
    created_at: datetime
    last_seen_at: datetime


@dataclass(frozen=True, slots=True)
class ApiToken:
    token_id: str
    site_id: str
    name: str
    secret_hash: str
    created_at: datetime
    revoked_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class StoredAnswer:
    """The answer given to the first request that carried an ``Idempotency-Key``
    (``status`` 0: that request is still being worked on)."""

    body_hash: str
    status: int
    response: str
    created_at: datetime


USERS = Table.of("web_users", User, C("user_id", INT, auto=True))
TOKENS = Table.of("api_tokens", ApiToken)
SESSIONS = plain("web_sessions", "token_hash user_id:int csrf_token created_at:ts last_seen_at:ts")
ANSWERS = plain("api_idempotency", "scope idem_key body_hash status:int response created_at:ts")
_USER = USERS.select("u")
_OF_USER = (
    "DELETE FROM web_sessions WHERE user_id IN (SELECT user_id FROM web_users WHERE username = ?)"
)
_ANSWER = "FROM api_idempotency WHERE scope = ? AND idem_key = ?"


class Accounts:
    """Users, sessions, API tokens and idempotent answers in the gateway's store."""

    def __init__(self, sql: Sql) -> None:
        self.sql = sql
        self._pruned_at: datetime | None = None

    # -- users -------------------------------------------------------------------------
    async def add_user(
        self,
        username: str,
        display_name: str,
        role: Role,
        password_hash: str,
        now: datetime,
        site_id: str | None = None,
    ) -> User:
        """Create a user; :class:`DuplicateUser` when the name is taken."""
        row = await self.sql.fetch_one(
            "INSERT INTO web_users (username, display_name, role, site_id, password_hash,"
            " disabled, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (username) DO NOTHING RETURNING user_id",
            *(username, display_name, role.value, site_id, password_hash, False, now),
        )
        if row is None:
            raise DuplicateUser(username)
        return User(int(row[0]), username, display_name, role, site_id)

    async def password_hash(self, username: str) -> tuple[User, str] | None:
        """The user and their stored hash, for a login attempt."""
        row = await self.sql.fetch_one(
            f"SELECT {_USER}, u.password_hash FROM web_users u WHERE u.username = ?", username
        )
        return (USERS.load(row[:6]), str(row[6])) if row else None

    async def set_password(self, username: str, password_hash: str) -> bool:
        """Replace a password hash; the user's sessions end."""
        return await self._set(username, "password_hash", password_hash, log_out=True)

    async def set_disabled(self, username: str, disabled: bool) -> bool:
        """Disable (and log out) or re-enable a user."""
        return await self._set(username, "disabled", disabled, log_out=disabled)

    async def _set(self, username: str, column: str, value: object, log_out: bool) -> bool:
        """Set one column of the user; with ``log_out``, their sessions end with it."""
        async with self.sql.transaction() as tx:
            q = f"UPDATE web_users SET {column} = ? WHERE username = ?"
            done = await tx.execute(q, value, username)
            if log_out:
                await tx.execute(_OF_USER, username)
        return bool(done)

    async def list_users(self) -> list[User]:
        return await USERS.all(self.sql, "ORDER BY username")

    # -- sessions ----------------------------------------------------------------------
    async def create_session(
        self, user_id: int, token_hash: str, csrf_token: str, now: datetime
    ) -> None:
        await self.sql.execute(SESSIONS.insert(""), token_hash, user_id, csrf_token, now, now)

    async def session(self, token_hash: str) -> Session | None:
        row = await self.sql.fetch_one(
            f"SELECT {_USER}, s.csrf_token, s.created_at, s.last_seen_at FROM web_sessions s"
            " JOIN web_users u ON u.user_id = s.user_id WHERE s.token_hash = ?",
            token_hash,
        )
        return Session(USERS.load(row[:6]), *row[6:]) if row else None

    async def touch_session(self, token_hash: str, now: datetime) -> None:
        q = "UPDATE web_sessions SET last_seen_at = ? WHERE token_hash = ?"
        await self.sql.execute(q, now, token_hash)

    async def end_session(self, token_hash: str) -> None:
        await self.sql.execute("DELETE FROM web_sessions WHERE token_hash = ?", token_hash)

    async def logged_in(self, since: datetime) -> list[tuple[User, datetime]]:
        """Users with a session used since ``since``, each with when it was last seen."""
        rows = await self.sql.fetch_all(
            f"SELECT {_USER}, MAX(s.last_seen_at) FROM web_sessions s"
            " JOIN web_users u ON u.user_id = s.user_id WHERE s.last_seen_at >= ?"
            f" GROUP BY {_USER} ORDER BY u.username",
            since,
        )
        return [(USERS.load(r[:6]), r[6]) for r in rows]

    # -- API tokens --------------------------------------------------------------------
    async def add_token(
        self, token_id: str, site_id: str, name: str, secret_hash: str, now: datetime
    ) -> ApiToken:
        token = ApiToken(token_id, site_id, name, secret_hash, now)
        await TOKENS.add(self.sql, token, "")
        return token

    async def token(self, token_id: str) -> ApiToken | None:
        return await TOKENS.one(self.sql, "WHERE token_id = ?", token_id)

    async def list_tokens(self, site_id: str | None = None) -> list[ApiToken]:
        where, params = ("WHERE site_id = ? ", (site_id,)) if site_id else ("", ())
        return await TOKENS.all(self.sql, f"{where}ORDER BY created_at, token_id", *params)

    async def revoke_token(self, token_id: str, now: datetime) -> bool:
        q = "UPDATE api_tokens SET revoked_at = ? WHERE token_id = ? AND revoked_at IS NULL"
        return bool(await self.sql.execute(q, now, token_id))

    # -- idempotency -------------------------------------------------------------------
    async def reserve_answer(self, scope: str, key: str, body_hash: str, now: datetime) -> bool:
        """Claim ``(scope, key)`` for a request in progress (status 0); ``False`` if the
        key was seen before (read it with :meth:`answer`)."""
        return bool(await self.sql.execute(ANSWERS.insert(), scope, key, body_hash, 0, "", now))

    async def answer(self, scope: str, key: str) -> StoredAnswer | None:
        q = f"SELECT body_hash, status, response, created_at {_ANSWER}"
        row = await self.sql.fetch_one(q, scope, key)
        return StoredAnswer(*row) if row else None

    async def keep_answer(self, scope: str, key: str, status: int, response: str) -> None:
        q = "UPDATE api_idempotency SET status = ?, response = ? WHERE scope = ? AND idem_key = ?"
        await self.sql.execute(q, status, response, scope, key)

    async def release_answer(self, scope: str, key: str) -> None:
        """Forget a claim whose request failed, so a retry can do the work."""
        await self.sql.execute(f"DELETE {_ANSWER} AND status = 0", scope, key)

    async def prune_answers(
        self, before: datetime, now: datetime, every: timedelta = timedelta(0)
    ) -> int:
        """Forget answers created before ``before``; skipped if done within ``every``."""
        if self._pruned_at is not None and now - self._pruned_at < every:
            return 0
        self._pruned_at = now
        return await self.sql.execute("DELETE FROM api_idempotency WHERE created_at < ?", before)
