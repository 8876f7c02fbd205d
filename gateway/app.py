"""The ``Gateway``: builds every component in one place and owns their lifetimes.

    async with Gateway(config) as gw:      # store opened + migrated, ingest running
        await gw.wait_closed()             # until stop() (SIGINT/SIGTERM in the CLI)

Resource handling: components are entered in dependency order on an ``AsyncExitStack``
(store -> pipeline -> ingest) and left in reverse, so on shutdown ingest stops taking new
messages first, in-flight messages finish and are acknowledged, and the store is closed
last: everything accepted is flushed.
"""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType
from typing import Self

from gateway.config import Config, rule_state_path
from gateway.errors import ConfigError
from gateway.ingest.deadletter import DeadLetterPublisher
from gateway.ingest.mqtt import MqttIngest, gateway_topic
from gateway.ingest.serial import SerialIngest
from gateway.logging import get_logger
from gateway.pipeline import ActivityFeed, Pipeline
from gateway.rule_state import RuleRunner, load_engine
from gateway.store.base import Store
from gateway.store.postgres import PostgresStore
from gateway.store.sqlite import SqliteStore
from rules.clock import Clock, SystemClock
from rules.config import RulesConfig, RulesConfigError, load_rules_file
from rules.engine import RuleEngine

__all__ = ["Gateway", "open_store"]

log = get_logger("telecare.gateway")


def open_store(config: Config) -> PostgresStore | SqliteStore:
    """The configured store backend (not yet opened)."""
    sc = config.store
    if sc.backend == "postgres":
        return PostgresStore(
            sc.dsn, schema=sc.schema, max_size=sc.pool_max, use_timescale=sc.timescale
        )
    if sc.backend == "sqlite":
        return SqliteStore(sc.sqlite_path)
    raise ConfigError(
        f"Config 'store.backend' has value {sc.backend!r}. Use 'sqlite' or 'postgres'."
    )


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
        self.dead_letters: DeadLetterPublisher
        self.serial: SerialIngest | None = None

    async def __aenter__(self) -> Self:
        try:
            backend = open_store(self.config)
            await self._stack.enter_async_context(backend)
            applied = await backend.migrate()
            log.info("store_ready", mode=backend.mode, migrations_applied=applied)
            self.store = backend
            # Dead letters are stored by the pipeline and also published (best effort) on
            # <prefix>/_gateway/deadletter through the ingest connection.
            self.dead_letters = DeadLetterPublisher(
                lambda topic, payload: self.mqtt.publish(topic, payload),
                gateway_topic(self.config.mqtt.topic_prefix, "deadletter"),
            )
            engine = await self._rule_engine()
            self.pipeline = Pipeline(
                self.store,
                self.clock,
                topic_prefix=self.config.mqtt.topic_prefix,
                feed=self.feed,
                on_dead_letter=self.dead_letters.submit,
                engine=engine,
            )
            await self._stack.enter_async_context(
                RuleRunner(
                    self.pipeline,
                    self.clock,
                    rule_state_path(self.config),
                    self.config.rules.tick_s,
                )
            )
            self.mqtt = await self._stack.enter_async_context(
                MqttIngest(self.config.mqtt, self.pipeline.handle, self.clock)
            )
            await self._stack.enter_async_context(self.dead_letters)
            if self.config.serial:
                self.serial = await self._stack.enter_async_context(
                    SerialIngest(
                        self.config.serial,
                        self.pipeline,
                        self.pipeline.decoder.registry.device,
                        self.clock,
                    )
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
        await self._stack.__aexit__(exc_type, exc, tb)
        log.info("gateway_stopped")

    async def _rule_engine(self) -> RuleEngine:
        """The rule engine with its persisted state, watching every provisioned device."""
        rc = self.config.rules
        try:
            rules = await asyncio.to_thread(load_rules_file, rc.file) if rc.file else RulesConfig()
        except RulesConfigError as exc:
            raise ConfigError(str(exc)) from None
        engine = await asyncio.to_thread(
            load_engine, rule_state_path(self.config), rules, self.clock
        )
        now = self.clock.now()
        for device in await self.store.list_devices():
            engine.watch_device(device, now)
        return engine

    def stop(self) -> None:
        self._stopped.set()

    async def wait_closed(self) -> None:
        await self._stopped.wait()
