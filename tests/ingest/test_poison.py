"""Issue 9, finding 1: a poison message from one device never stops ingest for the others.

Through Mosquitto run with the shipped configuration (devices log in with their own
credentials) into a gateway on PostgreSQL: each poison payload is acknowledged,
dead-lettered with a specific reason and counted, the gateway never drops its connection,
and another device's pendant alarm sent right after it is stored within 2 s.

The property test runs ``telecare run`` in a child process and feeds it generated
payloads (random JSON, huge numbers, deep nesting, odd timestamps, random bytes): a
modest number of examples here, many more with ``pytest -m soak``.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from telecare.devices.codecs import json_v1
from telecare.devices.model import EventType
from telecare.gateway.app import Gateway
from telecare.gateway.config import StoreConfig
from telecare.gateway.store.postgres import PostgresStore
from telecare.gateway.store.rows import DEAD_LETTER_PREVIEW
from tests.ingest.shipped import (
    GATEWAY_PASSWORD,
    GATEWAY_USER,
    ROOT,
    device_client,
    gateway_config,
    running_gateway,
    shipped_broker,
    users_for,
)
from tests.ingest.support import provision
from tests.services import PgServer

pytestmark = [pytest.mark.postgres, pytest.mark.mosquitto]

DEVICES = ["pend1", "pend2", "ox1", "hub1", "arc1", "other1"]
#: The pendant alarm sent after each poison message must be stored within this.
ALARM_DEADLINE_S = 2.0


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _huge_reading() -> bytes:
    """The 504-byte reading of the issue: ``value`` is 1 followed by 400 zeros."""
    return (
        '{"v":1,"msg_id":"r1","ts":"2024-05-01T10:00:00+00:00",'
        '"readings":[{"metric":"spo2","value":1' + "0" * 400 + ',"unit":"%"}]}'
    ).encode()


#: (name, channel, payload, part of the dead letter's reason)
NAMED = [
    ("huge_integer", "reading", _huge_reading(), "number literal of 401 characters"),
    (
        "year_one_in_utc_plus_one",
        "event",
        b'{"v":1,"msg_id":"e1","ts":"0001-01-01T00:00:00+01:00","type":"pendant"}',
        "ts is outside the representable range",
    ),
    ("nested_brackets", "event", b"[" * 20_000, "JSON nested deeper than 8 levels"),
    # Valid JSON the codec accepts, refused by PostgreSQL while processing (text cannot
    # hold NUL): the process stage's guard, not a codec bound, dead-letters it.
    (
        "nul_in_zone",
        "event",
        json.dumps(
            {"v": 1, "msg_id": "e2", "ts": _now(), "type": "pendant", "zone": "a\u0000b"}
        ).encode(),
        "process failed: DataError",
    ),
]


@pytest.fixture
def broker(topic_prefix: str) -> Iterator[int]:
    with shipped_broker(topic_prefix, users_for(DEVICES)) as port:
        yield port


@pytest.fixture
async def gateway(
    broker: int, pg_server: PgServer, pg_schema: str, topic_prefix: str
) -> AsyncIterator[Gateway]:
    store = StoreConfig(backend="postgres", dsn=pg_server.dsn, schema=pg_schema, timescale=False)
    async with running_gateway(gateway_config(broker, topic_prefix, store)) as gw:
        await provision(gw.store, pendants=2)
        yield gw


async def _press(port: int, prefix: str, device_id: str = "pend2") -> str:
    msg_id = f"press-{uuid.uuid4().hex[:12]}"
    async with device_client(port, device_id) as client:
        payload = json_v1.encode_event(msg_id, datetime.now(UTC), EventType.PENDANT)
        await client.publish(f"{prefix}/s1/{device_id}/event", payload, qos=1)
    return msg_id


async def _stored_within(gw: Gateway, device_id: str, msg_id: str, seconds: float) -> float:
    """Seconds until the event ``(device_id, msg_id)`` is stored; fails after ``seconds``."""
    start = time.monotonic()
    while await gw.store.stored_event_digest(device_id, msg_id) is None:
        elapsed = time.monotonic() - start
        assert elapsed < seconds, f"alarm {msg_id} not stored within {seconds} s"
        await asyncio.sleep(0.02)
    return time.monotonic() - start


@pytest.mark.parametrize(("name", "channel", "payload", "reason"), NAMED, ids=[n[0] for n in NAMED])
async def test_named_poison_is_dead_lettered_and_the_next_alarm_is_stored(
    name: str,
    channel: str,
    payload: bytes,
    reason: str,
    gateway: Gateway,
    broker: int,
    topic_prefix: str,
) -> None:
    gw = gateway
    topic = f"{topic_prefix}/s1/pend1/{channel}"
    async with device_client(broker, "pend1") as pend1:
        await pend1.publish(topic, payload, qos=1)
    msg_id = await _press(broker, topic_prefix)
    await _stored_within(gw, "pend2", msg_id, ALARM_DEADLINE_S)

    async def letters() -> list[str]:
        return [d.reason for d in await gw.store.dead_letters()]

    deadline = time.monotonic() + 10
    while not await letters():
        assert time.monotonic() < deadline, "the poison message was not dead-lettered"
        await asyncio.sleep(0.02)
    [letter] = await gw.store.dead_letters()
    assert reason in letter.reason
    assert letter.origin == topic
    assert letter.device_id == "pend1"
    assert letter.payload == payload[:DEAD_LETTER_PREVIEW]  # a bounded preview
    assert letter.payload_bytes == len(payload)
    # Acknowledged and moved past: no failed message, no reconnect.
    assert gw.mqtt.not_stored == 0
    assert gw.mqtt.connections == 1
    assert gw.pipeline.counters["dead_letters"] == 1
    if reason.startswith("process failed"):
        assert gw.pipeline.counters["poison_process"] == 1
        assert "in " in letter.reason  # where: module and function


# --------------------------------------------------------------------------- property test

_KEYS = ["v", "msg_id", "ts", "type", "phase", "readings", "items", "metric", "value"]
_KEYS += ["unit", "device_id", "channel", "online", "zone", "resident_id", "spo2", "uuid"]

_ODD_TS = st.one_of(
    st.sampled_from(
        [
            "0001-01-01T00:00:00+01:00",
            "0001-01-01T00:00:00-23:59",
            "9999-12-31T23:59:59-01:00",
            "9999-01-01T00:00:00Z",
            "1900-01-01T00:00:00Z",
            "2024-02-30T00:00:00Z",
            "2024-05-01T10:00:00",
            "2024-05-01T24:00:00Z",
            "",
            "T",
        ]
    ),
    st.builds(
        lambda dt, minutes: _with_offset(dt, minutes), st.datetimes(), st.integers(-1439, 1439)
    ),
)


def _with_offset(dt: datetime, minutes: int) -> str:
    """``dt`` (any year 1..9999) with a UTC offset of ``minutes``, ISO 8601."""
    sign = "+" if minutes >= 0 else "-"
    return f"{dt.isoformat()}{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


_SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30)
_RANDOM_JSON = st.recursive(
    _SCALARS | _ODD_TS,
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(st.sampled_from(_KEYS) | st.text(max_size=8), children, max_size=6)
    ),
    max_leaves=25,
).map(lambda doc: json.dumps(doc).encode())

_EVENTS = st.builds(
    lambda msg_id, ts, type_, zone: json.dumps(
        {"v": 1, "msg_id": msg_id, "ts": ts, "type": type_, "zone": zone}
    ).encode(),
    st.text(max_size=70),
    _ODD_TS,
    st.sampled_from([t.value for t in EventType]) | st.text(max_size=10),
    st.none() | st.text(max_size=20),
)

_HUGE_NUMBERS = st.builds(
    lambda literal, field: (
        '{"v":1,"msg_id":"h1","ts":"' + _now() + '","battery":' + literal + ","
        '"readings":[{"metric":"' + field + '","value":' + literal + ',"unit":"%"}]}'
    ).encode(),
    st.one_of(
        st.integers(20, 4000).map(lambda n: "1" + "0" * n),
        st.integers(20, 4000).map(lambda n: "-" + "9" * n),
        st.sampled_from(["1e400", "-1e999", "1e-400", "0." + "0" * 500 + "1", "1E+308"]),
    ),
    st.sampled_from(["spo2", "pulse", "temperature"]),
)

_DEEP = st.one_of(
    st.integers(9, 30_000).map(lambda n: b"[" * n),
    st.integers(9, 5_000).map(lambda n: b'{"v":1,"x":' + b"[" * n + b"]" * n + b"}"),
    st.integers(9, 5_000).map(lambda n: b'{"a":' * n + b"1" + b"}" * n),
)

PAYLOADS = st.one_of(_RANDOM_JSON, _EVENTS, _HUGE_NUMBERS, _DEEP, st.binary(max_size=2048))


_TELECARE = [sys.executable, "-c", "from telecare.gateway.cli.main import main; main()"]


class _GatewayProcess:
    """``telecare run`` in a child process, logging JSON to a file."""

    def __init__(self, config: Path, log: Path) -> None:
        self.log_path = log
        self._log = log.open("wb")
        self.proc = subprocess.Popen(
            [*_TELECARE, "run", "--config", str(config)],
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={k: v for k, v in os.environ.items() if not k.startswith("TELECARE_")},
        )

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def wait_for(self, needle: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.log():
            assert self.proc.poll() is None, f"gateway exited:\n{self.log()}"
            assert time.monotonic() < deadline, f"{needle!r} not logged:\n{self.log()}"
            time.sleep(0.05)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


class _Rig:
    """The shipped broker, a provisioned schema and ``telecare run``: one per test, shared
    by its examples."""

    def __init__(self, port: int, prefix: str, dsn: str, schema: str, gateway: _GatewayProcess):
        self.port, self.prefix, self.gateway = port, prefix, gateway
        self.db = psycopg.connect(dsn, autocommit=True, options=f"-c search_path={schema}")

    def check(self, channel: str, payload: bytes) -> None:
        """Poison from pend1, then a pendant alarm from pend2 that must be stored in 2 s."""

        async def send() -> str:
            async with device_client(self.port, "pend1") as pend1:
                await pend1.publish(f"{self.prefix}/s1/pend1/{channel}", payload, qos=1)
            return await _press(self.port, self.prefix)

        msg_id = asyncio.run(send())
        start = time.monotonic()
        while not self.db.execute(
            "SELECT 1 FROM alarm_events WHERE device_id = 'pend2' AND msg_id = %s", (msg_id,)
        ).fetchone():
            elapsed = time.monotonic() - start
            assert elapsed < ALARM_DEADLINE_S, (
                f"pendant alarm not stored within {ALARM_DEADLINE_S} s after a"
                f" {len(payload)}-byte payload on {channel}"
            )
            time.sleep(0.02)
        log = self.gateway.log()
        assert "mqtt_message_not_stored" not in log
        assert "mqtt_disconnected" not in log


@pytest.fixture
def rig(
    broker: int, pg_server: PgServer, pg_schema: str, topic_prefix: str, tmp_path: Path
) -> Iterator[_Rig]:
    async def prepare() -> None:
        async with PostgresStore(pg_server.dsn, schema=pg_schema, use_timescale=False) as store:
            await store.migrate()
            await provision(store, pendants=2)

    asyncio.run(prepare())
    config = tmp_path / "gateway.toml"
    config.write_text(
        "[mqtt]\n"
        f'host = "127.0.0.1"\nport = {broker}\nclient_id = "{GATEWAY_USER}"\n'
        f'username = "{GATEWAY_USER}"\npassword = "{GATEWAY_PASSWORD}"\n'
        f'topic_prefix = "{topic_prefix}"\nclean_session = true\n\n'
        "[store]\n"
        f'backend = "postgres"\ndsn = "{pg_server.dsn}"\nschema = "{pg_schema}"\n'
        f'timescale = false\nspool_dir = "{tmp_path / "spool"}"\n\n'
        f'[rules]\nstate_file = "{tmp_path / "rules.json"}"\n\n'
        '[log]\nlevel = "info"\nformat = "json"\n',
        encoding="utf-8",
    )
    gateway = _GatewayProcess(config, tmp_path / "gateway.log")
    try:
        gateway.wait_for("mqtt_connected")
        rig = _Rig(broker, topic_prefix, pg_server.dsn, pg_schema, gateway)
        try:
            yield rig
        finally:
            rig.db.close()
    finally:
        gateway.stop()


_PROPERTY = given(channel=st.sampled_from(json_v1.CHANNELS), payload=PAYLOADS)
_SUPPRESS = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]


@settings(max_examples=15, deadline=None, suppress_health_check=_SUPPRESS)
@_PROPERTY
def test_no_payload_from_one_device_delays_another_devices_alarm(
    rig: _Rig, channel: str, payload: bytes
) -> None:
    rig.check(channel, payload)


@pytest.mark.soak
@pytest.mark.timeout(1800)
@settings(max_examples=400, deadline=None, suppress_health_check=_SUPPRESS)
@_PROPERTY
def test_soak_no_payload_from_one_device_delays_another_devices_alarm(
    rig: _Rig, channel: str, payload: bytes
) -> None:
    rig.check(channel, payload)
