"""Supervised loops: the one way the gateway runs anything that runs for long.

Every long-running loop (MQTT ingest, a serial port, the rule tick, the orphan sweep, the
dead-letter publisher, the IP receivers' store writers, the registry watch, the web
server) is a :class:`Loop`: a name, a *step* that does one round of work (and waits for
it: a queue, a timer, a socket), the exceptions it retries and its
:class:`~telecare.gateway.backoff.Backoff`. The helper calls the step over and over::

    Loop("orphan-sweep", sweep_after_a_while, retry=is_storage_unavailable)

Contract of a supervised loop
    * the step returns -> the backoff is reset and the step runs again at once;
    * the step raises an exception ``retry`` accepts -> one ``loop_retry`` log line
      (loop name, exception class and text, attempt, delay), then the step runs again
      after the backoff delay, for ever;
    * the step raises anything else -> one ``loop_failed`` log line at critical level
      with the traceback, and :class:`LoopFailed` ends the loop: it is never silent;
      the :class:`Supervisor` owning the task then stops the process (below);
    * the task is cancelled -> the loop ends, even when a library turned the
      cancellation into an ordinary exception (psycopg answers a cancelled query with
      ``QueryCanceled``) or a step swallowed it: the helper checks
      ``Task.cancelling()`` after every step and every failure, so call sites never
      check for cancellation themselves.

:func:`retry_until_done` is the same core for one operation that must succeed (a serial
line cannot resend what we drop): retried while ``retry`` accepts its error, returned
from once it succeeds.

How a component uses it
    * A component in ``gateway/`` takes ``supervisor: Supervisor | None = None``, keeps
      ``self._loops = Loops(supervisor)``, starts its loops in ``__aenter__``
      (``await self._loops.start(Loop(...))``) and stops them in ``__aexit__``
      (``await self._loops.stop()``): the gateway passes its supervisor, a test passes
      nothing and the component gets a private one. ``Loops.run(name, step, retry=...)``
      is the same as ``start(Loop(name, step, retry=...))``.
    * A layer that may not import ``gateway`` (``telecare.dispatch``) declares the
      protocol it needs in its own package, with plain types only, e.g.
      ``async def run(self, name: str, step: Callable[[], Awaitable[object]], *, retry:
      Callable[[BaseException], bool]) -> None`` and ``async def stop(self) -> None``;
      :class:`Loops` satisfies it structurally, so the gateway injects
      ``Loops(supervisor)``.
    * Work that runs once until it is done rather than for ever (the web server's
      ``serve``, which returns when asked to exit; the spool alert) is handed to a
      :data:`StartLoop`: the gateway passes :meth:`Supervisor.start_once`; on its own
      a component uses :func:`start_once` (a task of its own, whose failure the
      component sees when it awaits the task).

Resource handling
    A :class:`Supervisor` owns one ``asyncio.TaskGroup``; the ``Gateway`` owns one for the
    whole process and hands it to every component, so no loop can outlive the gateway or
    end unseen. A component used on its own (tests, tools) gets a private one through
    :class:`Loops`. Components stop their own loops when they are left (in the gateway's
    dependency order); leaving the supervisor cancels and awaits whatever is still running.

Error handling
    With an ``on_failure`` callback (the gateway's), a :class:`LoopFailed` is handed to it
    and the TaskGroup is not torn down at once: the gateway stops in dependency order
    (ingest first, store last: everything accepted is flushed) and then
    ``Gateway.wait_closed()`` raises the failure, so ``telecare run`` exits non-zero.
    Without one, the failure propagates through the TaskGroup (its siblings are cancelled
    and leaving the supervisor raises it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self, TypeVar

from telecare.gateway.backoff import Backoff
from telecare.gateway.logging import get_logger

__all__ = [
    "Loop",
    "LoopFailed",
    "Loops",
    "Retry",
    "StartLoop",
    "Step",
    "Supervisor",
    "nothing",
    "retry_until_done",
    "start_once",
    "stop_task",
    "supervise",
]

log = get_logger("telecare.tasks")

_T = TypeVar("_T")

#: One round of a loop's work.
Step = Callable[[], Awaitable[object]]
#: Which exceptions a loop retries (``True``: transient).
Retry = Callable[[BaseException], bool]


def nothing(exc: BaseException) -> bool:
    """The default ``retry``: nothing is expected to fail (any failure stops the loop)."""
    return False


@dataclass
class Loop:
    """One long-running loop (see the module docstring for its contract)."""

    name: str
    #: One round of work; awaits its own trigger (a queue, a timer, a socket).
    step: Step
    #: Which exceptions are transient (retried with ``backoff``); anything else stops it.
    retry: Retry = nothing
    #: The loop's backoff; a step may ``reset()`` it itself (MQTT does after connecting).
    backoff: Backoff = field(default_factory=Backoff)


class LoopFailed(Exception):
    """A supervised loop met an error it does not retry; ``__cause__`` is that error."""

    def __init__(self, name: str, error: BaseException) -> None:
        super().__init__(
            f"loop {name!r} stopped: {type(error).__name__}: {error}"
            " (see the loop_failed log line for the traceback)"
        )
        self.name = name
        self.error = error


#: Starts a loop in a task and returns the task: :meth:`Supervisor.start`,
#: :meth:`Supervisor.start_once` or :func:`start_once`.
StartLoop = Callable[[Loop], asyncio.Task[None]]


def _end_if_cancelled() -> None:
    """Re-raise ``CancelledError`` when our task has been asked to cancel, even though
    what we caught (or returned from) was not a cancellation: a library may turn one
    into its own error, and a loop that carried on would never stop."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def _attempt(loop: Loop, attempt: int) -> tuple[bool, Any]:
    """Run the step once: ``(True, result)``, or ``(False, None)`` after a retried
    failure and its backoff delay. Raises :class:`LoopFailed` for anything else."""
    try:
        result = await loop.step()
    except Exception as exc:
        _end_if_cancelled()
        if not loop.retry(exc):
            log.critical("loop_failed", loop=loop.name, error_type=type(exc).__name__, exc_info=exc)
            raise LoopFailed(loop.name, exc) from exc
        delay = loop.backoff.next_delay()
        log.warning(
            "loop_retry",
            loop=loop.name,
            error_type=type(exc).__name__,
            error=str(exc),
            attempt=attempt,
            retry_in=round(delay, 3),
        )
        await asyncio.sleep(delay)
        return False, None
    _end_if_cancelled()
    return True, result


async def supervise(loop: Loop) -> None:
    """Run ``loop`` until cancelled (or until it fails: :class:`LoopFailed`)."""
    attempt = 0
    while True:
        attempt += 1
        done, _ = await _attempt(loop, attempt)
        if done:
            loop.backoff.reset()
            attempt = 0


async def retry_until_done(loop: Loop) -> Any:
    """Run ``loop.step`` until it succeeds once; return what it returned."""
    attempt = 0
    while True:
        attempt += 1
        done, result = await _attempt(loop, attempt)
        if done:
            loop.backoff.reset()
            return result


class Supervisor:
    """One ``TaskGroup`` of supervised loops (see the module docstring)."""

    def __init__(self, on_failure: Callable[[LoopFailed], None] | None = None) -> None:
        self._on_failure = on_failure
        self._group: asyncio.TaskGroup | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        #: The first loop that failed, if any.
        self.failure: LoopFailed | None = None

    async def __aenter__(self) -> Self:
        self._group = asyncio.TaskGroup()
        await self._group.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        group, self._group = self._group, None
        for task in self._tasks:
            task.cancel()
        if group is not None:
            # Not handed the exception the body raised: the task group would wrap it in
            # an ExceptionGroup; it goes on as it is, and the group raises only its own.
            await group.__aexit__(None, None, None)

    @property
    def running(self) -> list[str]:
        """Names of the loops still running (for tests and the metrics endpoint)."""
        return sorted(t.get_name() for t in self._tasks if not t.done())

    def start(self, loop: Loop) -> asyncio.Task[None]:
        """Run ``loop`` in this supervisor's task group, as a task named after it."""
        return self._start(loop, supervise)

    def start_once(self, loop: Loop) -> asyncio.Task[None]:
        """Run ``loop``'s step until it succeeds once (:func:`retry_until_done`), in this
        task group: background work that must not fail unseen (a spool alert)."""
        return self._start(loop, retry_until_done)

    def _start(self, loop: Loop, run: Callable[[Loop], Awaitable[object]]) -> asyncio.Task[None]:
        if self._group is None:
            raise RuntimeError("Supervisor is not running; use 'async with'")
        task = self._group.create_task(self._run(loop, run), name=loop.name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def stop(self, *tasks: asyncio.Task[Any]) -> None:
        """Cancel ``tasks`` and wait until they have finished. What they raised is the
        supervisor's to report (``on_failure`` or the task group), never the caller's."""
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)

    async def _run(self, loop: Loop, run: Callable[[Loop], Awaitable[object]]) -> None:
        try:
            await run(loop)
        except LoopFailed as failure:
            if self.failure is None:
                self.failure = failure
            if self._on_failure is None:
                raise
            self._on_failure(failure)


class Loops:
    """A component's loops in a supervisor: the gateway's when given, else a private one
    entered on :meth:`start` and left on :meth:`stop`."""

    def __init__(self, supervisor: Supervisor | None = None) -> None:
        self._given = supervisor
        self._own: Supervisor | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self, *loops: Loop) -> None:
        supervisor = self._given
        if supervisor is None:
            if self._own is None:
                self._own = await Supervisor().__aenter__()
            supervisor = self._own
        self._tasks.extend(supervisor.start(loop) for loop in loops)

    async def run(
        self, name: str, step: Step, *, retry: Retry = nothing, backoff: Backoff | None = None
    ) -> None:
        """``start(Loop(name, step, retry, backoff))``, in plain types: what a layer that
        cannot import this module declares in its protocol (module docstring)."""
        await self.start(Loop(name, step, retry, backoff or Backoff()))

    async def stop(self) -> None:
        """Cancel and await this component's loops (a private supervisor is left too, which
        re-raises a loop's failure)."""
        tasks, self._tasks = self._tasks, []
        own, self._own = self._own, None
        if own is not None:
            await own.stop(*tasks)
            await own.__aexit__(None, None, None)
        elif self._given is not None:
            await self._given.stop(*tasks)


def start_once(loop: Loop) -> asyncio.Task[None]:
    """Run ``loop``'s step until it succeeds once (:func:`retry_until_done`) in a task of
    its own, outside any supervisor: the :data:`StartLoop` of a component used on its own.
    Whoever awaits the task gets its :class:`LoopFailed`."""

    async def run() -> None:
        await retry_until_done(loop)

    return asyncio.create_task(run(), name=loop.name)


async def stop_task(task: asyncio.Task[_T] | None) -> None:
    """Cancel ``task`` and wait until it has finished (for tasks that are not loops).

    The task's own ``CancelledError`` is absorbed; if the *caller* is being cancelled
    meanwhile, that cancellation propagates instead of being swallowed.
    """
    if task is None:
        return
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise
