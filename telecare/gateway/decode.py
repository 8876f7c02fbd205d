"""The decode step: an MQTT envelope -> canonical messages, checked against provisioning.

A message is accepted only from a provisioned device publishing under its own site.
Anything else raises :class:`Rejected` with a specific reason (the pipeline dead-letters
it). What a device may say for others is narrow, because a device's credentials can be
stolen and its firmware can be wrong:

* Forwarding (a message naming another device: hub ``batch`` items, ``ble``): only a
  device of a forwarding kind (:data:`FORWARDERS`: hub, alarm receiver), and only for
  children registered to it (``Device.hub_id``).
* Observation sets (NEWS2): only from a device of an observing kind (:data:`OBSERVERS`:
  the care-home tablet), and only for a resident of the device's own site (checked in
  the pipeline).
* Timestamps: within :class:`~gateway.timebounds.TimeBounds` of the gateway's clock.

BLE forwarding: a hub's ``ble`` message (``json_v1.BleForward``) carries the raw value
of a Bluetooth SIG characteristic; it is decoded here with ``devices.codecs.ble``
(0x2A5E PLX spot-check, 0x2A5F PLX continuous, 0x2A35 blood pressure) into readings
for the forwarded device, keyed by the hub message's ``msg_id``, timed by the device's
own timestamp when it sent one (a value from measurement storage keeps its true time).
An unsupported characteristic or an undecodable value is rejected with the codec's
reason; so is a PLX value flagged as demonstration/test data, invalid or unavailable, or
from a disconnected or faulty sensor. A 0x2A35 user id is mapped to its resident
(``device_users``; user 1 of a device without a map is the paired resident); an unknown
user is rejected.
"""

from __future__ import annotations

from typing import Final, TypeVar

from telecare.devices.codecs import Malformed, ble, json_v1, registry
from telecare.devices.model import (
    AlarmEvent,
    Device,
    DeviceKind,
    DeviceMessage,
    DeviceStatus,
    Heartbeat,
    ObservationSet,
    Reading,
)
from telecare.gateway.envelope import Envelope
from telecare.gateway.registry_cache import Registry
from telecare.gateway.store.base import Store
from telecare.gateway.timebounds import TimeBounds
from telecare.rules.clock import Clock, SystemClock

__all__ = ["FORWARDERS", "OBSERVERS", "MessageDecoder", "Registry", "Rejected"]

#: Device kinds that may forward messages for their registered children.
FORWARDERS: Final = frozenset({DeviceKind.HUB, DeviceKind.ALARM_RECEIVER})
#: Device kinds that may send observation sets (NEWS2) for residents of their site.
OBSERVERS: Final = frozenset({DeviceKind.TABLET})
#: Messages the rules re-time when their device clock runs ahead (``TimeBounds``).
_RETIMED: Final = (AlarmEvent, Heartbeat, ObservationSet)

_V = TypeVar("_V")


class Rejected(Exception):
    """Input we will not accept; ``reason`` is specific and safe to log."""

    def __init__(self, reason: str, device_id: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.device_id = device_id


#: How many parsed topics :class:`MessageDecoder` remembers (one per device and channel
#: in use); past that the memo starts again, so unknown topics cannot grow it.
_TOPICS_MAX: Final = 65536


class MessageDecoder:
    def __init__(
        self,
        store: Store,
        topic_prefix: str,
        *,
        clock: Clock | None = None,
        time_bounds: TimeBounds | None = None,
    ) -> None:
        self.registry = Registry(store)
        self._store = store
        self.topic_prefix = topic_prefix
        self.clock = clock or SystemClock()
        self.time_bounds = time_bounds or TimeBounds()
        self._topics: dict[str, json_v1.Topic] = {}  # valid topics only

    def topic_of(self, origin: str) -> json_v1.Topic | None:
        """The parsed topic of an envelope already decoded (``None`` if unknown)."""
        return self._topics.get(origin)

    def device_of(self, env: Envelope) -> str | None:
        """The device id in ``env``'s topic, when the topic is valid (for dead letters)."""
        topic = self._topics.get(env.origin)
        if topic is None:
            try:
                topic = json_v1.parse_topic(self.topic_prefix, env.origin)
            except Malformed:
                return None
        return topic.device_id

    async def decode(self, env: Envelope) -> list[DeviceMessage]:
        topic = self._topics.get(env.origin)
        if topic is None:
            try:
                topic = json_v1.parse_topic(self.topic_prefix, env.origin)
            except Malformed as exc:
                raise Rejected(exc.reason) from None
            if len(self._topics) >= _TOPICS_MAX:
                self._topics.clear()
            self._topics[env.origin] = topic
        hit = self.registry.cached_device(topic.device_id)
        device = hit[1] if hit is not None else await self.registry.device(topic.device_id)
        if device is None:
            raise Rejected(f"device {topic.device_id!r} is not provisioned", topic.device_id)
        if device.site_id != topic.site_id:
            raise Rejected(
                f"device {topic.device_id!r} belongs to site {device.site_id!r}, "
                f"not {topic.site_id!r}",
                topic.device_id,
            )
        try:
            messages = json_v1.decode(
                topic, env.payload, site_id=device.site_id, resident_id=device.resident_id
            )
        except Malformed as exc:
            raise Rejected(exc.reason, topic.device_id) from None
        self._check_times(messages, device)
        out: list[DeviceMessage] = []
        hub_id = device.device_id
        for message in messages:
            if isinstance(message, ObservationSet) and device.kind not in OBSERVERS:
                raise Rejected(
                    f"device {hub_id!r} of kind {device.kind.value!r} may not send observation"
                    f" sets (only: {', '.join(sorted(k.value for k in OBSERVERS))})",
                    hub_id,
                )
            if message.device_id != hub_id:
                message = await self._attribute(message, device)
            if isinstance(message, json_v1.BleForward):
                out.extend(await self._ble(message, device))
            else:
                out.append(message)
        return out

    async def _ble(self, message: json_v1.BleForward, hub: Device) -> list[Reading]:
        """Readings from a forwarded BLE characteristic value."""
        codec = registry.CODECS.get(f"ble_{message.uuid.lower()}")
        if not isinstance(codec, registry.MessageCodec):
            known = ", ".join(sorted(n[4:].upper() for n in registry.CODECS if n[:4] == "ble_"))
            raise Rejected(
                f"BLE characteristic {message.uuid} is not supported (supported: {known})",
                hub.device_id,
            )
        device = await self.registry.device(message.device_id)
        if device is None:  # pragma: no cover - _attribute checked it
            raise Rejected(f"device {message.device_id!r} is not provisioned", hub.device_id)
        try:
            frame = codec.decode(message.data)
        except Malformed as exc:
            raise Rejected(f"BLE {message.uuid}: {exc.reason}", message.device_id) from None
        why = ble.unusable(frame)
        if why:
            raise Rejected(
                f"BLE {message.uuid}: not a measurement of the patient ({', '.join(why)})",
                message.device_id,
            )
        resident_id = device.resident_id
        if isinstance(frame, ble.BloodPressure) and frame.user_id is not None:
            resident_id = await self._ble_user(device, frame.user_id, message.uuid)
        try:
            convert = ble.bp_readings if isinstance(frame, ble.BloodPressure) else ble.plx_readings
            readings = convert(
                frame,
                device_id=device.device_id,
                # The device's own time (a stored or late measurement keeps it); the hub's
                # time only when the device sent none.
                ts=ble.measured_at(frame) or message.ts,
                msg_id=message.msg_id,
                resident_id=resident_id,
                site_id=device.site_id,
            )
        except Malformed as exc:
            raise Rejected(f"BLE {message.uuid}: {exc.reason}", message.device_id) from None
        if not readings:
            specials = ", ".join(f"{k}={v.name}" for k, v in ble.missing(frame).items())
            raise Rejected(
                f"BLE {message.uuid}: no measurement value ({specials or 'no fields'})",
                message.device_id,
            )
        return readings

    async def _ble_user(self, device: Device, user_id: int, uuid: str) -> str | None:
        """The resident a multi-user device's user id belongs to. Mapped ids come from
        ``device_users``; a device with no map is single-user, so its user 1 is the
        paired resident. Anything else is rejected, never guessed."""
        users = await self._store.device_users(device.device_id)
        if user_id in users:
            resident = await self.registry.resident(users[user_id])
            if resident is not None and resident.site_id == device.site_id:
                return resident.resident_id
        elif not users and user_id == 1:
            return device.resident_id
        what = "unknown user (0xFF)" if user_id == ble.UNKNOWN_USER else f"user {user_id}"
        raise Rejected(
            f"BLE {uuid}: {what} of device {device.device_id!r} is not mapped to a resident",
            device.device_id,
        )

    async def _attribute(self, message: json_v1.Message, hub: Device) -> json_v1.Message:
        """Children in a hub batch: check provisioning and stamp their site/resident."""
        device_id = message.device_id
        if device_id == hub.device_id or isinstance(message, DeviceStatus):
            return message
        if hub.kind not in FORWARDERS:
            raise Rejected(
                f"device {hub.device_id!r} of kind {hub.kind.value!r} may not forward for other"
                f" devices (only: {', '.join(sorted(k.value for k in FORWARDERS))})",
                hub.device_id,
            )
        hit = self.registry.cached_device(device_id)
        child = hit[1] if hit is not None else await self.registry.device(device_id)
        if child is None or child.site_id != hub.site_id:
            raise Rejected(
                f"hub {hub.device_id!r} forwarded for unknown device {device_id!r}", hub.device_id
            )
        if child.hub_id != hub.device_id:
            raise Rejected(
                f"hub {hub.device_id!r} forwarded for device {device_id!r}, which is not"
                " registered to it",
                hub.device_id,
            )
        if isinstance(message, Reading | AlarmEvent):
            return message.owned_by(child.site_id, child.resident_id)
        return message

    def _check_times(self, messages: list[json_v1.Message], device: Device) -> None:
        """Every timestamp a message carries within :attr:`time_bounds` of now."""
        now = self.clock.now()
        violation = self.time_bounds.violation
        checked = None  # the readings of one message share one timestamp: check it once
        for message in messages:
            ts = message.ts
            if ts is None or ts is checked:
                continue
            reason = violation(ts, now, retimed=isinstance(message, _RETIMED))
            if reason is not None:
                raise Rejected(reason, device.device_id)
            checked = ts
