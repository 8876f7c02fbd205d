"""Simulated MQTT devices speaking protocol v1 (``docs/protocol.md``): a pendant, a fall
detector, a home hub that forwards for its child sensors. Used by ``telecare demo``,
``telecare simulate``, the tests and the load generators.

Each device is an async context manager holding one MQTT connection with its own client
id and credentials, a retained ``status`` of ``online`` and a last will that sets it
``offline`` if the connection drops without a clean disconnect.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self

import aiomqtt

from telecare.devices.codecs import json_v1
from telecare.devices.model import EventType, Phase

__all__ = ["Hub", "MqttDevice", "Pendant"]


class MqttDevice:
    """One device on its own MQTT connection."""

    def __init__(
        self,
        site_id: str,
        device_id: str,
        *,
        host: str = "127.0.0.1",
        port: int = 1883,
        prefix: str = "telecare/v1",
        password: str | None = None,
    ) -> None:
        self.site_id = site_id
        self.device_id = device_id
        self.host = host
        self.port = port
        self.prefix = prefix
        self.password = password
        self._seq = itertools.count(1)
        self._boot = datetime.now(UTC).strftime("%Y%m%d%H%M%S%f")
        self._client: aiomqtt.Client | None = None

    def topic(self, channel: str) -> str:
        return f"{self.prefix}/{self.site_id}/{self.device_id}/{channel}"

    def next_msg_id(self) -> str:
        """Unique per device across restarts: boot time plus a counter."""
        return f"{self._boot}-{next(self._seq)}"

    async def __aenter__(self) -> Self:
        self._client = aiomqtt.Client(
            self.host,
            self.port,
            identifier=f"dev-{self.device_id}",
            username=self.device_id if self.password else None,
            password=self.password,
            will=aiomqtt.Will(self.topic("status"), json_v1.encode_status(False), 1, True),
        )
        await self._client.__aenter__()
        await self.publish("status", json_v1.encode_status(True, datetime.now(UTC)), retain=True)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        try:
            await client.publish(
                self.topic("status"), json_v1.encode_status(False, datetime.now(UTC)), 1, True
            )
        finally:
            await client.__aexit__(exc_type, exc, tb)

    async def publish(self, channel: str, payload: bytes, *, retain: bool = False) -> None:
        if self._client is None:
            raise RuntimeError(f"device {self.device_id} is not connected")
        await self._client.publish(self.topic(channel), payload, qos=1, retain=retain)

    async def event(
        self,
        type_: EventType,
        phase: Phase = Phase.ALARM,
        *,
        msg_id: str | None = None,
        ts: datetime | None = None,
    ) -> str:
        msg_id = msg_id or self.next_msg_id()
        await self.publish(
            "event", json_v1.encode_event(msg_id, ts or datetime.now(UTC), type_, phase)
        )
        return msg_id

    async def heartbeat(self, battery: float | None = None) -> str:
        msg_id = self.next_msg_id()
        await self.publish(
            "heartbeat", json_v1.encode_heartbeat(msg_id, datetime.now(UTC), battery)
        )
        return msg_id

    async def readings(
        self, values: list[tuple[str, float, str]], *, ts: datetime | None = None
    ) -> str:
        msg_id = self.next_msg_id()
        await self.publish(
            "reading", json_v1.encode_readings(msg_id, ts or datetime.now(UTC), values)
        )
        return msg_id


class Pendant(MqttDevice):
    """A personal alarm pendant (with an optional built-in fall detector)."""

    async def press(self) -> str:
        return await self.event(EventType.PENDANT)

    async def fall(self) -> str:
        return await self.event(EventType.FALL)

    async def cancel(self) -> str:
        return await self.event(EventType.CANCEL)


class Hub(MqttDevice):
    """A home hub: forwards its child sensors' events and readings in batches."""

    async def forward(self, items: list[dict[str, Any]], *, urgent: bool = False) -> str:
        """``items``: ``{"device_id", "channel", ...v1 fields}`` without ``v``. ``urgent``:
        publish on the ``urgent`` channel (children's events, sent at once: the gateway's
        alarm lane) instead of ``batch`` (telemetry)."""
        msg_id = self.next_msg_id()
        await self.publish("urgent" if urgent else "batch", json_v1.encode_batch(msg_id, items))
        return msg_id

    def child_event(
        self, child_id: str, type_: EventType, phase: Phase = Phase.ALARM
    ) -> dict[str, Any]:
        return {
            "device_id": child_id,
            "channel": "event",
            "msg_id": self.next_msg_id(),
            "ts": datetime.now(UTC).isoformat(),
            "type": type_.value,
            "phase": phase.value,
        }

    def child_readings(
        self, child_id: str, values: Sequence[tuple[str, float, str]]
    ) -> dict[str, Any]:
        return {
            "device_id": child_id,
            "channel": "reading",
            "msg_id": self.next_msg_id(),
            "ts": datetime.now(UTC).isoformat(),
            "readings": [{"metric": m, "value": v, "unit": u} for m, v, u in values],
        }
