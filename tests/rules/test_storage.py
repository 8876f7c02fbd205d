"""The spool rule: the spool reports how full it is; the rules decide it is an alert."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from telecare.devices.model import AlertKind
from telecare.rules.storage import SPOOL_ALERT_PRIORITY, spool_alert

AT = datetime(2026, 12, 2, 4, 0, tzinfo=UTC)


def test_a_nearly_full_spool_is_a_priority_2_technical_alert() -> None:
    alert = spool_alert(850, 1000, near_full=True, at=AT)
    assert alert is not None
    assert alert.kind is AlertKind.TECHNICAL
    assert alert.priority == SPOOL_ALERT_PRIORITY == 2
    assert "85% full (850 of 1000 bytes)" in alert.reason
    assert alert.detail == {"used_bytes": 850, "max_bytes": 1000}
    assert alert.ts == AT


def test_one_alert_per_episode_and_none_when_the_spool_drained() -> None:
    first = spool_alert(850, 1000, near_full=True, at=AT)
    again = spool_alert(900, 1000, near_full=True, at=AT)
    later = spool_alert(850, 1000, near_full=True, at=AT + timedelta(hours=1))
    assert first is not None
    assert again is not None
    assert later is not None
    assert first.alert_id == again.alert_id  # the same report delivered twice
    assert later.alert_id != first.alert_id  # a new episode
    assert spool_alert(600, 1000, near_full=False, at=AT) is None
