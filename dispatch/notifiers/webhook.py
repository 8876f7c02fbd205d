"""Signed webhook: an HTTP POST of the message's JSON with an HMAC-SHA256 signature.

Headers: ``X-Telecare-Timestamp`` (Unix seconds) and ``X-Telecare-Signature:
sha256=<hex>``, the HMAC-SHA256 with the shared secret of ``<timestamp>.<body>``; a
receiver checks it with :func:`verify` and rejects old timestamps (replay).

2xx is delivered; 408, 429 and 5xx and network errors are temporary; other 4xx are
permanent. The request runs in a worker thread (stdlib ``urllib``) so the event loop
never blocks; TLS is verified by default.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
import urllib.error
import urllib.request
from collections.abc import Callable

from dispatch.notifiers.base import Message, PermanentDeliveryError, TemporaryDeliveryError

__all__ = ["SIGNATURE_HEADER", "TIMESTAMP_HEADER", "WebhookTransport", "sign", "verify"]

SIGNATURE_HEADER = "X-Telecare-Signature"
TIMESTAMP_HEADER = "X-Telecare-Timestamp"


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify(
    secret: bytes,
    timestamp: str,
    body: bytes,
    signature: str,
    *,
    now: float,
    tolerance_s: int = 300,
) -> bool:
    """True when ``signature`` is ours and ``timestamp`` is within ``tolerance_s`` of ``now``."""
    try:
        fresh = abs(now - int(timestamp)) <= tolerance_s
    except ValueError:
        return False
    return fresh and hmac.compare_digest(sign(secret, timestamp, body), signature)


class WebhookTransport:
    channel = "webhook"

    def __init__(
        self, secret: bytes, *, timeout_s: float = 10.0, now: Callable[[], float] = time.time
    ) -> None:
        if not secret:
            raise ValueError("webhook secret is empty; set dispatch.webhook_secret")
        self._secret = secret
        self._timeout = timeout_s
        self._now = now

    async def send(self, message: Message) -> str:
        return await asyncio.to_thread(self._post, message)

    def _post(self, message: Message) -> str:
        body = message.payload()
        ts = str(int(self._now()))
        request = urllib.request.Request(
            message.address,
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                TIMESTAMP_HEADER: ts,
                SIGNATURE_HEADER: sign(self._secret, ts, body),
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as response:
                return f"HTTP {response.status}"
        except urllib.error.HTTPError as exc:
            text = f"{message.address} answered HTTP {exc.code}"
            if exc.code in (408, 429) or exc.code >= 500:
                raise TemporaryDeliveryError(text) from None
            raise PermanentDeliveryError(text) from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            raise TemporaryDeliveryError(f"{message.address}: {exc}") from None
