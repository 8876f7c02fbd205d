"""The SBARD handover and soft signs (pure functions, no app)."""

from __future__ import annotations

from datetime import UTC, datetime

from telecare.gateway.web.tablet_sbard import SOFT_SIGNS, describe_values, sbard, sbard_text

VALUES = {
    "respiration_rate": 22,
    "spo2": 95,
    "on_oxygen": False,
    "systolic_bp": 108,
    "pulse": 96,
    "consciousness": "A",
    "temperature": 37.2,
}
SUBS = {
    "respiration_rate": 2,
    "spo2": 1,
    "air_or_oxygen": 0,
    "systolic_bp": 1,
    "pulse": 1,
    "consciousness": 0,
    "temperature": 0,
}
RESULT = {
    "news2": {
        "complete": True,
        "total": 5,
        "risk": "medium",
        "red_flag": False,
        "missing": [],
        "sub_scores": SUBS,
        "monitoring": "minimum 1-hourly",
    },
    "advice": "Urgent: contact the GP or NHS 111 now.",
}
SUMMER = datetime(2026, 7, 1, 13, 5, tzinfo=UTC)


def test_each_value_is_named_with_its_points_in_chart_order() -> None:
    assert describe_values(VALUES, SUBS) == [
        "Respiration rate 22 /min (scores 2)",
        "SpO2 95 % (scores 1)",
        "Air or oxygen: air (scores 0)",
        "Systolic BP 108 mmHg (scores 1)",
        "Pulse 96 /min (scores 1)",
        "Consciousness: Alert (scores 0)",
        "Temperature 37.2 °C (scores 0)",
    ]


def test_the_handover_reads_situation_to_decision_in_uk_time() -> None:
    sections = sbard(
        name="Ada Smith",
        site_name="Oak House",
        values=VALUES,
        result=RESULT,
        soft_signs=["not_eating", "unknown-code"],
        taken_at=SUMMER,
        previous=(2, "low", datetime(2026, 6, 30, 21, 0, tzinfo=UTC)),
        baseline=["SpO2 target 88-92 % (scale 2, prescribed)"],
        carer="Sam",
    )
    assert [s.letter for s in sections] == ["S", "B", "A", "R", "D"]
    situation, background, assessment, recommendation, _ = (s.text for s in sections)
    assert situation == (
        "This is Sam at Oak House about Ada Smith. Observations taken at 14:05: NEWS2 is 5"
        " (medium risk). Soft signs: not eating or drinking as usual."
    )  # 13:05 UTC is 14:05 BST; an unknown code is left out
    assert background == (
        "Previous NEWS2 2 (low) at 30 Jun 22:00."
        " Usual for them: SpO2 target 88-92 % (scale 2, prescribed)."
    )
    assert assessment.endswith("Monitoring: minimum 1-hourly.")
    assert "Urgent: contact the GP or NHS 111 now." in recommendation
    assert sbard_text(sections).startswith("S - Situation: This is Sam")


def test_a_partial_set_says_it_is_not_a_news2_and_what_was_not_taken() -> None:
    partial = {
        "news2": {
            "complete": False,
            "total": None,
            "risk": None,
            "red_flag": False,
            "missing": ["systolic_bp", "temperature"],
            "sub_scores": {"pulse": 0},
        },
        "advice": None,
    }
    [situation, *_] = sbard(
        name="r1",
        site_name="s1",
        values={"pulse": 70},
        result=partial,
        soft_signs=[],
        taken_at=SUMMER,
    )
    assert "a partial set, not a NEWS2 (Systolic BP, Temperature not taken)" in situation.text
    assert len(SOFT_SIGNS) == 12
