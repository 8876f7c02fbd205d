"""What a spool record holds: one write the database could not take, as compact JSON.

``encode(item)`` and ``decode(payload)`` are pure and exact inverses (a round-trip test
checks it). An item is one of::

    ReadingsItem(readings)            a batch of readings
    AlarmEvent                        an alarm event
    Alert                             an alert
    DeadLetter                        a dead letter (payload kept as base64)
    DispatchItem(dispatch, audit)     a new dispatch with its first audit entry
    News2Record                       a NEWS2 score
    StatusItem(...)                   a device status change (heartbeat, online, battery)

Timestamps are ISO 8601 with offset, so nothing is lost to a time zone.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from telecare.devices.model import (
    AlarmEvent,
    Alert,
    AlertKind,
    Dispatch,
    DispatchState,
    EventType,
    Metric,
    Phase,
    Reading,
)
from telecare.gateway.store.base import AuditEntry, DeadLetter, News2Record

__all__ = ["DispatchItem", "ReadingsItem", "SpoolItem", "StatusItem", "decode", "encode"]


@dataclass(frozen=True, slots=True)
class ReadingsItem:
    readings: tuple[Reading, ...]


@dataclass(frozen=True, slots=True)
class DispatchItem:
    dispatch: Dispatch
    audit: AuditEntry


@dataclass(frozen=True, slots=True)
class StatusItem:
    device_id: str
    at: datetime
    online: bool | None
    heartbeat: bool
    battery: float | None


SpoolItem = ReadingsItem | AlarmEvent | Alert | DeadLetter | DispatchItem | News2Record | StatusItem


def _ts(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _dt(value: str) -> datetime:
    return datetime.fromisoformat(value)


def _opt_dt(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def encode(item: SpoolItem) -> bytes:
    """The record payload for ``item``."""
    body: dict[str, Any]
    if isinstance(item, ReadingsItem):
        body = {
            "k": "readings",
            "r": [
                [
                    r.device_id,
                    int(r.metric),
                    r.value,
                    r.ts.isoformat(),
                    r.msg_id,
                    r.resident_id,
                    r.site_id,
                ]
                for r in item.readings
            ],
        }
    elif isinstance(item, AlarmEvent):
        e = item
        body = {
            "k": "event",
            "v": [
                e.device_id,
                e.type.value,
                e.phase.value,
                e.ts.isoformat(),
                e.msg_id,
                e.site_id,
                e.resident_id,
                e.zone,
                e.source,
                e.code,
                e.device_type,
                e.location,
            ],
        }
    elif isinstance(item, Alert):
        a = item
        body = {
            "k": "alert",
            "v": [
                a.alert_id,
                a.kind.value,
                a.priority,
                a.reason,
                a.ts.isoformat(),
                a.site_id,
                a.resident_id,
                a.device_id,
                a.event_type.value if a.event_type else None,
                a.source_key,
                a.detail,
            ],
        }
    elif isinstance(item, DeadLetter):
        d = item
        body = {
            "k": "dead_letter",
            "v": [
                d.received_at.isoformat(),
                d.source,
                d.origin,
                d.reason,
                base64.b64encode(d.payload).decode("ascii"),
                d.device_id,
                d.payload_bytes,
            ],
        }
    elif isinstance(item, DispatchItem):
        dp, au = item.dispatch, item.audit
        body = {
            "k": "dispatch",
            "d": [
                dp.dispatch_id,
                dp.alert_id,
                dp.state.value,
                dp.priority,
                dp.created_at.isoformat(),
                dp.updated_at.isoformat(),
                dp.site_id,
                dp.resident_id,
                dp.responder_id,
                dp.cascade_step,
                dp.outcome,
                dp.version,
            ],
            "a": [
                au.dispatch_id,
                au.at.isoformat(),
                au.from_state.value if au.from_state else None,
                au.to_state.value,
                au.actor,
                au.reason,
                au.detail,
            ],
        }
    elif isinstance(item, News2Record):
        n = item
        body = {
            "k": "news2",
            "v": [
                n.resident_id,
                n.ts.isoformat(),
                n.total,
                n.risk,
                n.red_flag,
                n.components,
                n.spo2_scale,
                n.observation_id,
                n.consciousness,
            ],
        }
    else:
        s = item
        body = {
            "k": "status",
            "v": [s.device_id, s.at.isoformat(), s.online, s.heartbeat, s.battery],
        }
    return json.dumps(body, separators=(",", ":")).encode()


def decode(payload: bytes) -> SpoolItem:
    """The item a record payload holds. Raises ``ValueError`` for an unknown record."""
    body = json.loads(payload)
    kind = body.get("k")
    if kind == "readings":
        return ReadingsItem(
            tuple(
                Reading(dev, Metric(m), v, Metric(m).unit, _dt(ts), msg, res, site)
                for dev, m, v, ts, msg, res, site in body["r"]
            )
        )
    if kind == "event":
        dev, typ, phase, ts, msg, site, res, zone, source, code, *unit = body["v"]
        dty, lco = (*unit, None, None)[:2]  # records spooled before 0012 have neither
        return AlarmEvent(
            dev,
            EventType(typ),
            Phase(phase),
            _dt(ts),
            msg,
            site,
            res,
            zone,
            source,
            code,
            device_type=dty,
            location=lco,
        )
    if kind == "alert":
        aid, k, prio, reason, ts, site, res, dev, et, key, detail = body["v"]
        return Alert(
            aid,
            AlertKind(k),
            prio,
            reason,
            _dt(ts),
            site,
            res,
            dev,
            EventType(et) if et else None,
            key,
            detail,
        )
    if kind == "dead_letter":
        at, source, origin, reason, data, dev, *size = body["v"]  # no size in older spools
        payload = base64.b64decode(data)
        return DeadLetter(_dt(at), source, origin, reason, payload, dev, *size)
    if kind == "dispatch":
        (did, aid, state, prio, created, updated, site, res, resp, step, outcome, version) = body[
            "d"
        ]
        adid, at, frm, to, actor, reason, detail = body["a"]
        return DispatchItem(
            Dispatch(
                did,
                aid,
                DispatchState(state),
                prio,
                _dt(created),
                _dt(updated),
                site,
                res,
                resp,
                step,
                outcome,
                version,
            ),
            AuditEntry(
                adid,
                _dt(at),
                DispatchState(frm) if frm else None,
                DispatchState(to),
                actor,
                reason,
                detail,
            ),
        )
    if kind == "news2":
        # An 8-element record was spooled before the ACVPU level was kept (0013).
        res, ts, total, risk, red, comps, scale, obs, *rest = body["v"]
        acvpu = rest[0] if rest else None
        return News2Record(res, _dt(ts), total, risk, red, comps, scale, obs, acvpu)
    if kind == "status":
        dev, at, online, hb, battery = body["v"]
        return StatusItem(dev, _dt(at), online, hb, battery)
    raise ValueError(f"unknown spool record kind {kind!r}")
