"""The web skeleton: login page and session, roles, CSRF, ops endpoints, the server."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from telecare.gateway.config import Config, WebConfig
from telecare.gateway.errors import ConfigError
from telecare.gateway.store.accounts import Role, User
from telecare.gateway.web.app import WebServer, create_app
from telecare.gateway.web.auth import CSRF_HEADER, SESSION_COOKIE, require_roles
from tests.services import MqttServer
from tests.web.conftest import PASSWORD, WebEnv


async def test_login_page_then_form_login_sets_a_strict_secure_session(web: WebEnv) -> None:
    await web.add_user("alice")
    c = await web.client()
    page = await c.get("/login?next=/console")
    assert page.status_code == 200
    assert 'name="password"' in page.text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert csrf is not None
    r = await c.post(
        "/login",
        data={"username": "alice", "password": PASSWORD, "csrf_token": csrf[1], "next": "/x"},
    )
    assert r.status_code == 303
    assert r.headers["location"] == "/x"
    cookie = next(h for h in r.headers.get_list("set-cookie") if h.startswith(SESSION_COOKIE))
    assert "HttpOnly" in cookie
    assert "Secure" in cookie
    assert "SameSite=strict" in cookie
    me = await c.get("/api/v1/session")
    assert me.json()["username"] == "alice"


async def test_login_form_refuses_a_missing_csrf_token_and_a_wrong_password(web: WebEnv) -> None:
    await web.add_user("alice")
    c = await web.client()
    r = await c.post("/login", data={"username": "alice", "password": PASSWORD})
    assert r.status_code == 403
    page = await c.get("/login")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert csrf is not None
    r = await c.post("/login", data={"username": "alice", "password": "no", "csrf_token": csrf[1]})
    assert r.status_code == 401
    assert "Wrong user name or password" in r.text
    assert SESSION_COOKIE not in c.cookies


async def test_open_redirect_after_login_is_refused(web: WebEnv) -> None:
    await web.add_user("alice")
    c = await web.client()
    page = await c.get("/login")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert csrf is not None
    r = await c.post(
        "/login",
        data={
            "username": "alice",
            "password": PASSWORD,
            "csrf_token": csrf[1],
            "next": "//evil.example/",
        },
    )
    assert r.headers["location"] == "/console"


async def test_state_change_without_the_csrf_header_is_403(web: WebEnv) -> None:
    c = await web.login("alice")
    token = c.headers.pop(CSRF_HEADER)
    assert (await c.delete("/api/v1/session")).status_code == 403
    c.headers[CSRF_HEADER] = token
    assert (await c.delete("/api/v1/session")).status_code == 204
    assert (await c.get("/api/v1/session")).status_code == 401


async def test_pages_redirect_to_login_and_api_calls_get_401(web: WebEnv) -> None:
    c = await web.client()
    r = await c.get("/", headers={"accept": "text/html"})
    assert r.status_code == 303
    assert r.headers["location"] == "/login"
    assert (await c.get("/api/v1/session")).status_code == 401


async def test_roles_supervisor_acts_as_operator_installer_does_not(web: WebEnv) -> None:
    from fastapi import APIRouter, Depends

    probe = APIRouter()

    @probe.get("/probe")
    async def only_operators(user: User = Depends(require_roles(Role.OPERATOR))) -> str:
        return user.username

    app = create_app(web.services, extra=[probe])
    web.app = app
    sup = await web.login("sue", Role.SUPERVISOR)
    inst = await web.login("ian", Role.INSTALLER)
    assert (await sup.get("/probe")).json() == "sue"
    r = await inst.get("/probe")
    assert r.status_code == 403
    assert "operator" in r.json()["detail"]


async def test_healthz_readyz_and_metrics(web: WebEnv) -> None:
    async def store_check() -> tuple[str, bool, str]:
        return ("store", True, "ok")

    async def broker_check() -> tuple[str, bool, str]:
        return ("broker", False, "not connected")

    c = await web.client()
    assert (await c.get("/healthz")).json() == {"status": "ok"}
    web.services.readiness[:] = [store_check]
    assert (await c.get("/readyz")).status_code == 200
    web.services.readiness.append(broker_check)
    r = await c.get("/readyz")
    assert r.status_code == 503
    assert {"name": "broker", "ok": False, "detail": "not connected"} in r.json()["checks"]
    web.services.metrics.sse_clients.set(3)
    text = (await c.get("/metrics")).text
    assert "telecare_sse_clients 3.0" in text


async def test_web_server_serves_over_tcp_and_names_a_busy_port(web: WebEnv) -> None:
    async with WebServer(web.app, "127.0.0.1", 0) as server:
        async with httpx.AsyncClient(base_url=server.url) as c:
            assert (await c.get("/healthz")).status_code == 200
        busy = WebServer(create_app(web.services), "127.0.0.1", server.port)
        with pytest.raises(ConfigError, match=r"web\.port"):
            await busy.__aenter__()


def test_web_section_of_the_config() -> None:
    from telecare.gateway.config import load_config

    cfg = load_config(None, {"TELECARE_WEB__ENABLED": "true", "TELECARE_WEB__PORT": "9090"})
    assert cfg.web == WebConfig(enabled=True, port=9090)
    assert Config().web.enabled is False


@pytest.mark.mosquitto
async def test_telecare_run_serves_the_web_app(mqtt_server: MqttServer, tmp_path: Path) -> None:
    """``[web] enabled``: the Gateway starts the server last and stops it first."""
    from telecare.gateway.app import Gateway
    from telecare.gateway.config import MqttConfig, StoreConfig

    config = Config(
        mqtt=MqttConfig(port=mqtt_server.port, client_id="gw-web-test"),
        store=StoreConfig(backend="sqlite", sqlite_path=str(tmp_path / "t.sqlite3")),
        web=WebConfig(enabled=True, port=0),
    )
    async with Gateway(config) as gw:
        assert gw.web is not None
        async with httpx.AsyncClient(base_url=gw.web.url) as c:
            assert (await c.get("/healthz")).status_code == 200
            assert (await c.get("/login")).status_code == 200
            assert (await c.get("/api/v1/openapi.json")).json()["info"]["title"]


async def test_password_guessing_is_throttled_per_user_name(web: WebEnv) -> None:
    await web.add_user("alice")
    c = await web.client()
    for _ in range(5):
        r = await c.post("/api/v1/session", json={"username": "alice", "password": "guess"})
        assert r.status_code == 401
    r = await c.post("/api/v1/session", json={"username": "alice", "password": PASSWORD})
    assert r.status_code == 429
    assert int(r.headers["Retry-After"]) == 15 * 60
    web.clock.advance(minutes=15)
    r = await c.post("/api/v1/session", json={"username": "alice", "password": PASSWORD})
    assert r.status_code == 200


async def test_security_headers_and_no_caching_of_api_answers(web: WebEnv) -> None:
    c = await web.login("alice")
    r = await c.get("/api/v1/session")
    assert r.headers["x-frame-options"] == "SAMEORIGIN"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["cache-control"] == "no-store"
    assert "cache-control" not in (await c.get("/static/base.css")).headers


async def test_page_fetches_reuse_a_session_briefly_but_changes_always_check_it(
    web: WebEnv,
) -> None:
    """A console re-fetching its queue on every live event does not read its session
    from the store each time; a disabled user is refused at once for anything that
    changes state, and for page fetches once the kept copy (2 s) is stale."""
    c = await web.login("alice")
    reads = 0
    session = web.accounts.session

    async def counting(key: str) -> object:
        nonlocal reads
        reads += 1
        return await session(key)

    web.accounts.session = counting  # type: ignore[method-assign,assignment]
    for _ in range(5):
        assert (await c.get("/api/v1/session")).status_code == 200
    assert reads == 1
    await web.accounts.set_disabled("alice", True)
    refused = await c.post("/api/v1/dispatches/d-none/acknowledge", json={"version": 1})
    assert refused.status_code == 401
    web.services.sessions.ttl_s = 0.0
    assert (await c.get("/api/v1/session")).status_code == 401
