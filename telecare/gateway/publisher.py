"""The gateway's outbound MQTT messages: one publisher on its own connection.

Everything the gateway publishes goes through :class:`MqttPublisher`: dead letters on
``<prefix>/_gateway/deadletter`` (``gateway.ingest.deadletter``), dispatches to
responder apps on ``<prefix>/_gateway/responders/<app>/dispatch`` (the MQTT notifier
transport, ``gateway.dispatching``) and NEWS2 results to tablets on
``<prefix>/_gateway/tablets/<tablet>/result`` (``gateway.tablet_reply``). The
``Gateway`` builds it before anything that publishes and hands its
:meth:`~MqttPublisher.publish` to them, so no component reaches another's connection
and nothing depends on the order the others start in. Ingest
connections only receive (and announce the gateway's presence on their session).

Identity
    Its own MQTT session: the shipped broker binds client ids to usernames
    (``use_username_as_clientid``), so a second connection under the gateway's username
    would take the ingest session over. The publisher logs in as
    ``<mqtt.username>-out`` (client id ``<mqtt.client_id>-out``) with the gateway's
    password and a clean session (it subscribes to nothing);
    ``telecare device mosquitto-passwd --gateway-user`` writes both users and the shipped
    ACL lets both write ``<prefix>/_gateway/#``.

Resource handling
    An async context manager running one supervised loop, ``mqtt-publisher``
    (:mod:`telecare.gateway.tasks`), that connects and stays connected until the context
    exits.

Error handling
    Connection loss or refusal (``MqttError``, ``OSError``) -> reconnect with
    :class:`~telecare.gateway.backoff.Backoff`, forever, logged (``loop_retry``).
    :meth:`~MqttPublisher.publish` raises :class:`PublishFailed` while disconnected or
    when the broker does not confirm in time; callers retry (the dead-letter queue) or
    report a temporary delivery error (the notifier cascade).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from types import TracebackType
from typing import Self

import aiomqtt

from telecare.gateway.backoff import Backoff
from telecare.gateway.config import MqttConfig
from telecare.gateway.logging import get_logger
from telecare.gateway.tasks import Loop, Loops, Supervisor

__all__ = ["PUBLISHER_SUFFIX", "MqttPublisher", "PublishFailed", "publisher_identity"]

log = get_logger("telecare.publisher")

#: Appended to the gateway's username and client id for the publisher's own session.
PUBLISHER_SUFFIX = "-out"
#: Seconds the broker has to confirm a QoS 1 publish.
PUBLISH_TIMEOUT_S = 10.0


class PublishFailed(RuntimeError):
    """Not published: the publisher is disconnected or the broker did not confirm. (A
    ``RuntimeError``, what publishing while disconnected raised before: the MQTT notifier
    transport turns it into a temporary delivery error.)"""


def publisher_identity(config: MqttConfig) -> tuple[str, str]:
    """``(username, client_id)`` of the publisher's session (username empty when the
    gateway connects without one)."""
    username = f"{config.username}{PUBLISHER_SUFFIX}" if config.username else ""
    return username, f"{config.client_id}{PUBLISHER_SUFFIX}"


class MqttPublisher:
    """Publishes the gateway's outbound messages (see the module docstring)."""

    def __init__(
        self,
        config: MqttConfig,
        *,
        backoff: Backoff | None = None,
        supervisor: Supervisor | None = None,
    ) -> None:
        self.config = config
        self.backoff = backoff or Backoff()
        self.published = 0
        self._client: aiomqtt.Client | None = None
        self._loops = Loops(supervisor)

    @property
    def connected(self) -> bool:
        return self._client is not None

    async def __aenter__(self) -> Self:
        await self._loops.start(
            Loop("mqtt-publisher", self._session, retry=_reconnect, backoff=self.backoff)
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._loops.stop()

    async def publish(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False
    ) -> None:
        """Publish ``payload`` on ``topic``; returns once the broker has it (QoS 1)."""
        client = self._client
        if client is None:
            raise PublishFailed(f"not published to {topic}: the MQTT publisher is not connected")
        try:
            await client.publish(topic, payload, qos=qos, retain=retain, timeout=PUBLISH_TIMEOUT_S)
        except aiomqtt.MqttError as exc:
            raise PublishFailed(f"not published to {topic}: {exc}") from exc
        self.published += 1

    def _make_client(self) -> aiomqtt.Client:
        c = self.config
        username, client_id = publisher_identity(c)
        tls_context = ssl.create_default_context(cafile=c.ca_file or None) if c.tls else None
        return aiomqtt.Client(
            c.host,
            c.port,
            username=username or None,
            password=c.password.reveal() or None,
            identifier=client_id,
            clean_session=True,
            keepalive=c.keepalive,
            tls_context=tls_context,
        )

    async def _session(self) -> None:
        """Connect and stay connected until the connection drops (``MqttError``)."""
        client = self._make_client()
        await _connect(client, timeout=float(self.config.keepalive))
        try:
            self._client = client
            self.backoff.reset()
            log.info("mqtt_publisher_connected", host=self.config.host, port=self.config.port)
            async for _ in client.messages:  # subscribed to nothing: ends on disconnect
                pass
        finally:
            self._client = None
            await client.__aexit__(None, None, None)


async def _connect(client: aiomqtt.Client, *, timeout: float) -> None:
    """Enter ``client``; if cancelled meanwhile (the gateway failed to start), let the
    attempt finish (at most ``timeout`` s) and disconnect, so no task of the client is
    left running, then re-raise the cancellation."""
    attempt = asyncio.ensure_future(client.__aenter__())
    try:
        await asyncio.shield(attempt)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(timeout):
                await attempt
            await client.__aexit__(None, None, None)
        raise


def _reconnect(exc: BaseException) -> bool:
    """What the publisher's loop retries: the connection (``MqttError``, ``OSError``)."""
    return isinstance(exc, aiomqtt.MqttError | OSError)
