"""Helpers for the SCAIP receiver tests: provisioning, a receiver in front of a real
pipeline and store, raw reads of stored events, and running ``sipp`` scenarios."""

from __future__ import annotations

import asyncio
import html
import shutil
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from telecare.devices.model import (
    Device,
    DeviceKind,
    ReceiverAccount,
    ReceiverKind,
    Resident,
    Site,
    SiteKind,
)
from telecare.gateway.config import ScaipConfig
from telecare.gateway.decode_scaip import ScaipDecoding
from telecare.gateway.ingest.scaip import ScaipReceiver
from telecare.gateway.pipeline import Pipeline
from telecare.gateway.store.postgres import PostgresStore
from telecare.gateway.store.sqlite import SqliteStore
from telecare.rules.clock import Clock
from tests.helpers import running_pipeline

SIPP = shutil.which("sipp")
SIPP_MISSING = "sipp is not installed (Debian package sip-tester; .ci/run installs it)"
TEMPLATE = Path(__file__).parent / "sipp" / "scaip_request.xml"
CID = "26317"

AnyStore = PostgresStore | SqliteStore


async def provision(store: AnyStore) -> None:
    """Resident res1 at home1 with SCAIP unit ``unit1`` (cid 26317, heartbeat 60 s) and a
    smoke detector ``smoke1`` on its peripheral did 05."""
    await store.upsert_site(Site("home1", SiteKind.HOME))
    await store.upsert_resident(Resident("res1", "home1", "Mrs A"))
    await store.upsert_device(
        Device(
            "unit1", "home1", DeviceKind.PENDANT, "res1", format="scaip", heartbeat_interval_s=60
        )
    )
    await store.upsert_device(Device("smoke1", "home1", DeviceKind.SMOKE_DETECTOR, "res1"))
    await store.upsert_receiver_account(ReceiverAccount(ReceiverKind.SCAIP, CID, "unit1"))
    await store.upsert_receiver_account(
        ReceiverAccount(ReceiverKind.SCAIP, CID, "smoke1", zone="05")
    )


@asynccontextmanager
async def receiving(
    store: AnyStore, clock: Clock, **config: Any
) -> AsyncIterator[tuple[Pipeline, ScaipReceiver]]:
    """A real pipeline (with its dispatch service) behind a SCAIP receiver on free ports."""
    cfg = ScaipConfig(enabled=True, host="127.0.0.1", port=0, **config)
    async with running_pipeline(store, clock) as pipeline:
        decoding = ScaipDecoding.with_registry(
            cfg,
            pipeline,
            pipeline.decoder.registry,
            clock,
            watch=pipeline.engine.watch_device,
            status=store.write_status,
        )
        receiver = ScaipReceiver(cfg, decoding, clock)
        async with receiver:
            yield pipeline, receiver


@dataclass(frozen=True)
class StoredEvent:
    device_id: str
    msg_id: str
    type: str
    phase: str
    ts: datetime
    code: int | None
    device_type: str | None
    location: str | None
    source: str


async def stored_events(store: AnyStore) -> list[StoredEvent]:
    """Every row of ``alarm_events`` (the store has no read query for them)."""
    cols = "device_id, msg_id, type, phase, ts, code, device_type, location, source"
    sql = f"SELECT {cols} FROM alarm_events ORDER BY event_id"
    return [StoredEvent(*r) for r in await store.sql.fetch_all(sql)]


async def last_heartbeat(store: AnyStore, device_id: str) -> Any:
    row = await store.sql.fetch_one(
        "SELECT last_heartbeat FROM device_status WHERE device_id = ?", device_id
    )
    return row[0] if row else None


def mrq(ref: str, mty: str = "ME", stc: str = "0010", dty: str = "0003", cid: str = CID) -> str:
    return (
        f"<mrq><ref>{ref}</ref><cid>{cid}</cid><dty>{dty}</dty><mty>{mty}</mty>"
        f"<stc>{stc}</stc><lco>011</lco><crd>no-voice:</crd></mrq>"
    )


def mrs_regexp(ref: str, snu: int) -> str:
    return f"^<mrs><ref>{ref}</ref><snu>{snu}</snu>"


async def run_sipp(
    tmp_path: Path,
    port: int,
    *,
    transport: str = "u1",
    name: str = "request",
    body: str = "",
    status: int = 200,
    body_regexp: str = ".*",
    method: str = "MESSAGE",
    cseq_method: str | None = None,
    from_user: str = CID,
    content_type: str = "application/scaip+xml",
    to_header: str = "To: <sip:arc@[remote_ip]:[remote_port]>",
    via_header: str = "Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]",
) -> str:
    """Run one filled-in copy of tests/ingest/sipp/scaip_request.xml; fail with sipp's
    output and error log unless sipp saw the expected response (exit status 0)."""
    assert SIPP is not None, SIPP_MISSING
    run = f"{name}-{uuid.uuid4().hex[:8]}"
    scenario = tmp_path / f"{run}.xml"
    scenario.write_text(
        TEMPLATE.read_text(encoding="utf-8").format(
            name=name,
            method=method,
            cseq_method=cseq_method or method,
            from_user=from_user,
            content_type=content_type,
            to_header=to_header,
            via_header=via_header,
            status=status,
            body_regexp=html.escape(body_regexp, quote=True),
        ),
        encoding="utf-8",
    )
    errors = tmp_path / f"{run}.errors.log"
    messages = tmp_path / f"{run}.messages.log"
    proc = await asyncio.create_subprocess_exec(
        SIPP,
        f"127.0.0.1:{port}",
        "-sf",
        str(scenario),
        "-m",
        "1",
        "-t",
        transport,
        "-i",
        "127.0.0.1",
        "-nostdin",
        "-key",
        "body",
        body,
        "-timeout",
        "20s",
        "-timeout_error",
        "-trace_err",
        "-error_file",
        str(errors),
        "-trace_msg",
        "-message_file",
        str(messages),
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    log = messages.read_text(errors="replace") if messages.exists() else ""
    if proc.returncode != 0:
        err = errors.read_text(errors="replace") if errors.exists() else ""
        raise AssertionError(
            f"sipp {name} exited {proc.returncode}\n--- errors\n{err[-3000:]}\n"
            f"--- messages\n{log[-4000:]}\n--- output\n{out.decode(errors='replace')[-2000:]}"
        )
    return log
