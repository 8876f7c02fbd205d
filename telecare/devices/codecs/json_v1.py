"""Protocol v1: JSON over MQTT (see ``docs/protocol.md``). Pure: bytes in, model out.

Topic scheme: ``<prefix>/<site_id>/<device_id>/<channel>`` where ``prefix`` defaults to
``telecare/v1`` and ``channel`` is one of :data:`CHANNELS`.

``decode`` raises :class:`~devices.codecs.Malformed` with a specific reason for any
payload that is not valid v1 (bad JSON, wrong types, NaN, impossible values, unknown
metric or event type, oversized); the caller dead-letters it.

Bounds (checked before anything is built, so no payload can make the decoder raise
anything but ``Malformed``): at most :data:`MAX_PAYLOAD_BYTES` bytes, JSON nesting at
most :data:`MAX_DEPTH` deep, number literals at most :data:`MAX_NUMBER_CHARS`
characters, timestamps within ``datetime``'s range once converted to UTC.

Reasons never echo a raw value from the payload (it may be personal data: a name sent
as an id, a vital sign): they name the field and what is wrong with it.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from telecare.devices import model
from telecare.devices.codecs import Malformed
from telecare.devices.model import (
    ID_PATTERN,
    AlarmEvent,
    EventType,
    Metric,
    ModelError,
    ObservationSet,
    Phase,
    Reading,
    canonical_unit,
    metric_from_name,
)

__all__ = [
    "CHANNELS",
    "MAX_DEPTH",
    "MAX_NUMBER_CHARS",
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
#: Deepest JSON nesting accepted. The deepest v1 document (a batch item's reading) is 5
#: levels deep; 20 000 nested ``[`` would otherwise exhaust the parser's recursion.
MAX_DEPTH: Final = 8
#: Longest number literal accepted (characters). ``1`` followed by 400 zeros is a valid
#: JSON integer that no float can hold; 24 characters hold every double in exponent form.
MAX_NUMBER_CHARS: Final = 24
#: ``urgent`` is a hub's ``batch`` of its children's events, sent at once: the gateway
#: takes it in its alarm lane, apart from telemetry (docs/protocol.md).
CHANNELS: Final = (
    "event",
    "reading",
    "batch",
    "heartbeat",
    "status",
    "ble",
    "observation",
    "urgent",
)


@dataclass(frozen=True, slots=True)
class Topic:
    site_id: str
    device_id: str
    channel: str


#: Heartbeats and status live in the model (``devices.model``); the codec's names stay.
Heartbeat = model.Heartbeat
Status = model.DeviceStatus


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
    if version != 1 or isinstance(version, bool):
        shown = version if isinstance(version, int) and not isinstance(version, bool) else None
        got = f" {shown}" if shown is not None else f" ({_kind(version)})"
        raise Malformed(f"unsupported protocol version{got}; expected 1")
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
        if channel in ("batch", "urgent"):
            return _decode_batch(device_id, doc, site_id, resident_id)
        if channel == "observation":
            return [_decode_observation(device_id, doc, site_id, resident_id)]
    except ModelError as exc:  # the model's message may quote the value: name the field only
        raise Malformed(f"{channel}: {exc.field} is not valid") from None
    raise Malformed(f"unknown channel {channel!r}")  # pragma: no cover - parse_topic guards


def _load(payload: bytes) -> dict[str, Any]:
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Malformed(f"payload is not UTF-8 text (bad byte at offset {exc.start})") from None
    _check_depth(text)
    try:
        doc = _JSON.decode(text)
    except json.JSONDecodeError as exc:
        raise Malformed(
            f"malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    except _Rejected as exc:
        raise Malformed(exc.reason) from None
    if not isinstance(doc, dict):
        raise Malformed(f"payload must be a JSON object, got {_kind(doc)}")
    return doc


class _Rejected(ValueError):
    """Raised from the JSON parser's hooks; ``reason`` holds no raw value."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


#: A JSON string literal (escapes included), and anything that is not a bracket.
_STRING: Final = re.compile(r'"(?:[^"\\]|\\.)*"')
_NOT_BRACKET: Final = re.compile(r"[^\[\]{}]+")


def _check_depth(text: str) -> None:
    """``Malformed`` when ``text`` nests deeper than :data:`MAX_DEPTH`.

    The bracket count bounds the depth, so the usual small document costs two
    ``str.count``; only a document with many brackets is scanned (strings removed first,
    so a bracket inside a string does not count)."""
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return
    depth = 0
    for char in _NOT_BRACKET.sub("", _STRING.sub("", text)):
        if char in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                raise Malformed(f"JSON nested deeper than {MAX_DEPTH} levels")
        else:
            depth -= 1


def _reject_constant(name: str) -> Any:
    raise _Rejected(f"{name} is not allowed in a payload (values must be finite numbers)")


def _parse_int(literal: str) -> int:
    if len(literal) > MAX_NUMBER_CHARS:
        raise _Rejected(f"number literal of {len(literal)} characters; at most {MAX_NUMBER_CHARS}")
    return int(literal)


def _parse_float(literal: str) -> float:
    if len(literal) > MAX_NUMBER_CHARS:
        raise _Rejected(f"number literal of {len(literal)} characters; at most {MAX_NUMBER_CHARS}")
    value = float(literal)
    if not math.isfinite(value):
        raise _Rejected("number out of range (values must be finite numbers)")
    return value


#: What ``json.loads`` with these hooks builds on every call, once.
_JSON: Final = json.JSONDecoder(
    parse_constant=_reject_constant, parse_int=_parse_int, parse_float=_parse_float
)


def _kind(value: object) -> str:
    """What a value is, without the value: for reasons that must not echo payloads."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return f"a string of {len(value)} characters"
    if isinstance(value, list):
        return f"a list of {len(value)} items"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


_ID_RULE: Final = "1-64 characters: letters, digits, '_', '.', ':', '-'"


def _msg_id(doc: dict[str, Any]) -> str:
    msg_id = doc.get("msg_id")
    if not isinstance(msg_id, str) or not ID_PATTERN.match(msg_id):
        raise Malformed(
            f"msg_id missing or not a valid identifier ({_ID_RULE}); got {_kind(msg_id)}"
        )
    return msg_id


def _ts(doc: dict[str, Any]) -> datetime:
    raw = doc.get("ts")
    if not isinstance(raw, str):
        raise Malformed(f"ts missing or not an ISO 8601 string; got {_kind(raw)}")
    try:
        ts = datetime.fromisoformat(raw)
    except ValueError:
        raise Malformed("ts is not an ISO 8601 timestamp") from None
    if ts.tzinfo is None:
        raise Malformed("ts has no timezone offset; send UTC ('Z' or '+00:00')")
    try:
        return ts.astimezone(UTC)
    except OverflowError:
        raise Malformed("ts is outside the representable range once converted to UTC") from None


#: ``isinstance`` with a tuple: cheaper than building ``int | float`` on every call.
_NUMBER: Final = (int, float)


def _number(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, _NUMBER):
        raise Malformed(f"{name}: value is not a number (got {_kind(value)})")
    if not math.isfinite(value):  # pragma: no cover - the parser's hooks refuse these
        raise Malformed(f"{name}: value is not a finite number")
    return float(value)


def _in_bounds(value: float, metric: Metric, name: str) -> float:
    lo, hi = metric.bounds
    if not lo <= value <= hi:
        raise Malformed(
            f"{name}: value is impossible (accepted range {lo:g}..{hi:g} {metric.unit})"
        )
    return value


def _decode_event(
    device_id: str, doc: dict[str, Any], site_id: str | None, resident_id: str | None
) -> AlarmEvent:
    type_ = doc.get("type")
    phase = doc.get("phase", "alarm")
    if not isinstance(type_, str) or type_ not in EventType._value2member_map_:
        raise Malformed(
            f"event type ({_kind(type_)}) is not in the taxonomy (see docs/protocol.md)"
        )
    if not isinstance(phase, str) or phase not in Phase._value2member_map_:
        raise Malformed(f"event phase ({_kind(phase)}) must be 'alarm' or 'restore'")
    zone = doc.get("zone")
    if zone is not None and not isinstance(zone, str):
        raise Malformed(f"zone must be a string, got {_kind(zone)}")
    injury = doc.get("injury", False)
    if not isinstance(injury, bool):
        raise Malformed(f"injury must be true or false, got {_kind(injury)}")
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
            raise Malformed(f"each reading must be an object, got {_kind(item)}")
        name = item.get("metric")
        if not isinstance(name, str):
            raise Malformed(f"reading metric must be a string, got {_kind(name)}")
        metric = _METRICS.get(name)
        if metric is None:
            try:
                metric = metric_from_name(name)
            except ModelError:
                known = ", ".join(m.label for m in Metric)
                raise Malformed(f"unknown metric ({_kind(name)}); known: {known}") from None
        name = metric.label  # ours from here on, never the device's spelling
        if name in seen:
            raise Malformed(f"metric {name} appears twice in message {msg_id}")
        seen.add(name)
        unit = item.get("unit")
        if not isinstance(unit, str):
            raise Malformed(f"{name}: unit missing; send {metric.unit!r}")
        if canonical_unit(unit) != metric.unit:
            raise Malformed(f"{name}: unit ({_kind(unit)}) is wrong; send {metric.unit!r}")
        value = _in_bounds(_number(item.get("value"), name), metric, name)
        if not ids_valid:
            Reading.check_ids(device_id, msg_id, resident_id, site_id)
            ids_valid = True
        out.append(
            Reading.with_valid_ids(device_id, metric, value, unit, ts, msg_id, resident_id, site_id)
        )
    return out


_OBS_FIELDS: Final = {
    "respiration_rate": Metric.RESPIRATION_RATE,
    "spo2": Metric.SPO2,
    "systolic_bp": Metric.SYSTOLIC_BP,
    "pulse": Metric.PULSE,
    "temperature": Metric.TEMPERATURE,
}


def _decode_observation(
    device_id: str, doc: dict[str, Any], site_id: str | None, resident_id: str | None
) -> ObservationSet:
    """``{"v":1, "msg_id", "ts", "resident_id", "respiration_rate", "spo2", "on_oxygen",
    "systolic_bp", "pulse", "consciousness", "temperature"}``; the resident defaults to the
    device's own (a shared care-home tablet names the resident)."""
    rid = doc.get("resident_id", resident_id)
    if not isinstance(rid, str) or not ID_PATTERN.match(rid):
        raise Malformed(
            f"observation resident_id missing or not a valid identifier ({_ID_RULE});"
            f" got {_kind(rid)}"
        )
    values: dict[str, Any] = {}
    for name, metric in _OBS_FIELDS.items():
        if doc.get(name) is not None:
            values[name] = _in_bounds(_number(doc[name], name), metric, name)
    on_oxygen = doc.get("on_oxygen")
    if on_oxygen is not None and not isinstance(on_oxygen, bool):
        raise Malformed(f"on_oxygen must be true or false, got {_kind(on_oxygen)}")
    acvpu = doc.get("consciousness")
    if acvpu is not None and acvpu not in ("A", "C", "V", "P", "U"):
        raise Malformed(f"consciousness must be one of A, C, V, P, U (ACVPU), got {_kind(acvpu)}")
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
        raise Malformed(f"device_id is not a valid identifier ({_ID_RULE}); got {_kind(child)}")
    uuid = doc.get("uuid")
    if not isinstance(uuid, str) or len(uuid) != 4:
        raise Malformed(f"uuid must be a 16-bit UUID such as '2A5F', got {_kind(uuid)}")
    data = doc.get("data")
    if not isinstance(data, str):
        raise Malformed("data must be the characteristic value as a hex string")
    try:
        raw = bytes.fromhex(data)
    except ValueError:
        raise Malformed(f"data ({_kind(data)}) is not valid hex") from None
    return BleForward(child, _msg_id(doc), _ts(doc), uuid.upper(), raw)


_BATCH_CHANNELS: Final = ("event", "reading", "heartbeat", "ble")


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
            raise Malformed(f"batch item {index} must be an object, got {_kind(item)}")
        child = item.get("device_id")
        channel = item.get("channel")
        if not isinstance(child, str) or not ID_PATTERN.match(child):
            raise Malformed(
                f"batch item {index}: device_id is not a valid identifier ({_ID_RULE});"
                f" got {_kind(child)}"
            )
        if channel not in _BATCH_CHANNELS:
            raise Malformed(
                f"batch item {index}: channel ({_kind(channel)}) not allowed in a batch;"
                f" allowed: {', '.join(_BATCH_CHANNELS)}"
            )
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
        raise Malformed(f"status online must be true or false, got {_kind(online)}")
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
