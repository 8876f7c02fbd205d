"""The Prometheus instruments of the gateway's web face, one registry per app.

Each part of the gateway sets what it knows: the console sets :attr:`Metrics.sse_clients`,
the gateway registers *refreshers* (coroutines run just before each scrape: queue and
spool depths, open alarms) and a counter source for ingest by source. A registry per app
(not the process-global default) keeps tests and two gateways in one process apart.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["Metrics"]

#: Reads a running total per label value (e.g. messages ingested per source).
Totals = Callable[[], Mapping[str, float]]


class _TotalsCollector(Collector):
    """A counter family read from a callable at scrape time (the pipeline owns the sums)."""

    def __init__(self, name: str, doc: str, label: str) -> None:
        self.name, self.doc, self.label = name, doc, label
        self.source: Totals | None = None

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self.name, self.doc, labels=[self.label])
        for value, total in sorted((self.source() if self.source else {}).items()):
            family.add_metric([value], total)
        yield family


class Metrics:
    """The instruments; :meth:`refresh` runs the registered refreshers before a scrape."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.sse_clients = Gauge(
            "telecare_sse_clients", "Live console connections (SSE) open now", registry=r
        )
        self.queue_depth = Gauge(
            "telecare_queue_depth", "Items waiting in a bounded queue", ["queue"], registry=r
        )
        self.spool_bytes = Gauge(
            "telecare_spool_bytes",
            "Writes spooled to local disk, waiting for the database (bytes)",
            registry=r,
        )
        self.store_degraded = Gauge(
            "telecare_store_degraded", "1 while the database is away and writes spool", registry=r
        )
        self.open_alarms = Gauge(
            "telecare_open_alarms",
            "Dispatches not yet closed, by priority",
            ["priority"],
            registry=r,
        )
        self.oldest_open_alarm = Gauge(
            "telecare_oldest_open_alarm_age_seconds",
            "Age of the oldest dispatch not yet closed (0 when none)",
            registry=r,
        )
        self.ingest = _TotalsCollector(
            "telecare_ingest_messages", "Messages accepted by ingest, by source", "source"
        )
        self.dead_letters = _TotalsCollector(
            "telecare_dead_letters",
            "Messages refused into the dead-letter table, by reason",
            "reason",
        )
        r.register(self.ingest)
        r.register(self.dead_letters)
        self._refreshers: list[Callable[[], Awaitable[None]]] = []

    def add_refresher(self, refresh: Callable[[], Awaitable[None]]) -> None:
        """Run ``refresh`` before every scrape (it sets gauges from live state)."""
        self._refreshers.append(refresh)

    async def refresh(self) -> None:
        for refresh in self._refreshers:
            await refresh()
