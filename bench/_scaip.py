"""The SCAIP-over-UDP half of ``python -m bench receivers`` (bench/receivers.py runs it).

* **units** (a separate process, :func:`drive`): one UDP socket per simulated unit; each
  sends a SIP MESSAGE with an ``ME`` alarm ``<mrq>`` and the next one only after the
  ``<mrs>`` came back, retransmitting after 0.5 s as a SIP client does (timer E). Paced
  (open loop) or as fast as answers come back; latency is measured from the alarm's
  scheduled send time to its ``<mrs>`` status 0, so a wait for the unit's previous
  answer counts (no coordinated omission).
* **bare** (:func:`bare`): a UDP loop that parses each datagram (SIP, SCAIP checks,
  ``<mrq>``) and answers ``200`` + ``<mrs>`` at once, storing nothing.
* **gateway** (:func:`gateway`): the real :class:`~gateway.app.Gateway` with the SCAIP
  receiver on UDP: mapping, pipeline, rules, durable store, dispatch; the answer goes out
  once the event is stored.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing as mp
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

from telecare.devices.codecs import Malformed, scaip, sip
from telecare.devices.model import Device, DeviceKind, ReceiverAccount, ReceiverKind, Site, SiteKind

__all__ = ["bare", "drive", "gateway"]

#: RFC 3261 T1: the first retransmission of an unanswered request.
T1 = 0.5
#: Give up on one alarm after this long (timer F: 64*T1).
GIVE_UP_S = 32.0


# --------------------------------------------------------------------------- units


def _units(port: int, cids: list[str], total: int, rate: float | None, out: Any) -> None:
    """Child process entry point."""
    out.put(asyncio.run(_drive(port, cids, total, rate)))


class _Answers(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.queue.put_nowait(data)


async def _drive(port: int, cids: list[str], total: int, rate: float | None) -> dict[str, Any]:
    from telecare.firmware_stubs.scaip_unit import encode_message, encode_mrq

    loop = asyncio.get_running_loop()
    n = len(cids)
    queues: list[asyncio.Queue[float]] = [asyncio.Queue() for _ in cids]
    acked = 0
    other: dict[str, int] = {}
    latencies: list[float] = []
    start = time.perf_counter()

    async def unit_loop(i: int, count: int) -> None:
        nonlocal acked
        cid = cids[i]
        transport, proto = await loop.create_datagram_endpoint(
            _Answers, remote_addr=("127.0.0.1", port)
        )
        local = transport.get_extra_info("sockname")
        try:
            for k in range(count):
                scheduled = await queues[i].get() if rate else time.perf_counter()
                ref = f"{cid}-{k}"
                message = encode_message(
                    encode_mrq(ref, cid),
                    from_user=cid,
                    host="127.0.0.1",
                    port=port,
                    local=(local[0], local[1]),
                    call_id=f"{uuid.uuid4().hex}@bench",
                )
                token = await _exchange(transport, proto, message, ref)
                if token == "ok":
                    acked += 1
                    latencies.append(time.perf_counter() - scheduled)
                else:
                    other[token] = other.get(token, 0) + 1
        finally:
            transport.close()

    async def pace() -> None:
        assert rate is not None
        t0 = time.perf_counter()
        for k in range(total):
            due = t0 + k / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            queues[k % n].put_nowait(due)

    counts = [total // n + (1 if i < total % n else 0) for i in range(n)]
    tasks = [asyncio.create_task(unit_loop(i, c)) for i, c in enumerate(counts)]
    if rate:
        tasks.append(asyncio.create_task(pace()))
    await asyncio.gather(*tasks)
    return {
        "acked": acked,
        "other": other,
        "elapsed": time.perf_counter() - start,
        "latencies": latencies,
    }


async def _exchange(
    transport: asyncio.DatagramTransport, proto: _Answers, message: bytes, ref: str
) -> str:
    """Send until a final answer for ``ref`` arrives; ``ok`` or what came instead."""
    deadline = time.perf_counter() + GIVE_UP_S
    wait = T1
    while time.perf_counter() < deadline:
        transport.sendto(message)
        try:
            while True:
                data = await asyncio.wait_for(proto.queue.get(), wait)
                try:
                    response, _ = sip.parse(data, stream=False)
                except Malformed:
                    return "unreadable"
                if not isinstance(response, sip.SipResponse) or response.status < 200:
                    continue
                if response.status != 200 or not response.body:
                    return f"SIP {response.status}"
                mrs = scaip.decode_mrs(response.body)
                if mrs.ref != ref:
                    continue  # a late answer to an earlier retransmission
                return "ok" if mrs.snu == 0 else f"snu {mrs.snu}"
        except TimeoutError:
            wait = min(2 * wait, 4.0)
    return "timeout"


async def drive(port: int, cids: list[str], total: int, rate: float | None) -> dict[str, Any]:
    """Run the units in a child process: ``acked``, ``other``, ``elapsed``, ``latencies``."""
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    proc = ctx.Process(target=_units, args=(port, cids, total, rate, out))
    proc.start()
    try:
        data: dict[str, Any] = await asyncio.to_thread(out.get, True, 600)
    finally:
        await asyncio.to_thread(proc.join, 30)
    return data


# --------------------------------------------------------------------------- bare loop


class _Bare(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        try:
            request, _ = sip.parse(data, stream=False)
        except Malformed:
            return
        if not isinstance(request, sip.SipRequest):
            return
        checked = scaip.check_request(request)
        if checked is None:
            return
        reply = scaip.accepted(checked.ref) if isinstance(checked, scaip.Mrq) else checked
        self.transport.sendto(
            sip.build_response(
                request,
                reply.status,
                reply.reason,
                to_tag="bare",
                headers=reply.headers,
                body=reply.body,
                content_type=reply.content_type,
            ),
            addr,
        )


@contextlib.asynccontextmanager
async def bare() -> AsyncIterator[int]:
    """The baseline: parse each datagram and answer it; store nothing."""
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(_Bare, local_addr=("127.0.0.1", 0))
    try:
        yield int(transport.get_extra_info("sockname")[1])
    finally:
        transport.close()


# --------------------------------------------------------------------------- gateway


@contextlib.asynccontextmanager
async def gateway(
    args: argparse.Namespace, tmp: Path, mqtt_port: int, cids: list[str]
) -> AsyncIterator[int]:
    """The real gateway with the SCAIP receiver on UDP (a fresh store per run)."""
    from bench._pg_roles import store_section
    from telecare.gateway.app import Gateway, open_store, prepare_store
    from telecare.gateway.config import (
        Config,
        MqttConfig,
        ReceiversSection,
        RulesSection,
        ScaipConfig,
    )

    schema = f"bench_{uuid.uuid4().hex[:8]}"
    run_dir = tmp / schema
    async with store_section(args.store, args.dsn, run_dir) as store_config:
        config = Config(
            mqtt=MqttConfig(port=mqtt_port, client_id=f"gw-{schema}", topic_prefix=schema),
            store=store_config,
            rules=RulesSection(state_file=str(run_dir / "rules-state.json"), tick_s=3600),
            receivers=ReceiversSection(scaip=ScaipConfig(enabled=True, port=0, tcp=False)),
        )
        async with open_store(config) as store:
            await prepare_store(config, store)
            await store.upsert_site(Site("bench", SiteKind.HOME))
            for cid in cids:
                await store.upsert_device(Device(f"u{cid}", "bench", DeviceKind.PENDANT))
                await store.upsert_receiver_account(
                    ReceiverAccount(ReceiverKind.SCAIP, cid, f"u{cid}")
                )
        async with Gateway(config) as gw:
            assert gw.scaip is not None
            assert gw.scaip.udp_address is not None
            yield gw.scaip.udp_address[1]
            counters = gw.scaip.counters
            if counters["events"] != counters["requests"] or counters["busy"]:
                print(f"  gateway counters: {dict(counters)}")
