"""Rules file: the example loads, bad files fail naming file, key and line; the CLI check."""

from __future__ import annotations

from datetime import UTC, datetime, time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from telecare.gateway.cli.rules_cmd import app
from telecare.rules.config import RulesConfigError, load_rules_file, parse_rules

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "rules.toml"


def test_example_rules_file_loads() -> None:
    config = load_rules_file(EXAMPLE)
    home = config.site("carehome-wirral-01")
    assert home.advice_for(7, "high").startswith("Call 999")
    assert home.advice_for(0, "low").startswith("Continue routine")
    assert config.site("home-area-north").fold_window_s == 300
    assert config.site("unknown-site") is config.defaults
    copd = config.residents["res-0001"]
    assert copd.spo2_scale == 2
    assert copd.spo2_scale_set_by == "clinician-0042"
    assert copd.spo2_scale_set_at == datetime(2026, 1, 5, 9, 30, tzinfo=UTC)
    assert copd.spo2_target == 88
    confused = config.residents["res-0002"]
    assert confused.baseline_consciousness == "C"
    assert [(w.start, w.end) for w in confused.inactivity_windows] == [
        (time(7, 0), time(10, 30)),
        (time(17, 0), time(19, 0)),
    ]
    assert config.defaults.news2_priority["low"] is None


def test_site_inherits_defaults_and_overrides_per_key() -> None:
    config = parse_rules(
        """
[defaults]
fold_window_s = 60
[defaults.advice]
high = "Call 999."
[sites.s1.advice]
medium = "Call the rapid response team."
"""
    )
    s1 = config.site("s1")
    assert s1.fold_window_s == 60
    assert s1.advice["high"] == "Call 999."
    assert s1.advice["medium"] == "Call the rapid response team."


@pytest.mark.parametrize(
    ("text", "key", "line"),
    [
        ("[defaults]\nfold_windw_s = 3\n", "defaults.fold_windw_s", 2),
        ('[defaults]\ntimezone = "Mars/Olympus"\n', "defaults.timezone", 2),
        ("[defaults.news2_priority]\nhigh = 9\n", "defaults.news2_priority.high", 2),
        ('[sites.s1.advice]\nurgent = "x"\n', "sites.s1.advice.urgent", 2),
        ("[residents.r1]\nspo2_scale = 2\n", "residents.r1.spo2_scale_set_by", 1),
        (
            '[residents.r1]\nspo2_scale = 2\nspo2_scale_set_by = "c1"\n',
            "residents.r1.spo2_scale_set_at",
            1,
        ),
        (
            '[residents.r1]\n\nbaseline_consciousness = "X"\n',
            "residents.r1.baseline_consciousness",
            3,
        ),
        ('[residents.r1]\nsite = "nowhere"\n', "residents.r1.site", 2),
        (
            '[residents.r1]\ninactivity_windows = [{start = "10:00", end = "09:00"}]\n',
            "residents.r1.inactivity_windows[0]",
            2,
        ),
        ("version = 2\n", "version", 1),
        # A site may only raise NEWS2 escalation (issue 10 item 8).
        ("[defaults.news2_priority]\nhigh = 0\n", "defaults.news2_priority.high", 2),
        ("[defaults.news2_priority]\nhigh = 2\n", "defaults.news2_priority.high", 2),
        ("[defaults.news2_priority]\nmedium = 3\n", "defaults.news2_priority.medium", 2),
        ("[sites.s1.news2_priority]\nlow-medium = 0\n", "sites.s1.news2_priority.low-medium", 2),
        ("[defaults.obs_due_s]\nhigh = 1800\n", "defaults.obs_due_s.high", 2),
        ("[defaults.obs_due_s]\nlow = 36000\n", "defaults.obs_due_s.low", 2),
    ],
)
def test_bad_values_name_key_and_line(text: str, key: str, line: int) -> None:
    with pytest.raises(RulesConfigError) as info:
        parse_rules(text, source="bad.toml")
    err = info.value
    assert err.key == key
    assert err.line == line
    assert str(err).startswith(f"bad.toml:{line}: {key}: ")


def test_toml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text("version = 1\n[defaults\n", encoding="utf-8")
    with pytest.raises(RulesConfigError) as info:
        load_rules_file(path)
    assert info.value.path == str(path)
    assert info.value.line == 2


def test_missing_file() -> None:
    with pytest.raises(RulesConfigError, match="cannot read"):
        load_rules_file("/nonexistent/rules.toml")


def test_cli_check_ok() -> None:
    result = CliRunner().invoke(app, ["check", str(EXAMPLE)])
    assert result.exit_code == 0, result.output
    assert "res-0001" in result.output
    assert "2 sites, 2 residents" in result.output


def test_cli_check_bad_file_exits_1(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text("[defaults]\nfold_window_s = -1\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["check", str(path)])
    assert result.exit_code == 1
    assert "defaults.fold_window_s" in result.output
