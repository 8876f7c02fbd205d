"""No stored alert stays without a dispatch.

An alert is stored before the PUBACK, but its dispatch is opened afterwards by the
dispatch service's queue. If the process dies in between, or the database was away when
the service tried (the alert went to the spool and was replayed later), the alert has no
dispatch. The sweeper finds such alerts and submits them again: once at start, then every
``every_s`` seconds for alerts older than ``grace_s`` (younger ones may still be queued).
An alert that joined a group dispatch (a storm member) has its dispatch: it is never
re-submitted, so the sweeper cannot undo a grouping (``Store.alerts_without_dispatch``
excludes members).

Resource handling: an async context manager running one supervised loop, ``orphan-sweep``
(:mod:`telecare.gateway.tasks`). Error handling: a sweep that fails because storage is
unavailable is logged and retried with backoff; anything else stops the gateway loudly.
"""

from __future__ import annotations

from datetime import timedelta
from types import TracebackType
from typing import Self

from telecare.dispatch import DispatchService
from telecare.gateway.backoff import Backoff
from telecare.gateway.failures import is_storage_unavailable
from telecare.gateway.logging import get_logger
from telecare.gateway.store.base import Store
from telecare.gateway.tasks import Loop, Loops, Supervisor
from telecare.rules.clock import Clock

__all__ = ["OrphanSweeper"]

log = get_logger("telecare.sweeper")


class OrphanSweeper:
    def __init__(
        self,
        store: Store,
        dispatcher: DispatchService,
        clock: Clock,
        *,
        every_s: float = 30.0,
        grace_s: float = 30.0,
        supervisor: Supervisor | None = None,
    ) -> None:
        self.store = store
        self.dispatcher = dispatcher
        self.clock = clock
        self.every_s = every_s
        self.grace_s = grace_s
        self._loops = Loops(supervisor)

    async def sweep(self, grace_s: float | None = None) -> int:
        """Submit alerts without a dispatch that are older than ``grace_s``."""
        grace = self.grace_s if grace_s is None else grace_s
        cutoff = self.clock.now() - timedelta(seconds=grace)
        orphans = [a for a in await self.store.alerts_without_dispatch() if a.ts <= cutoff]
        for alert in orphans:
            await self.dispatcher.submit(alert)
        if orphans:
            log.warning("orphan_alerts_resubmitted", count=len(orphans))
        return len(orphans)

    async def __aenter__(self) -> Self:
        await self.sweep(grace_s=0)  # at start nothing is queued: every orphan is real
        backoff = Backoff(initial=min(1.0, self.every_s), cap=self.every_s)
        await self._loops.start(
            Loop("orphan-sweep", self._step, retry=is_storage_unavailable, backoff=backoff)
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._loops.stop()

    async def _step(self) -> None:
        await self.clock.sleep_until(self.clock.now() + timedelta(seconds=self.every_s))
        await self.sweep()
