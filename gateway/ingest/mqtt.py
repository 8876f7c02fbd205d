"""MQTT ingest: subscribe to protocol v1, hand each message to the pipeline, acknowledge it
to the broker only once the pipeline has stored (or spooled) what it carried.

Resource handling: :class:`MqttIngest` is an async context manager owning one named
task, ``mqtt-ingest``, which connects, subscribes and receives until the
context exits (then it is cancelled and awaited).

Error handling: connection loss -> reconnect with :class:`~gateway.backoff.Backoff`
forever (logged); the persistent session (stable client id, ``clean_session=False``) makes
the broker keep our subscription and queue QoS 1 messages while we are away. A message
whose processing fails with a storage error is *not* acknowledged: we drop the connection
so the broker redelivers it (and everything after it) on reconnect. Bad payloads never
fail processing (the pipeline dead-letters them).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Self

import aiomqtt
import paho.mqtt.client as paho

from gateway.backoff import Backoff
from gateway.config import MqttConfig
from gateway.envelope import Envelope
from gateway.logging import get_logger
from rules.clock import Clock

__all__ = ["MqttIngest", "enable_manual_ack", "manual_ack"]

log = get_logger("telecare.ingest.mqtt")

Handler = Callable[[Envelope], Awaitable[None]]


# The only two places that reach into aiomqtt's wrapped paho client: paho-mqtt 2.x can hold
# back the PUBACK (``manual_ack_set``) until we call ``ack(mid, qos)``.
def enable_manual_ack(client: aiomqtt.Client) -> None:
    paho_client: paho.Client = client._client
    paho_client.manual_ack_set(True)


def manual_ack(client: aiomqtt.Client, message: aiomqtt.Message) -> None:
    if message.qos > 0:
        paho_client: paho.Client = client._client
        paho_client.ack(message.mid, message.qos)


class MqttIngest:
    def __init__(
        self,
        config: MqttConfig,
        handler: Handler,
        clock: Clock,
        *,
        backoff: Backoff | None = None,
    ) -> None:
        self.config = config
        self.handler = handler
        self.clock = clock
        self.backoff = backoff or Backoff()
        self.connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._client: aiomqtt.Client | None = None
        self._locks: dict[str, asyncio.Lock] = {}
        # Bounds how many messages are being processed at once (MQTT receive maximum).
        self._inflight = asyncio.Semaphore(config.max_inflight)

    @property
    def subscription(self) -> str:
        return f"{self.config.topic_prefix}/+/+/+"

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self._run(), name="mqtt-ingest")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def publish(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False
    ) -> None:
        """Publish through the ingest connection (dead-letter topic, responder app)."""
        client = self._client
        if client is None:
            raise RuntimeError("MQTT is not connected")
        await client.publish(topic, payload, qos=qos, retain=retain)

    def _make_client(self) -> aiomqtt.Client:
        c = self.config
        tls_context = None
        if c.tls:
            tls_context = ssl.create_default_context(cafile=c.ca_file or None)
        client = aiomqtt.Client(
            c.host,
            c.port,
            username=c.username or None,
            password=c.password or None,
            identifier=c.client_id,
            clean_session=c.clean_session,
            keepalive=c.keepalive,
            max_inflight_messages=c.max_inflight,
            tls_context=tls_context,
        )
        enable_manual_ack(client)
        return client

    async def _run(self) -> None:
        while True:
            try:
                async with self._make_client() as client:
                    self._client = client
                    await client.subscribe(self.subscription, qos=1)
                    self.backoff.reset()
                    self.connected.set()
                    log.info(
                        "mqtt_connected",
                        host=self.config.host,
                        port=self.config.port,
                        subscription=self.subscription,
                    )
                    await self._receive(client)
            except aiomqtt.MqttError as exc:
                self.connected.clear()
                self._client = None
                delay = self.backoff.next_delay()
                log.warning("mqtt_disconnected", error=str(exc), retry_in=round(delay, 2))
                await asyncio.sleep(delay)

    async def _receive(self, client: aiomqtt.Client) -> None:
        """Process messages concurrently across devices, in order within one topic.

        A per-topic lock taken in arrival order keeps an alarm and its restore (or a
        device's readings) in sequence; different devices proceed in parallel.
        """
        failures: list[BaseException] = []
        tasks: set[asyncio.Task[None]] = set()
        try:
            async for message in client.messages:
                if failures:
                    raise aiomqtt.MqttError(f"message processing failed: {failures[0]!r}")
                await self._inflight.acquire()
                task = asyncio.create_task(self._process(client, message, failures))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _process(
        self,
        client: aiomqtt.Client,
        message: aiomqtt.Message,
        failures: list[BaseException],
    ) -> None:
        topic = str(message.topic)
        lock = self._locks.setdefault(topic, asyncio.Lock())
        try:
            async with lock:
                payload = message.payload
                if not isinstance(payload, bytes | bytearray):
                    payload = str(payload).encode()
                env = Envelope("mqtt", topic, bytes(payload), self.clock.now())
                await self.handler(env)
        except Exception as exc:  # storage away: no ack; the broker resends on reconnect
            log.error("mqtt_message_not_stored", topic=topic, error=repr(exc))
            failures.append(exc)
            return
        finally:
            self._inflight.release()
        manual_ack(client, message)
