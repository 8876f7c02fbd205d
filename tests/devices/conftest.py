"""Helpers shared by the device codec tests."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from telecare.devices.codecs import Incomplete, Malformed

T0 = datetime(2026, 1, 5, 9, 30, tzinfo=UTC)


def check_parse_contract(parse: Callable[[bytes], tuple[Any, int]], data: bytes) -> None:
    """``parse`` either returns (frame, 1..len) or raises Incomplete / Malformed(skip>=1)."""
    error: Malformed | None = None
    try:
        _, used = parse(data)
    except Incomplete:
        return
    except Malformed as exc:
        error = exc
    if error is not None:
        assert error.skip >= 1
        assert error.reason
        return
    assert 1 <= used <= len(data)


@pytest.fixture
def t0() -> datetime:
    return T0
