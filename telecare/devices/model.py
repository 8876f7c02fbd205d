"""The canonical model: one typed, validated vocabulary for every layer.

Everything that crosses a seam in the gateway is one of these types::

    Site ─┬─ Resident ─── Device
          │       │
          │       └── Responder (ordered cascade, see ``dispatch``)
          │
    Reading        one measured value (metric + value + unit) from a device
    AlarmEvent     one social-alarm event (type from the taxonomy, alarm or restore)
    Alert          a rule's outcome with a priority (1 = life-critical)
    Dispatch       what the monitoring centre does about an alert

The model lives in the lowest layer (``devices``) so that ``rules``,
``dispatch`` and ``gateway`` can all share it without importing each other.

Validation happens at construction: every type raises :class:`ModelError`
(a ``ValueError``) naming the field and the offending value, so a codec or an
API handler can turn it into a dead letter or a 4xx without guessing. An invalid
identifier is described, not repeated (it may be a name typed where an id belongs).
Instances are frozen; personal data (``Resident.name``, ``Resident.nhs_number``)
is excluded from ``repr`` so it never reaches a log line by accident.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import IntEnum, StrEnum
from typing import Any, Final, TypeVar

_E = TypeVar("_E", bound=StrEnum)

__all__ = [
    "DEFAULT_TEST_CALL_S",
    "ID_PATTERN",
    "NEWS2_PARAMETERS",
    "RESERVED_IDS",
    "AlarmEvent",
    "Alert",
    "AlertKind",
    "Consciousness",
    "Device",
    "DeviceKind",
    "DeviceMessage",
    "DeviceStatus",
    "Dispatch",
    "DispatchState",
    "EventType",
    "Heartbeat",
    "Metric",
    "ModelError",
    "ObservationSet",
    "Phase",
    "Reading",
    "ReceiverAccount",
    "ReceiverKind",
    "Resident",
    "Responder",
    "ResponderKind",
    "Site",
    "SiteKind",
    "canonical_unit",
    "metric_from_name",
    "normalise_account",
    "utcnow",
]


class ModelError(ValueError):
    """A value does not fit the canonical model. ``field`` names the offending field."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name
        self.reason = message


#: Identifiers (site, resident, device, responder, message ids) are short, printable and
#: safe inside an MQTT topic level: no '/', '+', '#', whitespace or control characters.
#: ``\A`` and ``\Z`` anchor the whole string: ``$`` would also accept a trailing newline
#: (``"pend9\n"``), which breaks the broker's password file for every device.
ID_PATTERN: Final = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9_.:\-]{0,63}\Z")

#: Names a device or responder may not take: the gateway's own topic levels under
#: ``<prefix>/_gateway/`` and its default broker user. A device is a broker user whose
#: name is its id, and the broker ACL lets it write ``<prefix>/+/<its id>/#``; with one of
#: these ids it could write the gateway's topics or log in as the gateway. Ids are
#: compared case-insensitively. (The configured gateway username and the responder-app
#: ids are checked by the provisioning CLI, which knows them.)
RESERVED_IDS: Final = frozenset(
    {
        "_gateway",
        "gateway",
        "telecare-gateway",
        "telecare-gateway-out",  # the outbound publisher (gateway/publisher.py)
        "telecare-gateway-alarms",  # the gateway's alarm lane (gateway/ingest/lanes.py)
        "status",
        "deadletter",
        "responders",
    }
)


def _check_id(field_name: str, value: object, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, str) or not ID_PATTERN.match(value):
        raise ModelError(
            field_name,
            f"not a valid identifier ({_why_not_an_id(value)}; "
            "1-64 chars: letters, digits, '_', '.', ':', '-')",
        )


def _why_not_an_id(value: object) -> str:
    """What is wrong with ``value`` as an identifier, without repeating it: a name typed
    where an id belongs must not travel on into a dead letter or a log line."""
    if not isinstance(value, str):
        return f"{type(value).__name__}, not a string"
    if not value:
        return "empty"
    if len(value) > 64:
        return f"{len(value)} characters"
    for i, char in enumerate(value):
        allowed = char.isascii() and (char.isalnum() or (i > 0 and char in "_.:-"))
        if not allowed:
            return f"{char!r} at position {i + 1} is not allowed"
    return "not allowed"  # pragma: no cover - ID_PATTERN and the loop agree


def _check_broker_identity(field_name: str, value: str) -> None:
    """A device or responder id is also a broker user name: it must not be reserved."""
    if value.lower() in RESERVED_IDS:
        raise ModelError(
            field_name,
            f"{value!r} is reserved for the gateway; reserved: {', '.join(sorted(RESERVED_IDS))}",
        )


def _check_ts(field_name: str, value: object) -> None:
    if not isinstance(value, datetime):
        raise ModelError(field_name, f"{value!r} is not a datetime")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ModelError(field_name, f"{value.isoformat()} has no timezone; use UTC")


def utcnow() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


# --------------------------------------------------------------------------- metrics


class Metric(IntEnum):
    """What a reading measures. The integer is the compact code stored in the readings table.

    Each member carries its canonical unit (UCUM), a plausibility range (values outside
    are physically impossible for a living person or for the sensor and are rejected as
    bad input, not scored) and its LOINC code where one exists.
    """

    SPO2 = 1
    PULSE = 2
    RESPIRATION_RATE = 3
    TEMPERATURE = 4
    SYSTOLIC_BP = 5
    DIASTOLIC_BP = 6
    MEAN_ARTERIAL_PRESSURE = 7
    PERFUSION_INDEX = 8
    O2_FLOW = 9
    BATTERY = 10
    ROOM_TEMPERATURE = 11

    @property
    def unit(self) -> str:
        return _METRIC_INFO[self][0]

    @property
    def bounds(self) -> tuple[float, float]:
        return _METRIC_INFO[self][1]

    @property
    def loinc(self) -> str | None:
        return _METRIC_INFO[self][2]

    @property
    def label(self) -> str:
        return self.name.lower()


_METRIC_INFO: Final[dict[Metric, tuple[str, tuple[float, float], str | None]]] = {
    Metric.SPO2: ("%", (0.0, 100.0), "2708-6"),
    Metric.PULSE: ("/min", (0.0, 350.0), "8867-4"),
    Metric.RESPIRATION_RATE: ("/min", (0.0, 100.0), "9279-1"),
    Metric.TEMPERATURE: ("Cel", (25.0, 45.0), "8310-5"),
    Metric.SYSTOLIC_BP: ("mm[Hg]", (20.0, 300.0), "8480-6"),
    Metric.DIASTOLIC_BP: ("mm[Hg]", (10.0, 250.0), "8462-4"),
    Metric.MEAN_ARTERIAL_PRESSURE: ("mm[Hg]", (10.0, 280.0), None),
    Metric.PERFUSION_INDEX: ("%", (0.0, 30.0), None),
    Metric.O2_FLOW: ("L/min", (0.0, 60.0), "3151-8"),
    Metric.BATTERY: ("%", (0.0, 100.0), None),
    Metric.ROOM_TEMPERATURE: ("Cel", (-40.0, 80.0), None),
}

#: ``metric -> (canonical unit, low, high)``, flattened for the per-reading checks.
_MEASURE: Final[dict[Metric, tuple[str, float, float]]] = {
    m: (unit, lo, hi) for m, (unit, (lo, hi), _) in _METRIC_INFO.items()
}

#: Unit spellings devices actually send, mapped to the canonical UCUM unit.
_UNIT_ALIASES: Final[dict[str, str]] = {
    "%": "%",
    "percent": "%",
    "/min": "/min",
    "bpm": "/min",
    "beats/min": "/min",
    "breaths/min": "/min",
    "rpm": "/min",
    "cel": "Cel",
    "c": "Cel",
    "°c": "Cel",
    "degc": "Cel",
    "mm[hg]": "mm[Hg]",
    "mmhg": "mm[Hg]",
    "l/min": "L/min",
}


def canonical_unit(unit: str) -> str | None:
    """The canonical spelling of ``unit``, or ``None`` when it is not a unit we accept."""
    return _UNIT_ALIASES.get(unit.strip().lower())


def metric_from_name(name: str) -> Metric:
    """``Metric`` from its wire name (``"spo2"``, ``"pulse"``, ...)."""
    try:
        return Metric[name.strip().upper()]
    except KeyError:
        known = ", ".join(m.label for m in Metric)
        raise ModelError("metric", f"unknown metric {name!r}; known: {known}") from None


# --------------------------------------------------------------------------- sites and people


class SiteKind(StrEnum):
    HOME = "home"
    CARE_HOME = "care_home"


class Consciousness(StrEnum):
    """ACVPU. ``C`` means *new* confusion; chronic confusion is a resident's baseline."""

    ALERT = "A"
    CONFUSION = "C"
    VOICE = "V"
    PAIN = "P"
    UNRESPONSIVE = "U"


class DeviceKind(StrEnum):
    PENDANT = "pendant"
    FALL_DETECTOR = "fall_detector"
    HUB = "hub"
    OXIMETER = "oximeter"
    BP_CUFF = "bp_cuff"
    THERMOMETER = "thermometer"
    SMOKE_DETECTOR = "smoke_detector"
    CO_DETECTOR = "co_detector"
    FLOOD_DETECTOR = "flood_detector"
    DOOR_SENSOR = "door_sensor"
    PIR = "pir"
    BED_SENSOR = "bed_sensor"
    ALARM_RECEIVER = "alarm_receiver"
    #: A care-home tablet (iPad) on which staff enter observation sets (NEWS2).
    TABLET = "tablet"


class ResponderKind(StrEnum):
    KEYHOLDER = "keyholder"
    MOBILE_WARDEN = "mobile_warden"
    FIREFIGHTER = "firefighter"
    RAPID_RESPONSE = "rapid_response"
    AMBULANCE = "ambulance"


@dataclass(frozen=True, slots=True)
class Site:
    site_id: str
    kind: SiteKind
    name: str = field(default="", repr=False)
    address: str = field(default="", repr=False)
    area: str = "default"

    def __post_init__(self) -> None:
        _check_id("site_id", self.site_id)
        object.__setattr__(self, "kind", _enum("kind", SiteKind, self.kind))
        _check_id("area", self.area)


@dataclass(frozen=True, slots=True)
class Resident:
    resident_id: str
    site_id: str
    name: str = field(default="", repr=False)
    nhs_number: str | None = field(default=None, repr=False)
    #: SpO2 scale 2 only when a clinician prescribed a target of 88-92 %. ``None`` = no
    #: prescription recorded (``telecare resident clinical``): the rules file's entry for
    #: the resident, else the chart default (scale 1), applies.
    spo2_scale: int | None = None
    spo2_scale_set_by: str | None = None
    spo2_scale_set_at: datetime | None = None
    #: Baseline consciousness: a resident with chronic confusion has baseline ``C``.
    #: ``None`` = none recorded (rules file, else ``A``).
    baseline_consciousness: Consciousness | None = None
    #: Responder ids in cascade order (first is proposed first).
    responders: tuple[str, ...] = ()
    notes: str = field(default="", repr=False)

    def __post_init__(self) -> None:
        _check_id("resident_id", self.resident_id)
        _check_id("site_id", self.site_id)
        if self.spo2_scale not in (None, 1, 2):
            raise ModelError("spo2_scale", f"{self.spo2_scale!r} must be 1 or 2")
        if self.spo2_scale == 2 and not (self.spo2_scale_set_by and self.spo2_scale_set_at):
            raise ModelError(
                "spo2_scale",
                "scale 2 needs the prescribing clinician (spo2_scale_set_by) and date "
                "(spo2_scale_set_at)",
            )
        if self.baseline_consciousness is not None:
            object.__setattr__(
                self,
                "baseline_consciousness",
                _enum("baseline_consciousness", Consciousness, self.baseline_consciousness),
            )
        object.__setattr__(self, "responders", tuple(self.responders))
        for r in self.responders:
            _check_id("responders", r)


#: Periodic test call interval (s) a device of this kind gets when provisioned without
#: one: TSA practice is a test call at least once every 24 hours from a social alarm
#: (the pendant / fall detector channel), so a silent unit is noticed within a day or
#: three (``heartbeat_miss_multiple``), not never. Other kinds: 0 (none expected).
DEFAULT_TEST_CALL_S: Final[dict[DeviceKind, int]] = {
    DeviceKind.PENDANT: 24 * 3600,
    DeviceKind.FALL_DETECTOR: 24 * 3600,
}


@dataclass(frozen=True, slots=True)
class Device:
    device_id: str
    site_id: str
    kind: DeviceKind
    resident_id: str | None = None
    #: Codec name (``json_v1``, ``cms50d``, ``nonin2``, ...); see ``docs/devices.md``.
    format: str = "json_v1"
    location: str = ""
    #: Expected heartbeat interval in seconds (0 = the device sends none).
    heartbeat_interval_s: int = 0
    #: The hub or alarm receiver this device is registered to: the only device that may
    #: forward messages for it (``None``: nobody may).
    hub_id: str | None = None

    def __post_init__(self) -> None:
        _check_id("device_id", self.device_id)
        _check_broker_identity("device_id", self.device_id)
        _check_id("site_id", self.site_id)
        _check_id("resident_id", self.resident_id, optional=True)
        _check_id("hub_id", self.hub_id, optional=True)
        object.__setattr__(self, "kind", _enum("kind", DeviceKind, self.kind))
        if self.heartbeat_interval_s < 0:
            raise ModelError("heartbeat_interval_s", "must be >= 0")


class ReceiverKind(StrEnum):
    """The protocol an alarm receiver identifies a subscriber unit in.

    ``contact_id``: the 4-digit account of a Contact ID message (a serial receiver
    line, or DC-09 ``ADM-CID``); ``sia``: the DC-09 ``SIA-DCS`` account (``#acct``);
    ``scaip``: the SCAIP controller id (``cid``).
    """

    CONTACT_ID = "contact_id"
    SIA = "sia"
    SCAIP = "scaip"


#: Receiver accounts and zones: what units send (hex digits for Contact ID / SIA,
#: a controller id for SCAIP), never a topic level, so a slightly wider alphabet.
_ACCOUNT_PATTERN: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,63}$")


@dataclass(frozen=True, slots=True)
class ReceiverAccount:
    """A receiver's subscriber account (and optionally zone) -> a provisioned device.

    ``zone`` empty means "any zone of this account"; a mapping with a zone wins over the
    account-wide one, so one account can fan out to several devices (a pendant on zone
    1, a smoke detector on zone 5). Contact ID and SIA accounts are compared upper-case.
    """

    kind: ReceiverKind
    account: str
    device_id: str
    zone: str = ""

    def __post_init__(self) -> None:
        kind = _enum("kind", ReceiverKind, self.kind)
        object.__setattr__(self, "kind", kind)
        if not isinstance(self.account, str) or not _ACCOUNT_PATTERN.match(self.account):
            raise ModelError("account", f"{self.account!r} is not a valid receiver account")
        if not isinstance(self.zone, str) or (self.zone and not _ACCOUNT_PATTERN.match(self.zone)):
            raise ModelError("zone", f"{self.zone!r} is not a valid zone")
        if kind is not ReceiverKind.SCAIP:
            object.__setattr__(self, "account", self.account.upper())
            object.__setattr__(self, "zone", self.zone.upper())
        _check_id("device_id", self.device_id)

    @property
    def label(self) -> str:
        """``KIND:ACCOUNT[:ZONE]``, the form the CLI takes."""
        return f"{self.kind.value}:{self.account}" + (f":{self.zone}" if self.zone else "")

    @classmethod
    def parse(cls, text: str, device_id: str) -> ReceiverAccount:
        """``KIND:ACCOUNT[:ZONE]`` (the CLI form) mapped to ``device_id``."""
        parts = text.split(":")
        if len(parts) not in (2, 3) or not all(parts[:2]):
            raise ModelError(
                "receiver_account",
                f"{text!r} is not KIND:ACCOUNT[:ZONE] (e.g. contact_id:1234:001)",
            )
        kind = _enum("kind", ReceiverKind, parts[0])
        return cls(kind, parts[1], device_id, parts[2] if len(parts) == 3 else "")


def normalise_account(kind: ReceiverKind, account: str) -> str:
    """How ``account`` is stored and looked up for ``kind`` (hex digits upper-case)."""
    return account if kind is ReceiverKind.SCAIP else account.upper()


@dataclass(frozen=True, slots=True)
class Responder:
    responder_id: str
    kind: ResponderKind
    name: str = field(default="", repr=False)
    phone: str = field(default="", repr=False)
    area: str = "default"
    skills: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_id("responder_id", self.responder_id)
        _check_broker_identity("responder_id", self.responder_id)
        object.__setattr__(self, "kind", _enum("kind", ResponderKind, self.kind))
        object.__setattr__(self, "skills", tuple(self.skills))


# --------------------------------------------------------------------------- telemetry


#: What a reading's ``quality`` may be.
READING_QUALITIES = ("ok", "invalid", "demo")


@dataclass(frozen=True, slots=True)
class Reading:
    """One measured value. Idempotency key: ``(device_id, msg_id, metric)``.

    A message may carry several metrics (an oximeter sends SpO2 and pulse together), so
    the per-device message id plus the metric identifies a reading uniquely.
    """

    device_id: str
    metric: Metric
    value: float
    unit: str
    ts: datetime
    msg_id: str
    resident_id: str | None = None
    site_id: str | None = None
    #: ``ok``; ``invalid`` or ``demo`` when the device flagged the value (BLE status bits).
    quality: str = "ok"

    def __post_init__(self) -> None:
        Reading.check_ids(self.device_id, self.msg_id, self.resident_id, self.site_id)
        if self.quality not in READING_QUALITIES:
            raise ModelError("quality", f"{self.quality!r} is not one of {READING_QUALITIES}")
        metric = self.metric
        if not isinstance(metric, Metric):
            try:
                metric = Metric(metric)
            except ValueError:
                raise ModelError("metric", f"unknown metric code {metric!r}") from None
            object.__setattr__(self, "metric", metric)
        value, unit = _checked_measure(metric, self.value, self.unit)
        object.__setattr__(self, "unit", unit)
        object.__setattr__(self, "value", value)
        _check_ts("ts", self.ts)

    @staticmethod
    def check_ids(device_id: object, msg_id: object, resident_id: object, site_id: object) -> None:
        """Validate a reading's identifiers as the constructor does (``ModelError``):
        readings that share them can then be built with :meth:`with_valid_ids`."""
        _check_id("device_id", device_id)
        _check_id("msg_id", msg_id)
        _check_id("resident_id", resident_id, optional=True)
        _check_id("site_id", site_id, optional=True)

    @classmethod
    def with_valid_ids(
        cls,
        device_id: str,
        metric: Metric,
        value: float,
        unit: str,
        ts: datetime,
        msg_id: str,
        resident_id: str | None = None,
        site_id: str | None = None,
        quality: str = "ok",
    ) -> Reading:
        """A reading whose identifiers the caller has already validated (with
        :meth:`check_ids`, once for all the readings of a message, or because they come
        from provisioning or a checked topic). Everything else is validated exactly as
        the constructor does: the metric, the value (a finite number within the metric's
        bounds), the unit (canonicalised) and the timestamp (timezone-aware). Raises
        ``ModelError``.
        """
        if type(metric) is not Metric:
            raise ModelError("metric", f"{metric!r} is not a Metric")
        if quality not in READING_QUALITIES:
            raise ModelError("quality", f"{quality!r} is not one of {READING_QUALITIES}")
        value, unit = _checked_measure(metric, value, unit)
        if type(ts) is not datetime or ts.tzinfo is not UTC:  # UTC: what codecs produce
            _check_ts("ts", ts)
        new = object.__new__(cls)  # every field set below (keep in step with the fields)
        _set = object.__setattr__
        _set(new, "device_id", device_id)
        _set(new, "metric", metric)
        _set(new, "value", value)
        _set(new, "unit", unit)
        _set(new, "ts", ts)
        _set(new, "msg_id", msg_id)
        _set(new, "resident_id", resident_id)
        _set(new, "site_id", site_id)
        _set(new, "quality", quality)
        return new

    def owned_by(self, site_id: str | None, resident_id: str | None) -> Reading:
        """This reading attributed to a site and resident (ids from provisioning, already
        valid): a cheap copy, without validating every field again."""
        # Field by field (keep in step with the fields above): ~2x faster than _restamp.
        new = object.__new__(type(self))
        _set = object.__setattr__
        _set(new, "device_id", self.device_id)
        _set(new, "metric", self.metric)
        _set(new, "value", self.value)
        _set(new, "unit", self.unit)
        _set(new, "ts", self.ts)
        _set(new, "msg_id", self.msg_id)
        _set(new, "resident_id", resident_id)
        _set(new, "site_id", site_id)
        _set(new, "quality", self.quality)
        return new


#: ``isinstance`` with a tuple: cheaper than building ``int | float`` on every reading.
_NUMBER: Final = (int, float)


def _checked_measure(metric: Metric, value: object, unit: object) -> tuple[float, str]:
    """``(value, canonical unit)`` for a reading of ``metric``, or ``ModelError``: the value
    must be a finite number (not a bool) within the metric's bounds, in the metric's unit."""
    if isinstance(value, bool) or not isinstance(value, _NUMBER):
        raise ModelError(metric.label, f"{value!r} is not a number")
    if not math.isfinite(value):
        raise ModelError(metric.label, f"{value!r} is not a finite number")
    unit_, lo, hi = _MEASURE[metric]
    canonical = _UNIT_ALIASES.get(unit.strip().lower()) if isinstance(unit, str) else None
    if canonical != unit_:
        raise ModelError(
            metric.label,
            f"unit {unit!r} is wrong for {metric.label}; send {unit_!r}",
        )
    if not lo <= value <= hi:
        raise ModelError(
            metric.label,
            f"{value} {unit_} is impossible (accepted range {lo:g}..{hi:g} {unit_})",
        )
    return float(value), unit_


class EventType(StrEnum):
    """The social-alarm event taxonomy (PRODUCT.md). Priorities live in ``rules.alarms``."""

    PENDANT = "pendant"
    FALL = "fall"
    POST_FALL_INACTIVITY = "post_fall_inactivity"
    INACTIVITY = "inactivity"
    SMOKE = "smoke"
    CO = "co"
    FLOOD = "flood"
    TEMPERATURE_HIGH = "temperature_high"
    TEMPERATURE_LOW = "temperature_low"
    DOOR_EXIT = "door_exit"
    BED_NOT_REOCCUPIED = "bed_not_reoccupied"
    CHAIR_NOT_REOCCUPIED = "chair_not_reoccupied"
    MAINS_FAIL = "mains_fail"
    LOW_BATTERY = "low_battery"
    #: A wireless peripheral's battery (Contact ID 384), apart from the unit's own (302).
    SENSOR_LOW_BATTERY = "sensor_low_battery"
    TAMPER = "tamper"
    JAMMING = "jamming"
    SUPERVISION = "supervision"
    HEARTBEAT_MISSED = "heartbeat_missed"
    PERIODIC_TEST = "periodic_test"
    CANCEL = "cancel"
    CARER_ARRIVED = "carer_arrived"
    #: A PIR or other motion/activity sensor saw movement: proof of daily living, no alarm.
    MOTION = "motion"
    #: The gateway found a device's clock implausible (technical fault; gateway-raised,
    #: like ``heartbeat_missed``).
    CLOCK_SKEW = "clock_skew"
    #: A unit's information message (SCAIP ``IN`` with no condition we map): kept, no alert.
    INFORMATION = "information"


class Phase(StrEnum):
    ALARM = "alarm"
    RESTORE = "restore"


@dataclass(frozen=True, slots=True)
class AlarmEvent:
    """One social-alarm event. Idempotency key: ``(device_id, msg_id)``."""

    device_id: str
    type: EventType
    phase: Phase
    ts: datetime
    msg_id: str
    site_id: str | None = None
    resident_id: str | None = None
    zone: str | None = None
    #: Where it came from: ``mqtt``, ``serial``, ``api`` or ``rule`` (gateway-generated).
    source: str = "mqtt"
    #: Contact ID event code, or SCAIP status code, when the event came from an alarm unit.
    code: int | None = None
    #: The device reports an injury with this fall / pendant call (routes to 999 first).
    injury: bool = False
    #: SCAIP device type (``dty``) and location code (``lco``) as the unit sent them.
    device_type: str | None = None
    location: str | None = None
    #: When the gateway received it (stored as ``alarm_events.received_at``); ``None``
    #: until the pipeline stamps it (:meth:`received`).
    received_at: datetime | None = None

    def __post_init__(self) -> None:
        _check_id("device_id", self.device_id)
        _check_id("msg_id", self.msg_id)
        _check_id("site_id", self.site_id, optional=True)
        _check_id("resident_id", self.resident_id, optional=True)
        object.__setattr__(self, "type", _enum("type", EventType, self.type))
        object.__setattr__(self, "phase", _enum("phase", Phase, self.phase))
        _check_ts("ts", self.ts)
        if self.received_at is not None:
            _check_ts("received_at", self.received_at)

    def received(self, at: datetime | None) -> AlarmEvent:
        """This event with the gateway's receive time ``at`` unless it has one."""
        if self.received_at is not None or at is None:
            return self
        _check_ts("received_at", at)
        return _restamp(self, received_at=at)

    def owned_by(self, site_id: str | None, resident_id: str | None) -> AlarmEvent:
        """This event attributed to a site and resident (see ``Reading.owned_by``)."""
        return _restamp(self, site_id=site_id, resident_id=resident_id)


#: The seven NEWS2 parameters, in chart order.
NEWS2_PARAMETERS: Final = (
    "respiration_rate",
    "spo2",
    "on_oxygen",
    "systolic_bp",
    "pulse",
    "consciousness",
    "temperature",
)


@dataclass(frozen=True, slots=True)
class ObservationSet:
    """A set of observations taken together for one resident (care-home staff on an iPad,
    or a connected device). Idempotency key: ``(device_id, msg_id)``.

    Any parameter may be missing (``None``): a partial set is stored and its readings
    kept, but it is not a NEWS2 (the rules say which parameters are missing).
    """

    device_id: str
    resident_id: str
    ts: datetime
    msg_id: str
    respiration_rate: float | None = None
    spo2: float | None = None
    on_oxygen: bool | None = None
    systolic_bp: float | None = None
    pulse: float | None = None
    consciousness: Consciousness | None = None
    temperature: float | None = None
    site_id: str | None = None

    def __post_init__(self) -> None:
        _check_id("device_id", self.device_id)
        _check_id("resident_id", self.resident_id)
        _check_id("msg_id", self.msg_id)
        _check_id("site_id", self.site_id, optional=True)
        _check_ts("ts", self.ts)
        if self.on_oxygen is not None and not isinstance(self.on_oxygen, bool):
            raise ModelError("on_oxygen", f"{self.on_oxygen!r} must be true or false")
        if self.consciousness is not None:
            object.__setattr__(
                self,
                "consciousness",
                _enum("consciousness", Consciousness, self.consciousness),
            )
        for name, metric in _OBSERVATION_METRICS.items():
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ModelError(name, f"{value!r} is not a number")
            if not math.isfinite(value):
                raise ModelError(name, f"{value!r} is not a finite number")
            lo, hi = metric.bounds
            if not lo <= value <= hi:
                raise ModelError(
                    name, f"{value} {metric.unit} is impossible (accepted {lo:g}..{hi:g})"
                )

    @property
    def missing(self) -> tuple[str, ...]:
        return tuple(p for p in NEWS2_PARAMETERS if getattr(self, p) is None)

    def readings(self) -> list[Reading]:
        """The measured values as readings (for the time series)."""
        return [
            Reading(
                self.device_id,
                metric,
                float(getattr(self, name)),
                metric.unit,
                self.ts,
                self.msg_id,
                self.resident_id,
                self.site_id,
            )
            for name, metric in _OBSERVATION_METRICS.items()
            if getattr(self, name) is not None
        ]


_OBSERVATION_METRICS: Final = {
    "respiration_rate": Metric.RESPIRATION_RATE,
    "spo2": Metric.SPO2,
    "systolic_bp": Metric.SYSTOLIC_BP,
    "pulse": Metric.PULSE,
    "temperature": Metric.TEMPERATURE,
}


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """A device says it is alive (and how full its battery is). Proof of life for the
    heartbeat rule; stored as the device's status, not as an event."""

    device_id: str
    msg_id: str
    ts: datetime
    battery: float | None = None


@dataclass(frozen=True, slots=True)
class DeviceStatus:
    """A device's online/offline state: its own retained "online", or the last will the
    broker publishes for it when it drops off (``ts`` is ``None`` in a last will)."""

    device_id: str
    online: bool
    ts: datetime | None


#: What the decode stage hands the pipeline for one message: the model, never a codec's
#: own types.
DeviceMessage = Reading | AlarmEvent | Heartbeat | DeviceStatus | ObservationSet


class AlertKind(StrEnum):
    ALARM = "alarm"
    NEWS2 = "news2"
    TEMPORAL = "temporal"
    TECHNICAL = "technical"


@dataclass(frozen=True, slots=True)
class Alert:
    """A rule's outcome. ``priority`` 1 is life-critical; larger numbers are less urgent."""

    alert_id: str
    kind: AlertKind
    priority: int
    reason: str
    ts: datetime
    site_id: str | None = None
    resident_id: str | None = None
    device_id: str | None = None
    event_type: EventType | None = None
    #: The idempotency key of what raised it (``device_id/msg_id``), for tracing.
    source_key: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_id("alert_id", self.alert_id)
        object.__setattr__(self, "kind", _enum("kind", AlertKind, self.kind))
        if not isinstance(self.priority, int) or not 1 <= self.priority <= 5:
            raise ModelError("priority", f"{self.priority!r} must be an integer 1..5")
        _check_ts("ts", self.ts)
        if self.event_type is not None:
            object.__setattr__(self, "event_type", _enum("event_type", EventType, self.event_type))


class DispatchState(StrEnum):
    RAISED = "raised"
    ACKNOWLEDGED = "acknowledged"
    RESPONDER_CONTACTED = "responder_contacted"
    ACCEPTED = "accepted"
    DECLINED = "declined"
    NO_ANSWER = "no_answer"
    EN_ROUTE = "en_route"
    ON_SCENE = "on_scene"
    RESOLVED = "resolved"
    ESCALATED = "escalated"
    CANCELLED = "cancelled"

    @property
    def is_open(self) -> bool:
        return self not in (DispatchState.RESOLVED, DispatchState.CANCELLED)


@dataclass(frozen=True, slots=True)
class Dispatch:
    dispatch_id: str
    alert_id: str
    state: DispatchState
    priority: int
    created_at: datetime
    updated_at: datetime
    site_id: str | None = None
    resident_id: str | None = None
    #: The responder currently proposed or contacted (``None`` when nobody is left).
    responder_id: str | None = None
    #: Index into the resident's cascade of ``responder_id``.
    cascade_step: int = 0
    outcome: str | None = None
    version: int = 1

    def __post_init__(self) -> None:
        _check_id("dispatch_id", self.dispatch_id)
        _check_id("alert_id", self.alert_id)
        object.__setattr__(self, "state", _enum("state", DispatchState, self.state))
        _check_ts("created_at", self.created_at)
        _check_ts("updated_at", self.updated_at)
        _check_id("responder_id", self.responder_id, optional=True)


_T = TypeVar("_T")


def _restamp(obj: _T, **changes: object) -> _T:
    """A copy of a frozen, slotted dataclass with some fields changed, not re-validated."""
    new = object.__new__(type(obj))
    for name in type(obj).__slots__:  # type: ignore[attr-defined]
        object.__setattr__(new, name, changes[name] if name in changes else getattr(obj, name))
    return new


def _enum(field_name: str, enum: type[_E], value: object) -> _E:
    if isinstance(value, enum):
        return value
    if not isinstance(value, str):
        allowed = ", ".join(e.value for e in enum)
        raise ModelError(field_name, f"{value!r} is not one of: {allowed}")
    try:
        return enum(value)
    except ValueError:
        allowed = ", ".join(e.value for e in enum)
        raise ModelError(field_name, f"{value!r} is not one of: {allowed}") from None
