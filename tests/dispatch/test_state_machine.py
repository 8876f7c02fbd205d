"""The pure lifecycle: every legal transition, every illegal one, effects and audit."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from itertools import permutations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from telecare.devices.model import Dispatch, DispatchState
from telecare.dispatch.errors import IllegalTransition, WrongResponder
from telecare.dispatch.machine import (
    AdvanceCascade,
    ClearTimers,
    Event,
    EventKind,
    NotifyResponder,
    NotifySupervisors,
    SetTimer,
    TimerPolicy,
    allowed_events,
    open_dispatch,
    transition,
)
from telecare.dispatch.records import TimerKind
from tests.dispatch.conftest import NOW

S = DispatchState
T1 = NOW + timedelta(seconds=30)


def raised() -> Dispatch:
    return open_dispatch(
        "d1", "a1", 1, NOW, site_id="s1", resident_id="res1", first_responder="kh1"
    ).dispatch


def at(state: DispatchState, responder: str | None = "kh1") -> Dispatch:
    d = raised()
    return replace(d, state=state, responder_id=responder)


def event_for(kind: EventKind, responder: str | None = "kh1") -> Event:
    if kind is EventKind.CONTACT:
        return Event(kind, "kh2", 1, 300)
    if kind is EventKind.RESOLVE:
        return Event(kind, outcome="assisted_at_home")
    if kind in (
        EventKind.ACCEPT,
        EventKind.DECLINE,
        EventKind.NO_ANSWER,
        EventKind.EN_ROUTE,
        EventKind.ON_SCENE,
    ):
        return Event(kind, responder)
    return Event(kind)


def test_open_sets_the_acknowledge_deadline() -> None:
    step = open_dispatch("d1", "a1", 1, NOW, site_id="s1", resident_id=None, first_responder=None)
    assert step.dispatch.state is S.RAISED
    assert step.dispatch.version == 1
    assert step.audit.from_state is None
    assert step.audit.to_state is S.RAISED
    (effect,) = step.effects
    assert isinstance(effect, SetTimer)
    assert effect.timer.kind is TimerKind.ACK
    assert effect.timer.due_at == NOW + timedelta(seconds=60)


EXPECTED = {
    S.RAISED: {EventKind.ACKNOWLEDGE, EventKind.CANCEL, EventKind.AUTO_CLEAR, EventKind.ESCALATE},
    S.ACKNOWLEDGED: {EventKind.CONTACT, EventKind.ESCALATE, EventKind.RESOLVE},
    S.RESPONDER_CONTACTED: {
        EventKind.CONTACT,
        EventKind.ACCEPT,
        EventKind.DECLINE,
        EventKind.NO_ANSWER,
        EventKind.ESCALATE,
        EventKind.RESOLVE,
    },
    S.DECLINED: {EventKind.CONTACT, EventKind.ESCALATE, EventKind.RESOLVE},
    S.NO_ANSWER: {EventKind.CONTACT, EventKind.ACCEPT, EventKind.ESCALATE, EventKind.RESOLVE},
    S.ACCEPTED: {
        EventKind.EN_ROUTE,
        EventKind.ON_SCENE,
        EventKind.DECLINE,
        EventKind.ESCALATE,
        EventKind.RESOLVE,
    },
    S.EN_ROUTE: {EventKind.ON_SCENE, EventKind.ESCALATE, EventKind.RESOLVE},
    S.ON_SCENE: {EventKind.RESOLVE},
    S.ESCALATED: {
        EventKind.ACKNOWLEDGE,
        EventKind.CONTACT,
        EventKind.ACCEPT,
        EventKind.EN_ROUTE,
        EventKind.ON_SCENE,
        EventKind.RESOLVE,
    },
    S.RESOLVED: set(),
    S.CANCELLED: set(),
}


def test_transition_table_is_what_the_docs_say() -> None:
    assert {s: set(allowed_events(s)) for s in S} == EXPECTED


@pytest.mark.parametrize(("state", "kind"), [(s, k) for s in S for k in EventKind])
def test_every_pair_is_legal_or_raises(state: DispatchState, kind: EventKind) -> None:
    d = at(state)
    if kind in EXPECTED[state]:
        step = transition(d, event_for(kind), T1, "op1", "why")
        assert step.dispatch.version == d.version + 1
        assert step.dispatch.updated_at == T1
        assert (step.audit.from_state, step.audit.to_state) == (state, step.dispatch.state)
        assert (step.audit.actor, step.audit.reason, step.audit.at) == ("op1", "why", T1)
        if not step.dispatch.state.is_open:
            assert ClearTimers((TimerKind.ACK, TimerKind.STEP, TimerKind.ATTEND)) in step.effects
    else:
        with pytest.raises(IllegalTransition):
            transition(d, event_for(kind), T1, "op1")


def test_contact_sets_a_step_timer_and_notifies() -> None:
    d = at(S.ACKNOWLEDGED)
    step = transition(d, Event(EventKind.CONTACT, "kh2", 1, 120), T1, "op1")
    assert step.dispatch.responder_id == "kh2"
    assert step.dispatch.cascade_step == 1
    timers = [e.timer for e in step.effects if isinstance(e, SetTimer)]
    assert [(t.kind, t.due_at, t.step) for t in timers] == [
        (TimerKind.STEP, T1 + timedelta(seconds=120), 1)
    ]
    assert NotifyResponder("kh2", "please attend") in step.effects


def test_accept_sets_the_attendance_deadline_from_the_alarm() -> None:
    step = transition(at(S.RESPONDER_CONTACTED), Event(EventKind.ACCEPT, "kh1"), T1, "kh1")
    attend = [e.timer for e in step.effects if isinstance(e, SetTimer)]
    policy = TimerPolicy()
    assert attend[0].kind is TimerKind.ATTEND
    assert attend[0].due_at == NOW + timedelta(seconds=policy.attend_within_s)


def test_accept_uses_the_routes_deadline_and_records_a_999_handover() -> None:
    by = NOW + timedelta(hours=2)
    event = Event(EventKind.ACCEPT, "kh1", reference="CAD-77")
    step = transition(at(S.RESPONDER_CONTACTED), event, T1, "op1", attend_by=by)
    attend = [e.timer for e in step.effects if isinstance(e, SetTimer)]
    assert [(t.kind, t.due_at) for t in attend] == [(TimerKind.ATTEND, by)]
    assert step.audit.detail["attend_by"] == by.isoformat()
    assert (step.audit.detail["handover"], step.audit.detail["reference"]) == (True, "CAD-77")
    plain = transition(at(S.RESPONDER_CONTACTED), Event(EventKind.ACCEPT, "kh1"), T1, "kh1")
    assert "handover" not in plain.audit.detail
    with pytest.raises(ValueError, match="reference"):
        transition(
            at(S.RESPONDER_CONTACTED), Event(EventKind.ACCEPT, "kh1", reference=" "), T1, "x"
        )


def test_decline_and_no_answer_advance_the_cascade() -> None:
    for kind in (EventKind.DECLINE, EventKind.NO_ANSWER):
        step = transition(at(S.RESPONDER_CONTACTED), Event(kind, "kh1"), T1, "kh1")
        assert AdvanceCascade(0) in step.effects


def test_escalate_alerts_supervisors() -> None:
    step = transition(raised(), Event(EventKind.ESCALATE), T1, "timer", "late")
    assert NotifySupervisors("late") in step.effects
    assert step.dispatch.state is S.ESCALATED


def test_only_the_contacted_responder_may_answer() -> None:
    with pytest.raises(WrongResponder, match="waiting on 'kh1'"):
        transition(at(S.RESPONDER_CONTACTED), Event(EventKind.ACCEPT, "kh2"), T1, "kh2")


def test_resolve_needs_a_known_outcome_code() -> None:
    with pytest.raises(ValueError, match="outcome 'fixed' is not one of"):
        transition(at(S.ON_SCENE), Event(EventKind.RESOLVE, outcome="fixed"), T1, "op1")
    step = transition(
        at(S.ON_SCENE), Event(EventKind.RESOLVE, outcome="conveyed_to_hospital"), T1, "op1"
    )
    assert step.dispatch.outcome == "conveyed_to_hospital"
    assert step.audit.detail["outcome"] == "conveyed_to_hospital"


def test_cancel_after_acknowledge_says_what_to_do() -> None:
    with pytest.raises(IllegalTransition, match="resolve it with an outcome code"):
        transition(at(S.ACKNOWLEDGED), Event(EventKind.CANCEL), T1, "device")


@pytest.mark.parametrize(
    "order", list(permutations([EventKind.ACKNOWLEDGE, EventKind.AUTO_CLEAR, EventKind.CANCEL]))
)
def test_ack_clear_cancel_in_any_order_has_one_winner(order: tuple[EventKind, ...]) -> None:
    d, winners = raised(), []
    for kind in order:
        try:
            d = transition(d, Event(kind), T1, "x").dispatch
            winners.append(kind)
        except IllegalTransition:
            pass
    assert winners == [order[0]]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(list(EventKind)), max_size=25))
def test_random_histories_keep_the_invariants(kinds: list[EventKind]) -> None:
    d = raised()
    for kind in kinds:
        try:
            step = transition(d, event_for(kind, d.responder_id), T1, "x")
        except IllegalTransition:
            assert kind not in allowed_events(d.state)
            continue
        assert step.dispatch.version == d.version + 1
        assert d.state.is_open
        d = step.dispatch
    if not d.state.is_open:
        assert d.outcome is not None
