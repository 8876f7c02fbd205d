"""Signed webhook: an HTTP POST of the message's JSON with an HMAC-SHA256 signature.

Headers: ``X-Telecare-Timestamp`` (Unix seconds), ``X-Telecare-Delivery`` (the message's
unique delivery id, also the body's ``delivery_id``) and ``X-Telecare-Signature:
sha256=<hex>``, the HMAC-SHA256 with the shared secret of
``<timestamp>.<delivery id>.<body>``. A receiver checks the signature with :func:`verify`
(which also refuses timestamps outside the tolerance) and then refuses a delivery id it
has already seen within that tolerance (:class:`ReplayGuard`): a captured request
replayed later is either too old or a repeat. Retries of one message keep its delivery
id, so a receiver that answers a repeat with 2xx without acting again is idempotent.

Addresses must be ``https://`` (certificate verified); plain ``http://`` only to a
loopback address (tests, a local relay). Anything else (``file://``, ``ftp://``, plain
http across the network) is a permanent failure before any connection is made, and
redirects are not followed. The secret must be at least :data:`MIN_SECRET_BYTES` long.

2xx is delivered; 408, 429 and 5xx and network errors are temporary; other 4xx, 3xx and
an untrusted certificate are permanent. The request runs in a worker thread (stdlib
``urllib``) so the event loop never blocks.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from telecare.dispatch.notifiers.base import Message, PermanentDeliveryError, TemporaryDeliveryError

__all__ = [
    "DELIVERY_HEADER",
    "MIN_SECRET_BYTES",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "ReplayGuard",
    "WebhookTransport",
    "check_address",
    "sign",
    "verify",
]

SIGNATURE_HEADER = "X-Telecare-Signature"
TIMESTAMP_HEADER = "X-Telecare-Timestamp"
DELIVERY_HEADER = "X-Telecare-Delivery"
#: Shorter HMAC keys are refused (RFC 2104: no shorter than the hash output).
MIN_SECRET_BYTES = 32
#: Seconds a signed request stays acceptable; a receiver keeps delivery ids this long.
TOLERANCE_S = 300


def sign(secret: bytes, timestamp: str, delivery_id: str, body: bytes) -> str:
    signed = f"{timestamp}.{delivery_id}.".encode() + body
    return "sha256=" + hmac.new(secret, signed, hashlib.sha256).hexdigest()


def verify(
    secret: bytes,
    timestamp: str,
    delivery_id: str,
    body: bytes,
    signature: str,
    *,
    now: float,
    tolerance_s: int = TOLERANCE_S,
) -> bool:
    """True when ``signature`` is ours over this timestamp, delivery id and body, and
    ``timestamp`` is within ``tolerance_s`` of ``now``. Then check the delivery id with a
    :class:`ReplayGuard`."""
    try:
        fresh = abs(now - int(timestamp)) <= tolerance_s
    except ValueError:
        return False
    expected = sign(secret, timestamp, delivery_id, body)
    return fresh and hmac.compare_digest(expected, signature)


class ReplayGuard:
    """Receiver side: remembers delivery ids for ``tolerance_s`` (bounded to
    ``max_ids``, oldest forgotten first) and accepts each id once."""

    def __init__(self, tolerance_s: int = TOLERANCE_S, max_ids: int = 100_000) -> None:
        self._tolerance = tolerance_s
        self._max = max_ids
        self._seen: OrderedDict[str, float] = OrderedDict()

    def accept(self, delivery_id: str, now: float) -> bool:
        """``False`` for an id already accepted within the tolerance (a replay, or a
        retry of a delivery already acted on: answer 2xx, do not act again)."""
        while self._seen and (
            len(self._seen) >= self._max
            or next(iter(self._seen.values())) < now - 2 * self._tolerance
        ):
            self._seen.popitem(last=False)
        if delivery_id in self._seen:
            return False
        self._seen[delivery_id] = now
        return True


def check_address(url: str) -> str:
    """``url`` if a webhook may be sent there; otherwise :class:`PermanentDeliveryError`."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme == "https" and host:
        return url
    if parts.scheme == "http" and _loopback(host):
        return url
    raise PermanentDeliveryError(
        f"webhook address {parts.scheme}://{host}... refused: use https:// (plain http only"
        " to a loopback address)"
    )


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # the 3xx surfaces as an HTTPError: a permanent failure


class WebhookTransport:
    channel = "webhook"

    def __init__(
        self,
        secret: bytes,
        *,
        timeout_s: float = 10.0,
        now: Callable[[], float] = time.time,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if len(secret) < MIN_SECRET_BYTES:
            raise ValueError(
                f"webhook secret is {len(secret)} bytes; use at least {MIN_SECRET_BYTES}"
                " (dispatch.webhook_secret)"
            )
        self._secret = secret
        self._timeout = timeout_s
        self._now = now
        self._opener = urllib.request.build_opener(
            _NoRedirect(),
            urllib.request.HTTPSHandler(context=ssl_context or ssl.create_default_context()),
        )

    async def send(self, message: Message) -> str:
        check_address(message.address)
        return await asyncio.to_thread(self._post, message)

    def _post(self, message: Message) -> str:
        body = message.payload()
        ts = str(int(self._now()))
        request = urllib.request.Request(
            check_address(message.address),
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                TIMESTAMP_HEADER: ts,
                DELIVERY_HEADER: message.delivery_id,
                SIGNATURE_HEADER: sign(self._secret, ts, message.delivery_id, body),
            },
        )
        try:
            with self._opener.open(request, timeout=self._timeout) as response:
                return f"HTTP {response.status}"
        except urllib.error.HTTPError as exc:
            text = f"{message.address} answered HTTP {exc.code}"
            if exc.code in (408, 429) or exc.code >= 500:
                raise TemporaryDeliveryError(text) from None
            raise PermanentDeliveryError(text) from None
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, ssl.SSLCertVerificationError):
                raise PermanentDeliveryError(
                    f"{message.address}: certificate not trusted ({exc.reason.verify_message})"
                ) from None
            raise TemporaryDeliveryError(f"{message.address}: {exc.reason}") from None
        except (TimeoutError, ConnectionError) as exc:
            raise TemporaryDeliveryError(f"{message.address}: {exc}") from None
