"""Protocol v1: JSON over MQTT (see ``docs/protocol.md``). Pure: bytes in, model out.

Topic scheme: ``<prefix>/<site_id>/<device_id>/<channel>`` where ``prefix`` defaults to
``telecare/v1`` and ``channel`` is one of :data:`CHANNELS`.

``decode`` raises :class:`~devices.codecs.Malformed` with a specific reason for any
payload that is not valid v1 (bad JSON, wrong types, NaN, impossible values, unknown
metric or event type, oversized); the caller dead-letters it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from devices.codecs import Malformed
from devices.model import (
    ID_PATTERN,
    AlarmEvent,
    EventType,
    Metric,
    ModelError,
    ObservationSet,
    Phase,
    Reading,
    metric_from_name,
)

__all__ = [
    "CHANNELS",
    "MAX_PAYLOAD_BYTES",
    "Heartbeat",
    "Message",
    "Status",
    "Topic",
    "decode",
    "encode_event",
    "encode_heartbeat",
    "encode_observation",
    "encode_readings",
    "encode_status",
    "parse_topic",
]

#: Largest payload accepted (bytes). A hub batch of 200 readings is about 20 KiB.
MAX_PAYLOAD_BYTES: Final = 64 * 1024
#: Largest number of items in one hub batch.
MAX_BATCH_ITEMS: Final = 500
CHANNELS: Final = ("event", "reading", "batch", "heartbeat", "status", "ble", "observation")


@dataclass(frozen=True, slots=True)
class Topic:
    site_id: str
    device_id: str
    channel: str


@dataclass(frozen=True, slots=True)
class Heartbeat:
    device_id: str
    msg_id: str
    ts: datetime
    battery: float | None = None


@dataclass(frozen=True, slots=True)
class Status:
    device_id: str
    online: bool
    ts: datetime | None


@dataclass(frozen=True, slots=True)
class BleForward:
    """A raw Bluetooth characteristic forwarded by a hub (decoded by ``devices.codecs.ble``)."""

    device_id: str
    msg_id: str
    ts: datetime
    uuid: str
    data: bytes


Message = Reading | AlarmEvent | Heartbeat | Status | BleForward | ObservationSet


def parse_topic(prefix: str, topic: str) -> Topic:
    """Split a v1 topic. Raises ``Malformed`` naming what is wrong."""
    head = prefix.rstrip("/") + "/"
    if not topic.startswith(head):
        raise Malformed(f"topic {topic!r} is not under {prefix!r}")
    parts = topic[len(head) :].split("/")
    if len(parts) != 3:
        raise Malformed(f"topic {topic!r} must be {prefix}/<site>/<device>/<channel>")
    site_id, device_id, channel = parts
    for name, value in (("site", site_id), ("device", device_id)):
        if not ID_PATTERN.match(value):
            raise Malformed(f"topic {topic!r}: {name} id {value!r} is not a valid identifier")
    if channel not in CHANNELS:
        raise Malformed(f"topic {topic!r}: unknown channel {channel!r}; known: {CHANNELS}")
    return Topic(site_id, device_id, channel)


def decode(
    topic: Topic,
    payload: bytes,
    *,
    site_id: str | None = None,
    resident_id: str | None = None,
) -> list[Message]:
    """Decode one v1 payload published on ``topic``.

    ``site_id``/``resident_id`` are what the gateway's provisioning says about the
    device; they are stamped on the readings and events.
    """
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise Malformed(f"payload of {len(payload)} bytes exceeds the {MAX_PAYLOAD_BYTES} limit")
    if topic.channel == "status":
        return [_decode_status(topic, payload)]
    doc = _load(payload)
    return _decode_doc(topic.channel, topic.device_id, doc, site_id, resident_id)


def _decode_doc(
    channel: str,
    device_id: str,
    doc: dict[str, Any],
    site_id: str | None,
    resident_id: str | None,
) -> list[Message]:
    version = doc.get("v")
    if version != 1:
        raise Malformed(f"unsupported protocol version {version!r}; expected 1")
    return _decode_body(channel, device_id, doc, site_id, resident_id)


def _decode_body(
    channel: str,
    device_id: str,
    doc: dict[str, Any],
    site_id: str | None,
    resident_id: str | None,
    *,
    device_checked: bool = False,
) -> list[Message]:
    """A v1 document of ``channel`` whose version has been checked. ``device_checked``:
    the caller has already matched ``device_id`` against ``ID_PATTERN``."""
    try:
        if channel == "event":
            return [_decode_event(device_id, doc, site_id, resident_id)]
        if channel == "reading":
            return list(
                _decode_readings(
                    device_id, doc, site_id, resident_id, device_checked=device_checked
                )
            )
        if channel == "heartbeat":
            battery = doc.get("battery")
            if battery is not None:
                battery = _number(battery, "battery")
            return [Heartbeat(device_id, _msg_id(doc), _ts(doc), battery)]
        if channel == "ble":
            return [_decode_ble(device_id, doc)]
        if channel == "batch":
            return _decode_batch(device_id, doc, site_id, resident_id)
        if channel == "observation":
            return [_decode_observation(device_id, doc, site_id, resident_id)]
    except ModelError as exc:
        raise Malformed(f"{channel}: {exc}") from None
    raise Malformed(f"unknown channel {channel!r}")  # pragma: no cover - parse_topic guards


def _load(payload: bytes) -> dict[str, Any]:
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Malformed(f"payload is not UTF-8 text (bad byte at offset {exc.start})") from None
    try:
        doc = _JSON.decode(text)
    except json.JSONDecodeError as exc:
        raise Malformed(
            f"malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    except ValueError as exc:
        raise Malformed(str(exc)) from None
    if not isinstance(doc, dict):
        raise Malformed(f"payload must be a JSON object, got {type(doc).__name__}")
    return doc


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed in a payload (values must be finite numbers)")


#: What ``json.loads(text, parse_constant=_reject_constant)`` builds on every call, once.
_JSON: Final = json.JSONDecoder(parse_constant=_reject_constant)


def _msg_id(doc: dict[str, Any]) -> str:
    msg_id = doc.get("msg_id")
    if not isinstance(msg_id, str) or not ID_PATTERN.match(msg_id):
        raise Malformed(f"msg_id {msg_id!r} missing or not a valid identifier")
    return msg_id


def _ts(doc: dict[str, Any]) -> datetime:
    raw = doc.get("ts")
    if not isinstance(raw, str):
        raise Malformed(f"ts {raw!r} missing or not an ISO 8601 string")
    try:
        ts = datetime.fromisoformat(raw)
    except ValueError:
        raise Malformed(f"ts {raw!r} is not an ISO 8601 timestamp") from None
    if ts.tzinfo is None:
        raise Malformed(f"ts {raw!r} has no timezone offset; send UTC ('Z' or '+00:00')")
    return ts.astimezone(UTC)


#: ``isinstance`` with a tuple: cheaper than building ``int | float`` on every call.
_NUMBER: Final = (int, float)


def _number(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, _NUMBER):
        raise Malformed(f"{name}: {value!r} is not a number")
    if not math.isfinite(value):
        raise Malformed(f"{name}: {value!r} is not a finite number")
    return float(value)


def _decode_event(
    device_id: str, doc: dict[str, Any], site_id: str | None, resident_id: str | None
) -> AlarmEvent:
    type_ = doc.get("type")
    phase = doc.get("phase", "alarm")
    if not isinstance(type_, str) or type_ not in EventType._value2member_map_:
        raise Malformed(f"event type {type_!r} is not in the taxonomy (see docs/protocol.md)")
    if not isinstance(phase, str) or phase not in Phase._value2member_map_:
        raise Malformed(f"event phase {phase!r} must be 'alarm' or 'restore'")
    zone = doc.get("zone")
    if zone is not None and not isinstance(zone, str):
        raise Malformed(f"zone {zone!r} must be a string")
    injury = doc.get("injury", False)
    if not isinstance(injury, bool):
        raise Malformed(f"injury {injury!r} must be true or false")
    if injury and type_ not in _INJURY_EVENTS:
        raise Malformed(
            f"injury is reported with a fall, post-fall inactivity or pendant event, not {type_!r}"
        )
    return AlarmEvent(
        device_id=device_id,
        type=EventType(str(type_)),
        phase=Phase(phase),
        ts=_ts(doc),
        msg_id=_msg_id(doc),
        site_id=site_id,
        resident_id=resident_id,
        zone=zone,
        source="mqtt",
        injury=injury,
    )


#: Events a device may report an injury with (``"injury": true``).
_INJURY_EVENTS: Final = frozenset({"fall", "post_fall_inactivity", "pendant"})


#: Metric wire names as devices send them (lower case), resolved without a fallback.
_METRICS: Final = {m.label: m for m in Metric}


def _decode_readings(
    device_id: str,
    doc: dict[str, Any],
    site_id: str | None,
    resident_id: str | None,
    *,
    device_checked: bool = False,
) -> list[Reading]:
    items = doc.get("readings")
    if not isinstance(items, list) or not items:
        raise Malformed("readings must be a non-empty list of {metric, value, unit}")
    if len(items) > 32:
        raise Malformed(f"{len(items)} readings in one message; at most 32")
    msg_id, ts = _msg_id(doc), _ts(doc)
    # The identifiers are the same for every reading of the message: they are validated
    # once, before the first reading is built, unless they are known valid already
    # (``msg_id`` was just checked; a batch checked the child's id; a batch child has
    # no site or resident yet); ``Reading.with_valid_ids`` validates everything else
    # exactly as the constructor does.
    ids_valid = device_checked and site_id is None and resident_id is None
    out: list[Reading] = []
    seen: set[str] = set()
    for item in items:
        if not isinstance(item, dict):
            raise Malformed(f"reading {item!r} must be an object")
        name = item.get("metric")
        if not isinstance(name, str):
            raise Malformed(f"reading metric {name!r} must be a string")
        if name in seen:
            raise Malformed(f"metric {name!r} appears twice in message {msg_id}")
        seen.add(name)
        metric = _METRICS.get(name)
        if metric is None:
            try:
                metric = metric_from_name(name)
            except ModelError as exc:
                raise Malformed(str(exc)) from None
        unit = item.get("unit")
        if not isinstance(unit, str):
            raise Malformed(f"{name}: unit {unit!r} missing; send {metric.unit!r}")
        value = _number(item.get("value"), name)
        if not ids_valid:
            Reading.check_ids(device_id, msg_id, resident_id, site_id)
            ids_valid = True
        out.append(
            Reading.with_valid_ids(device_id, metric, value, unit, ts, msg_id, resident_id, site_id)
        )
    return out


_OBS_FIELDS: Final = ("respiration_rate", "spo2", "systolic_bp", "pulse", "temperature")


def _decode_observation(
    device_id: str, doc: dict[str, Any], site_id: str | None, resident_id: str | None
) -> ObservationSet:
    """``{"v":1, "msg_id", "ts", "resident_id", "respiration_rate", "spo2", "on_oxygen",
    "systolic_bp", "pulse", "consciousness", "temperature"}``; the resident defaults to the
    device's own (a shared care-home tablet names the resident)."""
    rid = doc.get("resident_id", resident_id)
    if not isinstance(rid, str) or not ID_PATTERN.match(rid):
        raise Malformed(f"observation resident_id {rid!r} missing or not a valid identifier")
    values: dict[str, Any] = {}
    for name in _OBS_FIELDS:
        if doc.get(name) is not None:
            values[name] = _number(doc[name], name)
    on_oxygen = doc.get("on_oxygen")
    if on_oxygen is not None and not isinstance(on_oxygen, bool):
        raise Malformed(f"on_oxygen {on_oxygen!r} must be true or false")
    acvpu = doc.get("consciousness")
    if acvpu is not None and acvpu not in ("A", "C", "V", "P", "U"):
        raise Malformed(f"consciousness {acvpu!r} must be one of A, C, V, P, U (ACVPU)")
    return ObservationSet(
        device_id=device_id,
        resident_id=rid,
        ts=_ts(doc),
        msg_id=_msg_id(doc),
        on_oxygen=on_oxygen,
        consciousness=acvpu,
        site_id=site_id,
        **values,
    )


def encode_observation(msg_id: str, ts: datetime, resident_id: str, **values: Any) -> bytes:
    return _dump({"v": 1, "msg_id": msg_id, "ts": _iso(ts), "resident_id": resident_id, **values})


def _decode_ble(device_id: str, doc: dict[str, Any]) -> BleForward:
    child = doc.get("device_id", device_id)
    if not isinstance(child, str) or not ID_PATTERN.match(child):
        raise Malformed(f"device_id {child!r} is not a valid identifier")
    uuid = doc.get("uuid")
    if not isinstance(uuid, str) or len(uuid) != 4:
        raise Malformed(f"uuid {uuid!r} must be a 16-bit UUID such as '2A5F'")
    data = doc.get("data")
    if not isinstance(data, str):
        raise Malformed("data must be the characteristic value as a hex string")
    try:
        raw = bytes.fromhex(data)
    except ValueError:
        raise Malformed(f"data {data[:40]!r} is not valid hex") from None
    return BleForward(child, _msg_id(doc), _ts(doc), uuid.upper(), raw)


def _decode_batch(
    hub_id: str, doc: dict[str, Any], site_id: str | None, resident_id: str | None
) -> list[Message]:
    """A hub's batch: ``{"v":1, "msg_id":..., "items":[{"device_id", "channel", ...}]}``.

    Each item is a complete v1 document for a child device (its own ``msg_id`` and ``ts``);
    the children's site and resident are resolved by the gateway, so here they are left
    ``None`` unless the item's device is the hub itself.
    """
    _msg_id(doc)
    items = doc.get("items")
    if not isinstance(items, list) or not items:
        raise Malformed("batch items must be a non-empty list")
    if len(items) > MAX_BATCH_ITEMS:
        raise Malformed(f"batch of {len(items)} items exceeds the limit of {MAX_BATCH_ITEMS}")
    out: list[Message] = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise Malformed(f"batch item {index} must be an object")
        child = item.get("device_id")
        channel = item.get("channel")
        if not isinstance(child, str) or not ID_PATTERN.match(child):
            raise Malformed(f"batch item {index}: device_id {child!r} is not a valid identifier")
        if channel not in ("event", "reading", "heartbeat", "ble"):
            raise Malformed(f"batch item {index}: channel {channel!r} not allowed in a batch")
        own = child == hub_id
        try:
            # An item's own "v" is ignored: the batch's version covers it.
            out.extend(
                _decode_body(
                    channel,
                    child,
                    item,
                    site_id if own else None,
                    resident_id if own else None,
                    device_checked=True,
                )
            )
        except Malformed as exc:
            raise Malformed(f"batch item {index} ({child}): {exc.reason}") from None
    return out


def _decode_status(topic: Topic, payload: bytes) -> Status:
    doc = _load(payload)
    online = doc.get("online")
    if not isinstance(online, bool):
        raise Malformed(f"status online {online!r} must be true or false")
    ts = _ts(doc) if "ts" in doc else None
    return Status(topic.device_id, online, ts)


# --------------------------------------------------------------------------- encoders
# Used by firmware stubs, the API and tests; kept here so both directions share one
# definition of the wire format.


def _iso(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _dump(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":"), allow_nan=False).encode()


def encode_event(
    msg_id: str,
    ts: datetime,
    type_: EventType | str,
    phase: Phase | str = Phase.ALARM,
    **extra: Any,
) -> bytes:
    return _dump(
        {"v": 1, "msg_id": msg_id, "ts": _iso(ts), "type": str(type_), "phase": str(phase), **extra}
    )


def encode_readings(msg_id: str, ts: datetime, readings: list[tuple[str, float, str]]) -> bytes:
    return _dump(
        {
            "v": 1,
            "msg_id": msg_id,
            "ts": _iso(ts),
            "readings": [{"metric": m, "value": v, "unit": u} for m, v, u in readings],
        }
    )


def encode_heartbeat(msg_id: str, ts: datetime, battery: float | None = None) -> bytes:
    doc: dict[str, Any] = {"v": 1, "msg_id": msg_id, "ts": _iso(ts)}
    if battery is not None:
        doc["battery"] = battery
    return _dump(doc)


def encode_status(online: bool, ts: datetime | None = None) -> bytes:
    doc: dict[str, Any] = {"v": 1, "online": online}
    if ts is not None:
        doc["ts"] = _iso(ts)
    return _dump(doc)


def encode_batch(msg_id: str, items: list[dict[str, Any]]) -> bytes:
    return _dump({"v": 1, "msg_id": msg_id, "items": items})
