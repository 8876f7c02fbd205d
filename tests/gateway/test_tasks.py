"""The supervised-loop helper (``telecare.gateway.tasks``): a loop retries what it is
told is transient, with backoff and a log line; stops loudly on anything else; and ends
when cancelled even if a step swallowed the cancellation."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from fastapi import FastAPI
from structlog.testing import capture_logs

from telecare.gateway.backoff import Backoff
from telecare.gateway.tasks import (
    Loop,
    LoopFailed,
    Loops,
    Supervisor,
    retry_until_done,
    start_once,
)
from telecare.gateway.web.app import WebServer

FAST = Backoff(initial=0.001, cap=0.005)


class Transient(Exception):
    pass


def _transient(exc: BaseException) -> bool:
    return isinstance(exc, Transient)


async def test_a_transient_failure_is_retried_with_a_log_line_and_the_loop_goes_on() -> None:
    calls = 0
    recovered = asyncio.Event()

    async def step() -> None:
        nonlocal calls
        calls += 1
        if calls <= 2:
            raise Transient("database away")
        recovered.set()
        await asyncio.Event().wait()  # a healthy loop waits for its next piece of work

    with capture_logs() as logs:
        async with Supervisor() as supervisor:
            supervisor.start(Loop("flaky", step, retry=_transient, backoff=FAST))
            await asyncio.wait_for(recovered.wait(), 10)
            assert supervisor.running == ["flaky"]
    retries = [e for e in logs if e["event"] == "loop_retry"]
    assert [(e["loop"], e["error_type"], e["attempt"]) for e in retries] == [
        ("flaky", "Transient", 1),
        ("flaky", "Transient", 2),
    ]
    assert all(e["log_level"] == "warning" and e["retry_in"] > 0 for e in retries)


async def test_an_unexpected_error_stops_the_loop_loudly_through_the_task_group() -> None:
    async def step() -> None:
        raise KeyError("a bug")

    async def run() -> None:
        async with Supervisor() as supervisor:
            supervisor.start(Loop("buggy", step, retry=_transient, backoff=FAST))
            await asyncio.Event().wait()  # the task group cancels us when the loop fails

    with capture_logs() as logs, pytest.raises(BaseExceptionGroup) as raised:
        await run()
    (failure,) = raised.value.exceptions
    assert isinstance(failure, LoopFailed)
    assert failure.name == "buggy"
    assert isinstance(failure.__cause__, KeyError)
    (line,) = [e for e in logs if e["event"] == "loop_failed"]
    assert line["log_level"] == "critical"
    assert line["loop"] == "buggy"
    assert line["error_type"] == "KeyError"


async def test_with_an_owner_callback_the_failure_goes_to_the_owner() -> None:
    failed: asyncio.Future[LoopFailed] = asyncio.get_running_loop().create_future()

    async def step() -> None:
        raise ValueError("unexpected")

    async with Supervisor(on_failure=failed.set_result) as supervisor:
        supervisor.start(Loop("owned", step, backoff=FAST))
        failure = await asyncio.wait_for(failed, 10)
        assert supervisor.failure is failure
        assert supervisor.running == []
    assert failure.name == "owned"


async def test_a_swallowed_cancellation_still_ends_the_loop() -> None:
    entered = asyncio.Event()

    async def step() -> None:
        entered.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            # what a library does when it turns a cancellation into its own error
            raise Transient("query cancelled") from None

    async with Supervisor() as supervisor:
        task = supervisor.start(Loop("stubborn", step, retry=_transient, backoff=FAST))
        await asyncio.wait_for(entered.wait(), 10)
        await asyncio.wait_for(supervisor.stop(task), 10)
        assert task.cancelled()


async def test_retry_until_done_returns_once_the_step_succeeds() -> None:
    outcomes: list[Exception | str] = [Transient("1"), Transient("2"), "stored"]

    async def step() -> str:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    assert await retry_until_done(Loop("write", step, retry=_transient, backoff=FAST)) == "stored"
    assert outcomes == []


async def test_a_component_on_its_own_gets_a_private_supervisor() -> None:
    ticks = 0
    ticked = asyncio.Event()

    async def step() -> None:
        nonlocal ticks
        ticks += 1
        if ticks == 3:
            ticked.set()
        await asyncio.sleep(0)

    loops = Loops()
    await loops.start(Loop("alone", step))
    await asyncio.wait_for(ticked.wait(), 10)
    await loops.stop()
    assert ticks >= 3


async def test_one_shot_work_is_retried_until_done_inside_the_task_group() -> None:
    outcomes: list[Exception | None] = [Transient("spool busy"), None]
    done = asyncio.Event()

    async def step() -> None:
        outcome = outcomes.pop(0)
        if outcome is not None:
            raise outcome
        done.set()

    async with Supervisor() as supervisor:
        task = supervisor.start_once(Loop("spool-alert", step, retry=_transient, backoff=FAST))
        await asyncio.wait_for(done.wait(), 10)
        await asyncio.wait_for(asyncio.wait([task]), 10)
        assert task.done()
        assert not task.cancelled()
        assert supervisor.running == []
    assert outcomes == []


async def test_loops_run_takes_plain_types_for_layers_that_cannot_import_loop() -> None:
    """``Loops.run`` is what ``telecare.dispatch`` declares in its own protocol: a name, a
    step and a retry predicate; the loop runs in the given supervisor like any other."""
    calls = 0
    recovered = asyncio.Event()

    async def step() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise Transient("storage away")
        recovered.set()
        await asyncio.Event().wait()

    with capture_logs() as logs:
        async with Supervisor() as supervisor:
            loops = Loops(supervisor)
            await loops.run("plain", step, retry=_transient, backoff=FAST)
            await asyncio.wait_for(recovered.wait(), 10)
            assert supervisor.running == ["plain"]
            await loops.stop()
            assert supervisor.running == []
    assert [e["loop"] for e in logs if e["event"] == "loop_retry"] == ["plain"]


async def test_start_once_on_its_own_hands_the_failure_to_whoever_awaits_the_task() -> None:
    async def serve() -> None:
        raise OSError("cannot serve")

    with capture_logs() as logs:
        task = start_once(Loop("web-server", serve, backoff=FAST))
        with pytest.raises(LoopFailed) as raised:
            await asyncio.wait_for(task, 10)
    assert raised.value.name == "web-server"
    assert isinstance(raised.value.__cause__, OSError)
    assert [e["loop"] for e in logs if e["event"] == "loop_failed"] == ["web-server"]


async def test_the_web_server_runs_in_the_supervisor_it_is_given() -> None:
    async with Supervisor() as supervisor:
        async with WebServer(FastAPI(), "127.0.0.1", 0, start=supervisor.start_once) as web:
            assert supervisor.running == ["web-server"]
            async with httpx.AsyncClient() as client:
                assert (await client.get(f"{web.url}/nowhere")).status_code == 404
        assert supervisor.running == []  # asked to exit, it returned: done, not failed
        assert supervisor.failure is None
