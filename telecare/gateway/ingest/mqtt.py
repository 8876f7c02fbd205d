"""MQTT ingest: subscribe to protocol v1, hand each message to the pipeline, acknowledge it
to the broker only once the pipeline has stored (or spooled) what it carried.

Delivery contract
    Subscriptions are QoS 1 on a persistent session (stable client id,
    ``clean_session=False``): while the gateway is away the broker keeps the subscription
    and queues QoS 1 messages for it. The PUBACK of a message is sent by
    :func:`manual_ack` only after ``handler(envelope)`` (or ``group_handler`` for its
    group) has returned, i.e. after the pipeline stored it; a crash before that leaves
    the message unacknowledged and the broker redelivers it to the next gateway with the
    same client id. The pipeline is idempotent, so a redelivery stores nothing twice.

Ordering
    Messages on one topic (one device and channel) are processed one at a time in arrival
    order, so an alarm and its restore stay in sequence; different topics proceed in
    parallel. Plain ``reading`` messages are the exception: each carries its own
    timestamp and idempotency key, so they are processed concurrently even from one
    device (a batching store can then put many into one write). At most
    ``max_inflight`` messages are processed at once (the broker's own inflight limit is
    usually lower and is what really bounds it).

Grouping (the hot path)
    Whatever has already arrived is taken from the client's queue in one go instead of
    one ``async for`` step per message. With a ``group_handler`` (the pipeline's
    ``handle_group``), the plain ``reading`` messages taken together are handled as one
    group in one task: decoded one by one, their readings stored in one write, then
    each message acknowledged; if storing fails, none of them is. Without one, each
    message goes to ``handler`` in its own task.

Gateway presence
    The connection carries a last will: ``{"v":1,"online":false}`` retained on
    ``<prefix>/_gateway/status``; on every (re)connect ``online: true`` is published there,
    retained. Devices' own online/offline (their last will and retained status) arrives on
    ``<prefix>/<site>/<device>/status`` and is stored by the pipeline like any message.
    A retained message the broker replays because the gateway (re)subscribed arrives with
    the RETAIN flag set (MQTT 3.1.1 3.3.1.3: set only for a new subscription's replay,
    cleared on a live delivery); the envelope says so (``Envelope.retained``), because
    such a message was published at some unknown time before, maybe days ago: the
    pipeline must not take the moment it arrived for the time of a device's last will.

Lanes
    The gateway runs two of these (``gateway/ingest/lanes.py``): the telemetry session
    above, and the alarm lane's own session (its own client id, ``subscriptions`` to the
    alarm channels only, no presence topic). ``skip`` names topics the telemetry
    session acknowledges without processing, because the alarm lane handles its own
    copy (counted in ``skipped``).

Resource handling
    :class:`MqttIngest` is an async context manager running one supervised loop,
    ``mqtt-ingest`` (or ``name``: the alarm lane's is ``mqtt-alarm-lane``;
    :mod:`telecare.gateway.tasks`), in the gateway's supervisor (or a private one), whose
    step connects, subscribes and receives until the connection ends; it is the only
    long-running task here. The messages being processed are tasks of one
    ``TaskGroup`` per connection, so none outlives its connection. When the context
    exits the loop is cancelled and awaited; messages being processed are cancelled and
    stay unacknowledged, so the broker redelivers them.

Error handling
    Connection loss, a refused connection or a refused subscription (SUBACK failure, e.g.
    an ACL), or a network error (``OSError``) -> reconnect and resubscribe with
    :class:`~gateway.backoff.Backoff`, forever, logged (``mqtt_disconnected``,
    ``loop_retry``). Any other exception ends the loop loudly (``loop_failed``) and
    stops the gateway. A message whose processing raises (storage away and nothing to
    spool to) is *not* acknowledged: the connection is dropped at once so the broker redelivers it,
    and everything after it, on reconnect. Nothing else makes processing raise: the
    pipeline dead-letters bad payloads and poison messages (any other exception while
    decoding or processing one message, ``gateway.failures``) and returns, so the
    message is acknowledged and the next one handled.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import Any, Self

import aiomqtt
import paho.mqtt.client as paho

from telecare.gateway.backoff import Backoff
from telecare.gateway.config import MqttConfig
from telecare.gateway.envelope import Envelope
from telecare.gateway.logging import get_logger
from telecare.gateway.tasks import Loop, Loops, Supervisor
from telecare.rules.clock import Clock

__all__ = [
    "MqttIngest",
    "SubscriptionRefused",
    "enable_manual_ack",
    "gateway_topic",
    "manual_ack",
    "take_queued",
]

log = get_logger("telecare.ingest.mqtt")

Handler = Callable[[Envelope], Awaitable[None]]
GroupHandler = Callable[[Sequence[Envelope]], Awaitable[None]]


# The only places that reach into aiomqtt's internals: paho-mqtt 2.x can hold back the
# PUBACK (``manual_ack_set``) until we call ``ack(mid, qos)``; ``take_queued`` drains
# aiomqtt's incoming queue.
def enable_manual_ack(client: aiomqtt.Client) -> None:
    """Make ``client`` send PUBACKs only when :func:`manual_ack` is called."""
    paho_client: paho.Client = client._client
    paho_client.manual_ack_set(True)


def manual_ack(client: aiomqtt.Client, message: aiomqtt.Message) -> None:
    """Send the PUBACK for ``message`` (nothing for QoS 0)."""
    if message.qos > 0:
        paho_client: paho.Client = client._client
        paho_client.ack(message.mid, message.qos)


def take_queued(client: aiomqtt.Client, limit: int) -> list[aiomqtt.Message]:
    """Up to ``limit`` messages already received and waiting in ``client``'s queue,
    without waiting (the third reach into aiomqtt: its incoming queue, which
    ``client.messages`` reads one message at a time at the cost of a task and an
    ``asyncio.wait`` each)."""
    queue: asyncio.Queue[aiomqtt.Message] = client._queue
    taken: list[aiomqtt.Message] = []
    while len(taken) < limit and not queue.empty():
        taken.append(queue.get_nowait())
    return taken


def _calling(on_arrival: Callable[[], object]) -> type[asyncio.Queue[aiomqtt.Message]]:
    """An incoming queue for aiomqtt (its ``queue_type``) that calls ``on_arrival`` as
    each message is put in: in the client's read callback, before any task sees it."""

    class ArrivalQueue(asyncio.Queue[aiomqtt.Message]):
        def put_nowait(self, item: aiomqtt.Message) -> None:
            on_arrival()
            super().put_nowait(item)

    return ArrivalQueue


def gateway_topic(topic_prefix: str, name: str) -> str:
    """The gateway's own topics (``status``, ``deadletter``): ``<prefix>/_gateway/<name>``.

    ``_gateway`` can never be a site id (ids start with a letter or digit), and the topic
    has one level fewer than the device topics, so the ingest subscription never sees it.
    """
    return f"{topic_prefix.rstrip('/')}/_gateway/{name}"


def _status_payload(online: bool) -> bytes:
    return json.dumps({"v": 1, "online": online}, separators=(",", ":")).encode()


class SubscriptionRefused(aiomqtt.MqttError):
    """The broker refused our subscription (an ACL, usually): retried with backoff."""


class _ProcessingFailed(aiomqtt.MqttError):
    """A message could not be stored; leaving the connection makes the broker resend it."""


class _Connection:
    """What the processing tasks of one connection share: the in-flight bound and
    whether a message has failed (after which nothing more is acknowledged on it)."""

    def __init__(self, inflight: asyncio.Semaphore) -> None:
        #: Bounds how many messages are being processed at once (MQTT receive maximum).
        #: One per connection: slots of tasks cancelled on the way out die with it.
        self.inflight = inflight
        self.failed = False

    def fail(self, error: Exception) -> _ProcessingFailed:
        """Mark the connection failed; the error that ends it."""
        self.failed = True
        return _ProcessingFailed(f"message processing failed: {error!r}")


def _first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """What ended a connection's task group: a message that failed to be stored, before
    the connection error (or cancellation) that may have followed it."""
    errors = group.exceptions
    return next((e for e in errors if isinstance(e, _ProcessingFailed)), errors[0])


#: Channels whose messages need no ordering between them (see "Ordering" above).
UNORDERED_CHANNELS = frozenset({"reading"})


class _TopicOrder:
    """Per-topic locks taken in arrival order; a lock is forgotten once nobody holds or
    waits for it, so the table stays as small as the number of busy topics."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, topic: str) -> Any:
        lock, users = self._locks.get(topic, (None, 0))
        if lock is None:
            lock = asyncio.Lock()
        self._locks[topic] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[topic]
            if users <= 1:
                del self._locks[topic]
            else:
                self._locks[topic] = (lock, users - 1)

    def __len__(self) -> int:
        return len(self._locks)


class MqttIngest:
    """One persistent MQTT session feeding ``handler`` (see the module docstring)."""

    def __init__(
        self,
        config: MqttConfig,
        handler: Handler,
        clock: Clock,
        *,
        backoff: Backoff | None = None,
        group_handler: GroupHandler | None = None,
        supervisor: Supervisor | None = None,
        subscriptions: Sequence[str] | None = None,
        presence: bool = True,
        skip: Callable[[str], bool] | None = None,
        name: str = "mqtt-ingest",
        on_arrival: Callable[[], object] | None = None,
    ) -> None:
        self.config = config
        #: Topic filters (QoS 1); default: every device topic, ``<prefix>/+/+/+``.
        self.subscriptions = tuple(subscriptions or (f"{config.topic_prefix}/+/+/+",))
        #: Publish the gateway's online status and last will (one session does).
        self.presence = presence
        #: Topics acknowledged without processing (another lane handles them).
        self.skip = skip
        #: Called as each message is read off the connection, before any task sees it.
        self.on_arrival = on_arrival
        self.name = name
        self.handler = handler
        #: Handles messages of the unordered channels together (see "Ordering" above);
        #: without it each message goes to ``handler`` on its own.
        self.group_handler = group_handler
        self.clock = clock
        self.backoff = backoff or Backoff()
        self.connected = asyncio.Event()
        #: Connections made so far (1 after the first connect; more after reconnects).
        self.connections = 0
        #: Messages acknowledged to the broker / left unacknowledged after a failure.
        self.acked = 0
        self.not_stored = 0
        self.skipped = 0
        #: Set once the broker has granted the subscriptions (it then holds the session).
        self.subscribed = False
        self._loops = Loops(supervisor)
        self._order = _TopicOrder()

    @property
    def subscription(self) -> str:
        return ", ".join(self.subscriptions)

    @property
    def status_topic(self) -> str:
        return gateway_topic(self.config.topic_prefix, "status")

    async def __aenter__(self) -> Self:
        await self._loops.start(
            Loop(self.name, self._session, retry=_reconnect, backoff=self.backoff)
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._loops.stop()

    def _make_client(self) -> aiomqtt.Client:
        c = self.config
        tls_context = None
        if c.tls:
            tls_context = ssl.create_default_context(cafile=c.ca_file or None)
        client = aiomqtt.Client(
            c.host,
            c.port,
            username=c.username or None,
            password=c.password.reveal() or None,
            identifier=c.client_id,
            clean_session=c.clean_session,
            keepalive=c.keepalive,
            max_inflight_messages=c.max_inflight,
            tls_context=tls_context,
            will=aiomqtt.Will(self.status_topic, _status_payload(False), qos=1, retain=True)
            if self.presence
            else None,
            queue_type=None if self.on_arrival is None else _calling(self.on_arrival),
        )
        enable_manual_ack(client)
        return client

    async def _session(self) -> None:
        """Connect, subscribe and receive until the connection ends (which raises an
        ``MqttError``; the supervised loop reconnects after its backoff)."""
        try:
            async with self._make_client() as client:
                await self._subscribe(client)
                if self.presence:
                    await client.publish(
                        self.status_topic, _status_payload(True), qos=1, retain=True
                    )
                self.backoff.reset()
                self.connections += 1
                self.connected.set()
                log.info(
                    "mqtt_connected",
                    session=self.name,
                    host=self.config.host,
                    port=self.config.port,
                    subscription=self.subscription,
                    connections=self.connections,
                )
                await self._receive(client)
        except aiomqtt.MqttError as exc:
            log.warning("mqtt_disconnected", session=self.name, error=str(exc))
            raise
        finally:
            self.connected.clear()

    async def _subscribe(self, client: aiomqtt.Client) -> None:
        granted = await client.subscribe([(t, 1) for t in self.subscriptions], timeout=10)
        if _refused(granted):
            raise SubscriptionRefused(
                f"broker refused the subscription to {self.subscription!r} "
                f"(granted {list(granted)!r}); check the ACL for user "
                f"{self.config.username or '(anonymous)'!r}"
            )
        self.subscribed = True

    async def _receive(self, client: aiomqtt.Client) -> None:
        """Receive until the connection drops or a message fails to be stored.

        The receive loop runs in the ``mqtt-ingest`` loop's own step (no task of its own),
        and every message being processed is a task of one ``TaskGroup`` per connection.
        The first processing task that fails cancels the receive loop and every other
        message (all unacknowledged; the group does what a hand-made "failure watch"
        task used to) and leaves with :class:`_ProcessingFailed`; a connection error
        ends the receive loop, and the messages being processed, the same way. Either
        is an ``MqttError``, which the supervised loop retries by reconnecting.
        """
        conn = _Connection(asyncio.Semaphore(self.config.max_inflight))
        error: BaseException | None = None
        try:
            async with asyncio.TaskGroup() as tasks:
                await self._receive_loop(client, tasks, conn)
        except BaseExceptionGroup as group:
            error = _first_error(group)
        if error is not None:
            raise error  # outside the except block: no "during handling" chain

    async def _receive_loop(
        self, client: aiomqtt.Client, tasks: asyncio.TaskGroup, conn: _Connection
    ) -> None:
        """Hand what arrives to processing tasks in ``tasks``, taking whatever has
        already arrived from the client's queue in one go (see :func:`take_queued`).
        Messages of ordered channels are processed each in its own task, in order per
        topic; those of unordered channels go together to ``group_handler`` in one task
        per group (or each to ``handler`` in its own task when there is none). Returns
        or raises only when the connection ends or a message failed."""
        inflight = conn.inflight
        grouping = self.group_handler is not None
        skip = self.skip
        async for first in client.messages:
            arrived = [first]
            while arrived:
                group: list[aiomqtt.Message] = []
                for message in arrived:
                    if skip is not None and skip(message.topic.value):
                        manual_ack(client, message)  # the alarm lane has its own copy
                        self.skipped += 1
                        continue
                    if group and inflight.locked():  # start it before waiting for room
                        tasks.create_task(self._process_group(client, group, conn))
                        group = []
                    await inflight.acquire()
                    if conn.failed:
                        for _ in range(len(group) + 1):
                            inflight.release()
                        return
                    if grouping and _unordered(message.topic.value):
                        group.append(message)
                    else:
                        tasks.create_task(self._process(client, message, conn))
                if group:
                    tasks.create_task(self._process_group(client, group, conn))
                arrived = take_queued(client, self.config.max_inflight)

    async def _process(
        self, client: aiomqtt.Client, message: aiomqtt.Message, conn: _Connection
    ) -> None:
        topic = message.topic.value
        try:
            if _unordered(topic):
                await self._store_and_ack(client, message, topic, conn)
            else:
                async with self._order.hold(topic):
                    await self._store_and_ack(client, message, topic, conn)
        except Exception as exc:  # storage away: no ack; the broker resends on reconnect
            self.not_stored += 1
            log.error("mqtt_message_not_stored", topic=topic, error=repr(exc))
            raise conn.fail(exc) from exc
        finally:
            conn.inflight.release()

    async def _store_and_ack(
        self, client: aiomqtt.Client, message: aiomqtt.Message, topic: str, conn: _Connection
    ) -> None:
        if conn.failed:
            return  # a message before it failed: leave it for redelivery
        await self.handler(self._envelope(message, topic))
        manual_ack(client, message)
        self.acked += 1

    async def _process_group(
        self, client: aiomqtt.Client, messages: list[aiomqtt.Message], conn: _Connection
    ) -> None:
        """Messages of unordered channels through ``group_handler``, acknowledged once it
        has returned (everything they carried is stored), or none of them."""
        assert self.group_handler is not None
        try:
            if conn.failed:
                return  # leave them for redelivery
            await self.group_handler([self._envelope(m, m.topic.value) for m in messages])
            for message in messages:
                manual_ack(client, message)
            self.acked += len(messages)
        except Exception as exc:  # storage away: no ack; the broker resends on reconnect
            self.not_stored += len(messages)
            log.error(
                "mqtt_message_not_stored",
                topic=messages[0].topic.value,
                messages=len(messages),
                error=repr(exc),
            )
            raise conn.fail(exc) from exc
        finally:
            for _ in messages:
                conn.inflight.release()

    def _envelope(self, message: aiomqtt.Message, topic: str) -> Envelope:
        payload = message.payload
        if not isinstance(payload, bytes | bytearray):
            payload = str(payload).encode()
        return Envelope(
            "mqtt", topic, bytes(payload), self.clock.now(), retained=bool(message.retain)
        )


def _reconnect(exc: BaseException) -> bool:
    """What the ingest loop retries: the connection failing or ending (``MqttError``,
    which includes a refused subscription and a message that could not be stored) and
    the network (``OSError``). Anything else stops the gateway (``gateway.tasks``)."""
    return isinstance(exc, aiomqtt.MqttError | OSError)


def _unordered(topic: str) -> bool:
    """Whether messages on ``topic`` need no ordering (see "Ordering" above)."""
    return topic[topic.rfind("/") + 1 :] in UNORDERED_CHANNELS


def _refused(granted: Sequence[Any]) -> bool:
    """Whether a SUBACK's granted list refuses any subscription (v3 0x80 or a v5 code)."""
    for code in granted:
        is_failure = getattr(code, "is_failure", None)
        if is_failure is not None:
            if is_failure:
                return True
        elif int(code) >= 0x80:
            return True
    return False
