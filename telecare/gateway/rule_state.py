"""Rule state that survives a restart: the engine's snapshot in a JSON file, written
atomically (temp file, fsync, rename) so a crash leaves either the old or the new state.

Resource handling: :class:`RuleRunner` is an async context manager owning one named task,
``rules-tick``, that runs the time-driven rules every ``tick_s`` seconds on the injected
clock and saves the snapshot; leaving it saves once more.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from datetime import timedelta
from pathlib import Path
from types import TracebackType
from typing import Self

from telecare.gateway.logging import get_logger
from telecare.gateway.pipeline import Pipeline
from telecare.gateway.private_files import open_private, private_dir
from telecare.gateway.tasks import stop_task
from telecare.rules.clock import Clock, raise_if_cancelling
from telecare.rules.config import RulesConfig
from telecare.rules.engine import RuleEngine

__all__ = ["RuleRunner", "load_engine", "save_engine"]

log = get_logger("telecare.rules")


def load_engine(path: Path, config: RulesConfig, clock: Clock) -> RuleEngine:
    """The engine restored from ``path``, or a fresh one when there is no usable state."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        engine = RuleEngine.restore(data, config, clock)
    except FileNotFoundError:
        return RuleEngine(config, clock)
    except (ValueError, KeyError, TypeError) as exc:
        log.error("rule_state_unreadable", path=str(path), error=str(exc))
        return RuleEngine(config, clock)
    log.info("rule_state_restored", path=str(path))
    return engine


#: One save at a time: a tick's save still running in its thread when the runner stops
#: would otherwise race the final save on the same temporary file.
_SAVING = threading.Lock()


def save_engine(path: Path, engine: RuleEngine) -> None:
    """Write the engine's snapshot atomically, readable by the gateway's user only."""
    with _SAVING:
        _save(path, engine)


def _save(path: Path, engine: RuleEngine) -> None:
    private_dir(path.parent)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open_private(tmp) as f:  # 0600: open alarms name residents and devices
        f.write(json.dumps(engine.snapshot(), default=str).encode())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class RuleRunner:
    def __init__(self, pipeline: Pipeline, clock: Clock, state_file: Path, tick_s: float) -> None:
        self.pipeline = pipeline
        self.clock = clock
        self.state_file = state_file
        self.tick_s = tick_s
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self._run(), name="rules-tick")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        task, self._task = self._task, None
        await stop_task(task)
        await asyncio.to_thread(save_engine, self.state_file, self.pipeline.engine)

    async def _run(self) -> None:
        """Tick forever. A failing tick (store away) is logged and retried next time."""
        while True:
            raise_if_cancelling()  # a swallowed cancellation must still end the loop
            await self.clock.sleep_until(self.clock.now() + timedelta(seconds=self.tick_s))
            try:
                await self.pipeline.tick()
                await asyncio.to_thread(save_engine, self.state_file, self.pipeline.engine)
            except Exception as exc:  # keep ticking: the next tick retries
                raise_if_cancelling()
                log.error("rules_tick_failed", error=repr(exc))
