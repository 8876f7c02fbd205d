"""Registry lifecycle on both backends: removal refused while anything references the
thing (and nothing written), removal and pairing audited in the same transaction, and a
removed device unknown to the gateway's registry cache after its refresh."""

from __future__ import annotations

import pytest

from telecare.devices.model import (
    Device,
    DeviceKind,
    Dispatch,
    DispatchState,
    Resident,
    Responder,
    ResponderKind,
)
from telecare.dispatch.records import AuditRecord
from telecare.gateway.registry_cache import Registry, RegistryWatch
from telecare.gateway.store.base import Store
from telecare.gateway.store.registry import Blocker, RegistryChange
from tests.store.helpers import T0, alert, registry, registry_changes


def _change(action: str, kind: str, entity_id: str) -> RegistryChange:
    return RegistryChange(T0, "installer-jo", action, kind, entity_id)  # type: ignore[arg-type]


async def _open_dispatch(store: Store, state: DispatchState = DispatchState.RAISED) -> None:
    await store.write_alerts([alert(1)])  # device p1, resident res1, site s1
    dispatch = Dispatch("d1", "a1", state, 1, T0, T0, "s1", "res1", "kh1")
    await store.dispatches.create(dispatch, AuditRecord("d1", T0, None, state, "gateway"), (), ())


async def test_remove_refuses_while_an_open_dispatch_references_it(store: Store) -> None:
    await registry(store)
    await store.upsert_responder(Responder("kh1", ResponderKind.KEYHOLDER))
    await _open_dispatch(store)
    for kind, entity in (("device", "p1"), ("responder", "kh1")):
        blockers = await store.remove_entity(kind, entity, _change("remove", kind, entity))  # type: ignore[arg-type]
        assert blockers == [Blocker("open dispatch", "d1")]
    assert await store.get_device("p1") is not None
    assert await store.get_responder("kh1") is not None
    assert await registry_changes(store) == []


async def test_remove_refuses_while_the_registry_depends_on_it(store: Store) -> None:
    await registry(store)
    await store.upsert_responder(Responder("kh1", ResponderKind.KEYHOLDER))
    await store.upsert_resident(Resident("res2", "s1", responders=("kh1",)))
    site = await store.remove_entity("site", "s1", _change("remove", "site", "s1"))
    assert Blocker("resident", "res1") in site
    assert Blocker("device", "ox1") in site
    resident = await store.remove_entity("resident", "res1", _change("remove", "resident", "res1"))
    assert sorted(resident) == [Blocker("paired device", "ox1"), Blocker("paired device", "p1")]
    responder = await store.remove_entity("responder", "kh1", _change("remove", "responder", "kh1"))
    assert responder == [Blocker("resident cascade", "res2")]
    assert await registry_changes(store) == []


async def test_remove_deletes_and_audits_once_nothing_references_it(store: Store) -> None:
    await registry(store)
    await _open_dispatch(store, DispatchState.RESOLVED)  # a closed alarm does not block
    assert await store.remove_entity("device", "p1", _change("remove", "device", "p1")) == []
    assert await store.get_device("p1") is None
    with pytest.raises(KeyError):
        await store.remove_entity("device", "p1", _change("remove", "device", "p1"))
    changes = await registry_changes(store, "device", "p1")
    assert [(c.actor, c.action, c.kind, c.entity_id) for c in changes] == [
        ("installer-jo", "remove", "device", "p1")
    ]
    assert changes[0].at == T0


async def test_pair_and_unpair_a_device(store: Store) -> None:
    await registry(store)
    await store.upsert_device(Device("p2", "s1", DeviceKind.PENDANT))
    paired = await store.pair_device("p2", "res2", "room 4", _change("pair", "device", "p2"))
    assert (paired.resident_id, paired.location) == ("res2", "room 4")
    assert await store.get_device("p2") == paired
    unpaired = await store.pair_device("p2", None, None, _change("unpair", "device", "p2"))
    assert (unpaired.resident_id, unpaired.location) == (None, "room 4")
    with pytest.raises(ValueError, match="not exist at site"):
        await store.pair_device("p2", "nobody", None, _change("pair", "device", "p2"))
    with pytest.raises(KeyError):
        await store.pair_device("nope", "res2", None, _change("pair", "device", "nope"))
    assert [c.action for c in await registry_changes(store, "device", "p2")] == ["pair", "unpair"]


async def test_a_removed_device_is_unknown_after_the_cache_refresh(store: Store) -> None:
    await registry(store)
    cache = Registry(store)  # warm: kept until the registry change log says otherwise
    async with RegistryWatch(store, cache, poll_s=3600.0) as watch:
        assert await cache.device("p1") is not None
        assert await store.remove_entity("device", "p1", _change("remove", "device", "p1")) == []
        assert await watch.poll() >= 1  # what the running gateway does once a second
        assert await cache.device("p1") is None
