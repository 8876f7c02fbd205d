"""``telecare user ...`` and ``telecare token ...``: console users and care-home API tokens.

    telecare user add alice --role operator --name "Alice Smith"     # asks for a password
    echo "$PW" | telecare user add tab1 --role care_home --site S1 --password-stdin
    telecare user list | passwd NAME | disable NAME | enable NAME
    telecare token add --site S1 --name "Oak House EHR"               # prints the token once
    telecare token list [--site S1] | revoke TOKEN_ID

Passwords are stored as argon2id hashes and tokens as SHA-256 digests (``web/credentials.py``);
neither is ever printed again or logged. Mounted by ``gateway.cli.main`` (``mount``).
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from telecare.gateway.cli.common import (
    ConfigOption,
    ExitCode,
    JsonOption,
    fail,
    load_cli_config,
    print_json,
    with_store,
)
from telecare.gateway.store.accounts import Accounts, ApiToken, DuplicateUser, Role, User
from telecare.gateway.web.credentials import digest, hash_password, new_api_token

__all__ = ["mount", "token_app", "user_app"]

user_app = typer.Typer(no_args_is_help=True, help="Console users (operators, supervisors ...).")
token_app = typer.Typer(no_args_is_help=True, help="Care-home API tokens, one site each.")

#: Names the gateway itself writes into audit rows: no person may log in as one of them.
RESERVED_NAMES = frozenset({"system", "device", "gateway", "timer", "sweeper", "rules"})
MIN_PASSWORD = 12


def mount(app: typer.Typer) -> None:
    """Add the ``user`` and ``token`` groups to the ``telecare`` command."""
    app.add_typer(user_app, name="user")
    app.add_typer(token_app, name="token")


def _now() -> datetime:
    return datetime.now(UTC)


def _password(from_stdin: bool) -> str:
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    if len(password) < MIN_PASSWORD:
        fail(f"a password needs at least {MIN_PASSWORD} characters")
    return password


def _user_json(user: User) -> dict[str, Any]:
    return {
        "username": user.username,
        "display_name": user.display_name,
        "role": user.role.value,
        "site_id": user.site_id,
        "disabled": user.disabled,
    }


def _token_json(token: ApiToken) -> dict[str, Any]:
    return {
        "token_id": token.token_id,
        "site_id": token.site_id,
        "name": token.name,
        "created_at": token.created_at.isoformat(),
        "revoked_at": token.revoked_at.isoformat() if token.revoked_at else None,
    }


@user_app.command("add")
def user_add(
    username: Annotated[str, typer.Argument(help="Login name (letters, digits, . _ -).")],
    role: Annotated[Role, typer.Option("--role", help="What the user may do.")] = Role.OPERATOR,
    name: Annotated[str, typer.Option("--name", help="Full name shown in the audit.")] = "",
    site: Annotated[
        str | None, typer.Option("--site", help="The site of a care_home user.")
    ] = None,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from stdin.")
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Create a console user. The password is asked for twice (or read from stdin)."""
    clean = username.strip()
    if not clean or len(clean) > 64 or not all(c.isalnum() or c in "._-" for c in clean):
        fail("a user name is 1-64 letters, digits, '.', '_' or '-'")
    if clean.lower() in RESERVED_NAMES:
        fail(f"{clean!r} is reserved for what the gateway writes in the audit")
    if (role is Role.CARE_HOME) != (site is not None):
        fail("--site is required for a care_home user, and only for one")
    password_hash = hash_password(_password(password_stdin))
    cfg = load_cli_config(config)

    async def action(store: Any) -> User:
        if site is not None and await store.get_site(site) is None:
            fail(f"no site {site!r}", ExitCode.NOT_FOUND)
        try:
            return await Accounts(store.sql).add_user(
                clean, name or clean, role, password_hash, _now(), site
            )
        except DuplicateUser:
            fail(f"a user {clean!r} exists already (telecare user passwd to change it)")

    user = with_store(cfg, action)
    typer.echo(f"user {user.username} added ({user.role.value})")


@user_app.command("list")
def user_list(json_out: JsonOption = False, config: ConfigOption = None) -> None:
    """List the console users (never their passwords)."""
    cfg = load_cli_config(config)
    users = with_store(cfg, lambda store: Accounts(store.sql).list_users())
    if json_out:
        print_json([_user_json(u) for u in users])
        return
    for u in users:
        flags = " (disabled)" if u.disabled else ""
        site = f" site {u.site_id}" if u.site_id else ""
        typer.echo(f"{u.username}\t{u.role.value}{site}\t{u.display_name}{flags}")


@user_app.command("passwd")
def user_passwd(
    username: str,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from stdin.")
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Set a user's password (their open sessions end)."""
    password_hash = hash_password(_password(password_stdin))
    cfg = load_cli_config(config)
    if not with_store(cfg, lambda store: Accounts(store.sql).set_password(username, password_hash)):
        fail(f"no user {username!r}", ExitCode.NOT_FOUND)
    typer.echo(f"password of {username} changed")


def _set_disabled(username: str, disabled: bool, config: ConfigOption) -> None:
    cfg = load_cli_config(config)
    if not with_store(cfg, lambda store: Accounts(store.sql).set_disabled(username, disabled)):
        fail(f"no user {username!r}", ExitCode.NOT_FOUND)
    typer.echo(f"user {username} {'disabled' if disabled else 'enabled'}")


@user_app.command("disable")
def user_disable(username: str, config: ConfigOption = None) -> None:
    """Stop a user logging in (their open sessions end)."""
    _set_disabled(username, True, config)


@user_app.command("enable")
def user_enable(username: str, config: ConfigOption = None) -> None:
    """Let a disabled user log in again."""
    _set_disabled(username, False, config)


@token_app.command("add")
def token_add(
    site: Annotated[str, typer.Option("--site", help="The one site the token may use.")],
    name: Annotated[str, typer.Option("--name", help="What holds it (for the audit).")] = "",
    json_out: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Create an API token for one care home. It is printed once: store it then."""
    label = (name or "api").strip()
    if not label or len(label) > 80 or not label.isprintable():
        fail("--name is 1-80 printable characters")
    cfg = load_cli_config(config)
    token_id, secret, bearer = new_api_token()

    async def action(store: Any) -> ApiToken:
        if await store.get_site(site) is None:
            fail(f"no site {site!r}", ExitCode.NOT_FOUND)
        return await Accounts(store.sql).add_token(token_id, site, label, digest(secret), _now())

    token = with_store(cfg, action)
    if json_out:
        print_json({**_token_json(token), "token": bearer})
        return
    typer.echo(f"token {token.token_id} for site {token.site_id} ({token.name}):")
    typer.echo(bearer)
    typer.echo("Send it as 'Authorization: Bearer <token>'. It is not shown again.", err=True)


@token_app.command("list")
def token_list(
    site: Annotated[str | None, typer.Option("--site", help="Only this site's tokens.")] = None,
    json_out: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """List API tokens (ids and sites; the secrets are not stored)."""
    cfg = load_cli_config(config)
    tokens = with_store(cfg, lambda store: Accounts(store.sql).list_tokens(site))
    if json_out:
        print_json([_token_json(t) for t in tokens])
        return
    for t in tokens:
        state = f"revoked {t.revoked_at:%Y-%m-%d}" if t.revoked_at else "active"
        typer.echo(f"{t.token_id}\tsite {t.site_id}\t{t.name}\t{state}")


@token_app.command("revoke")
def token_revoke(token_id: str, config: ConfigOption = None) -> None:
    """Revoke a token at once (requests carrying it get 401)."""
    cfg = load_cli_config(config)
    if not with_store(cfg, lambda store: Accounts(store.sql).revoke_token(token_id, _now())):
        fail(f"no active token {token_id!r}", ExitCode.NOT_FOUND)
    typer.echo(f"token {token_id} revoked")
