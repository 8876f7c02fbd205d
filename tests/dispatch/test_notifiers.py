"""Notifier transports against real servers: a local HTTP server checking the HMAC, a
local SMTP server (aiosmtpd), the real Mosquitto broker; retries and receipts."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import aiomqtt
import pytest
from aiosmtpd.controller import Controller

from telecare.devices.model import EventType, ResponderKind
from telecare.dispatch.notifiers import Message, RetryPolicy, deliver
from telecare.dispatch.notifiers.mqtt import MqttTransport
from telecare.dispatch.notifiers.smtp import SmtpTransport
from telecare.dispatch.notifiers.webhook import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WebhookTransport,
    verify,
)
from telecare.dispatch.notify import Notifier
from telecare.dispatch.responders import Contact, ResponderDirectory, ResponderProfile
from telecare.dispatch.service import DispatchService
from telecare.gateway.store.sqlite import SqliteStore
from telecare.gateway.store.tables import RECEIPTS
from telecare.rules.clock import FakeClock
from tests.dispatch.conftest import RESPONDERS, make_alert, seed
from tests.services import MqttServer, free_port

SECRET = b"shared-webhook-secret-of-32-bytes+"
FAST = RetryPolicy(attempts=3, base_s=0.001, cap_s=0.005)


def message(address: str, channel: str = "webhook") -> Message:
    return Message("d-1", "kh1", channel, address, "Please attend", {"priority": 1})


# -- a real HTTP receiver --------------------------------------------------------------------
@dataclass
class Receiver:
    url: str
    statuses: list[int] = field(default_factory=list)
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = Receiver("")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            rec.requests.append((dict(self.headers.items()), body))
            status = rec.statuses.pop(0) if rec.statuses else 200
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    rec.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    yield rec
    server.shutdown()
    server.server_close()
    thread.join()


async def test_webhook_posts_json_with_a_valid_hmac_signature(receiver: Receiver) -> None:
    transport = WebhookTransport(SECRET, now=lambda: 1_800_000_000)
    detail = await transport.send(message(receiver.url))
    assert detail == "HTTP 200"
    (headers, body) = receiver.requests[0]
    ts, did, sig = headers[TIMESTAMP_HEADER], headers[DELIVERY_HEADER], headers[SIGNATURE_HEADER]
    signed = f"{ts}.{did}.".encode() + body
    assert sig == "sha256=" + hmac.new(SECRET, signed, hashlib.sha256).hexdigest()
    assert verify(SECRET, ts, did, body, sig, now=1_800_000_100)
    assert not verify(b"wrong", ts, did, body, sig, now=1_800_000_100)
    assert not verify(SECRET, ts, did, body + b" ", sig, now=1_800_000_100)
    assert not verify(SECRET, ts, "another-id", body, sig, now=1_800_000_100)
    assert not verify(SECRET, ts, did, body, sig, now=1_800_001_000)  # too old
    doc = json.loads(body)
    assert doc == {
        "delivery_id": did,
        "dispatch_id": "d-1",
        "recipient": "kh1",
        "subject": "Please attend",
        "priority": 1,
    }


async def test_webhook_retries_temporary_failures_with_backoff(receiver: Receiver) -> None:
    receiver.statuses[:] = [503, 429]
    receipt = await deliver(
        WebhookTransport(SECRET), message(receiver.url), now=FakeClock().now, policy=FAST
    )
    assert (receipt.status, receipt.attempts, receipt.detail) == ("delivered", 3, "HTTP 200")
    assert len(receiver.requests) == 3


async def test_webhook_gives_up_at_once_on_a_permanent_error(receiver: Receiver) -> None:
    receiver.statuses[:] = [404]
    receipt = await deliver(
        WebhookTransport(SECRET), message(receiver.url), now=FakeClock().now, policy=FAST
    )
    assert (receipt.status, receipt.attempts) == ("failed", 1)
    assert "HTTP 404" in receipt.detail
    assert receipt.detail.startswith("permanent")


async def test_webhook_to_nothing_listening_fails_after_every_attempt() -> None:
    url = f"http://127.0.0.1:{free_port()}/hook"
    receipt = await deliver(
        WebhookTransport(SECRET), message(url), now=FakeClock().now, policy=FAST
    )
    assert (receipt.status, receipt.attempts) == ("failed", 3)
    assert receipt.detail.startswith("temporary")


# -- a real SMTP server ----------------------------------------------------------------------
class Mailbox:
    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        if address.startswith("nobody@"):
            return "550 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 Message accepted"


@pytest.fixture
def smtp_server() -> Iterator[tuple[Mailbox, int]]:
    box, port = Mailbox(), free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    yield box, port
    controller.stop()


async def test_email_is_delivered_through_smtp(smtp_server: tuple[Mailbox, int]) -> None:
    box, port = smtp_server
    transport = SmtpTransport("127.0.0.1", port, sender="dispatch@telecare.test", starttls=False)
    detail = await transport.send(message("warden@example.test", "email"))
    assert detail == f"accepted by 127.0.0.1:{port}"
    ((sender, rcpts, content),) = box.messages
    assert sender == "dispatch@telecare.test"
    assert rcpts == ["warden@example.test"]
    assert b"Subject: Please attend" in content
    assert b"X-Telecare-Dispatch: d-1" in content
    assert b'"dispatch_id": "d-1"' in content


async def test_email_to_an_unknown_mailbox_is_a_permanent_failure(
    smtp_server: tuple[Mailbox, int],
) -> None:
    _, port = smtp_server
    transport = SmtpTransport("127.0.0.1", port, sender="dispatch@telecare.test", starttls=False)
    receipt = await deliver(
        transport, message("nobody@example.test", "email"), now=FakeClock().now, policy=FAST
    )
    assert (receipt.status, receipt.attempts) == ("failed", 1)


async def first_message(client: aiomqtt.Client) -> aiomqtt.Message:
    async for received in client.messages:
        return received
    raise AssertionError("the broker closed the connection")


# -- the real broker -------------------------------------------------------------------------
async def test_mqtt_publishes_to_the_responder_app_topic(
    mqtt_server: MqttServer, topic_prefix: str
) -> None:
    async with (
        aiomqtt.Client(mqtt_server.host, mqtt_server.port) as app,
        aiomqtt.Client(mqtt_server.host, mqtt_server.port) as gateway,
    ):
        transport = MqttTransport(gateway, topic_prefix=topic_prefix)
        topic = transport.topic("kh1")
        assert topic == f"{topic_prefix}/_gateway/responders/kh1/dispatch"
        await app.subscribe(topic, qos=1)
        await transport.send(message("kh1", "mqtt"))
        got = await asyncio.wait_for(first_message(app), 10)
        assert str(got.topic) == topic
        assert got.qos == 1
        assert json.loads(got.payload)["dispatch_id"] == "d-1"


# -- the notifier: every channel of a responder, receipts recorded ---------------------------
async def test_a_contacted_responder_is_notified_on_every_channel_with_receipts(
    sqlite_store: SqliteStore,
    receiver: Receiver,
    smtp_server: tuple[Mailbox, int],
    mqtt_server: MqttServer,
    topic_prefix: str,
) -> None:
    await seed(sqlite_store)
    box, port = smtp_server
    clock = FakeClock()
    repo = sqlite_store.dispatches
    kh1 = RESPONDERS[0]
    assert kh1.kind is ResponderKind.KEYHOLDER
    contacts = (
        Contact("webhook", receiver.url),
        Contact("email", "kh1@example.test"),
        Contact("mqtt", "kh1"),
        Contact("sms", "+440000"),  # no transport configured: a failed receipt, not a crash
    )
    async with (
        aiomqtt.Client(mqtt_server.host, mqtt_server.port) as app,
        aiomqtt.Client(mqtt_server.host, mqtt_server.port) as client,
    ):
        mqtt = MqttTransport(client, topic_prefix=topic_prefix)
        await app.subscribe(mqtt.topic("kh1"), qos=1)
        notifier = Notifier(
            repo,
            clock,
            transports=[
                WebhookTransport(SECRET),
                SmtpTransport("127.0.0.1", port, sender="dispatch@telecare.test", starttls=False),
                mqtt,
            ],
            directory=ResponderDirectory([ResponderProfile(kh1, contacts)]),
            retry=FAST,
        )
        service = DispatchService(repo, sqlite_store, clock, notifier=notifier)
        alert = make_alert(EventType.PENDANT)
        await sqlite_store.write_alerts([alert])
        async with service:
            did = (await service.open(alert)).dispatch_id
            await service.acknowledge(did, "op1")
            await service.contact(did, "op1")
            await service.drain_notifications()
        got = await asyncio.wait_for(first_message(app), 10)
        assert json.loads(got.payload)["dispatch_id"] == did
    stored = await RECEIPTS.all(sqlite_store.sql, "WHERE dispatch_id = ?", did)
    receipts = {r.channel: r for r in stored}
    assert {c: r.status for c, r in receipts.items()} == {
        "webhook": "delivered",
        "email": "delivered",
        "mqtt": "delivered",
        "sms": "failed",
    }
    assert receipts["sms"].detail == "no sms transport configured"
    assert len(receiver.requests) == 1
    assert len(box.messages) == 1
