"""One rendering of a page fragment shared by every browser that asks for it.

A live event makes every open console page re-fetch the queue (``/console/queue``) at
about the same moment. The queue is the same for every operator, so rendering it once
per browser multiplies the work by the number of operators watching, exactly when the
centre is busiest (20 operators: 20 renders of the whole queue per alarm, and the
alarm's own row waits behind them). :class:`SharedFragment` keeps the last rendering
with the live hub's event id it was rendered for, and renders again only when a newer
event has been published (or the copy is older than ``max_age_s``, a safety net for a
change that published no event). Concurrent requests wait for one rendering instead of
starting their own.

The key is taken before the rendering reads anything, so a copy is never filed under
an event newer than the data it shows: a request that arrives after event *n+1* never
gets a copy made for event *n*.

Resource handling: no task of its own; one ``asyncio.Lock``. Error handling: a rendering
that raises is not kept, and the error goes to the request that asked for it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

__all__ = ["SharedFragment"]


class SharedFragment:
    """The last rendering of one fragment and the key (event id) it was made for."""

    def __init__(self, max_age_s: float = 2.0) -> None:
        self.max_age_s = max_age_s
        self._lock = asyncio.Lock()
        self._key: str | None = None
        self._body = b""
        self._at = 0.0
        #: Renderings made, and requests answered from a kept copy (for tests, metrics).
        self.renders = 0
        self.shared = 0

    def _fresh(self, key: str) -> bool:
        return self._key == key and time.monotonic() - self._at < self.max_age_s

    def invalidate(self) -> None:
        """Forget the kept copy: the next :meth:`get` renders anew, whatever its key
        (the store may have changed with no live event here: another process wrote)."""
        self._key = None

    async def get(self, key: str, render: Callable[[], Awaitable[bytes]]) -> bytes:
        """The fragment for ``key``: the kept copy when it was made for ``key`` and is
        young enough, else one new rendering (shared with requests waiting meanwhile)."""
        if self._fresh(key):
            self.shared += 1
            return self._body
        async with self._lock:
            if self._fresh(key):
                self.shared += 1
                return self._body
            body = await render()
            self._key, self._body, self._at = key, body, time.monotonic()
            self.renders += 1
            return body
