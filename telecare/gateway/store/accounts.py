"""Web accounts: console users, their sessions, care-home API tokens, idempotent answers.

Written once for both backends on the store's small query API (``store.sql``:
``fetch_all`` / ``fetch_one`` / ``execute`` / ``transaction`` with ``?`` placeholders),
against the tables of migration 0017. Nothing here hashes or checks a password: the
web layer (``gateway/web/auth.py``) hands in argon2 hashes and SHA-256 digests, so no
secret in the clear ever reaches a table.

Times are written as ISO-8601 UTC text (PostgreSQL casts them to ``timestamptz``) and
read back through :func:`_when`, which accepts either form.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

__all__ = [
    "Accounts",
    "ApiToken",
    "DuplicateUser",
    "Role",
    "Session",
    "Sql",
    "StoredAnswer",
    "User",
    "accounts_of",
]


class Sql(Protocol):
    """The store's query API (``store.sql``), as this module uses it."""

    async def fetch_all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]: ...

    async def fetch_one(self, sql: str, params: Sequence[Any] = ()) -> Any | None: ...

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int: ...

    def transaction(self) -> AbstractAsyncContextManager[Any]: ...


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
    """The answer given to the first request that carried an ``Idempotency-Key``."""

    body_hash: str
    status: int
    response: str


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat()


def _when(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    return datetime.fromisoformat(str(value)).astimezone(UTC)


_USER_COLUMNS = "user_id, username, display_name, role, site_id, disabled"


def _user(row: Sequence[Any]) -> User:
    return User(int(row[0]), row[1], row[2], Role(row[3]), row[4], bool(row[5]))


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
        if await self.user(username) is not None:
            raise DuplicateUser(username)
        await self.sql.execute(
            "INSERT INTO web_users (username, display_name, role, site_id, password_hash,"
            " disabled, created_at) VALUES (?, ?, ?, ?, ?, 0, ?)",
            (username, display_name, role.value, site_id, password_hash, _iso(now)),
        )
        user = await self.user(username)
        assert user is not None
        return user

    async def user(self, username: str) -> User | None:
        row = await self.sql.fetch_one(
            f"SELECT {_USER_COLUMNS} FROM web_users WHERE username = ?", (username,)
        )
        return _user(row) if row else None

    async def password_hash(self, username: str) -> tuple[User, str] | None:
        """The user and their stored hash, for a login attempt."""
        row = await self.sql.fetch_one(
            f"SELECT {_USER_COLUMNS}, password_hash FROM web_users WHERE username = ?",
            (username,),
        )
        return (_user(row), str(row[6])) if row else None

    async def set_password(self, username: str, password_hash: str) -> bool:
        """Replace a password hash (also ends the user's sessions)."""
        async with self.sql.transaction() as tx:
            done = await tx.execute(
                "UPDATE web_users SET password_hash = ? WHERE username = ?",
                (password_hash, username),
            )
            await tx.execute(
                "DELETE FROM web_sessions WHERE user_id IN"
                " (SELECT user_id FROM web_users WHERE username = ?)",
                (username,),
            )
        return bool(done)

    async def set_disabled(self, username: str, disabled: bool) -> bool:
        """Disable (and log out) or re-enable a user."""
        async with self.sql.transaction() as tx:
            done = await tx.execute(
                "UPDATE web_users SET disabled = ? WHERE username = ?",
                (int(disabled), username),
            )
            if disabled:
                await tx.execute(
                    "DELETE FROM web_sessions WHERE user_id IN"
                    " (SELECT user_id FROM web_users WHERE username = ?)",
                    (username,),
                )
        return bool(done)

    async def list_users(self) -> list[User]:
        rows = await self.sql.fetch_all(f"SELECT {_USER_COLUMNS} FROM web_users ORDER BY username")
        return [_user(r) for r in rows]

    # -- sessions ----------------------------------------------------------------------
    async def create_session(
        self, user_id: int, token_hash: str, csrf_token: str, now: datetime
    ) -> None:
        await self.sql.execute(
            "INSERT INTO web_sessions (token_hash, user_id, csrf_token, created_at,"
            " last_seen_at) VALUES (?, ?, ?, ?, ?)",
            (token_hash, user_id, csrf_token, _iso(now), _iso(now)),
        )

    async def session(self, token_hash: str) -> Session | None:
        row = await self.sql.fetch_one(
            "SELECT u.user_id, u.username, u.display_name, u.role, u.site_id, u.disabled,"
            " s.csrf_token, s.created_at, s.last_seen_at FROM web_sessions s"
            " JOIN web_users u ON u.user_id = s.user_id WHERE s.token_hash = ?",
            (token_hash,),
        )
        if row is None:
            return None
        return Session(_user(row), str(row[6]), _when(row[7]), _when(row[8]))

    async def touch_session(self, token_hash: str, now: datetime) -> None:
        await self.sql.execute(
            "UPDATE web_sessions SET last_seen_at = ? WHERE token_hash = ?",
            (_iso(now), token_hash),
        )

    async def end_session(self, token_hash: str) -> None:
        await self.sql.execute("DELETE FROM web_sessions WHERE token_hash = ?", (token_hash,))

    async def logged_in(self, since: datetime) -> list[tuple[User, datetime]]:
        """Users with a session used since ``since`` and when each was last seen."""
        rows = await self.sql.fetch_all(
            "SELECT u.user_id, u.username, u.display_name, u.role, u.site_id, u.disabled,"
            " s.last_seen_at FROM web_sessions s JOIN web_users u ON u.user_id = s.user_id"
        )
        latest: dict[int, tuple[User, datetime]] = {}
        for row in rows:
            seen = _when(row[6])
            user = _user(row)
            if seen >= since and (user.user_id not in latest or latest[user.user_id][1] < seen):
                latest[user.user_id] = (user, seen)
        return sorted(latest.values(), key=lambda pair: pair[0].username)

    # -- API tokens --------------------------------------------------------------------
    async def add_token(
        self, token_id: str, site_id: str, name: str, secret_hash: str, now: datetime
    ) -> ApiToken:
        await self.sql.execute(
            "INSERT INTO api_tokens (token_id, site_id, name, secret_hash, created_at)"
            " VALUES (?, ?, ?, ?, ?)",
            (token_id, site_id, name, secret_hash, _iso(now)),
        )
        return ApiToken(token_id, site_id, name, secret_hash, now)

    async def token(self, token_id: str) -> ApiToken | None:
        row = await self.sql.fetch_one(
            "SELECT token_id, site_id, name, secret_hash, created_at, revoked_at"
            " FROM api_tokens WHERE token_id = ?",
            (token_id,),
        )
        return _token(row) if row else None

    async def list_tokens(self, site_id: str | None = None) -> list[ApiToken]:
        sql = "SELECT token_id, site_id, name, secret_hash, created_at, revoked_at FROM api_tokens"
        params: tuple[str, ...] = ()
        if site_id is not None:
            sql += " WHERE site_id = ?"
            params = (site_id,)
        return [_token(r) for r in await self.sql.fetch_all(sql + " ORDER BY created_at", params)]

    async def revoke_token(self, token_id: str, now: datetime) -> bool:
        done = await self.sql.execute(
            "UPDATE api_tokens SET revoked_at = ? WHERE token_id = ? AND revoked_at IS NULL",
            (_iso(now), token_id),
        )
        return bool(done)

    # -- idempotency -------------------------------------------------------------------
    async def reserve_answer(self, scope: str, key: str, body_hash: str, now: datetime) -> bool:
        """Claim ``(scope, key)`` for a request in progress (status 0); ``False`` if the
        key was seen before (read it with :meth:`answer`)."""
        done = await self.sql.execute(
            "INSERT INTO api_idempotency (scope, idem_key, body_hash, status, response,"
            " created_at) VALUES (?, ?, ?, 0, '', ?) ON CONFLICT DO NOTHING",
            (scope, key, body_hash, _iso(now)),
        )
        return bool(done)

    async def answer(self, scope: str, key: str) -> StoredAnswer | None:
        row = await self.sql.fetch_one(
            "SELECT body_hash, status, response FROM api_idempotency"
            " WHERE scope = ? AND idem_key = ?",
            (scope, key),
        )
        return StoredAnswer(str(row[0]), int(row[1]), str(row[2])) if row else None

    async def keep_answer(self, scope: str, key: str, status: int, response: str) -> None:
        await self.sql.execute(
            "UPDATE api_idempotency SET status = ?, response = ? WHERE scope = ? AND idem_key = ?",
            (status, response, scope, key),
        )

    async def release_answer(self, scope: str, key: str) -> None:
        """Forget a reservation whose request failed, so a retry can do the work."""
        await self.sql.execute(
            "DELETE FROM api_idempotency WHERE scope = ? AND idem_key = ? AND status = 0",
            (scope, key),
        )

    async def prune_answers(
        self, before: datetime, now: datetime, every: timedelta = timedelta(0)
    ) -> int:
        """Forget answers created before ``before``; skipped if done within ``every``."""
        if self._pruned_at is not None and now - self._pruned_at < every:
            return 0
        self._pruned_at = now
        return await self.sql.execute(
            "DELETE FROM api_idempotency WHERE created_at < ?", (_iso(before),)
        )


def _token(row: Sequence[Any]) -> ApiToken:
    revoked = _when(row[5]) if row[5] is not None else None
    return ApiToken(row[0], row[1], row[2], row[3], _when(row[4]), revoked)


def accounts_of(store: object) -> Accounts:
    """:class:`Accounts` over a store backend's query API (``store.sql``)."""
    return Accounts(_InterimSql(store))  # TEMP(console): until accounts speak store.sql


class _InterimSql:
    """Until the store's own ``store.sql`` lands: the same four calls on either backend.

    (Removed when ``store.sql`` is merged; nothing outside this module sees it.)
    """

    def __init__(self, store: object, conn: Any = None) -> None:
        self.store = store
        self._conn = conn

    def _pg(self) -> bool:
        return hasattr(self.store, "pool")

    async def _go(self, sql: str, params: Sequence[Any], mode: str) -> Any:
        if self._pg():
            return await self._pg_go(sql.replace("?", "%s"), params, mode)

        def run(conn: Any) -> Any:
            with conn:
                cur = conn.execute(sql, tuple(params))
                if mode == "all":
                    return cur.fetchall()
                if mode == "one":
                    return cur.fetchone()
                return cur.rowcount

        return await self.store._run(run)  # type: ignore[attr-defined]

    async def _pg_go(self, sql: str, params: Sequence[Any], mode: str) -> Any:
        async def on(conn: Any) -> Any:
            cur = await conn.execute(sql, tuple(params))
            if mode == "all":
                return await cur.fetchall()
            if mode == "one":
                return await cur.fetchone()
            return cur.rowcount

        if self._conn is not None:
            return await on(self._conn)
        async with self.store.pool.connection() as conn:  # type: ignore[attr-defined]
            return await on(conn)

    async def fetch_all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        rows: list[Any] = await self._go(sql, params, "all")
        return rows

    async def fetch_one(self, sql: str, params: Sequence[Any] = ()) -> Any | None:
        return await self._go(sql, params, "one")

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        count: int = await self._go(sql, params, "count")
        return count

    def transaction(self) -> AbstractAsyncContextManager[Any]:
        return _interim_transaction(self)


@asynccontextmanager
async def _interim_transaction(sql: _InterimSql) -> AsyncIterator[Any]:
    # Account writes are few and each statement is idempotent on retry; a transaction on
    # the shared SQLite connection would hold its lock across awaits, so statements run
    # one by one there. PostgreSQL gets a real transaction on one pooled connection.
    if sql._pg():
        async with sql.store.pool.connection() as conn, conn.transaction():  # type: ignore[attr-defined]
            yield _InterimSql(sql.store, conn)
        return
    yield sql
