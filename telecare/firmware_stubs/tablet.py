"""A simulated care-home tablet: publishes NEWS2 observation sets over MQTT (protocol v1,
``observation`` channel) and reads each set's result on its reply topic,
``<prefix>/_gateway/tablets/<device id>/result`` (``docs/protocol.md``).

Used by ``telecare demo`` (a tablet taking rounds in the simulated care home), the tests
and the console benchmark. :func:`round_values` makes plausible sets whose scores drift
for a few residents, so NEWS2 trends show on the console within a minute.

Resource handling: on top of :class:`MqttDevice`'s connection, the tablet owns one task,
``tablet-replies-<id>``, that reads replies into the futures of :meth:`Tablet.observe`
callers; leaving the context cancels it and fails waiting callers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self

from telecare.devices.codecs import json_v1
from telecare.firmware_stubs.mqtt_device import MqttDevice

__all__ = ["Tablet", "round_values", "run_rounds"]


def round_values(rnd: random.Random, deterioration: float = 0.0) -> dict[str, Any]:
    """One resident's observation set: normal with noise, pushed towards a higher NEWS2 by
    ``deterioration`` (0 = well, 1 = very unwell)."""
    d = max(0.0, min(1.0, deterioration))
    return {
        "respiration_rate": round(16 + rnd.uniform(-2, 2) + 10 * d),
        "spo2": round(min(100.0, 97 + rnd.uniform(-1, 1.5) - 8 * d)),
        "on_oxygen": d > 0.8,
        "systolic_bp": round(124 + rnd.uniform(-10, 10) - 30 * d),
        "pulse": round(76 + rnd.uniform(-8, 8) + 40 * d),
        "consciousness": "A" if d < 0.9 else "C",
        "temperature": round(36.8 + rnd.uniform(-0.3, 0.3) + 2.0 * d, 1),
    }


class Tablet(MqttDevice):
    """A care-home iPad publishing observation sets and reading their NEWS2 results."""

    def reply_topic(self) -> str:
        return f"{self.prefix}/_gateway/tablets/{self.device_id}/result"

    async def __aenter__(self) -> Self:
        self._waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}
        await super().__aenter__()
        assert self._client is not None
        await self._client.subscribe(self.reply_topic(), qos=1)
        self._reader = asyncio.create_task(self._read(), name=f"tablet-replies-{self.device_id}")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        for future in self._waiting.values():
            future.cancel()
        await super().__aexit__(exc_type, exc, tb)

    async def _read(self) -> None:
        assert self._client is not None
        async for message in self._client.messages:
            if not isinstance(message.payload, bytes):
                continue
            with contextlib.suppress(ValueError):
                doc = json.loads(message.payload)
                future = self._waiting.pop(str(doc.get("msg_id")), None)
                if future is not None and not future.done():
                    future.set_result(doc)

    async def send(
        self,
        resident_id: str,
        values: dict[str, Any],
        *,
        msg_id: str | None = None,
        ts: datetime | None = None,
    ) -> str:
        """Publish one observation set; return its ``msg_id`` (no wait for the result)."""
        msg_id = msg_id or self.next_msg_id()
        payload = json_v1.encode_observation(msg_id, ts or datetime.now(UTC), resident_id, **values)
        await self.publish("observation", payload)
        return msg_id

    async def observe(
        self,
        resident_id: str,
        values: dict[str, Any],
        *,
        msg_id: str | None = None,
        ts: datetime | None = None,
        timeout: float = 10.0,
    ) -> dict[str, Any]:
        """Publish one observation set and return the gateway's reply: the NEWS2 result
        (``total``, ``risk``, ``advice``, ...). ``TimeoutError`` if none comes in time
        (a rejected set gets no reply: it is a dead letter)."""
        msg_id = msg_id or self.next_msg_id()
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[msg_id] = future
        try:
            await self.send(resident_id, values, msg_id=msg_id, ts=ts)
            return await asyncio.wait_for(future, timeout)
        finally:
            self._waiting.pop(msg_id, None)


async def run_rounds(
    tablet: Tablet,
    residents: Sequence[str],
    *,
    interval: float = 3.0,
    seed: int = 11,
    count: int | None = None,
    on_result: Callable[[str, dict[str, Any]], None] | None = None,
) -> int:
    """Take observation rounds: every ``interval`` seconds one set for the next resident,
    first set at once. The second resident deteriorates over about 8 rounds and the
    fourth recovers, so NEWS2 trends show within a minute. ``on_result(resident, reply)``
    sees each reply (a set whose reply does not come within 10 s is skipped). Returns
    the number of sets sent (after ``count``, or when cancelled)."""
    rnd = random.Random(seed)
    sent = 0
    rounds = 0
    while count is None or sent < count:
        for index, resident in enumerate(residents):
            if count is not None and sent >= count:
                break
            progress = min(1.0, rounds / 8)
            deterioration = {1: progress, 3: 1.0 - progress}.get(index, 0.05)
            values = round_values(rnd, deterioration)
            try:
                reply = await tablet.observe(resident, values)
            except TimeoutError:
                reply = None
            sent += 1
            if reply is not None and on_result is not None:
                on_result(resident, reply)
            await asyncio.sleep(interval)
        rounds += 1
    return sent
