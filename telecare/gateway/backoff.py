"""The one backoff helper (exponential, full jitter, capped) used for MQTT, serial and
PostgreSQL reconnects. Tests shrink the constants by passing their own ``Backoff``."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

__all__ = ["Backoff"]


@dataclass
class Backoff:
    initial: float = 0.5
    cap: float = 30.0
    factor: float = 2.0
    jitter: bool = True
    attempt: int = field(default=0, init=False)

    def next_delay(self) -> float:
        """The delay before the next attempt; each call grows it until ``cap``."""
        ceiling = min(self.cap, self.initial * self.factor**self.attempt)
        self.attempt += 1
        return random.uniform(ceiling / 2, ceiling) if self.jitter else ceiling

    def reset(self) -> None:
        """Call after a success so the next failure starts small again."""
        self.attempt = 0
