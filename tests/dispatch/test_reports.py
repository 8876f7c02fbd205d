"""Response-time reports from the audit trail: pure figures, then through PostgreSQL."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from telecare.devices.model import DispatchState, EventType
from telecare.dispatch.attend import DEFAULT_TARGETS, AttendConfig, Measure, stamp
from telecare.dispatch.cascades import Route
from telecare.dispatch.records import AuditRecord
from telecare.dispatch.reports import build_report, response_report
from telecare.dispatch.service import DispatchService
from telecare.gateway.store.postgres import PostgresStore
from telecare.rules.clock import FakeClock
from tests.dispatch.conftest import NOW, directory, make_alert, seed

S = DispatchState
DAY = timedelta(days=1)


def life(did: str, raised_s: float, *steps: tuple[DispatchState, float]) -> list[AuditRecord]:
    start = NOW + timedelta(seconds=raised_s)
    out = [AuditRecord(did, start, None, S.RAISED, "system")]
    prev = S.RAISED
    for state, after in steps:
        out.append(AuditRecord(did, start + timedelta(seconds=after), prev, state, "x"))
        prev = state
    return out


def test_answer_and_attendance_thresholds() -> None:
    records = [
        *life("a", 0, (S.ACKNOWLEDGED, 60)),  # exactly 60 s counts
        *life("b", 10, (S.ACKNOWLEDGED, 61)),
        *life("c", 20, (S.ESCALATED, 60), (S.ACKNOWLEDGED, 181)),
        *life("d", 30),  # never answered: a miss
        *life("e", 40, (S.CANCELLED, 5)),  # abandoned
        *life(
            "f",
            50,
            (S.ACKNOWLEDGED, 20),
            (S.RESPONDER_CONTACTED, 30),
            (S.ACCEPTED, 60),
            (S.ON_SCENE, 45 * 60),
        ),
        *life(
            "g",
            60,
            (S.ACKNOWLEDGED, 20),
            (S.RESPONDER_CONTACTED, 30),
            (S.ACCEPTED, 60),
            (S.ON_SCENE, 50 * 60),
        ),
        *life("h", 70, (S.ACKNOWLEDGED, 20), (S.RESPONDER_CONTACTED, 30), (S.ACCEPTED, 60)),
    ]
    (day,) = response_report(records, NOW, NOW + DAY, DAY)
    assert (day.alarms, day.abandoned, day.presented) == (8, 1, 7)
    assert (day.answered, day.answered_60s, day.answered_180s) == (6, 4, 5)
    assert day.pct_answered_60s == round(400 / 7, 2)
    assert (day.needing_attendance, day.attended) == (3, 2)
    # No route in these trails: measured against the wellbeing (telecare) target.
    (row,) = day.routes
    assert (row.route, row.target_min, row.all_within_min) == ("unrouted", 45, 60)
    assert (row.needing, row.done, row.within_target, row.within_all) == (3, 2, 1, 2)
    assert row.pct_within_all == round(200 / 3, 2)


def presented(
    did: str, presented_s: float, opened_after_s: float, *steps: tuple[DispatchState, float]
) -> list[AuditRecord]:
    """A dispatch opened ``opened_after_s`` after its alarm was presented; step times are
    seconds after it was presented."""
    at = NOW + timedelta(seconds=presented_s)
    opened = at + timedelta(seconds=opened_after_s)
    out = [
        AuditRecord(did, opened, None, S.RAISED, "system", detail={"presented_at": at.isoformat()})
    ]
    prev = S.RAISED
    for state, after in steps:
        out.append(AuditRecord(did, at + timedelta(seconds=after), prev, state, "op1"))
        prev = state
    return out


def test_hand_made_table_answer_times_run_from_presentation() -> None:
    """The hand-made table of docs/dispatch.md ("Response-time method"):

    ====  =========  ======  =======================================  ====  =====  ======
    id    opened     answer  what happened                            60 s  180 s  45 min
    ====  =========  ======  =======================================  ====  =====  ======
    A     +0 s       30 s    acknowledged                             yes   yes
    B     +600 s     630 s   dispatch opened 10 min late (sweeper)    no    no
    C     +0 s       -       cancelled by the resident after 20 s     --    --
    D     +0 s       -       restored after 120 s, never answered     no    --
    E     +0 s       -       restored after 300 s, never answered     no    no
    F     +0 s       -       never answered                           no    no
    G     +0 s       50 s    accepted 60 s, on scene 40 min           yes   yes    yes
    H     +0 s       170 s   accepted 200 s, on scene 50 min          no    yes    no
    ====  =========  ======  =======================================  ====  =====  ======

    60 s: denominator 8 - 1 (C, abandoned within 60 s) = 7, answered 2 -> 28.57 %.
    180 s: denominator 8 - 2 (C, D abandoned within 180 s) = 6, answered 3 -> 50 %.
    Attendance: G and H needed a visit; 1 within 45 min (50 %), 2 within 60 min (100 %).
    """
    records = [
        *presented("A", 0, 0, (S.ACKNOWLEDGED, 30)),
        *presented("B", 10, 600, (S.ACKNOWLEDGED, 630)),
        *presented("C", 20, 0, (S.CANCELLED, 20)),
        *presented("D", 30, 0, (S.RESOLVED, 120)),
        *presented("E", 40, 0, (S.RESOLVED, 300)),
        *presented("F", 50, 0),
        *presented(
            "G",
            60,
            0,
            (S.ACKNOWLEDGED, 50),
            (S.RESPONDER_CONTACTED, 55),
            (S.ACCEPTED, 60),
            (S.ON_SCENE, 40 * 60),
        ),
        *presented(
            "H",
            70,
            0,
            (S.ACKNOWLEDGED, 170),
            (S.RESPONDER_CONTACTED, 180),
            (S.ACCEPTED, 200),
            (S.ON_SCENE, 50 * 60),
        ),
    ]
    (day,) = response_report(records, NOW, NOW + DAY, DAY)
    assert (day.alarms, day.abandoned, day.abandoned_60s, day.abandoned_180s) == (8, 3, 1, 2)
    assert (day.answered, day.answered_60s, day.answered_180s) == (4, 2, 3)
    assert day.pct_answered_60s == round(200 / 7, 2)
    assert day.pct_answered_180s == 50.0
    assert (day.needing_attendance, day.attended) == (2, 2)
    (row,) = day.routes
    assert (row.needing, row.within_target, row.within_all) == (2, 1, 2)
    assert (row.pct_within_target, row.pct_within_all) == (50.0, 100.0)


def test_periods_bucket_by_raised_time_and_empty_periods_have_no_percentages() -> None:
    records = life("a", 0, (S.ACKNOWLEDGED, 30)) + life("b", 2 * 86400, (S.ACKNOWLEDGED, 30))
    days = response_report(records, NOW, NOW + 3 * DAY, DAY)
    assert [d.alarms for d in days] == [1, 0, 1]
    assert days[1].pct_answered_60s is None
    assert days[2].start == NOW + 2 * DAY
    with pytest.raises(ValueError, match="period must be positive"):
        response_report(records, NOW, NOW + DAY, timedelta(0))


@pytest.mark.postgres
async def test_report_from_the_stored_audit_trail(pg_store: PostgresStore) -> None:
    await seed(pg_store)
    clock = FakeClock(NOW)
    repo = pg_store.dispatches
    service = DispatchService(repo, pg_store, clock, directory=directory())
    quick, slow = make_alert(EventType.PENDANT), make_alert(EventType.FALL)
    for alert in (quick, slow):
        await pg_store.write_alerts([alert])
    d1 = (await service.open(quick)).dispatch_id
    d2 = (await service.open(slow)).dispatch_id
    clock.advance(45)
    await service.acknowledge(d1, "op1")
    clock.advance(100)
    await service.acknowledge(d2, "op1")
    await service.contact(d2, "op1")
    await service.accept(d2, "kh1")
    clock.advance(minutes=30)
    await service.on_scene(d2, "kh1")
    (day,) = await build_report(repo, NOW, NOW + DAY)
    assert (day.alarms, day.answered_60s, day.answered_180s) == (2, 1, 2)
    assert day.needing_attendance == 1
    (urgent,) = day.routes  # the fall: urgent route, 2 h target
    assert (urgent.route, urgent.target_min, urgent.within_target) == ("urgent", 120, 1)
    assert (await build_report(repo, NOW + DAY, NOW + 2 * DAY))[0].alarms == 0


def routed(
    did: str, route: Route, site: str | None, *steps: tuple[DispatchState, float, dict[str, Any]]
) -> list[AuditRecord]:
    """A dispatch's trail as the service writes it: the first row stamps the route and the
    target in force for its site (``dispatch.attend``)."""
    target = SITE_TARGETS.target_for(route, site)
    out = [AuditRecord(did, NOW, None, S.RAISED, "system", "", stamp(route, target, NOW))]
    prev = S.RAISED
    for state, minutes, detail in steps:
        out.append(AuditRecord(did, NOW + timedelta(minutes=minutes), prev, state, "x", "", detail))
        prev = state
    return out


SITE_TARGETS = AttendConfig.from_mapping({"sites": {"s2": {"urgent": {"target_min": 90}}}})
VISIT = ((S.ACKNOWLEDGED, 0.5, {}), (S.RESPONDER_CONTACTED, 1, {}), (S.ACCEPTED, 2, {}))
HANDOVER = {"handover": True, "reference": "CAD-1"}


def test_hand_made_table_each_route_against_its_own_target() -> None:
    """The table in docs/dispatch.md ("Reports", per route)."""
    records = [
        *routed("W1", Route.WELLBEING, "s1", *VISIT, (S.ON_SCENE, 40, {})),
        *routed("W2", Route.WELLBEING, "s1", *VISIT, (S.ON_SCENE, 50, {})),
        *routed("W3", Route.WELLBEING, "s1", *VISIT),  # accepted, never arrived
        *routed("U1", Route.URGENT, "s1", *VISIT, (S.ON_SCENE, 100, {})),
        *routed("U2", Route.URGENT, "s1", *VISIT, (S.ON_SCENE, 130, {})),
        *routed("U3", Route.URGENT, "s2", *VISIT, (S.ON_SCENE, 100, {})),  # s2: 90 min
        *routed(
            "E1",
            Route.EMERGENCY,
            "s1",
            (S.ACKNOWLEDGED, 0.5, {}),
            (S.RESPONDER_CONTACTED, 1, {}),
            (S.ACCEPTED, 2.5, HANDOVER),
            (S.ON_SCENE, 30, {}),
        ),
        *routed(
            "E2",
            Route.EMERGENCY,
            "s1",
            (S.ACKNOWLEDGED, 0.5, {}),
            (S.RESPONDER_CONTACTED, 3, {}),
            (S.ACCEPTED, 4, HANDOVER),
        ),
        *routed(  # smoke alarm, burnt toast: no 999 needed
            "E3", Route.EMERGENCY, "s1", (S.ACKNOWLEDGED, 0.5, {}), (S.RESOLVED, 3, FALSE)
        ),
        *routed("E4", Route.EMERGENCY, "s1", (S.CANCELLED, 0.2, {})),  # abandoned
        *routed(  # answered, 999 never called and not a false alarm: a miss
            "E5", Route.EMERGENCY, "s1", (S.ACKNOWLEDGED, 0.5, {}), (S.RESOLVED, 20, ASSISTED)
        ),
    ]
    (day,) = response_report(records, NOW, NOW + DAY, DAY)
    rows = {(r.route, r.target_min): r for r in day.routes}
    assert list(rows) == [("emergency", 3), ("urgent", 90), ("urgent", 120), ("wellbeing", 45)]
    e, u_s2, u, w = rows.values()
    assert (e.measure, e.needing, e.done, e.within_target) == (Measure.HANDOVER, 3, 2, 1)
    assert (e.pct_within_target, e.goal_pct, e.meets_goal) == (33.33, None, None)
    assert (u.needing, u.within_target, u.pct_within_target, u.goal_pct) == (2, 1, 50.0, 70.0)
    assert u.meets_goal is False
    assert (u_s2.needing, u_s2.within_target, u_s2.pct_within_target) == (1, 0, 0.0)
    assert (w.needing, w.done, w.within_target, w.within_all) == (3, 2, 1, 2)
    assert (w.pct_within_target, w.pct_within_all, w.meets_goal) == (33.33, 66.67, False)
    assert day.route("urgent") == [u_s2, u]


FALSE = {"outcome": "false_alarm"}
ASSISTED = {"outcome": "assisted_at_home"}


def test_a_re_routed_dispatch_is_measured_on_its_last_route() -> None:
    """A pendant press (wellbeing) where the operator learns of an injury: the re-route
    row stamps the emergency target, and the report measures the handover."""
    trail = routed("P1", Route.WELLBEING, "s1", (S.ACKNOWLEDGED, 0.5, {}))
    trail.append(
        AuditRecord(
            "P1",
            NOW + timedelta(minutes=1),
            S.ACKNOWLEDGED,
            S.ACKNOWLEDGED,
            "op1",
            "injury reported",
            {
                "event": "injury_reported",
                **stamp(Route.EMERGENCY, DEFAULT_TARGETS[Route.EMERGENCY], NOW),
            },
        )
    )
    trail += [
        AuditRecord("P1", NOW + timedelta(minutes=2), S.ACKNOWLEDGED, S.RESPONDER_CONTACTED, "op1"),
        AuditRecord(
            "P1",
            NOW + timedelta(minutes=2.5),
            S.RESPONDER_CONTACTED,
            S.ACCEPTED,
            "op1",
            "",
            HANDOVER,
        ),
    ]
    (day,) = response_report(trail, NOW, NOW + DAY, DAY)
    (row,) = day.routes
    assert (row.route, row.measure, row.needing, row.within_target) == (
        "emergency",
        Measure.HANDOVER,
        1,
        1,
    )
