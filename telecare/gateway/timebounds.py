"""Plausible device timestamps: not too far in the future, not too old.

A device's clock drifts and a hub flushes what it buffered during an outage, so a
timestamp may lag the gateway's clock by a lot and lead it by a little. Beyond
``max_future_s`` ahead or ``max_age_s`` behind, the timestamp is not a clock's error but
a broken or hostile device (``9999-01-01`` would keep an alarm "newest" for ever,
``1900-01-01`` would rewrite a resident's history); the message is rejected with a reason
that says which bound and by how much. What the rules do with late but plausible data is
theirs to decide.

One exception, for safety: an alarm event, a heartbeat or an observation set whose device
clock runs ahead is *re-timed* by the rules (the gateway's receive time is used and a
clock fault is raised, issue 10), so a real pendant press from a device whose clock is a
day fast is never lost. For those (``retimed=True``) the future bound is ``max_age_s``
too: only an absurd timestamp (``9999-01-01``) is rejected.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

__all__ = ["TimeBounds", "describe"]


@dataclass(frozen=True, slots=True)
class TimeBounds:
    #: How far a timestamp may lead the gateway's clock (device clock skew), seconds.
    max_future_s: float = 300.0
    #: How far it may lag it (buffered data flushed late), seconds. 14 days: the broker
    #: keeps an absent gateway's session and queue that long (``persistent_client_expiration``),
    #: and a hub's buffer outlasts a long weekend's broadband outage.
    max_age_s: float = 14 * 86400.0

    def violation(self, ts: datetime, now: datetime, *, retimed: bool = False) -> str | None:
        """``None`` when ``ts`` is plausible at ``now``; otherwise the reason. ``retimed``:
        the rules re-time the message when its device clock runs ahead (see above)."""
        ahead = (ts - now).total_seconds()
        if retimed and ahead > self.max_age_s:
            return (
                f"timestamp is {describe(ahead)} in the future"
                f" (more than the {describe(self.max_age_s)} a device clock may run ahead)"
            )
        if not retimed and ahead > self.max_future_s:
            return (
                f"timestamp is {describe(ahead)} in the future"
                f" (more than the {describe(self.max_future_s)} clock skew allowed)"
            )
        if -ahead > self.max_age_s:
            return (
                f"timestamp is {describe(-ahead)} old"
                f" (older than the {describe(self.max_age_s)} allowed)"
            )
        return None


def describe(seconds: float) -> str:
    """``seconds`` in the largest unit that keeps it readable: ``90 s``, ``12 min``,
    ``5 h``, ``2922 days``."""
    delta = timedelta(seconds=seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.0f} h"
    return f"{delta.days} days"
