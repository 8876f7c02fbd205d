"""``telecare user ...`` and ``telecare token ...`` through the real CLI, and what they
create working against the real app."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import httpx
from typer.testing import CliRunner

from telecare.gateway.cli.main import app
from telecare.gateway.config import load_config
from telecare.gateway.store.accounts import Accounts
from telecare.gateway.store.sqlite import SqliteStore
from telecare.gateway.web.app import create_app
from telecare.gateway.web.services import Services
from telecare.rules.clock import SystemClock
from tests.helpers import running_pipeline

PASSWORD = "a long enough password"


def _cli(config: Path, *args: str, code: int = 0, stdin: str | None = None) -> str:
    result = CliRunner().invoke(app, [*args, "--config", str(config)], input=stdin)
    assert result.exit_code == code, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output
    return result.output


def _config(tmp_path: Path) -> Path:
    config = tmp_path / "gateway.toml"
    db = tmp_path / "telecare.sqlite3"
    config.write_text(f'[store]\nbackend = "sqlite"\nsqlite_path = "{db}"\n')
    return config


def test_user_add_list_passwd_disable(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    _cli(cfg, "site", "add", "S1", "--kind", "care_home")
    _cli(cfg, "user", "add", "alice", "--name", "Alice Smith", "--password-stdin", stdin=PASSWORD)
    out = _cli(cfg, "user", "add", "alice", "--password-stdin", code=1, stdin=PASSWORD)
    assert "exists already" in out
    _cli(cfg, "user", "add", "carer", "--role", "care_home", "--site", "S1",
         "--password-stdin", stdin=PASSWORD)  # fmt: skip
    assert "--site is required" in _cli(
        cfg, "user", "add", "x", "--role", "care_home", "--password-stdin", code=1, stdin=PASSWORD
    )
    assert "no site" in _cli(
        cfg, "user", "add", "y", "--role", "care_home", "--site", "NOPE", "--password-stdin",
        code=3, stdin=PASSWORD,
    )  # fmt: skip
    assert "at least 12" in _cli(cfg, "user", "add", "z", "--password-stdin", code=1, stdin="x")
    assert "reserved" in _cli(
        cfg, "user", "add", "system", "--password-stdin", code=1, stdin=PASSWORD
    )
    users = {u["username"]: u for u in json.loads(_cli(cfg, "user", "list", "--json"))}
    assert users["alice"]["role"] == "operator"
    assert users["alice"]["display_name"] == "Alice Smith"
    assert users["carer"]["site_id"] == "S1"
    assert PASSWORD not in _cli(cfg, "user", "list")
    _cli(cfg, "user", "passwd", "alice", "--password-stdin", stdin=PASSWORD + "!")
    _cli(cfg, "user", "disable", "alice")
    assert "(disabled)" in _cli(cfg, "user", "list")
    _cli(cfg, "user", "disable", "nobody", code=3)


async def test_a_token_from_the_cli_works_for_its_site_only(tmp_path: Path) -> None:
    """(The CLI runs its own event loop: here it runs in a worker thread.)"""
    cfg = _config(tmp_path)

    async def cli(*args: str, code: int = 0) -> str:
        return await asyncio.to_thread(_cli, cfg, *args, code=code)

    await cli("site", "add", "S1", "--kind", "care_home")
    await cli("site", "add", "S2", "--kind", "care_home")
    out = await cli("token", "add", "--site", "S1", "--name", "Oak House EHR")
    bearer = re.search(r"^tc_\S+$", out, re.M)
    assert bearer is not None
    await cli("token", "add", "--site", "NOPE", code=3)
    listed = await cli("token", "list")
    assert "Oak House EHR" in listed
    assert bearer[0] not in listed
    config = load_config(cfg, {})
    clock = SystemClock()
    headers = {"Authorization": f"Bearer {bearer[0]}"}
    async with (
        SqliteStore(config.store.sqlite_path) as store,
        running_pipeline(store, clock) as pipeline,
    ):
        svc = Services(config, store, pipeline.dispatcher, Accounts(store.sql), clock)
        transport = httpx.ASGITransport(app=create_app(svc))
        async with httpx.AsyncClient(transport=transport, base_url="https://t") as c:
            assert (await c.get("/api/v1/sites/S1/residents", headers=headers)).status_code == 200
            assert (await c.get("/api/v1/sites/S2/residents", headers=headers)).status_code == 404
    token_id = bearer[0].removeprefix("tc_").split("_")[0]
    await cli("token", "revoke", token_id)
    assert "revoked" in await cli("token", "list")
    await cli("token", "revoke", token_id, code=3)
