"""The console, API and report queries, run against both backends."""

from __future__ import annotations

from datetime import timedelta

import pytest

from telecare.devices.model import Alert, AlertKind, Dispatch, DispatchState, Metric, Reading
from telecare.dispatch.records import AuditRecord
from telecare.dispatch.reports import build_report
from telecare.gateway.dispatching import dispatch_repository
from telecare.gateway.store.base import Store
from telecare.gateway.store.dispatch import append_audit
from telecare.gateway.store.rows import News2Record
from tests.store.helpers import T0, registry

S = timedelta(seconds=1)


async def test_latest_vitals_per_resident(store: Store) -> None:
    await registry(store)
    await store.write_readings(
        [
            Reading("ox1", Metric.SPO2, 97, "%", T0, "m1", "res1"),
            Reading("ox1", Metric.SPO2, 93, "%", T0 + 60 * S, "m2", "res1"),
            Reading("ox1", Metric.PULSE, 80, "/min", T0 + 30 * S, "m3", "res1"),
            Reading("ox2", Metric.SPO2, 99, "%", T0 + 5 * S, "m1", "res2"),
            Reading("ox2", Metric.SPO2, 98, "%", T0 - 3600 * S, "m0", "res2"),
        ]
    )
    latest = await store.latest_vitals(["res1", "res2", "nobody"])
    assert latest == {
        "res1": {"spo2": (T0 + 60 * S, 93.0), "pulse": (T0 + 30 * S, 80.0)},
        "res2": {"spo2": (T0 + 5 * S, 99.0)},
        "nobody": {},
    }
    recent = await store.latest_vitals(["res1"], since=T0 + 45 * S)
    assert recent == {"res1": {"spo2": (T0 + 60 * S, 93.0)}}


async def test_metric_history_is_downsampled(store: Store) -> None:
    await registry(store)
    # One pulse reading a minute for 3 hours: 60, 61, ... (value = minute index).
    await store.write_readings(
        [
            Reading("ox1", Metric.PULSE, 60 + i % 60, "/min", T0 + i * 60 * S, f"m{i}", "res1")
            for i in range(180)
        ]
        + [Reading("ox1", Metric.SPO2, 95, "%", T0, "x", "res1")]
    )
    hist = await store.metric_history(
        "res1", Metric.PULSE, T0 + 30 * 60 * S, T0 + 150 * 60 * S, timedelta(hours=1)
    )
    assert [p.bucket for p in hist] == [T0, T0 + 3600 * S, T0 + 7200 * S]
    assert [p.count for p in hist] == [30, 60, 30]
    assert (hist[0].min, hist[0].max) == (90, 119)
    assert (hist[1].min, hist[1].max) == (60, 119)
    assert hist[1].avg == pytest.approx(89.5)
    assert (hist[2].min, hist[2].max) == (60, 89)
    fine = await store.metric_history(
        "res1", Metric.PULSE, T0, T0 + 10 * 60 * S, timedelta(minutes=5)
    )
    assert [(p.bucket, p.count) for p in fine] == [(T0, 5), (T0 + 300 * S, 5)]


async def test_news2_history_and_idempotency(store: Store) -> None:
    scores = [
        News2Record("res1", T0 + i * 3600 * S, i, "low", False, {"pulse": i}, 1, f"obs{i}")
        for i in range(4)
    ]
    for s in scores:
        assert await store.write_news2(s) is True
    assert await store.write_news2(scores[0]) is False
    red = News2Record("res1", T0 + 5 * 3600 * S, 7, "high", True, {"spo2": 3}, 2, "obs9")
    await store.write_news2(red)
    await store.write_news2(News2Record("res2", T0, 1, "low", False, {}, 1, "other"))
    assert await store.news2_history("res1", T0 + 3600 * S, T0 + 24 * 3600 * S) == [
        *scores[1:],
        red,
    ]
    assert await store.count("news2_scores") == 6


async def _dispatch(
    store: Store, i: int, priority: int, created_offset_s: int, steps: list[tuple[str, float]]
) -> None:
    created = T0 + created_offset_s * S
    await store.write_alerts(
        [Alert(f"a{i}", AlertKind.ALARM, priority, f"alarm {i}", created, "s1", "res1")]
    )
    await store.dispatches.create(
        Dispatch(f"d{i}", f"a{i}", DispatchState.RAISED, priority, created, created, "s1"),
        AuditRecord(f"d{i}", created, None, DispatchState.RAISED, "gateway"),
        (),
        (),
    )
    # Audit steps go straight into the append-only trail (the dispatch service's job).
    prev = DispatchState.RAISED
    for state, after_s in steps:
        entry = AuditRecord(f"d{i}", created + after_s * S, prev, DispatchState(state), "op")
        await _append_audit(store, entry)
        prev = DispatchState(state)
    if steps and not DispatchState(steps[-1][0]).is_open:
        await _close(store, f"d{i}", steps[-1][0])


async def _append_audit(store: Store, entry: AuditRecord) -> None:
    async with store.sql.transaction() as tx:
        await append_audit(store.sql, tx, entry)


async def _close(store: Store, dispatch_id: str, state: str) -> None:
    await store.sql.execute(
        "UPDATE dispatches SET state = ? WHERE dispatch_id = ?", state, dispatch_id
    )


async def test_open_alarms_by_priority_then_age(store: Store) -> None:
    await registry(store)
    await _dispatch(store, 1, 2, 0, [])
    await _dispatch(store, 2, 1, 100, [("acknowledged", 10)])
    await _dispatch(store, 3, 1, 50, [])
    await _dispatch(store, 4, 1, 10, [("acknowledged", 5), ("resolved", 60)])
    now = T0 + 200 * S
    alarms = await store.open_alarms()
    assert [a.alert_id for a in alarms] == ["a3", "a2", "a1"]
    opened = [a.dispatch for a in alarms if a.dispatch]
    assert [d.dispatch_id for d in opened] == ["d3", "d2", "d1"]
    assert [(now - d.created_at).total_seconds() for d in opened] == [150.0, 100.0, 200.0]
    assert alarms[0].reason == "alarm 3"
    assert alarms[0].state is DispatchState.RAISED
    assert [a.alert_id for a in await store.open_alarms(limit=1)] == ["a3"]


async def test_dispatch_timeline(store: Store) -> None:
    await registry(store)
    await _dispatch(store, 1, 1, 0, [("acknowledged", 42.5), ("accepted", 120), ("on_scene", 1800)])
    created = (await store.dispatches.load("d1") or pytest.fail("no d1")).created_at
    timeline = await store.dispatches.audit("d1")
    assert [(t.to_state.value, (t.at - created).total_seconds()) for t in timeline] == [
        ("raised", 0.0),
        ("acknowledged", 42.5),
        ("accepted", 120.0),
        ("on_scene", 1800.0),
    ]
    assert timeline[1].from_state is DispatchState.RAISED
    assert await store.dispatches.audit("nope") == []


async def test_response_times_from_the_stored_rows(store: Store) -> None:
    """The store only supplies the audit rows; ``dispatch.reports`` computes the figures
    (one definition, one implementation)."""
    await registry(store)
    await _dispatch(store, 1, 1, 0, [("acknowledged", 60), ("accepted", 90), ("on_scene", 2700)])
    await _dispatch(
        store, 2, 1, 10, [("acknowledged", 60.5), ("en_route", 100), ("on_scene", 2701)]
    )
    await _dispatch(store, 3, 1, 20, [("acknowledged", 180), ("accepted", 200), ("on_scene", 3600)])
    await _dispatch(store, 4, 1, 30, [("acknowledged", 181), ("accepted", 200)])
    await _dispatch(store, 5, 1, 40, [("acknowledged", 5), ("cancelled", 30)])
    await _dispatch(store, 6, 1, 50, [])  # never answered
    await _dispatch(store, 7, 1, 7200, [("acknowledged", 1)])  # outside the period
    repo = dispatch_repository(store)  # type: ignore[arg-type]
    (figures,) = await build_report(repo, T0, T0 + 3600 * S, 3600 * S)
    assert figures.alarms == 6
    assert figures.answered == 5
    assert figures.answered_60s == 2  # d1 (exactly 60 s) and d5
    assert figures.answered_180s == 4  # + d2, d3 (exactly 180 s)
    assert figures.needing_attendance == 4  # d1..d4 needed a responder
    assert figures.attended == 3
    (row,) = figures.routes  # no route in these rows: the wellbeing target, 45/60 min
    assert row.within_target == 1  # d1 (exactly 45 min)
    assert row.within_all == 3
    assert figures.pct_answered_60s == pytest.approx(round(100 * 2 / 6, 2))
    assert row.pct_within_all == pytest.approx(75.0)
    (empty,) = await build_report(repo, T0 - 7200 * S, T0 - 3600 * S, 3600 * S)
    assert empty.alarms == 0
    assert empty.pct_answered_60s is None
