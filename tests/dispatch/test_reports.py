"""Response-time reports from the audit trail: pure figures, then through PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest

from devices.model import DispatchState, EventType
from dispatch.records import AuditRecord
from dispatch.reports import build_report, response_report
from dispatch.service import DispatchService
from gateway.store.dispatch_pg import PgDispatchRepository
from gateway.store.postgres import PostgresStore
from rules.clock import FakeClock
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
    assert (day.needing_attendance, day.attended, day.attended_45m, day.attended_60m) == (
        3,
        2,
        1,
        2,
    )
    assert day.pct_attended_60m == round(200 / 3, 2)


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
    assert (day.needing_attendance, day.attended, day.attended_45m, day.attended_60m) == (
        2,
        2,
        1,
        2,
    )
    assert (day.pct_attended_45m, day.pct_attended_60m) == (50.0, 100.0)


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
    repo = PgDispatchRepository(pg_store.pool)
    service = DispatchService(repo, pg_store, clock, directory=directory())
    quick, slow = make_alert(EventType.PENDANT), make_alert(EventType.FALL)
    for alert in (quick, slow):
        await pg_store.write_alert(alert)
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
    assert (day.needing_attendance, day.attended_45m) == (1, 1)
    assert (await build_report(repo, NOW + DAY, NOW + 2 * DAY))[0].alarms == 0
