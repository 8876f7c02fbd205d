"""Issue 10 (clinical items) end to end: provisioning through the CLI, messages through a
real Mosquitto into a running gateway (SQLite store), alerts and dispatches out.

Items: 1 (clinical settings only through ``resident clinical``, with history, source
visible in ``resident show``), 2 (a partial set with a red score escalates), 8 (a rules
file cannot switch escalation off), 10 (injury -> 999 first, by device or operator),
11 (default cascades in the brief's order), 16 (pulse 0 with an alert resident refused).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from typer.testing import CliRunner

from telecare.devices.codecs import json_v1
from telecare.devices.model import Alert, AlertKind, Dispatch, DispatchState, EventType
from telecare.gateway.app import Gateway
from telecare.gateway.cli.provision import app as provision_app
from telecare.gateway.cli.rules_cmd import app as rules_app
from telecare.gateway.config import load_config
from telecare.gateway.errors import ConfigError
from telecare.gateway.store.base import Store
from telecare.rules.alarms import alarm_id_for
from tests.helpers import eventually
from tests.services import MqttServer

pytestmark = pytest.mark.mosquitto

runner = CliRunner()


class Site:
    """A gateway configuration file (SQLite store, the test's broker and prefix) shared by
    the CLI and the gateway, and a way to publish as a device."""

    def __init__(self, tmp_path: Path, mqtt: MqttServer, prefix: str) -> None:
        self.dir = tmp_path
        self.mqtt = mqtt
        self.prefix = prefix
        self.config = tmp_path / "gateway.toml"
        self.rules: str | None = None
        self.write()

    def write(self, rules: str | None = None) -> None:
        text = (
            f'[mqtt]\nhost = "{self.mqtt.host}"\nport = {self.mqtt.port}\n'
            f'topic_prefix = "{self.prefix}"\nclient_id = "gw-{uuid.uuid4().hex[:8]}"\n'
            f'[store]\nbackend = "sqlite"\nsqlite_path = "{self.dir / "gw.sqlite3"}"\n'
        )
        if rules is not None:
            path = self.dir / "rules.toml"
            path.write_text(rules, encoding="utf-8")
            text += f'[rules]\nfile = "{path}"\n'
        self.config.write_text(text, encoding="utf-8")

    def cli(self, *args: str, app: Any = provision_app, code: int = 0) -> str:
        """Run a CLI command as a user would (in its own thread: it runs its own event
        loop, and the tests already run in one)."""
        config = ["--config", str(self.config)] if app is provision_app else []
        with ThreadPoolExecutor(1) as pool:
            result = pool.submit(runner.invoke, app, [*args, *config]).result()
        assert result.exit_code == code, result.output
        return result.output

    @asynccontextmanager
    async def gateway(self) -> AsyncIterator[Gateway]:
        async with Gateway(load_config(self.config, {})) as gw:
            await eventually(lambda: _connected(gw), timeout=10)
            yield gw

    async def publish(self, device_id: str, channel: str, payload: bytes) -> None:
        async with aiomqtt.Client(self.mqtt.host, self.mqtt.port) as client:
            await client.publish(f"{self.prefix}/s1/{device_id}/{channel}", payload, qos=1)


async def _connected(gw: Gateway) -> bool:
    return gw.mqtt.connected.is_set()


@pytest.fixture
def site(tmp_path: Path, mqtt_server: MqttServer, topic_prefix: str) -> Site:
    s = Site(tmp_path, mqtt_server, topic_prefix)
    s.cli("site", "add", "s1", "--kind", "care_home")
    for rid, kind in (
        ("kh1", "keyholder"),
        ("w1", "mobile_warden"),
        ("ff1", "firefighter"),
        ("rr1", "rapid_response"),
        ("amb", "ambulance"),
    ):
        s.cli("responder", "add", rid, "--kind", kind)
    s.cli("resident", "add", "r1", "--site", "s1", "--responders", "kh1")
    s.cli("device", "add", "ipad", "--site", "s1", "--kind", "tablet")
    s.cli("device", "add", "pend1", "--site", "s1", "--kind", "pendant", "--resident", "r1")
    return s


def _obs(msg_id: str, resident: str = "r1", **values: Any) -> bytes:
    return json_v1.encode_observation(msg_id, datetime.now(UTC), resident, **values)


async def _alerts(store: Store, kind: AlertKind | None = None) -> list[Alert]:
    return [a for a in await store.recent_alerts() if kind is None or a.kind is kind]


async def _dispatch(gw: Gateway, alert_id: str) -> Dispatch:
    found = await eventually(lambda: gw.dispatcher.repo.load_for_alert(alert_id))
    assert found is not None
    return found


# -- item 1 -------------------------------------------------------------------------------
async def test_clinical_settings_are_set_only_by_resident_clinical_and_scored_with(
    site: Site,
) -> None:
    site.cli("resident", "add", "r2", "--site", "s1")
    site.cli(
        "resident",
        "clinical",
        "r1",
        "--spo2-scale",
        "2",
        "--prescribed-by",
        "dr-k",
        "--prescribed-on",
        "2026-11-02",
        "--by",
        "nurse-7",
    )
    site.cli("resident", "clinical", "r1", "--baseline", "C", "--by", "nurse-7")
    # Scale 2 without a prescriber is refused; V is never a baseline.
    site.cli("resident", "clinical", "r2", "--spo2-scale", "2", "--by", "nurse-7", code=1)
    site.cli("resident", "clinical", "r2", "--baseline", "V", "--by", "nurse-7", code=1)
    # Re-running `resident add` (to change a name) must not reset scale 2 or baseline C.
    site.cli("resident", "add", "r1", "--site", "s1", "--name", "New Name", "--responders", "kh1")
    # The rules file: a default for r2 (no prescription recorded), and a different scale
    # for r1 that must not override r1's prescription, and must say so.
    site.write(
        "version = 1\n"
        "[residents.r1]\nspo2_scale = 1\n"
        '[residents.r2]\nspo2_scale = 2\nspo2_scale_set_by = "dr-file"\n'
        "spo2_scale_set_at = 2026-10-01T09:00:00Z\n"
    )
    shown = site.cli("resident", "show", "r1")
    assert "SpO2 scale: 2 (prescription, prescribed by dr-k on 2026-11-02" in shown
    assert "consciousness baseline: C (prescription)" in shown
    assert "rules file says SpO2 scale 1: ignored" in shown
    assert "nurse-7" in shown
    assert "New Name" not in shown
    assert "SpO2 scale: 2 (rules file" in site.cli("resident", "show", "r2")

    async with site.gateway() as gw:
        history = await gw.store.clinical_history("r1")
        assert [(h.setting, h.value, h.previous, h.recorded_by) for h in history] == [
            ("spo2_scale", "2", None, "nurse-7"),
            ("baseline_consciousness", "C", None, "nurse-7"),
        ]
        assert history[0].prescribed_by == "dr-k"
        on_o2 = {
            "respiration_rate": 16,
            "spo2": 98,
            "on_oxygen": True,
            "systolic_bp": 120,
            "pulse": 70,
            "consciousness": "A",
            "temperature": 37.0,
        }
        # Scale 2 on oxygen at 98 %: SpO2 3 + oxygen 2 = 5 (medium), not 2 (low).
        await site.publish("ipad", "observation", _obs("o1", **on_o2))
        # Chronic confusion at baseline: C scores 0, so 0 in total (not a red 3).
        chronic = {**on_o2, "on_oxygen": False, "spo2": 95, "consciousness": "C"}
        await site.publish("ipad", "observation", _obs("o2", **chronic))
        # r2's scale 2 comes from the rules file (no prescription recorded).
        await site.publish("ipad", "observation", _obs("o3", "r2", **on_o2))
        scores = await eventually(lambda: _news2(gw.store), lambda s: len(s) == 3, timeout=10)
        assert scores == {"o1": (5, 2), "o2": (0, 2), "o3": (5, 2)}
        [medium_r1] = [a for a in await _alerts(gw.store, AlertKind.NEWS2) if a.resident_id == "r1"]
        assert medium_r1.priority == 2
        assert "NEWS2 5 (medium risk)" in medium_r1.reason


async def _news2(store: Store) -> dict[str, tuple[int, int]]:
    out = {}
    for rid in ("r1", "r2"):
        start = datetime(2000, 1, 1, tzinfo=UTC)
        for n in await store.news2_history(rid, start, datetime(2100, 1, 1, tzinfo=UTC)):
            out[n.observation_id.rsplit("/", 1)[1]] = (n.total, n.spo2_scale)
    return out


# -- item 2 -------------------------------------------------------------------------------
async def test_a_partial_set_with_a_red_parameter_escalates_and_names_what_is_missing(
    site: Site,
) -> None:
    async with site.gateway() as gw:
        await site.publish("ipad", "observation", _obs("p1", consciousness="U"))
        await site.publish("ipad", "observation", _obs("p2", systolic_bp=70))
        five_red = {
            "respiration_rate": 30,
            "spo2": 85,
            "on_oxygen": True,
            "systolic_bp": 85,
            "pulse": 140,
            "consciousness": "V",
        }
        await site.publish("ipad", "observation", _obs("p3", **five_red))
        await site.publish("ipad", "observation", _obs("p4", pulse=95))  # no red: no alert
        alerts = await eventually(
            lambda: _alerts(gw.store, AlertKind.NEWS2), lambda a: len(a) == 3, timeout=10
        )
        by_source = {a.source_key.rsplit("/", 1)[1]: a for a in alerts if a.source_key}
        assert set(by_source) == {"p1", "p2", "p3"}
        u = by_source["p1"]
        assert u.priority == 2  # chart 4: a red score needs an urgent response
        assert u.detail["red_parameters"] == ["consciousness"]
        assert "respiration_rate" in u.detail["missing"]
        assert "missing" in u.reason
        assert "no NEWS2 total" in u.reason  # never shown as a NEWS2 total
        assert "total" not in u.detail
        assert by_source["p2"].detail["red_parameters"] == ["systolic_bp"]
        five = by_source["p3"]
        assert five.detail["missing"] == ["temperature"]
        assert len(five.detail["red_parameters"]) == 5
        # What is present already sums to 17: at least high, whatever is missing.
        assert (five.priority, five.detail["news2_at_least"]) == (1, 17)
        for key, route in (("p1", "urgent"), ("p2", "urgent"), ("p3", "emergency")):
            d = await _dispatch(gw, by_source[key].alert_id)
            audit = await gw.store.dispatches.audit(d.dispatch_id)
            assert audit[0].detail["route"] == route
        assert await gw.store.count("news2_scores") == 0  # no NEWS2 total was stored


# -- item 8 -------------------------------------------------------------------------------
async def test_a_rules_file_cannot_switch_escalation_off_but_may_raise_it(site: Site) -> None:
    for band, value in (("high", 0), ("high", 2), ("medium", 0), ("low-medium", 3)):
        site.write(f"version = 1\n[defaults.news2_priority]\n{band} = {value}\n")
        out = site.cli("check", str(site.dir / "rules.toml"), app=rules_app, code=1)
        assert f"defaults.news2_priority.{band}" in out
        with pytest.raises(ConfigError, match=rf"defaults\.news2_priority\.{band}"):
            async with site.gateway():
                pass
    site.write("version = 1\n[sites.s1.obs_due_s]\nhigh = 3600\n")
    with pytest.raises(ConfigError, match=r"sites\.s1\.obs_due_s\.high"):
        async with site.gateway():
            pass
    # Raising urgency is allowed: medium alerts as priority 1 here; advice text is local.
    site.write(
        "version = 1\n[defaults.news2_priority]\nmedium = 1\n"
        '[defaults.advice]\nhigh = "Ring 999."\n'
    )
    async with site.gateway() as gw:
        eleven = {
            "respiration_rate": 26,
            "spo2": 95,
            "on_oxygen": True,
            "systolic_bp": 95,
            "pulse": 115,
            "consciousness": "A",
            "temperature": 38.5,
        }
        await site.publish("ipad", "observation", _obs("h1", **eleven))
        [alert] = await eventually(
            lambda: _alerts(gw.store, AlertKind.NEWS2), lambda a: len(a) == 1, timeout=10
        )
        assert "NEWS2 11 (high risk)" in alert.reason
        assert alert.priority == 1
        assert alert.detail["advice"] == "Ring 999."
        assert (await _dispatch(gw, alert.alert_id)).priority == 1


# -- items 10 and 11 ------------------------------------------------------------------------
async def test_injury_reported_by_the_device_or_an_operator_routes_to_999_first(
    site: Site,
) -> None:
    async with site.gateway() as gw:
        fall = json_v1.encode_event("f1", datetime.now(UTC), EventType.FALL, injury=True)
        await site.publish("pend1", "event", fall)
        d = await _dispatch(gw, alarm_id_for("pend1", "f1"))
        assert d.responder_id == "amb"
        audit = await gw.store.dispatches.audit(d.dispatch_id)
        assert audit[0].detail["route"] == "emergency"
        assert audit[0].detail["cascade"][0] == "amb"
        [alert] = [a for a in await _alerts(gw.store) if a.alert_id == d.alert_id]
        assert alert.detail["injury"] is True

        # A pendant call without injury is a wellbeing call; the operator who answers
        # learns the resident is hurt and marks it: 999 first, audited with their name.
        press = json_v1.encode_event("p1", datetime.now(UTC), EventType.PENDANT)
        await site.publish("pend1", "event", press)
        d2 = await _dispatch(gw, alarm_id_for("pend1", "p1"))
        assert d2.responder_id == "kh1"
        await gw.dispatcher.acknowledge(d2.dispatch_id, "operator-7")
        marked = await gw.dispatcher.report_injury(
            d2.dispatch_id, "operator-7", "resident says she hurt her hip"
        )
        assert (marked.state, marked.responder_id) == (DispatchState.ACKNOWLEDGED, "amb")
        cascade = await gw.dispatcher.repo.cascade(d2.dispatch_id)
        assert cascade[0].responder_id == "amb"
        contacted = await gw.dispatcher.contact(d2.dispatch_id, "operator-7")
        assert contacted.responder_id == "amb"
        last = [
            a for a in await gw.store.dispatches.audit(d2.dispatch_id) if a.detail.get("injury")
        ]
        assert [(a.actor, a.detail["route"]) for a in last] == [("operator-7", "emergency")]

        # A device may only report injury with a fall / pendant / post-fall event.
        bad = json_v1.encode_event("s1", datetime.now(UTC), EventType.SMOKE, injury=True)
        await site.publish("pend1", "event", bad)
        letters = await eventually(lambda: gw.store.dead_letters())
        assert "injury is reported with a fall" in letters[0].reason


async def test_default_cascades_follow_keyholder_warden_firefighter_rapid_response_999(
    site: Site,
) -> None:
    async with site.gateway() as gw:
        now = datetime.now(UTC)
        await site.publish("pend1", "event", json_v1.encode_event("p1", now, EventType.PENDANT))
        await site.publish("pend1", "event", json_v1.encode_event("f1", now, EventType.FALL))
        routes = {}
        for msg_id in ("p1", "f1"):
            d = await _dispatch(gw, alarm_id_for("pend1", msg_id))
            first = (await gw.store.dispatches.audit(d.dispatch_id))[0]
            routes[msg_id] = (first.detail["route"], first.detail["cascade"])
        assert routes == {
            "p1": ("wellbeing", ["kh1", "w1", "ff1", "rr1", "amb"]),
            "f1": ("urgent", ["kh1", "w1", "rr1", "ff1", "amb"]),
        }


# -- item 16 (part) -----------------------------------------------------------------------
async def test_pulse_or_respiration_zero_with_an_alert_resident_is_refused(site: Site) -> None:
    async with site.gateway() as gw:
        full = {
            "respiration_rate": 16,
            "spo2": 97,
            "on_oxygen": False,
            "systolic_bp": 120,
            "consciousness": "A",
            "temperature": 37.0,
        }
        await site.publish("ipad", "observation", _obs("z1", **full, pulse=0))
        await site.publish(
            "ipad", "observation", _obs("z2", **{**full, "respiration_rate": 0}, pulse=70)
        )
        letters = await eventually(
            lambda: gw.store.dead_letters(), lambda ls: len(ls) == 2, timeout=10
        )
        assert all("physiologically impossible" in dl.reason for dl in letters)
        assert await gw.store.count("readings") == 0  # nothing of it became a vital sign
        assert await gw.store.count("news2_scores") == 0
        # Unresponsive without a pulse is possible: scored and escalated.
        await site.publish(
            "ipad", "observation", _obs("z3", **{**full, "consciousness": "U"}, pulse=0)
        )
        [alert] = await eventually(
            lambda: _alerts(gw.store, AlertKind.NEWS2), lambda a: len(a) == 1, timeout=10
        )
        assert "NEWS2 6 (medium risk)" in alert.reason  # pulse 3 + unresponsive 3
