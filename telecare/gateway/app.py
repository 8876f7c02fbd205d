"""The ``Gateway``: builds every component in one place and owns their lifetimes.

    async with Gateway(config) as gw:      # store opened + migrated, ingest running
        await gw.wait_closed()             # until stop() (SIGINT/SIGTERM in the CLI)

Resource handling: components are entered in dependency order on an ``AsyncExitStack``
(store -> the supervisor (the one ``TaskGroup`` of every long-running loop,
``gateway.tasks``) -> the outbound MQTT publisher -> durable store (batcher + spool) ->
dead-letter publisher -> the alarm lane's store path -> dispatch service -> pipeline ->
registry watch -> orphan sweeper -> rule runner -> the alarm lane's MQTT session -> MQTT
ingest -> serial ingest -> DC-09 and SCAIP receivers) and left in reverse, so on shutdown
ingest stops taking new messages first, in-flight messages finish and are acknowledged,
and the store is closed last: everything accepted is flushed.

Error handling: every loop retries what is transient with backoff and a log line; a loop
that meets anything else stops the gateway (``Gateway.failure``), in the same order as
a normal stop, and :meth:`Gateway.wait_closed` then raises :class:`LoopFailed`
(``telecare run`` exits 70). No loop ends silently.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta
from functools import partial
from types import TracebackType
from typing import Self

from telecare.devices.model import Dispatch, DispatchState
from telecare.dispatch import DispatchService
from telecare.gateway.config import Config, rule_state_path, spool_path
from telecare.gateway.decode_dc09 import Dc09Decoding
from telecare.gateway.decode_scaip import ScaipDecoding
from telecare.gateway.decode_serial import SerialDecoding
from telecare.gateway.dispatching import CachedRegistry, add_store_responders, build_dispatcher
from telecare.gateway.errors import ConfigError
from telecare.gateway.failures import is_storage_unavailable
from telecare.gateway.ingest import lanes
from telecare.gateway.ingest.dc09 import Dc09Receiver
from telecare.gateway.ingest.deadletter import DeadLetterPublisher
from telecare.gateway.ingest.mqtt import MqttIngest, gateway_topic
from telecare.gateway.ingest.scaip import ScaipReceiver
from telecare.gateway.ingest.serial import SerialIngest
from telecare.gateway.logging import get_logger
from telecare.gateway.pipeline import Activity, ActivityFeed, Pipeline
from telecare.gateway.publisher import MqttPublisher
from telecare.gateway.registry_cache import RegistryWatch
from telecare.gateway.rule_state import RuleRunner, load_engine
from telecare.gateway.store.base import Store
from telecare.gateway.store.durable import DurableStore
from telecare.gateway.store.postgres import PostgresStore
from telecare.gateway.store.spool import SpoolState
from telecare.gateway.store.sqlite import SqliteStore
from telecare.gateway.sweeper import OrphanSweeper
from telecare.gateway.tablet_reply import TabletReplies
from telecare.gateway.tasks import Loop, LoopFailed, Supervisor
from telecare.gateway.timebounds import TimeBounds
from telecare.gateway.turns import Turns
from telecare.gateway.web.app import WebServer, serve
from telecare.gateway.web.console import running_console
from telecare.gateway.web.console_service import ConsoleService
from telecare.rules.clock import Clock, SystemClock
from telecare.rules.config import RulesConfig, RulesConfigError, load_rules_file
from telecare.rules.engine import RuleEngine
from telecare.rules.storage import spool_alert

__all__ = ["Gateway", "open_store", "prepare_store", "spool_path"]

log = get_logger("telecare.gateway")


def open_store(config: Config, *, owner: bool = False) -> PostgresStore | SqliteStore:
    """The configured store backend (not yet opened). ``owner``: connect through
    ``store.migrate_dsn`` (when set) to migrate and grant the runtime role its rights."""
    sc = config.store
    days = sc.dead_letter_retention_days
    retention = timedelta(days=days) if days > 0 else None
    if sc.backend == "postgres":
        if owner and sc.migrate_dsn:
            return PostgresStore(
                sc.migrate_dsn.reveal(),
                schema=sc.schema,
                max_size=1,
                use_timescale=sc.timescale,
                runtime_role=sc.runtime_role,
            )
        # A short pool timeout: a write that cannot get a connection within 2 s is spooled
        # to local disk instead of holding up alarms behind it.
        return PostgresStore(
            sc.dsn.reveal(),
            schema=sc.schema,
            max_size=sc.pool_max,
            use_timescale=sc.timescale,
            timeout=2.0,
            dead_letter_retention=retention,
        )
    if sc.backend == "sqlite":
        return SqliteStore(sc.sqlite_path, dead_letter_retention=retention)
    raise ConfigError(
        f"Config 'store.backend' has value {sc.backend!r}. Use 'sqlite' or 'postgres'."
    )


async def prepare_store(config: Config, store: PostgresStore | SqliteStore) -> list[str]:
    """Bring the schema up to date for ``store`` (open); return the migrations applied.

    With ``store.migrate_dsn`` the owner role migrates (and re-grants the runtime role)
    over its own short-lived connection, and ``store`` (the runtime role) only checks
    that the schema is complete. Otherwise ``store`` migrates through its own connection.
    """
    if isinstance(store, PostgresStore) and config.store.migrate_dsn:
        async with open_store(config, owner=True) as owner:
            applied = await owner.migrate()
        await store.attach()
        return applied
    return await store.migrate()


class Gateway:
    def __init__(
        self,
        config: Config,
        *,
        clock: Clock | None = None,
        feed: ActivityFeed | None = None,
    ) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self.feed = feed or ActivityFeed()
        self._stack = contextlib.AsyncExitStack()
        self._stopped = asyncio.Event()
        self.store: Store
        self.pipeline: Pipeline
        self.mqtt: MqttIngest
        #: The alarm lane's MQTT session and store path (``None`` / ``store`` with
        #: ``mqtt.alarm_lane = false``).
        self.alarm_mqtt: MqttIngest | None = None
        self.alarm_store: Store
        self.publisher: MqttPublisher
        self.dead_letters: DeadLetterPublisher
        self.serial: SerialIngest | None = None
        self.dc09: Dc09Receiver | None = None
        self.scaip: ScaipReceiver | None = None
        self.dispatcher: DispatchService
        self.backend: PostgresStore | SqliteStore
        self.web: WebServer | None = None
        self.console: ConsoleService | None = None
        #: The one task group of every long-running loop (``gateway.tasks``).
        self.supervisor = Supervisor(on_failure=self._fail)
        #: Set when a loop met an error it does not retry; the gateway then stops.
        self.failure: LoopFailed | None = None

    async def __aenter__(self) -> Self:
        try:
            self.backend = backend = open_store(self.config)
            await self._stack.enter_async_context(backend)
            applied = await prepare_store(self.config, backend)
            log.info("store_ready", mode=backend.mode, migrations_applied=applied)
            if isinstance(backend, PostgresStore):
                for warning in await backend.role_warnings():
                    log.warning("store_role_too_powerful", problem=warning, see="docs/security.md")
            # Every long-running loop runs in this one task group (gateway.tasks); it is
            # left after every component has stopped its loops, before the store closes.
            supervisor = await self._stack.enter_async_context(self.supervisor)
            # Built before anything that publishes (dead letters, responder apps), on its
            # own connection: nothing reaches into the ingest session to publish.
            self.publisher = await self._stack.enter_async_context(
                MqttPublisher(self.config.mqtt, supervisor=supervisor)
            )
            # Readings are batched (COPY); anything written while the database is away is
            # spooled to local disk (fsync) and replayed in order when it returns.
            self.store = await self._stack.enter_async_context(
                DurableStore(
                    backend,
                    spool_dir=spool_path(self.config),
                    on_spool_state=self._spool_state,
                    supervisor=supervisor,
                )
            )
            # Dead letters are stored by the pipeline and also published (best effort) on
            # <prefix>/_gateway/deadletter.
            self.dead_letters = DeadLetterPublisher(
                self.publisher.publish,
                gateway_topic(self.config.mqtt.topic_prefix, "deadletter"),
                supervisor=supervisor,
            )
            await self._stack.enter_async_context(self.dead_letters)
            # The alarm lane's own store path (gateway/ingest/lanes.py): its own connection
            # and durable store; dispatches are written through it too.
            lane_backend, self.alarm_store = backend, self.store
            if lanes.lane_enabled(self.config.mqtt):
                lane_backend, self.alarm_store = await self._stack.enter_async_context(
                    lanes.lane_store(
                        self.config,
                        backend,
                        on_spool_state=self._spool_state,
                        supervisor=supervisor,
                    )
                )
            engine = await self._rule_engine()
            dispatcher = build_dispatcher(
                self.config,
                lane_backend,
                self.store,
                self.clock,
                self.publisher.publish,
                supervisor=supervisor,
            )
            await add_store_responders(dispatcher.directory, self.store)
            dispatcher.on_change = self._dispatch_activity
            self.dispatcher = await self._stack.enter_async_context(dispatcher)
            self.pipeline = Pipeline(
                self.store,
                self.clock,
                topic_prefix=self.config.mqtt.topic_prefix,
                feed=self.feed,
                on_dead_letter=self.dead_letters.submit,
                engine=engine,
                dispatcher=self.dispatcher,
                time_bounds=TimeBounds(
                    max_future_s=self.config.ingest.max_future_skew_s,
                    max_age_s=self.config.ingest.max_age_s,
                ),
            )
            # Dispatch reads residents and sites from the warm registry cache, not the store.
            self.dispatcher.registry = CachedRegistry(self.pipeline.decoder.registry)
            # The registry is loaded once and kept; registry changes (the CLI in another
            # process too) reach it through the store's change log, and dispatch's
            # responder directory with it.
            await self._stack.enter_async_context(
                RegistryWatch(
                    self.store,
                    self.pipeline.decoder.registry,
                    engine=engine,
                    on_responders=self.dispatcher.directory.register,
                    supervisor=supervisor,
                )
            )
            await self._stack.enter_async_context(
                OrphanSweeper(
                    self.store,
                    self.dispatcher,
                    self.clock,
                    every_s=self.config.dispatch.sweep_s,
                    grace_s=self.config.dispatch.sweep_s,
                    supervisor=supervisor,
                )
            )
            await self._stack.enter_async_context(
                RuleRunner(
                    self.pipeline,
                    self.clock,
                    self.store,
                    self.config.rules.tick_s,
                    supervisor=supervisor,
                )
            )
            replies = self._tablet_replies()  # hooked before ingest starts, run after it
            self.pipeline.on_scored.append(replies.submit)
            skip = None
            if lanes.lane_enabled(self.config.mqtt):
                turns = Turns()  # telemetry: a few steps per loop iteration while alarms go
                lane = self.pipeline.lane(self.alarm_store)
                self.pipeline.pace(turns)
                self.alarm_mqtt = await self._stack.enter_async_context(
                    lanes.lane_ingest(
                        self.config.mqtt,
                        lane,
                        self.clock,
                        on_arrival=turns.announce,
                        supervisor=supervisor,
                    )
                )
                skip = lanes.skip_alarms(self.alarm_mqtt)
                await self._lane_subscribed(self.alarm_mqtt)
            self.mqtt = await self._stack.enter_async_context(
                MqttIngest(
                    self.config.mqtt,
                    self.pipeline.handle,
                    self.clock,
                    group_handler=self.pipeline.handle_group,
                    supervisor=supervisor,
                    skip=skip,
                )
            )
            await self._stack.enter_async_context(replies)
            if self.config.serial:
                self.serial = await self._stack.enter_async_context(
                    SerialIngest(
                        SerialDecoding.with_registry(
                            self.config.serial,
                            self.pipeline,
                            self.pipeline.decoder.registry,
                            self.clock,
                        ),
                        self.clock,
                        supervisor=supervisor,
                    )
                )
            # The IP receivers' alarms take the alarm lane's store path when there is one
            # (the connection the dispatches are written on: no second writer to wait for).
            receiving = self.pipeline.alarm_lane or self.pipeline
            if self.config.receivers.dc09.enabled:
                self.dc09 = await self._stack.enter_async_context(
                    Dc09Receiver(
                        self.config.receivers.dc09,
                        Dc09Decoding.with_registry(
                            self.config.receivers.dc09,
                            receiving,
                            self.pipeline.decoder.registry,
                            self.clock,
                            supervisor=supervisor,
                        ),
                        self.clock,
                        supervisor=supervisor,
                    )
                )
            if self.config.receivers.scaip.enabled:
                # Last in, first out: on shutdown the SCAIP listener stops taking requests
                # before the pipeline and store behind it close.
                self.scaip = await self._stack.enter_async_context(
                    ScaipReceiver(
                        self.config.receivers.scaip,
                        ScaipDecoding.with_registry(
                            self.config.receivers.scaip,
                            receiving,
                            self.pipeline.decoder.registry,
                            self.clock,
                            watch=self.pipeline.engine.watch_device,
                            status=receiving.store.write_status,
                            supervisor=supervisor,
                        ),
                        self.clock,
                    )
                )
            if self.config.web.enabled:  # entered last, left first: no request outlives ingest
                self.web = await self._stack.enter_async_context(
                    serve(self, start=supervisor.start_once)
                )
                # After the server, so left before it: the console ends its SSE streams.
                self.console = await self._stack.enter_async_context(
                    running_console(self.web.app, self.feed)
                )
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        log.info("gateway_stopping", counters=dict(self.pipeline.counters))
        if exc is not None and exc is self.failure:
            # A failed loop stops the gateway the orderly way (flushing what it accepted);
            # the failure itself propagates from here unchanged.
            await self._stack.__aexit__(None, None, None)
        else:
            await self._stack.__aexit__(exc_type, exc, tb)
        log.info("gateway_stopped")
        if self.failure is not None and exc is None:
            raise self.failure  # never stop as if nothing had happened

    @staticmethod
    async def _lane_subscribed(lane: MqttIngest) -> None:
        """Give the alarm lane a moment to subscribe before telemetry connects (until
        then the telemetry session handles alarms too: nothing is lost, only slower)."""
        try:
            await asyncio.wait_for(lane.connected.wait(), lanes.LANE_START_S)
        except TimeoutError:
            log.warning("alarm_lane_not_subscribed", waited_s=lanes.LANE_START_S)

    def _dispatch_activity(self, d: Dispatch, actor: str, reason: str) -> None:
        if d.state is DispatchState.RAISED:
            self.pipeline.counters["dispatches"] += 1
            who = d.responder_id or "none: operator must assign"
            summary = f"dispatch {d.dispatch_id} raised ({reason}); proposed responder {who}"
        else:
            summary = f"dispatch {d.dispatch_id} {d.state.value} by {actor}"
            if reason:
                summary += f": {reason}"
        self.feed.publish(
            Activity(
                "dispatch",
                d.updated_at,
                summary,
                {
                    "dispatch_id": d.dispatch_id,
                    "state": d.state.value,
                    "actor": actor,
                    "responder_id": d.responder_id,
                    "resident_id": d.resident_id,
                    "priority": d.priority,
                },
            )
        )

    def _tablet_replies(self) -> TabletReplies:
        """Each scored observation set's result goes back to its tablet over MQTT."""
        repo = self.dispatcher.repo

        return TabletReplies(
            self.publisher.publish,
            self.config.mqtt.topic_prefix,
            repo.load_for_alert,
            supervisor=self.supervisor,
        )

    def _spool_state(self, state: SpoolState) -> None:
        """The spool reports how full it is; whether that is an alert is the rules'
        decision (``rules.storage``). One is raised in the background, retried while
        storage is unavailable, in the gateway's task group."""
        alert = spool_alert(
            state.used_bytes, state.max_bytes, near_full=state.near_full, at=self.clock.now()
        )
        if alert is None:
            return
        self.supervisor.start_once(
            Loop(
                "spool-alert",
                partial(self.pipeline.raise_alert, alert),
                retry=is_storage_unavailable,
            )
        )

    async def _rule_engine(self) -> RuleEngine:
        """The rule engine with its persisted state, watching every provisioned device."""
        rc = self.config.rules
        try:
            rules = await asyncio.to_thread(load_rules_file, rc.file) if rc.file else RulesConfig()
        except RulesConfigError as exc:
            raise ConfigError(str(exc)) from None
        engine = await load_engine(self.store, rules, self.clock, rule_state_path(self.config))
        now = self.clock.now()
        for device in await self.store.list_devices():
            engine.watch_device(device, now)
        return engine

    def stop(self) -> None:
        self._stopped.set()

    def _fail(self, failure: LoopFailed) -> None:
        """A loop stopped on an error it does not retry: stop the whole gateway, in
        dependency order (ingest first, store last), then raise it from
        :meth:`wait_closed` (``telecare run`` exits non-zero)."""
        if self.failure is None:
            self.failure = failure
            log.critical("gateway_failing", loop=failure.name, error=str(failure))
        self._stopped.set()

    async def wait_closed(self) -> None:
        """Wait until :meth:`stop`; raises :class:`LoopFailed` when a loop failed."""
        await self._stopped.wait()
        if self.failure is not None:
            raise self.failure
