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

from gateway.config import Config
from gateway.ingest.mqtt import MqttIngest
from gateway.logging import get_logger
from gateway.pipeline import ActivityFeed, Pipeline
from gateway.store.base import Store
from gateway.store.postgres import PostgresStore
from gateway.store.sqlite import SqliteStore
from rules.clock import Clock, SystemClock

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
    from gateway.errors import ConfigError

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

    async def __aenter__(self) -> Self:
        try:
            backend = open_store(self.config)
            await self._stack.enter_async_context(backend)
            applied = await backend.migrate()
            log.info("store_ready", mode=backend.mode, migrations_applied=applied)
            self.store = backend
            self.pipeline = Pipeline(
                self.store,
                self.clock,
                topic_prefix=self.config.mqtt.topic_prefix,
                feed=self.feed,
            )
            self.mqtt = await self._stack.enter_async_context(
                MqttIngest(self.config.mqtt, self.pipeline.handle, self.clock)
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

    def stop(self) -> None:
        self._stopped.set()

    async def wait_closed(self) -> None:
        await self._stopped.wait()
