"""How the dispatch service runs its loops: through a runner it is given.

The service has long-running loops (the timer loop, the intake worker, the notification
workers). Each is a :class:`LoopSpec`: a name, a *step* that does one round of work and
awaits its own trigger (a queue, a deadline), which exceptions are transient and the
longest wait before retrying one. The service hands its specs to a :class:`Runner`:

* in the gateway, the gateway's supervisor (``gateway/dispatching.py`` adapts
  ``gateway.tasks.Loops``; dispatch cannot import the gateway, so this module declares
  what it needs): named tasks in the process's one task group, transient errors retried
  with the shared backoff and a log line, anything else stops the process loudly;
* used on its own (tests, tools, benches), :class:`TaskLoops`, a private task group
  with the same contract and a fixed retry delay.

Contract of a runner (both keep it)
    * the step returns -> it runs again at once;
    * the step raises an exception ``retry`` accepts -> a log line, then the step runs
      again after a delay (at most ``retry_s``);
    * the step raises anything else -> the loop ends and the failure is raised where the
      runner reports failures (the gateway: stops the process; :class:`TaskLoops`: from
      :meth:`TaskLoops.stop`), never silently;
    * the task is cancelled -> the loop ends, even when a library turned the
      cancellation into an ordinary exception (psycopg answers a cancelled query with
      ``QueryCanceled``) or a step swallowed it: the runner checks after every step, so
      no step has to.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import structlog

__all__ = ["LoopSpec", "Runner", "TaskLoops", "any_error", "no_error"]

log = structlog.get_logger(__name__)


def no_error(exc: BaseException) -> bool:
    """``retry`` for a loop whose step handles its own failures: anything is a bug."""
    return False


def any_error(exc: BaseException) -> bool:
    """``retry`` for a loop that must keep going whatever one round met (the timers)."""
    return isinstance(exc, Exception)


@dataclass(frozen=True)
class LoopSpec:
    """One long-running loop of the dispatch service (see the module docstring)."""

    name: str
    #: One round of work; awaits its own trigger.
    step: Callable[[], Awaitable[object]]
    #: Which exceptions are transient (retried); anything else ends the loop loudly.
    retry: Callable[[BaseException], bool] = no_error
    #: The longest wait before a retried step runs again.
    retry_s: float = 5.0


class Runner(Protocol):
    """Runs the service's loops until :meth:`stop` (see the module docstring)."""

    async def start(self, *loops: LoopSpec) -> None: ...

    async def stop(self) -> None:
        """Cancel and await the loops started here."""
        ...


class TaskLoops:
    """The runner used when none is given: a private ``TaskGroup``, entered on the first
    :meth:`start` and left on :meth:`stop`. As with any task group, a loop's failure
    cancels the task that started it and :meth:`stop` raises it (an ``ExceptionGroup``)."""

    def __init__(self) -> None:
        self._group: asyncio.TaskGroup | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self, *loops: LoopSpec) -> None:
        if self._group is None:
            self._group = asyncio.TaskGroup()
            await self._group.__aenter__()
        self._tasks += [self._group.create_task(_run(loop), name=loop.name) for loop in loops]

    async def stop(self) -> None:
        group, self._group = self._group, None
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        if group is not None:
            await group.__aexit__(None, None, None)


def _end_if_cancelled(task: asyncio.Task[None]) -> None:
    # The one place the cancellation a step (or a library) swallowed is honoured.
    if task.cancelling():
        raise asyncio.CancelledError


async def _run(loop: LoopSpec) -> None:
    task = asyncio.current_task()
    assert task is not None
    while True:
        try:
            await loop.step()
        except Exception as exc:
            _end_if_cancelled(task)
            if not loop.retry(exc):
                log.critical("dispatch_loop_failed", loop=loop.name, exc_info=exc)
                raise
            log.warning("dispatch_loop_retry", loop=loop.name, exc_info=exc)
            await asyncio.sleep(loop.retry_s)
        _end_if_cancelled(task)
