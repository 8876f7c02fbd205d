"""The dispatch service's loops run in a runner: the gateway's supervisor when injected
(``gateway/dispatching.py``), else :class:`~telecare.dispatch.loops.TaskLoops`. Both keep
the same contract: retried errors are retried, others end the loop loudly, and a
cancellation a step swallowed still ends it."""

from __future__ import annotations

import asyncio

import pytest

from telecare.dispatch.loops import LoopSpec, Runner, TaskLoops, any_error
from telecare.dispatch.service import DispatchService
from telecare.gateway.dispatching import SupervisedLoops
from telecare.gateway.store.sqlite import SqliteStore
from telecare.gateway.tasks import LoopFailed, Supervisor
from telecare.rules.clock import FakeClock
from tests.dispatch.conftest import NOW


def _runners() -> list[str]:
    return ["own", "supervised"]


class Flaky:
    """A step that fails ``failures`` times with ``error``, then counts its rounds."""

    def __init__(self, failures: int, error: Exception) -> None:
        self.failures = failures
        self.error = error
        self.rounds = 0
        self.done = asyncio.Event()

    async def step(self) -> None:
        if self.failures:
            self.failures -= 1
            raise self.error
        self.rounds += 1
        if self.rounds >= 3:
            self.done.set()
        await asyncio.sleep(0)


@pytest.mark.parametrize("kind", _runners())
async def test_a_retried_error_is_retried_and_the_loop_goes_on(kind: str) -> None:
    flaky = Flaky(2, OSError("store away"))
    spec = LoopSpec("flaky", flaky.step, any_error, retry_s=0.01)
    async with Supervisor() as supervisor:
        runner: Runner = TaskLoops() if kind == "own" else SupervisedLoops(supervisor)
        await runner.start(spec)
        await asyncio.wait_for(flaky.done.wait(), 10)
        await runner.stop()
    assert flaky.failures == 0
    assert flaky.rounds >= 3


async def test_an_error_not_retried_ends_the_loop_loudly_in_the_own_runner() -> None:
    runner = TaskLoops()
    await runner.start(LoopSpec("broken", Flaky(1, ValueError("a bug")).step))
    # As a TaskGroup does: the failure cancels the task that started the loops, and
    # leaving (stop) raises it.
    with pytest.raises(asyncio.CancelledError):
        await asyncio.sleep(10)
    with pytest.raises(ExceptionGroup) as caught:
        await runner.stop()
    assert caught.group_contains(ValueError)


async def test_an_error_not_retried_reaches_the_gateway_supervisor() -> None:
    failures: list[LoopFailed] = []
    async with Supervisor(on_failure=failures.append) as supervisor:
        runner = SupervisedLoops(supervisor)
        await runner.start(LoopSpec("broken", Flaky(1, ValueError("a bug")).step))

        async def failed() -> None:
            while not failures:  # noqa: ASYNC110 - the supervisor calls back; nothing to await
                await asyncio.sleep(0.01)

        await asyncio.wait_for(failed(), 10)
        await runner.stop()
    assert failures[0].name == "broken"
    assert isinstance(failures[0].error, ValueError)


@pytest.mark.parametrize("kind", _runners())
async def test_a_swallowed_cancellation_still_ends_the_loop(kind: str) -> None:
    started = asyncio.Event()

    async def swallows() -> None:
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            raise RuntimeError("QueryCanceled") from None  # what psycopg does

    async with Supervisor() as supervisor:
        runner: Runner = TaskLoops() if kind == "own" else SupervisedLoops(supervisor)
        await runner.start(LoopSpec("swallows", swallows, any_error, retry_s=0.01))
        await asyncio.wait_for(started.wait(), 10)
        await asyncio.wait_for(runner.stop(), 10)  # would hang if the loop went on


async def test_the_gateway_runs_the_service_loops_in_its_supervisor(
    sqlite_store: SqliteStore,
) -> None:
    async with Supervisor() as supervisor:
        service = DispatchService(
            sqlite_store.dispatches,
            sqlite_store,
            FakeClock(NOW),
            runner=SupervisedLoops(supervisor),
        )
        async with service:
            assert {"dispatch-intake", "dispatch-timers"} <= set(supervisor.running)
        assert supervisor.running == []
