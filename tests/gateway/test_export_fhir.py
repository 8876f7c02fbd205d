"""``telecare export fhir`` (issue 13): a FHIR R4 Bundle of a resident's observations,
ingested through the real pipeline into both store backends, validated with the
``fhir.resources`` models and its codes checked against the table below (written from
the product brief, not taken from the exporter)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B.bundle import Bundle
from typer.testing import CliRunner

from telecare.devices.codecs import json_v1
from telecare.devices.model import (
    Device,
    DeviceKind,
    Resident,
    Responder,
    ResponderKind,
    Site,
    SiteKind,
)
from telecare.gateway.cli.common import ExitCode
from telecare.gateway.cli.main import app
from telecare.gateway.envelope import Envelope
from telecare.gateway.store import durable
from telecare.gateway.store.postgres import PostgresStore
from telecare.gateway.store.rows import News2Record
from telecare.gateway.store.sqlite import SqliteStore
from telecare.rules.clock import FakeClock
from tests.helpers import run_together, running_pipeline

TS = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
LATER = datetime(2026, 11, 23, 9, 30, tzinfo=UTC)
PREFIX = "telecare/v1"
NAME = "Ada Testperson"
NHS = "9434765919"
TELECARE = [sys.executable, "-m", "telecare.gateway.cli"]

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"
#: From /work/shared/PRODUCT.md: code -> (system, UCUM unit or None).
EXPECTED_VITALS = {
    "9279-1": "/min",  # respiratory rate
    "8867-4": "/min",  # heart rate
    "8310-5": "Cel",  # body temperature
    "3151-8": "L/min",  # inhaled O2 flow
}
SPO2_CODES = {"2708-6", "59408-5"}
BP_PANEL, SYSTOLIC, DIASTOLIC = "85354-9", "8480-6", "8462-4"
NEWS2_TOTAL = "1104051000000101"
NEWS2_SUBSCORES = {
    "1104301000000104",  # respiration rate
    "1104311000000102",  # SpO2 scale 1
    "1104331000000105",  # air or oxygen
    "1104341000000101",  # systolic BP
    "1104351000000103",  # pulse
    "1104361000000100",  # consciousness
    "1104371000000107",  # temperature
}
NEWS2_SPO2_SCALE_2 = "1104321000000108"
ACVPU = "1104441000000107"
ACVPU_CONFUSION = "130987000"


def _config(tmp_path: Path, backend: str, pg: tuple[str, str] | None) -> Path:
    cfg = tmp_path / "gateway.toml"
    if backend == "sqlite":
        cfg.write_text(f'[store]\nbackend = "sqlite"\nsqlite_path = "{tmp_path / "gw.db"}"\n')
    else:
        assert pg is not None
        cfg.write_text(
            f'[store]\nbackend = "postgres"\ndsn = "{pg[0]}"\nschema = "{pg[1]}"\n'
            "timescale = false\n"
        )
    return cfg


async def _ingest(store: SqliteStore | PostgresStore) -> None:
    await store.migrate()
    await store.upsert_site(Site("s1", SiteKind.CARE_HOME))
    await store.upsert_responder(Responder("staff", ResponderKind.MOBILE_WARDEN))
    await store.upsert_resident(Resident("r1", "s1", NAME, NHS, responders=("staff",)))
    await store.upsert_resident(Resident("r2", "s1", "Other Person"))
    await store.upsert_device(Device("hub", "s1", DeviceKind.TABLET))
    await store.upsert_device(Device("oxi", "s1", DeviceKind.OXIMETER, "r1"))
    await store.upsert_device(Device("cuff", "s1", DeviceKind.BP_CUFF, "r1"))
    await store.upsert_device(Device("oxi2", "s1", DeviceKind.OXIMETER, "r2"))
    await store.upsert_device(Device("o2hub", "s1", DeviceKind.HUB, "r1"))  # O2 flow

    def env(topic: str, payload: bytes, at: datetime) -> Envelope:
        return Envelope("mqtt", f"{PREFIX}/{topic}", payload, at)

    clock = FakeClock(TS)
    async with running_pipeline(store, clock, PREFIX) as pipeline:
        await pipeline.handle(
            env(
                "s1/oxi/reading",
                json_v1.encode_readings("m1", TS, [("spo2", 97, "%"), ("pulse", 72, "bpm")]),
                TS,
            )
        )
        await pipeline.handle(
            env(
                "s1/cuff/reading",
                json_v1.encode_readings(
                    "b1", TS, [("systolic_bp", 128, "mmHg"), ("diastolic_bp", 82, "mmHg")]
                ),
                TS,
            )
        )
        await pipeline.handle(
            env(
                "s1/oxi2/reading",
                json_v1.encode_readings("x1", TS, [("spo2", 93, "%")]),
                TS,
            )
        )
        clock.advance((LATER - TS).total_seconds())  # the tablet's set comes half an hour later
        obs = json_v1.encode_observation(
            "obs1",
            LATER,
            "r1",
            respiration_rate=22,
            spo2=95,
            on_oxygen=False,
            systolic_bp=118,
            pulse=96,
            consciousness="C",
            temperature=38.4,
        )
        await pipeline.handle(env("s1/hub/observation", obs, LATER))
        await pipeline.handle(
            env(
                "s1/o2hub/reading",
                json_v1.encode_readings("o2", LATER, [("o2_flow", 2, "L/min")]),
                LATER,
            )
        )
    assert len(await store.news2_history("r1", TS, LATER.replace(hour=10))) == 1


@pytest.fixture(params=["sqlite", "postgres"])
def config(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """A configuration whose store holds r1's readings and one scored observation set."""
    if request.param == "sqlite":
        cfg = _config(tmp_path, "sqlite", None)

        async def fill() -> None:
            async with SqliteStore(tmp_path / "gw.db") as s:
                await _ingest(s)

    else:
        dsn = request.getfixturevalue("pg_dsn")
        schema = request.getfixturevalue("pg_schema")
        cfg = _config(tmp_path, "postgres", (dsn, schema))

        async def fill() -> None:
            async with PostgresStore(dsn, schema=schema, use_timescale=False) as p:
                await _ingest(p)

    asyncio.run(fill())
    return cfg


def _by_code(bundle: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for entry in bundle["entry"]:
        res = entry["resource"]
        found.setdefault(res["code"]["coding"][0]["code"], []).append(res)
    return found


def _check_bundle(bundle: dict[str, Any]) -> None:
    Bundle.model_validate(bundle)  # raises on anything FHIR does not allow
    assert bundle["type"] == "collection"
    found = _by_code(bundle)
    for entry in bundle["entry"]:
        res = entry["resource"]
        assert res["resourceType"] == "Observation"
        assert res["status"] == "final"
        # The patient by NHS number, never by name.
        assert res["subject"] == {
            "type": "Patient",
            "identifier": {"system": "https://fhir.nhs.uk/Id/nhs-number", "value": NHS},
        }
        assert entry["fullUrl"] == f"urn:uuid:{res['id']}"
    # Vital signs: LOINC, UCUM, category vital-signs.
    for code, unit in EXPECTED_VITALS.items():
        assert code in found, code
        for res in found[code]:
            assert res["code"]["coding"][0]["system"] == LOINC
            assert res["valueQuantity"]["system"] == UCUM
            assert res["valueQuantity"]["code"] == unit
            assert res["category"][0]["coding"][0]["code"] == "vital-signs"
    assert [r["valueQuantity"]["value"] for r in found["8310-5"]] == [38.4]
    assert [r["valueQuantity"]["value"] for r in found["3151-8"]] == [2]
    assert sorted(r["valueQuantity"]["value"] for r in found["8867-4"]) == [72, 96]
    # SpO2: both codes on each SpO2 Observation, unit %.
    spo2 = found["2708-6"]
    assert sorted(r["valueQuantity"]["value"] for r in spo2) == [95, 97]  # not r2's 93
    for res in spo2:
        assert {c["code"] for c in res["code"]["coding"]} == SPO2_CODES
        assert {c["system"] for c in res["code"]["coding"]} == {LOINC}
        assert res["valueQuantity"]["code"] == "%"
    # BP panel with components: the cuff's pair, and the observation set's systolic.
    panels = found[BP_PANEL]
    comps = sorted(
        tuple((c["code"]["coding"][0]["code"], c["valueQuantity"]["value"]) for c in p["component"])
        for p in panels
    )
    assert comps == [((SYSTOLIC, 118),), ((SYSTOLIC, 128), (DIASTOLIC, 82))]
    for p in panels:
        assert "valueQuantity" not in p
        for c in p["component"]:
            assert c["valueQuantity"]["code"] == "mm[Hg]"
            assert c["valueQuantity"]["system"] == UCUM
    # NEWS2: SNOMED total and every sub-score (scale 1 here).
    [news2] = found[NEWS2_TOTAL]
    assert news2["code"]["coding"][0]["system"] == SNOMED
    # RR 22 -> 2, SpO2 95 -> 1, air 0, SBP 118 -> 0, pulse 96 -> 1, C -> 3, 38.4 -> 1.
    assert news2["valueInteger"] == 8
    subs = {c["code"]["coding"][0]["code"]: c["valueInteger"] for c in news2["component"]}
    assert set(subs) == NEWS2_SUBSCORES
    assert subs["1104361000000100"] == 3
    assert subs["1104301000000104"] == 2
    assert NEWS2_SPO2_SCALE_2 not in subs
    # ACVPU with its SNOMED value.
    [acvpu] = found[ACVPU]
    assert acvpu["valueCodeableConcept"]["coding"][0] == {
        "system": SNOMED,
        "code": ACVPU_CONFUSION,
        "display": acvpu["valueCodeableConcept"]["coding"][0]["display"],
    }


def test_export_fhir_bundle_is_valid_r4_with_the_brief_codes(config: Path) -> None:
    result = CliRunner().invoke(app, ["export", "fhir", "--resident", "r1", "-c", str(config)])
    assert result.exit_code == 0, result.output
    bundle = json.loads(result.stdout)
    _check_bundle(bundle)
    assert NAME not in result.stdout
    assert "Other Person" not in result.stdout


def test_export_fhir_since_and_site_filter(config: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["export", "fhir", "-r", "r1", "--since", "2026-11-23T09:15", "--site", "s1",
         "-c", str(config)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    found = _by_code(json.loads(result.stdout))
    assert [r["valueQuantity"]["value"] for r in found["2708-6"]] == [95]  # 09:00 left out
    assert NEWS2_TOTAL in found


def test_export_fhir_without_nhs_number_uses_the_resident_id(config: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["export", "fhir", "-r", "r2", "--identifier-system", "https://care.example/id/res",
         "-c", str(config)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    bundle = json.loads(result.stdout)
    Bundle.model_validate(bundle)
    [entry] = bundle["entry"]
    assert entry["resource"]["subject"]["identifier"] == {
        "system": "https://care.example/id/res",
        "value": "r2",
    }


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["-r", "nobody"], ExitCode.NOT_FOUND, "no resident 'nobody'"),
        (["-r", "r1", "--site", "s9"], ExitCode.INVALID, "is not a resident of site 's9'"),
        (["-r", "r1", "--since", "last tuesday"], ExitCode.INVALID, "neither an ISO 8601"),
    ],
)
def test_export_fhir_user_mistakes_exit_with_distinct_codes(
    tmp_path: Path, args: list[str], code: int, message: str
) -> None:
    async def fill() -> None:
        async with SqliteStore(tmp_path / "gw.db") as s:
            await s.migrate()
            await s.upsert_site(Site("s1", SiteKind.HOME))
            await s.upsert_resident(Resident("r1", "s1", NAME))

    asyncio.run(fill())
    cfg = _config(tmp_path, "sqlite", None)
    result = CliRunner().invoke(app, ["export", "fhir", *args, "-c", str(cfg)])
    assert result.exit_code == code
    assert message in result.stderr
    assert "Traceback" not in result.output


def test_export_fhir_unreachable_store_exits_5(tmp_path: Path) -> None:
    cfg = tmp_path / "gateway.toml"
    cfg.write_text('[store]\nbackend = "postgres"\ndsn = "postgresql://postgres@127.0.0.1:1/x"\n')
    result = CliRunner().invoke(app, ["export", "fhir", "-r", "r1", "-c", str(cfg)])
    assert result.exit_code == ExitCode.STORE_UNAVAILABLE
    assert "store unavailable" in result.stderr


def test_export_fhir_subprocess_writes_the_file_and_a_json_summary(
    config: Path, tmp_path: Path
) -> None:
    out = tmp_path / "export.json"
    # Both at once (the human summary's run writes a file of its own).
    done, table = run_together(
        [*TELECARE, "export", "fhir", "--resident", "r1", "--output", str(out), "--json",
         "--config", str(config)],
        [*TELECARE, "export", "fhir", "-r", "r1", "-o", str(tmp_path / "export-table.json"),
         "-c", str(config)],
        timeout=60, env={**os.environ, "COLUMNS": "80"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["output"] == str(out)
    assert summary["resident_id"] == "r1"
    assert summary["by_code"][NEWS2_TOTAL] == 1
    assert summary["observations"] == sum(summary["by_code"].values())
    text = out.read_text()
    _check_bundle(json.loads(text))
    assert NAME not in text + done.stdout + done.stderr
    # The human summary is a table.
    assert table.returncode == 0, table.stderr
    assert "FHIR export" in table.stdout
    assert ACVPU in table.stdout


def test_export_fhir_help_reads_at_80_columns() -> None:
    done = subprocess.run(
        [*TELECARE, "export", "fhir", "--help"],
        capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "80"},
    )  # fmt: skip
    assert done.returncode == 0
    assert all(len(line) <= 80 for line in done.stdout.splitlines())
    assert "--resident" in done.stdout


def test_news2_acvpu_level_survives_the_spool_and_old_records_still_decode() -> None:
    score = News2Record("r1", TS, 8, "high", True, {"consciousness": 3}, 1, "hub/obs1", "C")
    assert durable.decode(durable.encode(score)) == score
    old = json.loads(durable.encode(score))
    old["v"] = old["v"][:8]  # spooled before migration 0013
    decoded = durable.decode(json.dumps(old).encode())
    assert isinstance(decoded, News2Record)
    assert decoded.consciousness is None
    assert decoded.total == 8
