"""What the gateway's own storage state means for the monitoring centre.

The local spool (``gateway.store.spool``) only reports how full it is; this rule decides
that a spool past its alarm ratio is a TECHNICAL alert of priority
:data:`SPOOL_ALERT_PRIORITY` (2, above the technical 4: when it is full the gateway must
refuse new data, alarms included, so an operator has to act while there is room). One
alert per episode: its id comes from the time the spool crossed the ratio, so a report
delivered twice raises nothing twice. A report that the spool fell back below the ratio
raises nothing (the alert stays for an operator to close, like every technical alarm).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final

from telecare.devices.model import Alert, AlertKind
from telecare.rules.alarms import alarm_id_for

__all__ = ["SPOOL_ALERT_PRIORITY", "spool_alert"]

#: Priority of "the local spool is nearly full" (see the module docstring).
SPOOL_ALERT_PRIORITY: Final = 2


def spool_alert(used_bytes: int, max_bytes: int, *, near_full: bool, at: datetime) -> Alert | None:
    """The alert for a spool report made at ``at``, or ``None`` when it needs none."""
    if not near_full or max_bytes <= 0:
        return None
    started = at.astimezone(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    percent = 100 * used_bytes / max_bytes
    return Alert(
        alert_id=alarm_id_for("_gateway", f"spool-near-full/{started}"),
        kind=AlertKind.TECHNICAL,
        priority=SPOOL_ALERT_PRIORITY,
        reason=(
            f"local spool {percent:.0f}% full ({used_bytes} of {max_bytes} bytes): the"
            " database has been unreachable; new data will be refused when it is full"
        ),
        ts=at,
        source_key=f"_gateway/spool-near-full/{started}",
        detail={"used_bytes": used_bytes, "max_bytes": max_bytes},
    )
