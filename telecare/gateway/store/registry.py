"""The registry role, written once for both backends: sites, residents, devices,
responders, receiver accounts, device users, clinical settings, and their lifecycle.

A thing is *blocked* from removal while an open dispatch (an alarm not yet resolved or
cancelled) references it, and while other registry entries still depend on it (a site's
residents and devices, a resident's paired devices, a responder in a cascade). Residents
with recorded clinical settings are never deleted: their history is a clinical record.
Removals, pairings and imports are audited in ``registry_audit`` (migration 0014) in the
same transaction as the change. Several writes that must land together (an import) go
through one :meth:`SqlRegistry.registry_transaction`: all of them, or none.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from itertools import groupby
from operator import itemgetter
from typing import cast

from telecare.devices.model import (
    Device,
    ReceiverAccount,
    ReceiverKind,
    Resident,
    Responder,
    Site,
)
from telecare.gateway.clinical import (
    ClinicalChange,
    ClinicalRecord,
    ClinicalState,
    plan_clinical,
)
from telecare.gateway.store.dispatch import OPEN
from telecare.gateway.store.rows import Blocker, Kind, RegistryChange
from telecare.gateway.store.sql import Queries, Row, Sql
from telecare.gateway.store.tables import (
    CASCADES,
    CLINICAL,
    CLINICAL_HISTORY,
    DEVICE_USERS,
    DEVICES,
    RECEIVER_ACCOUNTS,
    REGISTRY_AUDIT,
    RESPONDERS,
    SITES,
    Table,
)

__all__ = ["Blocker", "Kind", "RegistryChange", "RegistryWrites", "SqlRegistry"]


def _open(key: str, join: str = "") -> tuple[str, str]:
    sql = f"SELECT d.dispatch_id FROM dispatches d{join} WHERE {key} = ?"
    return "open dispatch", f"{sql} AND {OPEN}"


_USER = "device_id || ' user ' || CAST(user_id AS TEXT)"
_HISTORY = "setting || ' recorded by ' || recorded_by"
#: For each kind: (what, SQL with one ``?`` for the id) pairs, in the order reported.
_BLOCKERS: dict[Kind, tuple[tuple[str, str], ...]] = {
    "site": (
        _open("d.site_id"),
        ("resident", "SELECT resident_id FROM residents WHERE site_id = ?"),
        ("device", "SELECT device_id FROM devices WHERE site_id = ?"),
    ),
    "resident": (
        _open("d.resident_id"),
        ("paired device", "SELECT device_id FROM devices WHERE resident_id = ?"),
        ("device user", f"SELECT {_USER} FROM device_users WHERE resident_id = ?"),
        (
            "clinical history",
            f"SELECT {_HISTORY} FROM {CLINICAL_HISTORY.name} WHERE resident_id = ?",
        ),
    ),
    "responder": (
        _open("d.responder_id"),
        ("resident cascade", "SELECT resident_id FROM resident_responders WHERE responder_id = ?"),
    ),
    "device": (_open("a.device_id", " JOIN alerts a ON a.alert_id = d.alert_id"),),
}

#: A resident: its registry columns and (``auto``: never written here, only by
#: ``set_clinical``) its clinical settings, named as ``resident_clinical`` (migration
#: 0009) has them; the cascade (``responders``) is read apart.
RESIDENTS = Table.of(
    "residents",
    Resident,
    *(replace(c, auto=True) for c in CLINICAL.columns[1:5]),
    skip=("responders",),
)
#: A resident with its clinical settings joined in. Read residents with it, never with
#: ``RESIDENTS.all``: ``residents`` keeps migration 0001's legacy clinical columns.
_RESIDENT_SELECT = (
    f"SELECT {', '.join(('c.' if c.auto else 'r.') + c.name for c in RESIDENTS.stored)}"
    " FROM residents r LEFT JOIN resident_clinical c ON c.resident_id = r.resident_id"
)


class RegistryWrites:
    """The registry's writes on one transaction (``SqlRegistry.registry_transaction``)."""

    def __init__(self, tx: Queries) -> None:
        self.tx = tx

    async def upsert_resident(self, r: Resident) -> None:
        """Registry fields and the cascade only: clinical settings are ``set_clinical``'s."""
        await RESIDENTS.put(self.tx, r, "resident_id")
        await self.tx.execute(
            "DELETE FROM resident_responders WHERE resident_id = ?", r.resident_id
        )
        cascade = [(r.resident_id, i, rid) for i, rid in enumerate(r.responders)]
        await self.tx.execute_many(CASCADES.insert(""), cascade)

    async def upsert_device(self, device: Device, secret_hash: str | None = None) -> None:
        """The device; ``secret_hash`` replaces its credentials when given."""
        await DEVICES.put(self.tx, device, "device_id")
        if secret_hash is not None:
            q = "UPDATE devices SET secret_hash = ? WHERE device_id = ?"
            await self.tx.execute(q, secret_hash, device.device_id)

    async def record_change(self, change: RegistryChange) -> None:
        await REGISTRY_AUDIT.add(self.tx, change, "")


class SqlRegistry:
    """The registry role on ``self.sql``."""

    sql: Sql

    @asynccontextmanager
    async def registry_transaction(self) -> AsyncIterator[RegistryWrites]:
        """``async with store.registry_transaction() as registry``: its writes commit
        together, or (if the block raises) none of them."""
        async with self.sql.transaction() as tx:
            yield RegistryWrites(tx)

    async def upsert_site(self, site: Site) -> None:
        await SITES.put(self.sql, site, "site_id")

    async def upsert_resident(self, resident: Resident) -> None:
        async with self.registry_transaction() as registry:
            await registry.upsert_resident(resident)

    async def upsert_device(self, device: Device, secret_hash: str | None = None) -> None:
        async with self.registry_transaction() as registry:
            await registry.upsert_device(device, secret_hash)

    async def upsert_responder(self, responder: Responder) -> None:
        await RESPONDERS.put(self.sql, responder, "responder_id")

    async def set_device_user(self, device_id: str, user_id: int, resident_id: str) -> None:
        q = DEVICE_USERS.upsert("device_id", "user_id")
        await self.sql.execute(q, device_id, user_id, resident_id)

    async def device_users(self, device_id: str) -> dict[int, str]:
        q = "SELECT user_id, resident_id FROM device_users WHERE device_id = ?"
        return {int(u): r for u, r in await self.sql.fetch_all(q, device_id)}

    async def get_site(self, site_id: str) -> Site | None:
        return await SITES.one(self.sql, "WHERE site_id = ?", site_id)

    async def get_device(self, device_id: str) -> Device | None:
        return await DEVICES.one(self.sql, "WHERE device_id = ?", device_id)

    async def device_credentials(self) -> list[tuple[str, str]]:
        found = await self.sql.fetch_all(
            "SELECT device_id, secret_hash FROM devices WHERE secret_hash IS NOT NULL"
            " ORDER BY device_id"
        )
        return [(str(d), str(h)) for d, h in found]

    async def get_resident(self, resident_id: str) -> Resident | None:
        found = await self._residents(" WHERE r.resident_id = ?", resident_id)
        return found[0] if found else None

    async def get_responder(self, responder_id: str) -> Responder | None:
        return await RESPONDERS.one(self.sql, "WHERE responder_id = ?", responder_id)

    async def list_devices(self) -> list[Device]:
        return await DEVICES.all(self.sql, "ORDER BY device_id")

    async def list_sites(self) -> list[Site]:
        return await SITES.all(self.sql, "ORDER BY site_id")

    async def list_residents(self, site_id: str | None = None) -> list[Resident]:
        if site_id is None:
            return await self._residents("")
        return await self._residents(" WHERE r.site_id = ?", site_id)

    async def _residents(self, where: str, *params: object) -> list[Resident]:
        found = await self.sql.fetch_all(
            f"{_RESIDENT_SELECT}{where} ORDER BY r.resident_id", *params
        )
        order = await self.sql.fetch_all(
            "SELECT p.resident_id, p.responder_id FROM resident_responders p"
            f" JOIN residents r ON r.resident_id = p.resident_id{where}"
            " ORDER BY p.resident_id, p.position",
            *params,
        )
        cascades = {rid: tuple(p[1] for p in ps) for rid, ps in groupby(order, itemgetter(0))}
        residents = map(RESIDENTS.load, found)
        return [replace(r, responders=cascades.get(r.resident_id, ())) for r in residents]

    async def list_responders(self) -> list[Responder]:
        return await RESPONDERS.all(self.sql, "ORDER BY responder_id")

    # -- clinical settings -----------------------------------------------------------------
    async def set_clinical(self, change: ClinicalChange) -> list[ClinicalRecord]:
        c, lock = change, self.sql.dialect.for_update
        async with self.sql.transaction() as tx:
            if not await tx.fetch_one(
                f"SELECT 1 FROM residents WHERE resident_id = ?{lock}", c.resident_id
            ):
                raise KeyError(c.resident_id)
            row = await tx.fetch_one(f"{_RESIDENT_SELECT} WHERE r.resident_id = ?", c.resident_id)
            r = RESIDENTS.load(cast(Row, row))
            old = ClinicalState(
                r.spo2_scale, r.spo2_scale_set_by, r.spo2_scale_set_at, r.baseline_consciousness
            )
            new, records = plan_clinical(old, c)
            await tx.execute(
                CLINICAL.upsert("resident_id"),
                c.resident_id, new.spo2_scale, new.spo2_scale_set_by, new.spo2_scale_set_at,
                new.baseline.value if new.baseline else None, c.recorded_by, c.recorded_at,
            )  # fmt: skip
            await tx.execute_many(
                CLINICAL_HISTORY.insert(""), [CLINICAL_HISTORY.params(h) for h in records]
            )
        return records

    async def clinical_history(self, resident_id: str) -> list[ClinicalRecord]:
        tail = "WHERE resident_id = ? ORDER BY history_id"
        return await CLINICAL_HISTORY.all(self.sql, tail, resident_id)

    # -- lifecycle -----------------------------------------------------------------------
    async def remove_entity(
        self, kind: Kind, entity_id: str, change: RegistryChange
    ) -> list[Blocker]:
        table, key = f"{kind}s", f"{kind}_id"  # sites.site_id, devices.device_id, ...
        lock = self.sql.dialect.for_update
        async with self.sql.transaction() as tx:
            if not await tx.fetch_one(f"SELECT 1 FROM {table} WHERE {key} = ?{lock}", entity_id):
                raise KeyError(entity_id)
            blockers = [
                Blocker(what, str(ref))
                for what, query in _BLOCKERS[kind]
                for (ref,) in await tx.fetch_all(query, entity_id)
            ]
            if blockers:
                return blockers
            await tx.execute(f"DELETE FROM {table} WHERE {key} = ?", entity_id)
            await RegistryWrites(tx).record_change(change)
            return []

    async def pair_device(
        self, device_id: str, resident_id: str | None, location: str | None, change: RegistryChange
    ) -> Device:
        lock = self.sql.dialect.for_update
        async with self.sql.transaction() as tx:
            device = await DEVICES.one(tx, f"WHERE device_id = ?{lock}", device_id)
            if device is None:
                raise KeyError(device_id)
            if resident_id is not None:
                found = await tx.fetch_one(
                    "SELECT site_id FROM residents WHERE resident_id = ?", resident_id
                )
                if found is None or found[0] != device.site_id:
                    raise ValueError(
                        f"resident {resident_id!r} does not exist at site {device.site_id!r}"
                    )
            location = device.location if location is None else location
            paired = replace(device, resident_id=resident_id, location=location)
            await DEVICES.put(tx, paired, "device_id")
            await RegistryWrites(tx).record_change(change)
            return paired

    async def record_registry_change(self, change: RegistryChange) -> None:
        await RegistryWrites(self.sql).record_change(change)

    # -- receiver accounts (DC-09, SCAIP, serial Contact ID) ------------------------------
    async def upsert_receiver_account(self, mapping: ReceiverAccount) -> None:
        await RECEIVER_ACCOUNTS.put(self.sql, mapping, "kind", "account", "zone")

    async def delete_receiver_account(self, kind: ReceiverKind, account: str, zone: str) -> bool:
        return await self.sql.execute(
            "DELETE FROM receiver_accounts WHERE kind = ? AND account = ? AND zone = ?",
            kind, account, zone,
        ) > 0  # fmt: skip

    async def receiver_accounts(self, kind: ReceiverKind, account: str) -> list[ReceiverAccount]:
        tail = "WHERE kind = ? AND account = ? ORDER BY zone"
        return await RECEIVER_ACCOUNTS.all(self.sql, tail, kind, account)

    async def list_receiver_accounts(self) -> list[ReceiverAccount]:
        return await RECEIVER_ACCOUNTS.all(self.sql, "ORDER BY kind, account, zone")
