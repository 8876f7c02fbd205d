"""Shared helpers for the rules tests: a fixed start time and an event factory."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from itertools import count

import pytest

from telecare.devices.model import AlarmEvent, EventType, Phase

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)

EventFactory = Callable[..., AlarmEvent]


@pytest.fixture
def event() -> EventFactory:
    """``event(type, phase="alarm", at=seconds after T0, device=..., resident=...)``."""
    ids = count()

    def make(
        type_: EventType,
        phase: Phase = Phase.ALARM,
        at: float = 0,
        device: str = "pendant-1",
        resident: str | None = "res-1",
        site: str | None = "site-1",
        msg_id: str | None = None,
    ) -> AlarmEvent:
        return AlarmEvent(
            device_id=device,
            type=type_,
            phase=phase,
            ts=T0 + timedelta(seconds=at),
            msg_id=msg_id or f"m{next(ids)}",
            resident_id=resident,
            site_id=site,
        )

    return make
