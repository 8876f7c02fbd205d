"""Tenant isolation, for EVERY operation of the served OpenAPI document (none listed here).

For each operation that declares security, a request is built from the document alone
(path parameters by name, an ``Idempotency-Key`` header, the body from the schema's
example or its required fields) and sent:

- site-scoped operations (``{site_id}`` in the path), aimed at site B's resident: with
  site B's own token the request succeeds (so the request is a real one), and with site
  A's token, or a site A care-home user's session, it is 404, as for a site that does
  not exist;
- every operation tagged ``operator`` (the operator API): a care-home token or care-home
  user gets 401/403, and an operator gets past authentication (the control).

(The ``session`` operations only ever show or end the caller's own session.)

Afterwards nothing of site B has changed: NEWS2 scores, alerts, dispatches and the
idempotency keys are counted before and after every attacker request.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from telecare.devices.model import ResponderKind
from telecare.gateway.store.accounts import Role
from tests.web.conftest import WebEnv

SAFE = {"get", "head", "options"}


def _resolve(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        schema = doc["components"]["schemas"][name]
    return schema


def _example(doc: dict[str, Any], schema: dict[str, Any]) -> Any:
    """A valid value for ``schema``: its example, else its required fields filled in."""
    schema = _resolve(doc, schema)
    if schema.get("examples"):
        return schema["examples"][0]
    if "anyOf" in schema:
        options = [s for s in schema["anyOf"] if s.get("type") != "null"]
        return _example(doc, options[0])
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "object":
        required = schema.get("required", [])
        return {k: _example(doc, schema["properties"][k]) for k in required}
    if kind in ("integer", "number"):
        return schema.get("minimum", 1)
    if kind == "string":
        return "x" * max(1, schema.get("minLength", 1))
    if kind == "boolean":
        return False
    if kind == "array":
        return []
    raise AssertionError(f"no example for schema {schema}")


def _operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    ops = [
        (method, path, op)
        for path, item in doc["paths"].items()
        for method, op in item.items()
        if op.get("security")
    ]
    assert len(ops) >= 15, "the document lost its operations?"
    return ops


def _request(
    doc: dict[str, Any], method: str, path: str, op: dict[str, Any], ids: dict[str, str]
) -> dict[str, Any]:
    url = path
    headers: dict[str, str] = {}
    for param in op.get("parameters", []):
        name = param["name"]
        if param["in"] == "path":
            url = url.replace("{" + name + "}", ids[name])
        elif param["in"] == "header":
            headers[name] = str(uuid.uuid4())
        else:
            assert not param.get("required"), f"{method} {path}: required {name}"
    body = None
    if "requestBody" in op:
        body = _example(doc, op["requestBody"]["content"]["application/json"]["schema"])
    return {"method": method.upper(), "url": url, "headers": headers, "json": body}


async def _snapshot(web: WebEnv, site_id: str) -> tuple[int, ...]:
    sql = web.store.sql
    counts = []
    for query in (
        "SELECT COUNT(*) FROM alerts WHERE site_id = ?",
        "SELECT COUNT(*) FROM dispatches WHERE site_id = ?",
        "SELECT COUNT(*) FROM news2_scores n JOIN residents r ON r.resident_id = n.resident_id"
        " WHERE r.site_id = ?",
        "SELECT COUNT(*) FROM api_idempotency WHERE scope = 'site:' || ?",
        "SELECT COUNT(*) FROM dispatch_audit a JOIN dispatches d"
        " ON d.dispatch_id = a.dispatch_id WHERE d.site_id = ?",
    ):
        row = await sql.fetch_one(query, site_id)
        assert row is not None
        counts.append(int(row[0]))
    return tuple(counts)


async def _clients(web: WebEnv) -> dict[str, httpx.AsyncClient]:
    out = {}
    for name, site in (("token A", "A"), ("token B", "B")):
        c = await web.client()
        c.headers["Authorization"] = f"Bearer {await web.token(site)}"
        out[name] = c
    out["carer A"] = await web.login("carer-a", Role.CARE_HOME, site_id="A")
    out["carer B"] = await web.login("carer-b", Role.CARE_HOME, site_id="B")
    out["operator"] = await web.login("olive", Role.OPERATOR)
    return out


async def test_every_operation_keeps_sites_apart(web: WebEnv) -> None:
    await web.care_home("A", "A-r1")
    await web.care_home("B", "B-r1")
    await web.responders("B-r1", ("kb", ResponderKind.KEYHOLDER))
    dispatch = await web.raise_alarm("B", "B-r1")
    ids = {"site_id": "B", "resident_id": "B-r1", "dispatch_id": dispatch.dispatch_id}
    clients = await _clients(web)
    doc = (await clients["operator"].get("/api/v1/openapi.json")).json()
    checked = []
    for method, path, op in _operations(doc):
        where = f"{method.upper()} {path}"
        if "{site_id}" in path:
            own = await clients["token B"].request(**_request(doc, method, path, op, ids))
            assert own.is_success, f"{where} with site B's own token: {own.status_code} {own.text}"
            for attacker in ("token A", "carer A"):
                before = await _snapshot(web, "B")
                r = await clients[attacker].request(**_request(doc, method, path, op, ids))
                assert r.status_code == 404, f"{where} as {attacker}: {r.status_code} {r.text}"
                assert await _snapshot(web, "B") == before, f"{where} as {attacker} wrote"
        elif "operator" in op["tags"]:
            r = await clients["operator"].request(**_request(doc, method, path, op, ids))
            assert r.status_code not in (401, 403), f"{where} as operator: {r.text}"
            for attacker in ("token A", "token B", "carer A", "carer B"):
                before = await _snapshot(web, "B")
                r = await clients[attacker].request(**_request(doc, method, path, op, ids))
                assert r.status_code in (401, 403), f"{where} as {attacker}: {r.status_code}"
                assert await _snapshot(web, "B") == before, f"{where} as {attacker} wrote"
        else:
            assert op["tags"] == ["session"], f"{where}: which rule covers it?"
        checked.append(where)
    assert any("observations" in w for w in checked)
    assert any("acknowledge" in w for w in checked)
