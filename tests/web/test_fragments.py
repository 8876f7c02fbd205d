"""A fragment every console asks for at once is rendered once per live event."""

from __future__ import annotations

import asyncio

import pytest

from telecare.gateway.web.fragments import SharedFragment


async def test_concurrent_requests_share_one_rendering_until_the_next_event() -> None:
    cache = SharedFragment(max_age_s=60)
    gate = asyncio.Event()
    calls = 0

    async def render() -> bytes:
        nonlocal calls
        calls += 1
        await gate.wait()  # all 20 requests arrive while the first rendering runs
        return f"queue {calls}".encode()

    waiting = [asyncio.create_task(cache.get("e-1", render)) for _ in range(20)]
    await asyncio.sleep(0)
    gate.set()
    assert {await t for t in waiting} == {b"queue 1"}
    assert (calls, cache.renders, cache.shared) == (1, 1, 19)
    assert await cache.get("e-2", render) == b"queue 2"  # a newer event: rendered again
    assert calls == 2


async def test_an_old_copy_and_a_failed_rendering_are_not_kept() -> None:
    cache = SharedFragment(max_age_s=0)

    async def boom() -> bytes:
        raise RuntimeError("store away")

    async def ok() -> bytes:
        return b"queue"

    assert await cache.get("e-1", ok) == b"queue"
    assert await cache.get("e-1", ok) == b"queue"
    assert cache.renders == 2  # max_age_s 0: never served from the copy
    with pytest.raises(RuntimeError):
        await cache.get("e-2", boom)
    assert await cache.get("e-2", ok) == b"queue"
