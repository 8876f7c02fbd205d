"""Alarm rules: priorities for the whole taxonomy, folding, restores, closing, snapshots."""

from __future__ import annotations

import json
from datetime import timedelta

from telecare.devices.model import EventType, Phase
from telecare.rules.alarms import (
    LATCHING,
    NO_ALERT,
    PRIORITY,
    AlarmBook,
    Outcome,
    is_technical,
    priority_of,
)
from tests.rules.conftest import EventFactory


def test_every_event_type_is_classified() -> None:
    assert set(PRIORITY) | set(NO_ALERT) == set(EventType)
    assert not set(PRIORITY) & set(NO_ALERT)
    for et in EventType:
        p = priority_of(et)
        assert p is None if et in NO_ALERT else p in range(1, 6)


def test_life_critical_and_technical() -> None:
    for et in (EventType.PENDANT, EventType.FALL, EventType.SMOKE, EventType.CO):
        assert priority_of(et) == 1
    assert is_technical(EventType.MAINS_FAIL)
    assert not is_technical(EventType.PENDANT)


def test_press_raises_then_repeats_fold_and_are_counted(event: EventFactory) -> None:
    book = AlarmBook(fold_window=timedelta(seconds=120))
    first = book.apply(event(EventType.PENDANT))
    assert first.outcome is Outcome.RAISED
    for i, at in enumerate((10, 60, 120), start=2):
        out = book.apply(event(EventType.PENDANT, at=at))
        assert out.outcome is Outcome.FOLDED
        assert out.alarms[0].alarm_id == first.alarms[0].alarm_id
        assert out.alarms[0].count == i


def test_press_after_the_window_raises_a_new_alarm(event: EventFactory) -> None:
    book = AlarmBook(fold_window=timedelta(seconds=120))
    first = book.apply(event(EventType.PENDANT))
    later = book.apply(event(EventType.PENDANT, at=121))
    assert later.outcome is Outcome.RAISED
    assert later.superseded == first.alarms[0]
    assert later.alarms[0].alarm_id != first.alarms[0].alarm_id
    assert len(book.open_alarms) == 1


def test_redelivered_event_is_a_duplicate_not_a_press(event: EventFactory) -> None:
    book = AlarmBook()
    book.apply(event(EventType.PENDANT, msg_id="x1"))
    out = book.apply(event(EventType.PENDANT, at=5, msg_id="x1"))
    assert out.outcome is Outcome.DUPLICATE
    assert book.open_alarms[0].count == 1


def test_restore_clears_a_non_latching_alarm(event: EventFactory) -> None:
    book = AlarmBook()
    raised = book.apply(event(EventType.MAINS_FAIL, device="hub-1"))
    out = book.apply(event(EventType.MAINS_FAIL, Phase.RESTORE, at=30, device="hub-1"))
    assert out.outcome is Outcome.CLEARED
    assert out.alarms[0].alarm_id == raised.alarms[0].alarm_id
    assert book.open_alarms == []


def test_restore_of_a_life_critical_alarm_keeps_it_open(event: EventFactory) -> None:
    assert EventType.PENDANT in LATCHING
    book = AlarmBook()
    book.apply(event(EventType.FALL, device="fall-1"))
    out = book.apply(event(EventType.FALL, Phase.RESTORE, at=3, device="fall-1"))
    assert out.outcome is Outcome.RESTORED
    assert book.open_alarms[0].restored


def test_restore_with_nothing_open_is_ignored(event: EventFactory) -> None:
    assert AlarmBook().apply(event(EventType.FLOOD, Phase.RESTORE)).outcome is Outcome.IGNORED


def test_cancel_closes_only_its_own_devices_cancellable_alarms(event: EventFactory) -> None:
    book = AlarmBook()
    book.apply(event(EventType.PENDANT))
    book.apply(event(EventType.SMOKE))  # same device (an alarm unit reporting both)
    book.apply(event(EventType.SMOKE, device="smoke-1"))
    book.apply(event(EventType.FALL, device="fall-1"))
    out = book.apply(event(EventType.CANCEL, at=5))
    assert out.outcome is Outcome.CLOSED
    assert [(a.device_id, a.type) for a in out.alarms] == [("pendant-1", EventType.PENDANT)]
    assert {(a.device_id, a.type) for a in book.open_alarms} == {
        ("pendant-1", EventType.SMOKE),
        ("smoke-1", EventType.SMOKE),
        ("fall-1", EventType.FALL),
    }


def test_carer_arrived_closes_only_its_residents_non_critical_alarms(
    event: EventFactory,
) -> None:
    book = AlarmBook()
    book.apply(event(EventType.PENDANT))
    book.apply(event(EventType.INACTIVITY, device="pir-1"))
    book.apply(event(EventType.FLOOD, device="flood-1", resident="res-2"))
    out = book.apply(event(EventType.CARER_ARRIVED, at=5, device="unit-1"))
    assert out.outcome is Outcome.CLOSED
    assert [a.type for a in out.alarms] == [EventType.INACTIVITY]
    assert [a.type for a in out.attended] == [EventType.PENDANT]  # left for an operator
    assert {a.type for a in book.open_alarms} == {EventType.PENDANT, EventType.FLOOD}


def test_communal_carer_arrived_touches_only_its_own_device(event: EventFactory) -> None:
    book = AlarmBook()
    book.apply(event(EventType.FALL, device="fall-1", resident="res-2"))
    book.apply(event(EventType.BED_NOT_REOCCUPIED, device="bed-1", resident="res-2"))
    out = book.apply(event(EventType.CARER_ARRIVED, at=5, device="lounge-hub", resident=None))
    assert out.outcome is Outcome.IGNORED
    assert len(book.open_alarms) == 2


def test_door_exit_latches(event: EventFactory) -> None:
    assert EventType.DOOR_EXIT in LATCHING
    book = AlarmBook()
    book.apply(event(EventType.DOOR_EXIT, device="door-1"))
    out = book.apply(event(EventType.DOOR_EXIT, Phase.RESTORE, at=15, device="door-1"))
    assert out.outcome is Outcome.RESTORED
    assert book.open_alarms[0].restored


def test_carer_arrived_closes_and_a_later_alarm_raises_again(event: EventFactory) -> None:
    book = AlarmBook()
    book.apply(event(EventType.INACTIVITY))
    assert book.apply(event(EventType.CARER_ARRIVED, at=5)).outcome is Outcome.CLOSED
    assert book.apply(event(EventType.INACTIVITY, at=10)).outcome is Outcome.RAISED


def test_periodic_test_never_alarms(event: EventFactory) -> None:
    out = AlarmBook().apply(event(EventType.PERIODIC_TEST))
    assert out.outcome is Outcome.IGNORED


def test_close_by_id(event: EventFactory) -> None:
    book = AlarmBook()
    alarm_id = book.apply(event(EventType.SMOKE, device="smoke-1")).alarms[0].alarm_id
    assert book.close(alarm_id) is not None
    assert book.close(alarm_id) is None
    assert book.open_alarms == []


def test_snapshot_round_trip_through_json(event: EventFactory) -> None:
    book = AlarmBook(fold_window=timedelta(seconds=90))
    book.apply(event(EventType.PENDANT))
    book.apply(event(EventType.PENDANT, at=20))
    book.apply(event(EventType.LOW_BATTERY, device="pir-1"))
    data = json.loads(json.dumps(book.snapshot()))
    again = AlarmBook.from_snapshot(data)
    assert again.open_alarms == book.open_alarms
    assert again.fold_window == timedelta(seconds=90)
    # state keeps working after a restart: a fold, then a cancel closing the pendant's
    assert again.apply(event(EventType.PENDANT, at=30)).alarms[0].count == 3
    assert len(again.apply(event(EventType.CANCEL, at=40)).alarms) == 1
