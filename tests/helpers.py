"""Small helpers shared by tests."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import TypeVar

from telecare.devices.model import Dispatch
from telecare.dispatch import DispatchService, ResponderDirectory
from telecare.gateway.dispatching import add_store_responders, dispatch_repository
from telecare.gateway.pipeline import Pipeline
from telecare.gateway.store.postgres import PostgresStore
from telecare.gateway.store.sqlite import SqliteStore
from telecare.rules.clock import Clock

T = TypeVar("T")


async def eventually(
    probe: Callable[[], Awaitable[T]],
    predicate: Callable[[T], bool] = bool,
    *,
    timeout: float = 15.0,
    interval: float = 0.05,
) -> T:
    """Poll ``probe`` until ``predicate(result)`` holds; fail with the last result."""
    deadline = time.monotonic() + timeout
    while True:
        result = await probe()
        if predicate(result):
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s; last value: {result!r}")
        await asyncio.sleep(interval)


@asynccontextmanager
async def running_pipeline(
    store: PostgresStore | SqliteStore, clock: Clock, prefix: str = "telecare/v1"
) -> AsyncIterator[Pipeline]:
    """A pipeline with its real dispatch service (the service's tasks run meanwhile)."""
    directory = ResponderDirectory()
    await add_store_responders(directory, store)
    service = DispatchService(dispatch_repository(store), store, clock, directory=directory)
    async with service as dispatcher:
        yield Pipeline(store, clock, topic_prefix=prefix, dispatcher=dispatcher)


async def dispatch_for(store: PostgresStore | SqliteStore, alert_id: str) -> Dispatch:
    """The dispatch opened for ``alert_id`` (waits for the dispatch service's queue)."""
    repo = dispatch_repository(store)
    found = await eventually(lambda: repo.load_for_alert(alert_id), lambda d: d is not None)
    assert found is not None
    return found


def run_together(
    *commands: Sequence[str], timeout: float = 120, env: Mapping[str, str] | None = None
) -> list[subprocess.CompletedProcess[str]]:
    """Run ``commands`` as ``subprocess.run(..., capture_output=True, text=True)`` would,
    but all at once: for independent processes that mostly wait (a pool timeout, a probe
    window), so the waits overlap. Every process is killed if one does not finish within
    ``timeout`` (or anything else fails)."""
    procs: list[subprocess.Popen[str]] = []
    try:
        for command in commands:
            procs.append(
                subprocess.Popen(
                    list(command),
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    env=None if env is None else dict(env),
                )
            )
        deadline = time.monotonic() + timeout
        done = []
        for proc in procs:
            out, err = proc.communicate(timeout=max(0.0, deadline - time.monotonic()))
            done.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
        return done
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
