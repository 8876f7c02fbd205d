"""The decode step: an MQTT envelope -> canonical messages, checked against provisioning.

A message is accepted only from a provisioned device publishing under its own site; a hub
may forward for child devices of the same site. Anything else raises :class:`Rejected`
with a specific reason (the pipeline dead-letters it).

BLE forwarding: a hub's ``ble`` message (``json_v1.BleForward``) carries the raw value
of a Bluetooth SIG characteristic; it is decoded here with ``devices.codecs.ble``
(0x2A5E PLX spot-check, 0x2A5F PLX continuous, 0x2A35 blood pressure) into readings
for the forwarded device, keyed by the hub message's ``msg_id``. An unsupported
characteristic or an undecodable value is rejected with the codec's reason.
"""

from __future__ import annotations

import dataclasses
import time

from devices.codecs import Malformed, ble, json_v1, registry
from devices.model import AlarmEvent, Device, Reading, Resident
from gateway.envelope import Envelope
from gateway.store.base import Store

__all__ = ["MessageDecoder", "Registry", "Rejected"]


class Rejected(Exception):
    """Input we will not accept; ``reason`` is specific and safe to log."""

    def __init__(self, reason: str, device_id: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.device_id = device_id


class Registry:
    """Provisioned devices and residents, cached; a miss re-reads the store (so a device
    provisioned while the gateway runs is accepted at once)."""

    def __init__(self, store: Store, ttl: float = 30.0) -> None:
        self._store = store
        self._ttl = ttl
        self._devices: dict[str, tuple[float, Device | None]] = {}
        self._residents: dict[str, tuple[float, Resident | None]] = {}

    async def device(self, device_id: str) -> Device | None:
        hit = self._devices.get(device_id)
        now = time.monotonic()
        if hit is not None and hit[1] is not None and now - hit[0] < self._ttl:
            return hit[1]
        found = await self._store.get_device(device_id)
        self._devices[device_id] = (now, found)
        return found

    async def resident(self, resident_id: str | None) -> Resident | None:
        if resident_id is None:
            return None
        hit = self._residents.get(resident_id)
        now = time.monotonic()
        if hit is not None and hit[1] is not None and now - hit[0] < self._ttl:
            return hit[1]
        found = await self._store.get_resident(resident_id)
        self._residents[resident_id] = (now, found)
        return found


class MessageDecoder:
    def __init__(self, store: Store, topic_prefix: str) -> None:
        self.registry = Registry(store)
        self.topic_prefix = topic_prefix

    async def decode(self, env: Envelope) -> list[json_v1.Message]:
        try:
            topic = json_v1.parse_topic(self.topic_prefix, env.origin)
        except Malformed as exc:
            raise Rejected(exc.reason) from None
        device = await self.registry.device(topic.device_id)
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
        out: list[json_v1.Message] = []
        for message in messages:
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
            convert = ble.bp_readings if isinstance(frame, ble.BloodPressure) else ble.plx_readings
            readings = convert(
                frame,
                device_id=device.device_id,
                ts=message.ts,
                msg_id=message.msg_id,
                resident_id=device.resident_id,
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

    async def _attribute(self, message: json_v1.Message, hub: Device) -> json_v1.Message:
        """Children in a hub batch: check provisioning and stamp their site/resident."""
        device_id = message.device_id
        if device_id == hub.device_id or isinstance(message, json_v1.Status):
            return message
        child = await self.registry.device(device_id)
        if child is None or child.site_id != hub.site_id:
            raise Rejected(
                f"hub {hub.device_id!r} forwarded for unknown device {device_id!r}", hub.device_id
            )
        if isinstance(message, Reading | AlarmEvent):
            return dataclasses.replace(
                message, site_id=child.site_id, resident_id=child.resident_id
            )
        return message
