"""The intake queue that keeps a pendant press from being buried by an alarm storm.

A power cut sends mains-fail from every home in an area within a second. The queue
orders entries by ``(priority, arrival)`` so a priority-1 alarm is always taken first,
and folds identical technical alarms (same event type, same area) into the one entry
still waiting for them: 10,000 mains-fails in one area become one dispatch carrying a
count and the alert ids, not 10,000 rows in the operators' queue.

Alerts that arrive after their group was taken from the queue start a new entry; the
dispatch service adds that entry to the group dispatch still open for the same key
(``DispatchService.open_or_join``), so a storm ends as one dispatch per type and area.

The queue is bounded (``maxsize`` entries; folded alarms do not take a slot) and
:meth:`AlarmQueue.put` waits while it is full, so backpressure reaches the pipeline.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from dataclasses import dataclass, field

from telecare.devices.model import Alert, AlertKind
from telecare.rules.alarms import is_technical

__all__ = ["AlarmQueue", "Intake", "group_key", "group_key_text"]


@dataclass(slots=True)
class Intake:
    """One queue entry: a single alert, or a group of identical technical alerts."""

    area: str
    alerts: list[Alert] = field(default_factory=list)
    group_key: tuple[str, str] | None = None

    @property
    def first(self) -> Alert:
        return self.alerts[0]

    @property
    def priority(self) -> int:
        return min(a.priority for a in self.alerts)


def group_key(alert: Alert, area: str) -> tuple[str, str] | None:
    """``(event type, area)`` for a technical alarm, ``None`` for anything a person raised."""
    technical = alert.kind is AlertKind.TECHNICAL or (
        alert.event_type is not None and is_technical(alert.event_type)
    )
    if not technical:
        return None
    return (alert.event_type.value if alert.event_type else alert.reason, area)


def group_key_text(key: tuple[str, str]) -> str:
    """The stored form of a group key: ``"<event type>@<area>"``."""
    return f"{key[0]}@{key[1]}"


class AlarmQueue:
    def __init__(self, maxsize: int = 10_000) -> None:
        # 10,000 distinct entries: far above the worst storm *after* folding (one entry
        # per event type and area, plus the alarms people raise).
        self.maxsize = maxsize
        self._heap: list[tuple[int, int, Intake]] = []
        self._groups: dict[tuple[str, str], Intake] = {}
        self._seq = itertools.count()
        self._changed = asyncio.Condition()
        #: Statistics: alerts accepted, and how many of them were folded into a group.
        self.accepted = 0
        self.folded = 0

    def qsize(self) -> int:
        return len(self._heap)

    def full(self) -> bool:
        return len(self._heap) >= self.maxsize

    def _offer(self, alert: Alert, area: str) -> bool:
        """Add or fold; ``False`` when a new entry is needed but the queue is full."""
        key = group_key(alert, area)
        if key is not None and key in self._groups:
            self._groups[key].alerts.append(alert)
            self.accepted += 1
            self.folded += 1
            return True
        if self.full():
            return False
        entry = Intake(area, [alert], key)
        if key is not None:
            self._groups[key] = entry
        heapq.heappush(self._heap, (alert.priority, next(self._seq), entry))
        self.accepted += 1
        return True

    async def put(self, alert: Alert, area: str = "default") -> None:
        """Queue ``alert`` (or fold it into its group), waiting while the queue is full."""
        async with self._changed:
            await self._changed.wait_for(lambda: self._offer(alert, area))
            self._changed.notify_all()

    async def get(self) -> Intake:
        """The most urgent entry (oldest first within a priority), waiting for one."""
        async with self._changed:
            await self._changed.wait_for(lambda: bool(self._heap))
            entry = self._pop()
            self._changed.notify_all()
            return entry

    async def get_ready(self, most: int) -> list[Intake]:
        """Up to ``most`` entries already waiting, most urgent first; never waits for one
        (the intake worker opens what arrived together at once)."""
        async with self._changed:
            taken = [self._pop() for _ in range(min(most, len(self._heap)))]
            if taken:
                self._changed.notify_all()
            return taken

    def _pop(self) -> Intake:
        _, _, entry = heapq.heappop(self._heap)
        if entry.group_key is not None:
            self._groups.pop(entry.group_key, None)
        return entry
