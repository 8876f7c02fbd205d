"""The alarm lane: alarm-class messages travel from the broker to the dispatch apart from
telemetry, so that no backlog of readings delays an alarm.

Why
    With one MQTT session and one in-process path, a fleet of hubs flushing readings
    faster than the gateway stores them (what hubs do after a broadband outage) put
    every alarm behind the backlog: 40 s from press to dispatch (issue 11, part 5).

What travels in the lane (:data:`ALARM_CHANNELS`)
    ``event``, ``observation`` (NEWS2 sets), ``status`` and ``urgent`` (a hub's batch of
    its children's events, sent at once; the same document as ``batch``). Readings,
    heartbeats, ``ble`` and ``batch`` are telemetry. An event that a hub reports inside
    a ``batch`` anyway reaches the lane's store path as soon as the telemetry lane
    decodes it (:attr:`Pipeline.alarm_lane <gateway.pipeline.Pipeline.alarm_lane>`); it
    has waited behind the broker's telemetry queue, which is why hubs send events on
    ``urgent`` (docs/protocol.md).

What is the lane's own
    * **Broker session and connection**: client id (and, on the shipped broker, username)
      ``<mqtt.username>-alarms`` (:func:`lane_mqtt_config`), persistent, subscribed to
      ``<prefix>/+/+/<channel>`` for the alarm channels only, so the broker's queue for
      it holds alarms and nothing else. It has no presence topic or last will (the
      telemetry session publishes the gateway's status).
    * **In-process queue**: its own :class:`~gateway.ingest.mqtt.MqttIngest` (receive
      queue, in-flight window, per-topic order) feeding its own pipeline
      (:meth:`Pipeline.lane <gateway.pipeline.Pipeline.lane>`).
    * **Store path**: its own :class:`~gateway.store.durable.DurableStore` (own readings
      batcher for observation sets, own spool ``<spool>/alarms``) over its own
      connection: a second small pool on PostgreSQL, a second connection to the same
      file on SQLite (WAL: it waits at most for the one telemetry transaction in
      progress, not for a queue of them). The dispatch repository uses it too.
    Shared: the rules engine, the dispatch service, the registry cache, the activity
    feed and the counters (one event loop; the telemetry lane yields every 2 ms).

The telemetry session still subscribes to every device topic (an unknown channel is
still dead-lettered). Once the lane's persistent session has been granted its
subscriptions (the broker then queues alarms for it even while it is away), the
telemetry session acknowledges alarm-class messages without processing them
(:func:`skip_alarms`); until then, for example while the broker refuses the lane's user,
it processes them itself, so an alarm is never dropped for a missing ACL line. The
gateway starts the lane first and gives it :data:`LANE_START_S` to subscribe before the
telemetry session connects. The lane needs persistent sessions (``clean_session =
false``, the default): with clean sessions it is not started (:func:`lane_enabled`).

Known gap: alarm-class messages queued for the telemetry session *before the lane's
session first existed* (the first start after upgrading, with a backlog) and taken after
the lane subscribed are acknowledged unprocessed. Upgrade with the gateway's queue
drained (docs/architecture.md, "The alarm lane").

Resource handling
    :func:`lane_store` is an async context manager (the lane's connection and durable
    store, closed in reverse); :func:`lane_ingest` returns an unstarted ingest that the
    gateway enters after the pipeline exists and before the telemetry ingest. Its session
    is a supervised loop (``mqtt-alarm-lane``, :mod:`telecare.gateway.tasks`) in the
    gateway's task group, retried on connection errors like ``mqtt-ingest``.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Final

from telecare.gateway.config import ALARM_LANE_SUFFIX, Config, MqttConfig, spool_path
from telecare.gateway.ingest.mqtt import MqttIngest
from telecare.gateway.pipeline import Pipeline
from telecare.gateway.store.base import Store
from telecare.gateway.store.durable import DurableStore
from telecare.gateway.store.postgres import PostgresStore
from telecare.gateway.store.spool import SpoolState
from telecare.gateway.store.sqlite import SqliteStore
from telecare.gateway.tasks import Supervisor
from telecare.rules.clock import Clock

__all__ = [
    "ALARM_CHANNELS",
    "LANE_POOL_SIZE",
    "LANE_START_S",
    "alarm_subscriptions",
    "is_alarm_topic",
    "lane_enabled",
    "lane_ingest",
    "lane_mqtt_config",
    "lane_store",
    "skip_alarms",
]

#: Channels whose messages travel in the alarm lane (see the module docstring).
ALARM_CHANNELS: Final = frozenset({"event", "observation", "status", "urgent"})
#: PostgreSQL connections of the lane's own pool: each alarm holds one at a time (event,
#: alert, dispatch), several alarms at once (a storm) several; plus the dispatch timers.
LANE_POOL_SIZE: Final = 6
#: Seconds the gateway waits for the lane to subscribe before starting telemetry.
LANE_START_S: Final = 5.0

Backend = PostgresStore | SqliteStore


def lane_enabled(mqtt: MqttConfig) -> bool:
    """Whether the gateway runs the alarm lane: configured, on persistent sessions."""
    return mqtt.alarm_lane and not mqtt.clean_session


def lane_mqtt_config(mqtt: MqttConfig) -> MqttConfig:
    """The lane's MQTT identity: ``<username>-alarms`` / ``<client_id>-alarms``, same
    password (the shipped broker binds client ids to usernames, so a second session
    needs a second user)."""
    username = mqtt.username + ALARM_LANE_SUFFIX if mqtt.username else ""
    return dataclasses.replace(
        mqtt, username=username, client_id=mqtt.client_id + ALARM_LANE_SUFFIX
    )


def alarm_subscriptions(topic_prefix: str) -> tuple[str, ...]:
    """The lane's topic filters: ``<prefix>/+/+/<channel>`` for each alarm channel."""
    prefix = topic_prefix.rstrip("/")
    return tuple(f"{prefix}/+/+/{channel}" for channel in sorted(ALARM_CHANNELS))


def is_alarm_topic(topic: str) -> bool:
    """Whether a device topic's channel is one of :data:`ALARM_CHANNELS`."""
    return topic[topic.rfind("/") + 1 :] in ALARM_CHANNELS


def skip_alarms(lane: MqttIngest) -> Callable[[str], bool]:
    """The telemetry session's ``skip``: alarm-class topics once ``lane``'s persistent
    session holds its subscriptions (the broker queues for it while it is away)."""

    def skip(topic: str) -> bool:
        return lane.subscribed and is_alarm_topic(topic)

    return skip


def _own_backend(config: Config, main: Backend) -> Backend | None:
    """A second connection to ``main``'s database (``None`` for an in-memory SQLite
    database, which a second connection would not see)."""
    sc = config.store
    if isinstance(main, PostgresStore):
        # A short pool timeout, as the main pool's: spooled rather than held up.
        return PostgresStore(
            sc.dsn.reveal(),
            schema=sc.schema,
            max_size=LANE_POOL_SIZE,
            use_timescale=sc.timescale,
            timeout=2.0,
        )
    if main.path == ":memory:":
        return None
    # Turns with the main connection, the lane's first (``gateway.turns.WriteOrder``).
    return SqliteStore(
        main.path,
        dead_letter_retention=main.dead_letter_retention,
        order=main.sql.order,
        urgent=True,
    )


@contextlib.asynccontextmanager
async def lane_store(
    config: Config,
    main: Backend,
    *,
    on_spool_state: Callable[[SpoolState], object] | None = None,
    supervisor: Supervisor | None = None,
) -> AsyncIterator[tuple[Backend, Store]]:
    """The lane's store path over ``main``'s database (migrated already): its own
    connection (the backend, for the dispatch repository) and durable store, whose loops
    (spool replayer, batcher flusher) run in ``supervisor`` (the gateway's)."""
    async with contextlib.AsyncExitStack() as stack:
        own = _own_backend(config, main)
        if own is not None:
            await stack.enter_async_context(own)
            if isinstance(own, PostgresStore):
                await own.attach()  # the schema is the main store's, migrated
        backend = own or main
        durable = await stack.enter_async_context(
            DurableStore(
                backend,
                spool_dir=Path(spool_path(config)) / "alarms",
                on_spool_state=on_spool_state,
                maintain_every=None,  # the main store maintains the database
                supervisor=supervisor,
            )
        )
        yield backend, durable


def lane_ingest(
    config: MqttConfig,
    pipeline: Pipeline,
    clock: Clock,
    *,
    on_arrival: Callable[[], object] | None = None,
    supervisor: Supervisor | None = None,
) -> MqttIngest:
    """The lane's MQTT session (not started): alarm channels only, into ``pipeline``; its
    loop, ``mqtt-alarm-lane``, runs in ``supervisor`` (the gateway's; else a private one),
    reconnecting like the telemetry session's ``mqtt-ingest``. ``on_arrival`` is called
    as each message is read (the gateway's: :meth:`Turns.announce
    <gateway.turns.Turns.announce>`, so telemetry takes turns before the lane's first
    step)."""
    return MqttIngest(
        lane_mqtt_config(config),
        pipeline.handle,
        clock,
        on_arrival=on_arrival,
        supervisor=supervisor,
        subscriptions=alarm_subscriptions(config.topic_prefix),
        presence=False,
        name="mqtt-alarm-lane",
    )
