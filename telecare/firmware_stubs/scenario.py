"""Simulated populations and their behaviour: a care home of N residents and a private
home, with pendants, a hub and vitals. Pure data plus a driver coroutine; provisioning
the gateway's store from :class:`Population` is the caller's job (the CLI does it)."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from telecare.devices.model import (
    Device,
    DeviceKind,
    EventType,
    Resident,
    Responder,
    ResponderKind,
    Site,
    SiteKind,
)
from telecare.firmware_stubs.mqtt_device import Hub, MqttDevice, Pendant

__all__ = ["Population", "care_home", "private_home", "run_population"]

_FIRST = ["Ada", "Bill", "Cora", "Dev", "Edna", "Frank", "Gwen", "Hal", "Ivy", "Joe"]
_LAST = ["Smith", "Jones", "Patel", "Brown", "Khan", "Evans", "Wilson", "Hughes"]


@dataclass
class Population:
    sites: list[Site] = field(default_factory=list)
    residents: list[Resident] = field(default_factory=list)
    devices: list[Device] = field(default_factory=list)
    responders: list[Responder] = field(default_factory=list)

    def extend(self, other: Population) -> Population:
        self.sites += other.sites
        self.residents += other.residents
        self.devices += other.devices
        self.responders += other.responders
        return self


def care_home(site_id: str = "oakhouse", residents: int = 6, seed: int = 1) -> Population:
    rnd = random.Random(seed)
    pop = Population()
    pop.sites.append(Site(site_id, SiteKind.CARE_HOME, "Oak House Care Home", area="north"))
    pop.responders += [
        Responder(f"{site_id}-staff", ResponderKind.MOBILE_WARDEN, "Care home staff on duty"),
        Responder("rrt-north", ResponderKind.RAPID_RESPONSE, "North rapid response", area="north"),
    ]
    pop.devices.append(Device(f"{site_id}-hub", site_id, DeviceKind.HUB, heartbeat_interval_s=60))
    for i in range(1, residents + 1):
        rid = f"{site_id}-r{i:02d}"
        name = f"{rnd.choice(_FIRST)} {rnd.choice(_LAST)}"
        pop.residents.append(
            Resident(rid, site_id, name, responders=(f"{site_id}-staff", "rrt-north"))
        )
        pop.devices.append(
            Device(f"{rid}-pendant", site_id, DeviceKind.PENDANT, rid, heartbeat_interval_s=60)
        )
        pop.devices.append(
            Device(f"{rid}-oxi", site_id, DeviceKind.OXIMETER, rid, hub_id=f"{site_id}-hub")
        )
    return pop


def private_home(site_id: str = "home-12", seed: int = 2) -> Population:
    rnd = random.Random(seed)
    rid = f"{site_id}-r01"
    return Population(
        sites=[Site(site_id, SiteKind.HOME, "12 Acacia Avenue", area="north")],
        residents=[
            Resident(
                rid,
                site_id,
                f"{rnd.choice(_FIRST)} {rnd.choice(_LAST)}",
                responders=(f"{site_id}-keyholder", "ff-north"),
            )
        ],
        responders=[
            Responder(f"{site_id}-keyholder", ResponderKind.KEYHOLDER, "Daughter"),
            Responder("ff-north", ResponderKind.FIREFIGHTER, "Fire responder north", area="north"),
        ],
        devices=[
            Device(f"{rid}-pendant", site_id, DeviceKind.PENDANT, rid, heartbeat_interval_s=60),
            Device(f"{site_id}-smoke", site_id, DeviceKind.SMOKE_DETECTOR, rid),
        ],
    )


async def run_population(
    pop: Population,
    *,
    host: str,
    port: int,
    prefix: str = "telecare/v1",
    interval: float = 3.0,
    count: int | None = None,
    seed: int = 7,
    on_action: Callable[[str], None] | None = None,
) -> int:
    """Connect every pendant and hub and make things happen every ``interval`` seconds:
    mostly vitals, sometimes a pendant press or a fall. Returns the number of actions."""
    rnd = random.Random(seed)
    pendants = [d for d in pop.devices if d.kind is DeviceKind.PENDANT]
    oximeters = [d for d in pop.devices if d.kind is DeviceKind.OXIMETER]
    hubs = [d for d in pop.devices if d.kind is DeviceKind.HUB]
    stubs: dict[str, MqttDevice] = {}
    for d in pendants:
        stubs[d.device_id] = Pendant(d.site_id, d.device_id, host=host, port=port, prefix=prefix)
    for d in hubs:
        stubs[d.device_id] = Hub(d.site_id, d.device_id, host=host, port=port, prefix=prefix)
    say = on_action or (lambda _: None)
    actions = 0
    # Every stub that connected is closed, even when another's close fails (a stub left
    # open would be cut by the broker later: an unclean disconnect and a stray error).
    async with contextlib.AsyncExitStack() as stack:
        for stub in stubs.values():
            await stack.enter_async_context(stub)
        while count is None or actions < count:
            actions += 1
            roll = rnd.random()
            if roll < 0.35 and pendants:
                d = rnd.choice(pendants)
                stub = stubs[d.device_id]
                assert isinstance(stub, Pendant)
                if rnd.random() < 0.75:
                    await stub.press()
                    say(f"pendant press  {d.device_id}")
                else:
                    await stub.fall()
                    say(f"fall detected  {d.device_id}")
            elif roll < 0.45 and hubs and oximeters:
                hub = stubs[hubs[0].device_id]
                assert isinstance(hub, Hub)
                oxi = rnd.choice([o for o in oximeters if o.site_id == hubs[0].site_id])
                values = [
                    ("spo2", rnd.randint(88, 99), "%"),
                    ("pulse", rnd.randint(55, 120), "/min"),
                ]
                await hub.forward([hub.child_readings(oxi.device_id, values)])
                say(f"vitals via hub {oxi.device_id}")
            else:
                d = rnd.choice(pendants + hubs)
                await stubs[d.device_id].heartbeat(battery=rnd.randint(60, 100))
            await asyncio.sleep(interval)
    return actions


def all_event_types() -> list[EventType]:
    return list(EventType)
