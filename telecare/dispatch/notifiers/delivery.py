"""Retries with exponential backoff (jitter, cap) around one transport, ending in a receipt.

Error handling: a :class:`TemporaryDeliveryError` (or ``OSError``) is retried up to
``RetryPolicy.attempts`` times; a :class:`PermanentDeliveryError` stops at once. Either
way :func:`deliver` returns a :class:`~dispatch.records.Receipt` (``delivered`` or
``failed``) and never raises a delivery error, so the caller always has something to
record. Cancellation propagates.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import datetime

from telecare.dispatch.notifiers.base import (
    Message,
    PermanentDeliveryError,
    TemporaryDeliveryError,
    Transport,
)
from telecare.dispatch.records import Receipt

__all__ = ["RetryPolicy", "backoff_delays", "deliver"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Tests shrink ``base_s``/``cap_s`` to milliseconds."""

    attempts: int = 5
    base_s: float = 1.0
    cap_s: float = 60.0
    #: Each delay is scaled by a random factor in ``[1 - jitter, 1]``.
    jitter: float = 0.5


def backoff_delays(policy: RetryPolicy, rng: random.Random | None = None) -> Iterator[float]:
    """The delays before attempts 2, 3, ...: ``base * 2**n`` capped, with jitter."""
    rng = rng or random.Random()
    for n in range(policy.attempts - 1):
        delay = min(policy.cap_s, policy.base_s * 2**n)
        yield delay * (1 - policy.jitter * rng.random())


async def deliver(
    transport: Transport,
    message: Message,
    *,
    now: Callable[[], datetime],
    policy: RetryPolicy = RetryPolicy(),
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> Receipt:
    """Send ``message`` through ``transport``, retrying temporary failures."""
    delays = backoff_delays(policy)
    attempt, last = 0, ""
    while True:
        attempt += 1
        try:
            detail = await transport.send(message)
        except PermanentDeliveryError as exc:
            last = f"permanent: {exc}"
            break
        except (TemporaryDeliveryError, OSError) as exc:
            last = f"temporary: {exc}"
            delay = next(delays, None)
            if delay is None:
                break
            await sleep(delay)
            continue
        return Receipt(
            message.dispatch_id,
            message.channel,
            message.recipient,
            "delivered",
            attempt,
            now(),
            detail,
        )
    return Receipt(
        message.dispatch_id, message.channel, message.recipient, "failed", attempt, now(), last
    )
