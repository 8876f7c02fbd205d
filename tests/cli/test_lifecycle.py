"""``site|resident|responder|device list|show|set|remove`` and ``device pair|unpair``
through Typer's runner on a scratch SQLite store."""

from __future__ import annotations

import asyncio
import re

from telecare.devices.model import Dispatch, DispatchState
from telecare.dispatch.records import AuditRecord
from telecare.gateway.store.registry import RegistryChange
from telecare.gateway.store.sqlite import SqliteStore
from tests.cli.conftest import Cli
from tests.store.helpers import T0, alert, registry_changes

PERSONAL = ("Mrs Example", "9434765919", "keysafe 4711", "Oak House", "1 Elm Road", "07700900")


def _commission(cli: Cli) -> None:
    cli(
        "site", "add", "s1", "--kind", "care_home", "--name", "Oak House", "--address", "1 Elm Road"
    )
    cli(
        "responder",
        "add",
        "kh1",
        "--kind",
        "keyholder",
        "--name",
        "Neighbour",
        "--phone",
        "07700900",
    )
    cli("resident", "add", "res1", "--site", "s1", "--name", "Mrs Example",
        "--nhs-number", "9434765919", "--notes", "keysafe 4711", "--responders", "kh1")  # fmt: skip
    cli("device", "add", "p1", "--site", "s1", "--kind", "pendant")


def _audit(cli: Cli) -> list[RegistryChange]:
    async def load() -> list[RegistryChange]:
        async with SqliteStore(cli.db) as store:
            return await registry_changes(store)

    return asyncio.run(load())


def test_list_never_shows_personal_data_and_show_only_with_personal(cli: Cli) -> None:
    _commission(cli)
    for kind in ("site", "resident", "responder", "device"):
        for out in (cli(kind, "list"), cli(kind, "list", "--json")):
            assert not [p for p in PERSONAL if p in out], (kind, out)
    for kind, entity in (("site", "s1"), ("resident", "res1"), ("responder", "kh1")):
        assert not [p for p in PERSONAL if p in cli(kind, "show", entity)]
        assert not [p for p in PERSONAL if p in cli(kind, "show", entity, "--json")]
    assert "Mrs Example" in cli("resident", "show", "res1", "--personal")
    shown = cli.json("resident", "show", "res1", "--personal")
    assert (shown["name"], shown["nhs_number"], shown["notes"]) == (
        "Mrs Example",
        "9434765919",
        "keysafe 4711",
    )
    assert cli.json("site", "show", "s1", "--personal")["address"] == "1 Elm Road"
    assert cli.json("responder", "show", "kh1", "--personal")["phone"] == "07700900"


def test_json_shapes_are_stable(cli: Cli) -> None:
    _commission(cli)
    assert cli.json("site", "list") == [{"site_id": "s1", "kind": "care_home", "area": "default"}]
    assert cli.json("resident", "list") == [
        {
            "resident_id": "res1",
            "site_id": "s1",
            "responders": ["kh1"],
            "spo2_scale": None,
            "baseline_consciousness": None,
        }
    ]
    assert cli.json("responder", "list") == [
        {"responder_id": "kh1", "kind": "keyholder", "area": "default", "skills": []}
    ]
    assert cli.json("device", "list") == [
        {
            "device_id": "p1",
            "site_id": "s1",
            "resident_id": None,
            "kind": "pendant",
            "format": "json_v1",
            "location": "",
            "heartbeat_interval_s": 86400,
            "hub_id": None,
            "credentials": True,
        }
    ]
    assert cli.json("device", "show", "p1")["users"] == {}
    assert cli.json("site", "show", "s1")["devices"] == ["p1"]


def test_set_changes_only_what_is_given_and_is_audited(cli: Cli) -> None:
    _commission(cli)
    out = cli("site", "set", "s1", "--area", "north", "--by", "installer-jo")
    assert "area changed" in out
    assert cli.json("site", "show", "s1", "--personal")["name"] == "Oak House"
    assert "nothing changed" in cli("site", "set", "s1", "--area", "north", "--by", "jo")
    cli("responder", "set", "kh1", "--phone", "07700901", "--by", "jo")
    cli("resident", "set", "res1", "--notes", "keysafe 9999", "--by", "jo")
    cli("device", "set", "p1", "--heartbeat", "3600", "--by", "jo")
    assert cli.json("device", "show", "p1")["heartbeat_interval_s"] == 3600
    resident = cli.json("resident", "show", "res1", "--personal")
    assert (resident["name"], resident["notes"]) == ("Mrs Example", "keysafe 9999")
    changes = [(c.actor, c.action, c.kind, c.entity_id, c.detail) for c in _audit(cli)]
    assert changes == [
        ("installer-jo", "set", "site", "s1", {"fields": ["area"]}),
        ("jo", "set", "responder", "kh1", {"fields": ["phone"]}),
        ("jo", "set", "resident", "res1", {"fields": ["notes"]}),
        ("jo", "set", "device", "p1", {"fields": ["heartbeat_interval_s"]}),
    ]  # field names only: never the personal values


def test_resident_set_never_touches_clinical_settings(cli: Cli) -> None:
    _commission(cli)
    cli("resident", "clinical", "res1", "--spo2-scale", "2", "--prescribed-by", "dr-k",
        "--prescribed-on", "2026-11-02", "--by", "nurse-7")  # fmt: skip
    cli("resident", "set", "res1", "--name", "Mrs Renamed", "--by", "jo")
    shown = cli.json("resident", "show", "res1")
    assert shown["spo2_scale"] == 2
    assert shown["effective"]["spo2_scale_source"] == "prescription"
    assert "--spo2-scale" not in cli("resident", "set", "--help")


def test_pair_and_unpair(cli: Cli) -> None:
    _commission(cli)
    cli("device", "pair", "p1", "--resident", "res1", "--location", "room 4", "--by", "jo")
    device = cli.json("device", "show", "p1")
    assert (device["resident_id"], device["location"]) == ("res1", "room 4")
    assert cli.json("resident", "show", "res1")["devices"] == ["p1"]
    cli("device", "pair", "p1", "--resident", "nobody", code=3)
    cli("device", "pair", "nope", "--resident", "res1", code=3)
    cli("device", "unpair", "p1", "--by", "jo")
    assert cli.json("device", "show", "p1")["resident_id"] is None
    assert [c.action for c in _audit(cli)] == ["pair", "unpair"]


def test_remove_refuses_while_in_use_says_which_and_audits_the_person(cli: Cli) -> None:
    _commission(cli)
    cli("device", "pair", "p1", "--resident", "res1", "--by", "jo")

    async def open_alarm() -> None:
        async with SqliteStore(cli.db) as store:
            await store.write_alerts([alert(1)])  # device p1, resident res1, site s1
            d = Dispatch("d1", "a1", DispatchState.RAISED, 1, T0, T0, "s1", "res1", "kh1")
            await store.dispatches.create(
                d, AuditRecord("d1", T0, None, d.state, "gateway"), (), ()
            )

    asyncio.run(open_alarm())
    out = cli("device", "remove", "p1", "--by", "jo", code=4)
    assert "open dispatch d1" in out
    out = cli("resident", "remove", "res1", "--by", "jo", code=4)
    assert "open dispatch d1" in out
    assert "paired device p1" in out
    out = cli("responder", "remove", "kh1", "--by", "jo", code=4)
    assert "resident cascade res1" in out
    out = cli("site", "remove", "s1", "--by", "jo", code=4)
    assert re.search(r"resident res1", out)
    assert [c.action for c in _audit(cli)] == ["pair"]  # nothing removed, nothing audited
    cli("device", "list", "--json")
    cli("device", "remove", "nope", code=3)


def test_remove_once_free_is_audited_with_the_person(cli: Cli) -> None:
    _commission(cli)
    cli("device", "remove", "p1", "--by", "installer-jo")
    cli("resident", "set", "res1", "--responders", "", "--by", "installer-jo")
    cli("responder", "remove", "kh1", "--by", "installer-jo")
    cli("resident", "remove", "res1", "--by", "installer-jo")
    cli("site", "remove", "s1", "--by", "installer-jo")
    for kind in ("site", "resident", "responder", "device"):
        assert cli.json(kind, "list") == []
    removed = [(c.kind, c.entity_id) for c in _audit(cli) if c.action == "remove"]
    assert removed == [("device", "p1"), ("responder", "kh1"), ("resident", "res1"), ("site", "s1")]
    assert {c.actor for c in _audit(cli)} == {"installer-jo"}


def test_errors_have_distinct_exit_codes_and_no_traceback(cli: Cli) -> None:
    cli("site", "show", "nowhere", code=3)
    cli("site", "add", "bad id!", code=1)
    cli("device", "add", "x1", "--site", "nowhere", "--kind", "pendant", code=3)
    cli("device", "set", "x1", "--format", "nonsense", code=1)
    cli("site", "list", "--bogus", code=2)
