"""The registry cache: provisioned devices, residents, sites, responders and receiver
accounts, kept warm and invalidated when the registry changes, never expired on a timer.

Why: a device heartbeats every few minutes; a cache entry that expired after 30 s made
every heartbeat of a 100,000-device fleet read its device back from the database.
Here an entry stays until the registry says it changed:

* :class:`Registry` is loaded in full at start (:meth:`Registry.prime`); a miss reads the
  store once (a device provisioned while the gateway runs is accepted at once) and the
  result is kept. Concurrent misses for the same key share one read. "Not provisioned" is
  remembered only for ``negative_ttl`` seconds, so a flood from an unknown device cannot
  hammer the store and a device added a moment later is not refused for long.
* :class:`RegistryWatch` polls ``registry_changelog`` (migration 0016), a change log that
  triggers on the registry tables write in commit order whoever changes them (the CLI in
  another process, an import, the API), every ``poll_s`` seconds: one indexed query that
  normally returns nothing. Each change drops the cached entry; a changed device is
  reloaded at once and handed to the rule engine (which then watches its new heartbeat
  interval, or stops watching a removed device). A large burst of changes (an import)
  reloads everything in five queries instead of one per entry. So a device removed or
  changed with the CLI is refused or treated anew by a running gateway within
  ``poll_s`` plus one query. Sites are cached for dispatch (a site's response area
  chooses the area responders of its cascade and its storm group): a site moved to
  another area with the CLI is dispatched in its new area after the same delay.
  Responders (migration 0021 logs them) are held all together, since a cascade's area
  step picks among all of them: a changed one is read again at once and the whole set
  handed to ``on_responders`` (the dispatch service's responder directory), so a
  responder added, moved or removed with the CLI is dispatched so after the same delay,
  and no alarm reads a responder from the store.

Why a change log and not ``registry_audit`` (migration 0014): the audit is written by
some CLI commands only (not ``device add``, ``resident clinical`` or receiver accounts),
in a statement of its own, and its identity order is not commit order; it records who
did what and is append-only for good. The change log is written by the database itself
for every write path and may be pruned (:meth:`RegistryWatch.prune`). Why not
PostgreSQL ``LISTEN/NOTIFY``: it needs a dedicated connection and a SQLite fallback
anyway, and a notification missed while disconnected is lost; the poll is one cheap
query a second on both backends.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Final, Self, TypeVar

from telecare.devices.model import (
    Device,
    ReceiverAccount,
    ReceiverKind,
    Resident,
    Responder,
    Site,
    normalise_account,
)
from telecare.gateway.backoff import Backoff
from telecare.gateway.failures import is_storage_unavailable
from telecare.gateway.logging import get_logger
from telecare.gateway.store.base import Store
from telecare.gateway.tasks import Loop, Loops, Supervisor
from telecare.rules.engine import RuleEngine

__all__ = ["Registry", "RegistryWatch"]

log = get_logger("telecare.registry")

_V = TypeVar("_V")

#: More changes than this in one poll reload everything instead of entry by entry.
RELOAD_ALL_OVER: Final = 1000
#: Change-log rows older than this are deleted by :meth:`RegistryWatch.prune`.
KEEP_CHANGES: Final = timedelta(days=7)


class Registry:
    """Provisioned devices, residents, sites, responders and receiver accounts; see the
    module docstring.

    While the store is unavailable (``gateway.failures``) an expired entry (only "not
    provisioned" expires) is served instead of failing the lookup: the database being
    away must not stop a device's data, which is spooled meanwhile (only a key never
    seen raises). After such a failure the store is asked again only after
    ``away_retry_s``, so an outage costs one pool timeout per period, not one per
    message.

    Receiver accounts (DC-09, SCAIP, a serial Contact ID line) are cached per
    ``(kind, account)`` with all of that account's zone mappings: see
    :meth:`receiver_device`.
    """

    def __init__(self, store: Store, negative_ttl: float = 1.0) -> None:
        self._store = store
        self._negative_ttl = negative_ttl
        self._devices: dict[str, tuple[float, Device | None]] = {}
        self._residents: dict[str, tuple[float, Resident | None]] = {}
        self._sites: dict[str, tuple[float, Site | None]] = {}
        #: Every responder (never a miss: loaded in full, kept in step by the watch).
        self._responders: dict[str, Responder] = {}
        self._accounts: dict[str, tuple[float, tuple[ReceiverAccount, ...] | None]] = {}
        self._loading: dict[tuple[str, str], asyncio.Future[Any]] = {}
        #: Bumped by every invalidation: a read that started before one is not cached
        #: (it may have read the row as it was before the change).
        self._generation = 0
        #: Store reads made on a miss, by kind (``device``, ``resident``, ``site``,
        #: ``account``).
        self.reads: dict[str, int] = {"device": 0, "resident": 0, "site": 0, "account": 0}
        #: Lookups answered from an expired entry because the store was unavailable.
        self.stale_hits = 0
        #: After the store failed a lookup, expired entries are served without asking it
        #: again for this long (each attempt may wait for the pool's timeout).
        self.away_retry_s = 5.0
        self._away_until = float("-inf")

    def prime(
        self,
        devices: Iterable[Device] = (),
        residents: Iterable[Resident] = (),
        accounts: Iterable[ReceiverAccount] = (),
        sites: Iterable[Site] = (),
        responders: Iterable[Responder] = (),
    ) -> None:
        """Cache everything provisioned (at start, and after a large burst of changes)."""
        now = time.monotonic()
        for responder in responders:
            self._responders[responder.responder_id] = responder
        for d in devices:
            self._devices[d.device_id] = (now, d)
        for r in residents:
            self._residents[r.resident_id] = (now, r)
        for s in sites:
            self._sites[s.site_id] = (now, s)
        grouped: dict[str, list[ReceiverAccount]] = {}
        for a in accounts:
            grouped.setdefault(_account_key(a.kind, a.account), []).append(a)
        for key, found in grouped.items():
            self._accounts[key] = (now, tuple(found))

    # -- invalidation ----------------------------------------------------------------
    def forget_devices(self, device_ids: Iterable[str]) -> None:
        """Drop these devices (changed in the store): the next use reads them again."""
        self._generation += 1
        for device_id in device_ids:
            self._devices.pop(device_id, None)

    def forget_residents(self, resident_ids: Iterable[str]) -> None:
        """Drop these residents (changed in the store)."""
        self._generation += 1
        for resident_id in resident_ids:
            self._residents.pop(resident_id, None)

    def forget_sites(self, site_ids: Iterable[str]) -> None:
        """Drop these sites (changed in the store: another area, removed)."""
        self._generation += 1
        for site_id in site_ids:
            self._sites.pop(site_id, None)

    def forget_accounts(self) -> None:
        """Drop every cached account mapping (a mapping changed in the store)."""
        self._generation += 1
        self._accounts.clear()

    def forget_all(self) -> None:
        """Drop everything (before :meth:`prime` reloads it)."""
        self._generation += 1
        self._devices.clear()
        self._residents.clear()
        self._sites.clear()
        self._responders.clear()
        self._accounts.clear()

    def put_responder(self, responder_id: str, responder: Responder | None) -> None:
        """Keep ``responder`` as just read from the store (``None``: removed)."""
        if responder is None:
            self._responders.pop(responder_id, None)
        else:
            self._responders[responder_id] = responder

    def responders(self) -> list[Responder]:
        """Every responder, by id (the order a restart would load them in)."""
        return sorted(self._responders.values(), key=lambda r: r.responder_id)

    def put_device(self, device_id: str, device: Device | None) -> None:
        """Cache ``device`` as just read from the store (``None``: not provisioned)."""
        self._devices[device_id] = (time.monotonic(), device)

    # -- lookups ---------------------------------------------------------------------
    async def receiver_mapping(
        self, kind: ReceiverKind, account: str, zone: str = ""
    ) -> ReceiverAccount | None:
        """The mapping for ``account`` (and ``zone``) in ``kind``'s namespace: the one for
        this exact zone if there is one, else the account-wide one (zone ``""``), else
        ``None`` (the caller dead-letters: an unknown account is never guessed)."""
        account = normalise_account(kind, account)
        key = _account_key(kind, account)
        hit = self._fresh(self._accounts, key)
        if hit is not None:
            found = hit[1]
        else:

            async def fetch(_: str) -> tuple[ReceiverAccount, ...] | None:
                return tuple(await self._store.receiver_accounts(kind, account)) or None

            found = await self._load("account", key, fetch, self._accounts)
        if not found:
            return None
        zone = normalise_account(kind, zone)
        wide = None
        for m in found:
            if m.zone == zone and zone:
                return m
            if not m.zone:
                wide = m
        return wide

    async def receiver_device(
        self, kind: ReceiverKind, account: str, zone: str = ""
    ) -> Device | None:
        """The provisioned device ``account`` (and ``zone``) maps to, or ``None``."""
        mapping = await self.receiver_mapping(kind, account, zone)
        if mapping is None:
            return None
        return await self.device(mapping.device_id)

    def cached_device(self, device_id: str) -> tuple[float, Device | None] | None:
        """The cache entry ``(loaded_at, device or None)`` for ``device_id``, or ``None``
        when :meth:`device` must be awaited (the hot path's synchronous hit)."""
        return self._fresh(self._devices, device_id)

    def cached_resident(self, resident_id: str) -> tuple[float, Resident | None] | None:
        """Like :meth:`cached_device`, for :meth:`resident`."""
        return self._fresh(self._residents, resident_id)

    def _fresh(
        self, cache: dict[str, tuple[float, _V | None]], key: str
    ) -> tuple[float, _V | None] | None:
        hit = cache.get(key)
        if hit is None:
            return None
        if hit[1] is not None:
            return hit  # kept until the registry says it changed
        return hit if time.monotonic() - hit[0] < self._negative_ttl else None

    async def device(self, device_id: str) -> Device | None:
        hit = self.cached_device(device_id)
        if hit is not None:
            return hit[1]
        return await self._load("device", device_id, self._store.get_device, self._devices)

    async def resident(self, resident_id: str | None) -> Resident | None:
        if resident_id is None:
            return None
        hit = self.cached_resident(resident_id)
        if hit is not None:
            return hit[1]
        return await self._load("resident", resident_id, self._store.get_resident, self._residents)

    async def site(self, site_id: str) -> Site | None:
        """The site as the registry has it now (``None``: no such site)."""
        hit = self._fresh(self._sites, site_id)
        if hit is not None:
            return hit[1]
        return await self._load("site", site_id, self._store.get_site, self._sites)

    async def _load(
        self,
        kind: str,
        key: str,
        fetch: Callable[[str], Awaitable[_V | None]],
        cache: dict[str, tuple[float, _V | None]],
    ) -> _V | None:
        pending = self._loading.get((kind, key))
        if pending is not None:
            result: _V | None = await asyncio.shield(pending)
            return result
        stale = cache.get(key)
        if stale is not None and time.monotonic() < self._away_until:
            self.stale_hits += 1  # the store failed a moment ago: do not wait on it again
            return stale[1]
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._loading[(kind, key)] = fut
        generation = self._generation
        self.reads[kind] += 1
        try:
            found = await fetch(key)
        except BaseException as exc:
            if stale is not None and isinstance(exc, Exception) and is_storage_unavailable(exc):
                # The database is away: what we last knew beats stopping a device's
                # data (the writes themselves are spooled).
                self._away_until = time.monotonic() + self.away_retry_s
                self.stale_hits += 1
                fut.set_result(stale[1])
                return stale[1]
            fut.set_exception(exc)
            fut.exception()  # retrieved: waiters re-raise it, nobody else must
            raise
        finally:
            del self._loading[(kind, key)]
        if generation == self._generation:  # else it may predate a change: read again
            cache[key] = (time.monotonic(), found)
        fut.set_result(found)
        return found


def _account_key(kind: ReceiverKind, account: str) -> str:
    return f"{kind.value}:{account}"


class RegistryWatch:
    """Keeps a :class:`Registry` in step with the store's ``registry_changelog``.

    Entering reads the change log's position, then primes the registry with everything
    provisioned (so nothing changed in between is missed: it is re-read after), and
    starts one supervised loop (``gateway.tasks``), ``registry-watch``, polling every
    ``poll_s`` seconds (and pruning the change log hourly), in ``supervisor`` (the
    gateway's; else a private one); leaving stops it. Storage unavailable (database
    away) is retried with backoff and a ``loop_retry`` line; the cache keeps serving what
    it holds meanwhile. Anything else stops the gateway (``loop_failed``).
    """

    def __init__(
        self,
        store: Store,
        registry: Registry,
        *,
        poll_s: float = 1.0,
        engine: RuleEngine | None = None,
        on_responders: Callable[[Sequence[Responder]], object] | None = None,
        supervisor: Supervisor | None = None,
    ) -> None:
        self.store = store
        self.registry = registry
        self.poll_s = poll_s
        self.engine = engine
        #: Handed every responder at start and after each change to them (the dispatch
        #: service's ``ResponderDirectory.register``).
        self.on_responders = on_responders
        #: The last change applied (``registry_changelog.seq``).
        self.position = 0
        #: Polls made, and changes applied (for the benchmark and the tests).
        self.polls = 0
        self.changes = 0
        self._last_prune = time.monotonic()
        self._loops = Loops(supervisor)

    async def __aenter__(self) -> Self:
        row = await self.store.sql.fetch_one("SELECT MAX(seq) FROM registry_changelog")
        self.position = int(row[0]) if row and row[0] is not None else 0
        await self.reload_all()
        backoff = Backoff(initial=min(1.0, self.poll_s), cap=max(30.0, self.poll_s))
        await self._loops.start(
            Loop("registry-watch", self._step, retry=is_storage_unavailable, backoff=backoff)
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._loops.stop()
        gc.unfreeze()  # what was set aside may be collected again (tests start many)

    async def reload_all(self) -> dict[str, Device]:
        """Load everything provisioned into the registry (five queries); the devices."""
        devices = await self.store.list_devices()
        residents = await self.store.list_residents()
        accounts = await self.store.list_receiver_accounts()
        sites = await self.store.list_sites()
        responders = await self.store.list_responders()
        self.registry.forget_all()
        self.registry.prime(devices, residents, accounts, sites, responders)
        self._tell_responders()
        # The registry and the rule state (loaded before) are most of a large fleet's
        # heap and live as long as the process: keep them out of the garbage collector's
        # full collections, which otherwise stop the event loop for ~0.3 s at 100,000
        # devices. Collected first, so only what is alive is set aside.
        gc.collect()
        gc.freeze()
        return {d.device_id: d for d in devices}

    async def poll(self) -> int:
        """Apply the changes logged since the last poll; return how many there were."""
        self.polls += 1
        found = await self.store.sql.fetch_all(
            "SELECT seq, kind, entity_id FROM registry_changelog WHERE seq > ? ORDER BY seq",
            self.position,
        )
        if not found:
            return 0
        devices: set[str] = set()
        residents: set[str] = set()
        sites: set[str] = set()
        responders: set[str] = set()
        accounts = False
        for _, kind, entity_id in found:
            if kind == "device":
                devices.add(str(entity_id))
            elif kind == "resident":
                residents.add(str(entity_id))
            elif kind == "site":
                sites.add(str(entity_id))
            elif kind == "responder":
                responders.add(str(entity_id))
            elif kind == "account":
                accounts = True
        if len(found) > RELOAD_ALL_OVER:
            devices_now = await self.reload_all()
            for device_id in sorted(devices):
                self._tell(device_id, devices_now.get(device_id))
        else:
            self.registry.forget_residents(residents)
            self.registry.forget_sites(sites)
            if accounts:
                self.registry.forget_accounts()
            self.registry.forget_devices(devices)
            for device_id in sorted(devices):
                device = await self.store.get_device(device_id)
                self.registry.put_device(device_id, device)
                self._tell(device_id, device)
            for responder_id in sorted(responders):
                responder = await self.store.get_responder(responder_id)
                self.registry.put_responder(responder_id, responder)
            if responders:
                self._tell_responders()
        self.position = int(found[-1][0])
        self.changes += len(found)
        log.info(
            "registry_changed",
            changes=len(found),
            devices=len(devices),
            residents=len(residents),
            sites=len(sites),
            responders=len(responders),
            accounts=accounts,
        )
        return len(found)

    async def prune(self, keep: timedelta = KEEP_CHANGES) -> int:
        """Delete change-log rows older than ``keep`` that this watch has applied."""
        return await self.store.sql.execute(
            "DELETE FROM registry_changelog WHERE seq <= ? AND at < ?",
            self.position,
            datetime.now(UTC) - keep,
        )

    def _tell_responders(self) -> None:
        """Dispatch's directory takes the responders as they are now."""
        if self.on_responders is not None:
            self.on_responders(self.registry.responders())

    def _tell(self, device_id: str, device: Device | None) -> None:
        """The rules watch a changed device's heartbeat anew; a removed one no more."""
        if self.engine is None:
            return
        if device is None:
            self.engine.unwatch_device(device_id)
        else:
            self.engine.watch_device(device)

    async def _step(self) -> None:
        """One round of the loop: wait ``poll_s``, apply the changes, prune hourly."""
        await asyncio.sleep(self.poll_s)
        await self.poll()
        if time.monotonic() - self._last_prune > 3600:
            self._last_prune = time.monotonic()
            await self.prune()
