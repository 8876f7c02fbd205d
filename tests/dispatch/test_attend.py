"""Attend targets per route (issue 10 item 17): defaults, service-wide and per-site
configuration, and what the gateway refuses at start."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from telecare.dispatch.attend import DEFAULT_TARGETS, AttendConfig, AttendTarget, Measure
from telecare.dispatch.cascades import Route
from telecare.dispatch.errors import CascadeConfigError
from telecare.gateway.app import Gateway
from telecare.gateway.config import Config, DispatchSection, StoreConfig
from telecare.gateway.errors import ConfigError


def test_defaults_per_route() -> None:
    attend = AttendConfig()
    assert attend.target_for(Route.WELLBEING) == AttendTarget(Measure.ON_SCENE, 45, 45, 90.0, 60)
    assert attend.target_for(Route.URGENT) == AttendTarget(Measure.ON_SCENE, 120, 120, 70.0)
    assert attend.target_for(Route.EMERGENCY) == AttendTarget(Measure.HANDOVER, 3, 40)
    # Technical alarms have no responder; one sent anyway is a telecare responder visit.
    assert attend.target_for(Route.TECHNICAL) == DEFAULT_TARGETS[Route.WELLBEING]


def test_service_wide_and_site_targets() -> None:
    attend = AttendConfig.from_mapping(
        {
            "urgent": {"target_min": 240, "escalate_min": 240},  # an area working to 4 h
            "sites": {
                "oak": {"urgent": {"target_min": 120, "escalate_min": 120, "goal_pct": 80}},
                "elm": {"wellbeing": {"target_min": 30, "escalate_min": 30}},
            },
        }
    )
    assert attend.target_for(Route.URGENT).target_min == 240
    assert attend.target_for(Route.URGENT, "ash").target_min == 240
    oak = attend.target_for(Route.URGENT, "oak")
    assert (oak.target_min, oak.escalate_min, oak.goal_pct) == (120, 120, 80.0)
    elm = attend.target_for(Route.WELLBEING, "elm")
    assert (elm.target_min, elm.escalate_min, elm.all_within_min) == (30, 30, 60)
    assert attend.target_for(Route.URGENT, "elm").target_min == 240  # no override there


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"sites": {"oak": {"urgent": {"target_min": 180}}}},
            "Config 'dispatch.attend.sites.oak.urgent.target_min' has value 180. A site may only"
            " shorten the service-wide value (120 min).",
        ),
        (
            {"sites": {"oak": {"wellbeing": {"escalate_min": 50}}}},
            "'dispatch.attend.sites.oak.wellbeing.escalate_min' has value 50. A site may only",
        ),
        (
            {"sites": {"oak": {"urgent": {"goal_pct": 50}}}},
            "'dispatch.attend.sites.oak.urgent.goal_pct' has value 50.0. A site may only raise",
        ),
        (
            {"urgent": {"target_min": 300}},
            "'dispatch.attend.urgent.target_min' has value 300. The urgent route allows at most"
            " 240 min.",
        ),
        (
            {"wellbeing": {"all_within_min": 90}},
            "'dispatch.attend.wellbeing.all_within_min' has value 90. The wellbeing route allows",
        ),
        ({"wellbeing": {"target_min": 0}}, "'dispatch.attend.wellbeing.target_min' has value 0."),
        ({"wellbeing": {"target_min": 30.5}}, "has value 30.5. Whole minutes > 0."),
        ({"wellbeing": {"target_min": True}}, "has value True. Whole minutes > 0."),
        ({"urgent": {"goal_pct": 120}}, "has value 120. A percentage in (0, 100]."),
        (
            {"wellbeing": {"target_min": 50, "all_within_min": 40}},
            "'dispatch.attend.wellbeing.all_within_min' has value 40. Must not be shorter than",
        ),
        ({"technical": {"target_min": 30}}, "'dispatch.attend.technical' has value 'technical'."),
        ({"urgent": {"within": 30}}, "'dispatch.attend.urgent.within' has value 30. Known:"),
        ({"sites": {"oak": "urgent"}}, "'dispatch.attend.sites.oak' has value 'urgent'."),
    ],
)
def test_invalid_targets_are_refused_naming_the_key(data: dict[str, object], message: str) -> None:
    with pytest.raises(CascadeConfigError, match=re.escape(message)):
        AttendConfig.from_mapping(data)


async def test_the_gateway_refuses_to_start_with_a_site_target_made_longer(
    tmp_path: Path,
) -> None:
    path = tmp_path / "dispatch.toml"
    path.write_text("[dispatch.attend.sites.oak.urgent]\ntarget_min = 180\n", encoding="utf-8")
    config = Config(
        store=StoreConfig(backend="sqlite", sqlite_path=str(tmp_path / "gw.sqlite3")),
        dispatch=DispatchSection(file=str(path)),
    )
    with pytest.raises(ConfigError, match=r"sites\.oak\.urgent\.target_min' has value 180"):
        async with Gateway(config):
            pass  # pragma: no cover - never starts
