"""The decode step: an MQTT envelope -> canonical messages, checked against provisioning.

A message is accepted only from a provisioned device publishing under its own site; a hub
may forward for child devices of the same site. Anything else raises :class:`Rejected`
with a specific reason (the pipeline dead-letters it).
"""

from __future__ import annotations

import dataclasses
import time

from devices.codecs import Malformed, json_v1
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
        return [await self._attribute(m, device) for m in messages]

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
