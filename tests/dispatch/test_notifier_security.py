"""Notifier security (issue 9, finding 9) against real servers: a unique delivery id in
the signed content that receivers use to refuse replays, a minimum secret length, https
only (plain http to loopback), no redirects, and SMTP with STARTTLS (certificate
verified) and login, against an aiosmtpd server with a self-signed certificate made by
``openssl`` in the test."""

from __future__ import annotations

import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from telecare.dispatch.notifiers import Message, PermanentDeliveryError, RetryPolicy, deliver
from telecare.dispatch.notifiers.smtp import SmtpTransport
from telecare.dispatch.notifiers.webhook import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    ReplayGuard,
    WebhookTransport,
    verify,
)
from telecare.gateway.config import load_config
from telecare.gateway.errors import ConfigError
from telecare.rules.clock import FakeClock
from tests.services import free_port

SECRET = b"k" * 32
FAST = RetryPolicy(attempts=2, base_s=0.001, cap_s=0.002)


def message(address: str, channel: str = "webhook") -> Message:
    return Message("d-1", "kh1", channel, address, "Please attend", {"priority": 1})


@dataclass
class Cert:
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.cert, self.key)
        return ctx

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.cert))


@pytest.fixture
def cert(tmp_path: Path) -> Cert:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed (apt-get install openssl)")
    c = Cert(tmp_path / "cert.pem", tmp_path / "key.pem")
    subprocess.run(
        [
            *(openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"),
            *("-nodes", "-keyout", str(c.key), "-out", str(c.cert), "-days", "1"),
            *("-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return c


@dataclass
class Receiver:
    url: str
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    status: int = 200


def serve(server: ThreadingHTTPServer) -> Iterator[None]:
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield
    server.shutdown()
    server.server_close()
    thread.join()


def handler(rec: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            rec.requests.append((dict(self.headers.items()), body))
            self.send_response(rec.status)
            if rec.status in (301, 302, 307, 308):
                self.send_header("Location", "http://203.0.113.9/elsewhere")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def https_receiver(cert: Cert) -> Iterator[Receiver]:
    rec = Receiver("")
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler(rec))
    server.socket = cert.server_context().wrap_socket(server.socket, server_side=True)
    rec.url = f"https://localhost:{server.server_address[1]}/hook"
    yield from (rec for _ in serve(server))


@pytest.fixture
def http_receiver() -> Iterator[Receiver]:
    rec = Receiver("")
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler(rec))
    rec.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    yield from (rec for _ in serve(server))


# -- webhooks --------------------------------------------------------------------------------
async def test_a_replayed_webhook_is_refused_by_its_delivery_id(
    https_receiver: Receiver, cert: Cert
) -> None:
    transport = WebhookTransport(
        SECRET, now=lambda: 1_800_000_000, ssl_context=cert.client_context()
    )
    assert await transport.send(message(https_receiver.url)) == "HTTP 200"
    assert await transport.send(message(https_receiver.url)) == "HTTP 200"
    (h1, b1), (h2, b2) = https_receiver.requests
    assert h1[DELIVERY_HEADER] != h2[DELIVERY_HEADER]  # two messages, two ids
    guard = ReplayGuard()
    for headers, body in ((h1, b1), (h2, b2), (h1, b1)):  # the third is a replay of the first
        assert verify(
            SECRET,
            headers[TIMESTAMP_HEADER],
            headers[DELIVERY_HEADER],
            body,
            headers[SIGNATURE_HEADER],
            now=1_800_000_060,
        )
    now = 1_800_000_060
    assert guard.accept(h1[DELIVERY_HEADER], now)
    assert guard.accept(h2[DELIVERY_HEADER], now)
    assert not guard.accept(h1[DELIVERY_HEADER], now + 1)  # replay inside the window
    # Swapping in a fresh delivery id breaks the signature.
    assert not verify(SECRET, h1[TIMESTAMP_HEADER], "f" * 32, b1, h1[SIGNATURE_HEADER], now=now)


async def test_a_retried_message_keeps_its_delivery_id(http_receiver: Receiver) -> None:
    http_receiver.status = 503
    msg = message(http_receiver.url)
    receipt = await deliver(WebhookTransport(SECRET), msg, now=FakeClock().now, policy=FAST)
    assert receipt.status == "failed"
    ids = {h[DELIVERY_HEADER] for h, _ in http_receiver.requests}
    assert ids == {msg.delivery_id}
    assert len(http_receiver.requests) == 2


async def test_an_untrusted_certificate_is_a_permanent_failure(https_receiver: Receiver) -> None:
    receipt = await deliver(
        WebhookTransport(SECRET), message(https_receiver.url), now=FakeClock().now, policy=FAST
    )
    assert (receipt.status, receipt.attempts) == ("failed", 1)
    assert "certificate not trusted" in receipt.detail
    assert https_receiver.requests == []


@pytest.mark.parametrize(
    "address",
    [
        "file:///etc/hostname",
        "ftp://127.0.0.1/hook",
        "http://203.0.113.9/hook",  # plain http across the network (TEST-NET, never sent)
        "http://example.test/hook",
        "https:///no-host",
    ],
)
async def test_non_https_addresses_are_refused_before_connecting(address: str) -> None:
    with pytest.raises(PermanentDeliveryError, match="use https://"):
        await WebhookTransport(SECRET).send(message(address))
    receipt = await deliver(
        WebhookTransport(SECRET), message(address), now=FakeClock().now, policy=FAST
    )
    assert (receipt.status, receipt.attempts) == ("failed", 1)


async def test_redirects_are_not_followed(http_receiver: Receiver) -> None:
    http_receiver.status = 307
    with pytest.raises(PermanentDeliveryError, match="HTTP 307"):
        await WebhookTransport(SECRET).send(message(http_receiver.url))
    assert len(http_receiver.requests) == 1


def test_a_short_webhook_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="1 bytes; use at least 32"):
        WebhookTransport(b"x")
    with pytest.raises(ConfigError, match=r"'dispatch\.webhook_secret' is 31 bytes; a webhook"):
        load_config(None, {"TELECARE_DISPATCH__WEBHOOK_SECRET": "s" * 31})
    assert load_config(None, {"TELECARE_DISPATCH__WEBHOOK_SECRET": "s" * 32}).dispatch


def test_a_file_webhook_contact_is_a_config_error_at_start(tmp_path: Path) -> None:
    from telecare.dispatch.responders import ResponderDirectory
    from telecare.gateway.dispatching import _check_webhook_addresses

    directory = ResponderDirectory.from_mapping(
        [{"id": "kh1", "kind": "keyholder", "contacts": {"webhook": "file:///etc/passwd"}}]
    )
    with pytest.raises(ConfigError, match="responder kh1: webhook address file://"):
        _check_webhook_addresses(directory)


# -- SMTP with STARTTLS and login ------------------------------------------------------------
class Mailbox:
    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes, bool, Any]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        tls = session.ssl is not None
        self.messages.append(
            (envelope.mail_from, list(envelope.rcpt_tos), envelope.content, tls, session.auth_data)
        )
        return "250 Message accepted"


def authenticator(
    server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
        b"gateway",
        b"s3cret-smtp-password",
    )
    return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)


@pytest.fixture
def tls_smtp(cert: Cert) -> Iterator[tuple[Mailbox, int]]:
    box, port = Mailbox(), free_port()
    controller = Controller(
        box,
        hostname="127.0.0.1",
        port=port,
        tls_context=cert.server_context(),
        require_starttls=True,
        auth_required=True,
        authenticator=authenticator,
    )
    controller.start()
    yield box, port
    controller.stop()


async def test_email_goes_over_starttls_with_a_login(
    tls_smtp: tuple[Mailbox, int], cert: Cert
) -> None:
    box, port = tls_smtp
    transport = SmtpTransport(
        "127.0.0.1",
        port,
        sender="dispatch@telecare.test",
        username="gateway",
        password="s3cret-smtp-password",
        ca_file=str(cert.cert),
    )
    msg = message("warden@example.test", "email")
    assert await transport.send(msg) == f"accepted by 127.0.0.1:{port} over TLS"
    ((sender, rcpts, content, tls, auth),) = box.messages
    assert (sender, rcpts, tls) == ("dispatch@telecare.test", ["warden@example.test"], True)
    assert auth.login == b"gateway"
    assert f"X-Telecare-Delivery: {msg.delivery_id}".encode() in content


async def test_smtp_with_a_wrong_password_or_untrusted_certificate_fails_for_good(
    tls_smtp: tuple[Mailbox, int], cert: Cert
) -> None:
    box, port = tls_smtp
    wrong = SmtpTransport(
        "127.0.0.1",
        port,
        sender="d@telecare.test",
        username="gateway",
        password="guess",
        ca_file=str(cert.cert),
    )
    receipt = await deliver(
        wrong, message("w@example.test", "email"), now=FakeClock().now, policy=FAST
    )
    assert (receipt.status, receipt.attempts) == ("failed", 1)
    assert "answered 535" in receipt.detail
    untrusted = SmtpTransport("127.0.0.1", port, sender="d@telecare.test")  # system CAs only
    receipt = await deliver(
        untrusted, message("w@example.test", "email"), now=FakeClock().now, policy=FAST
    )
    assert (receipt.status, receipt.attempts) == ("failed", 1)
    assert "certificate not trusted" in receipt.detail
    assert box.messages == []


async def test_smtp_refuses_a_server_without_starttls() -> None:
    class Box:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            raise AssertionError("mail sent in clear")

    port = free_port()
    controller = Controller(Box(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        with pytest.raises(PermanentDeliveryError, match="does not offer STARTTLS"):
            await SmtpTransport("127.0.0.1", port, sender="d@telecare.test").send(
                message("w@example.test", "email")
            )
    finally:
        controller.stop()


def test_smtp_in_clear_is_refused_off_loopback_and_never_with_a_login() -> None:
    with pytest.raises(ValueError, match="without STARTTLS refused"):
        SmtpTransport("mail.example.test", 25, sender="d@t.test", starttls=False)
    with pytest.raises(ValueError, match="login needs STARTTLS"):
        SmtpTransport(
            "127.0.0.1", 25, sender="d@t.test", starttls=False, username="u", password="p"
        )
    with pytest.raises(ConfigError, match=r"'dispatch\.smtp_starttls' is off for 'mail\.example"):
        load_config(
            None,
            {
                "TELECARE_DISPATCH__SMTP_HOST": "mail.example.test",
                "TELECARE_DISPATCH__SMTP_STARTTLS": "false",
            },
        )
