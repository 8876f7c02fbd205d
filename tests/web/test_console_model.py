"""The console's queue order, grouping and timer colours, and the action list's steps and
"do next", computed without I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from telecare.devices.model import Dispatch, DispatchState
from telecare.dispatch.records import AuditRecord, CascadeEntry
from telecare.gateway.store.reports import AlarmRow, DeviceHealth
from telecare.gateway.web.console_model import (
    OFFLINE_GRACE,
    answer_colour,
    build_queue,
    cascade_steps,
    device_state,
    last_reading,
    next_action,
)
from telecare.gateway.web.console_store import Owner, TimerRow

T0 = datetime(2026, 12, 2, 4, 0, tzinfo=UTC)
S = DispatchState


def _alarm(
    dispatch_id: str,
    priority: int,
    age_s: float,
    resident: str | None,
    state: DispatchState = S.RAISED,
) -> AlarmRow:
    at = T0 - timedelta(seconds=age_s)
    d = Dispatch(dispatch_id, f"a-{dispatch_id}", state, priority, at, at, "s1", resident)
    return AlarmRow(f"a-{dispatch_id}", "alarm", priority, "r", at, "s1", resident, dispatch=d)


def test_queue_is_priority_then_age_grouped_per_resident() -> None:
    alarms = [
        _alarm("d1", 3, 300, "res1"),
        _alarm("d2", 1, 10, "res2"),
        _alarm("d3", 1, 50, "res3"),
        _alarm("d4", 2, 20, "res1"),  # res1's more urgent alarm lifts the group
        _alarm("d5", 1, 5, None),  # no resident: a group of its own
    ]
    waiting = build_queue(alarms, [], [], [], T0)["waiting"]
    assert [g.key for g in waiting] == ["res3", "res2", "dispatch:d5", "res1"]
    assert [r.dispatch.dispatch_id for r in waiting[-1].rows] == ["d4", "d1"]
    assert [r.age_s for r in waiting[-1].rows] == [20.0, 300.0]


def test_owned_and_held_rows_leave_the_waiting_section() -> None:
    alarms = [_alarm("d1", 1, 10, "res1"), _alarm("d2", 2, 10, "res2"), _alarm("d3", 2, 5, "res3")]
    owners = [Owner("res1", "op1", "d1", T0)]
    holds = [TimerRow("d2", "hold", T0 + timedelta(minutes=5), "op2", T0, "", None)]
    sections = build_queue(alarms, owners, holds, [], T0)
    assert [g.key for g in sections["owned"]] == ["res1"]
    assert sections["owned"][0].owner == owners[0]
    assert [g.key for g in sections["held"]] == ["res2"]
    assert [g.key for g in sections["waiting"]] == ["res3"]


def test_answer_timer_turns_amber_at_half_the_target_and_red_past_it() -> None:
    assert answer_colour(29, S.RAISED) == "ok"
    assert answer_colour(30, S.RAISED) == "amber"
    assert answer_colour(60, S.RAISED) == "red"
    assert answer_colour(600, S.ESCALATED) == "red"  # nobody answered: still red
    assert answer_colour(600, S.ACKNOWLEDGED) == "none"


def _dispatch(state: DispatchState, responder: str | None = "kh1") -> Dispatch:
    return Dispatch("d1", "a1", state, 1, T0, T0, "s1", "res1", responder)


def _audit(to: DispatchState, event: str, who: str | None = None) -> AuditRecord:
    detail: dict[str, object] = {"event": event}
    if who:
        detail["responder_id"] = who
    return AuditRecord("d1", T0, None, to, "op1", "", detail)


def test_cascade_steps_carry_what_happened_to_each_responder() -> None:
    cascade = [CascadeEntry(0, "kh1", 300), CascadeEntry(1, "kh2", 300), CascadeEntry(2, "w1", 300)]
    audit = [
        _audit(S.RAISED, "raised"),
        _audit(S.RESPONDER_CONTACTED, "contact", "kh1"),
        _audit(S.NO_ANSWER, "no_answer", "kh1"),
        _audit(S.RESPONDER_CONTACTED, "contact", "kh2"),
    ]
    d = _dispatch(S.RESPONDER_CONTACTED, "kh2")
    steps = cascade_steps(d, cascade, audit, {"kh1": ("keyholder", "J Smith")})
    assert [(s.responder_id, s.state) for s in steps] == [
        ("kh1", "no_answer"),
        ("kh2", "contacted"),
        ("w1", "waiting"),
    ]
    assert steps[0].name == "J Smith"


def test_do_next_follows_the_lifecycle() -> None:
    raised = [_audit(S.RAISED, "raised")]
    acked = [*raised, _audit(S.ACKNOWLEDGED, "acknowledge")]
    assert next_action(_dispatch(S.RAISED), raised, None).action == "acknowledge"
    assert next_action(_dispatch(S.ESCALATED), raised, None).action == "acknowledge"
    assert next_action(_dispatch(S.ESCALATED), acked, None).action == "contact"
    assert next_action(_dispatch(S.ACKNOWLEDGED), acked, None).action == "contact"
    assert next_action(_dispatch(S.NO_ANSWER, None), acked, None).action == "close"
    assert next_action(_dispatch(S.RESPONDER_CONTACTED), acked, "keyholder").action == "outcome"
    assert next_action(_dispatch(S.RESPONDER_CONTACTED), acked, "ambulance").action == "handover"
    assert next_action(_dispatch(S.ACCEPTED), acked, None).action == "en_route"
    assert next_action(_dispatch(S.ACCEPTED), acked, "ambulance").action == "close"
    assert next_action(_dispatch(S.EN_ROUTE), acked, None).action == "on_scene"
    assert next_action(_dispatch(S.ON_SCENE), acked, None).action == "close"
    assert next_action(_dispatch(S.RESOLVED), acked, None).action == "none"


def _device(
    online: bool | None,
    changed_s: float | None,
    heartbeat_s: float | None = None,
    event_s: float | None = None,
    interval: int = 0,
    battery: float | None = None,
) -> DeviceHealth:
    def ago(s: float | None) -> datetime | None:
        return None if s is None else T0 - timedelta(seconds=s)

    return DeviceHealth(
        "pend1",
        "pendant",
        "",
        interval,
        online,
        ago(changed_s),
        ago(heartbeat_s),
        battery,
        ago(event_s),
    )


def test_an_alarm_proves_a_device_alive_and_a_closed_connection_is_not_offline_at_once() -> None:
    # Heartbeat 3 h ago (hourly test calls), alarm 1 min ago, connection closed after it.
    after_alarm = device_state(_device(False, 50, 3 * 3600, 60, interval=3600), T0)
    assert after_alarm.label == "not connected"
    assert after_alarm.last_heard == T0 - timedelta(seconds=60)
    assert not after_alarm.missed_test_calls
    assert not after_alarm.at_risk
    # Silent long past the grace (and past two test-call intervals): a safety risk.
    silent = device_state(_device(False, 3 * 3600, 3 * 3600, None, interval=3600), T0)
    assert (silent.label, silent.offline, silent.missed_test_calls) == ("OFFLINE", True, True)
    assert silent.at_risk
    # No test calls configured: OFFLINE once quiet for longer than OFFLINE_GRACE.
    quiet = OFFLINE_GRACE.total_seconds()
    assert device_state(_device(False, quiet + 10, None, quiet + 20), T0).offline
    assert not device_state(_device(False, quiet - 10, None, quiet - 5), T0).offline
    # Connected, never heard, and a SCAIP unit with no connection state.
    assert device_state(_device(True, 30), T0).label == "connected"
    assert device_state(_device(None, None), T0).label == "not heard yet"
    unit = device_state(_device(None, None, None, 5), T0)
    assert (unit.label, unit.at_risk) == ("in contact", False)
    assert device_state(_device(True, 30, battery=12), T0).at_risk
    # An oximeter that only sends readings is heard by them (not "not heard yet").
    latest = {"spo2": (T0 - timedelta(seconds=90), 96.0), "temperature": (T0, 37.0)}
    read_at = last_reading("oximeter", latest)
    assert read_at == T0 - timedelta(seconds=90)
    oxi = device_state(_device(None, None), T0, read_at)
    assert (oxi.label, oxi.last_heard) == ("in contact", read_at)
    assert last_reading("pendant", latest) is None
