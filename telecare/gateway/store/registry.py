"""Registry lifecycle shared by both backends: what refuses a removal, and the audit of
registry changes (``registry_audit``, migration 0014).

A thing is *blocked* from removal while an open dispatch (an alarm not yet resolved or
cancelled) references it, and while other registry entries still depend on it (a site's
residents and devices, a resident's paired devices, a responder in a cascade). Residents
with recorded clinical settings are never deleted: their history is a clinical record.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

__all__ = ["KINDS", "TABLES", "Blocker", "Kind", "RegistryChange", "blocker_queries"]

Kind = Literal["site", "resident", "responder", "device"]
KINDS: tuple[Kind, ...] = ("site", "resident", "responder", "device")

_OPEN = "d.state NOT IN ('resolved', 'cancelled')"


@dataclass(frozen=True, slots=True, order=True)
class Blocker:
    """One reason a removal is refused: ``what`` (``open dispatch``, ``device``, ...) and
    the id of the thing that still references the one to remove."""

    what: str
    ref: str


@dataclass(frozen=True, slots=True)
class RegistryChange:
    """One audited registry change: who (a person), what, to which thing, and when."""

    at: datetime
    actor: str
    action: str  # "set", "remove", "pair", "unpair", "import"
    kind: Kind
    entity_id: str
    detail: dict[str, Any] = field(default_factory=dict)


#: For each kind: (what, SQL with one ``?`` for the id) pairs, in the order reported.
_BLOCKERS: dict[Kind, tuple[tuple[str, str], ...]] = {
    "site": (
        (
            "open dispatch",
            f"SELECT d.dispatch_id FROM dispatches d WHERE d.site_id = ? AND {_OPEN}",
        ),
        ("resident", "SELECT resident_id FROM residents WHERE site_id = ?"),
        ("device", "SELECT device_id FROM devices WHERE site_id = ?"),
    ),
    "resident": (
        (
            "open dispatch",
            f"SELECT d.dispatch_id FROM dispatches d WHERE d.resident_id = ? AND {_OPEN}",
        ),
        ("paired device", "SELECT device_id FROM devices WHERE resident_id = ?"),
        (
            "device user",
            "SELECT device_id || ' user ' || CAST(user_id AS TEXT) FROM device_users"
            " WHERE resident_id = ?",
        ),
        (
            "clinical history",
            "SELECT setting || ' recorded by ' || recorded_by FROM resident_clinical_history"
            " WHERE resident_id = ?",
        ),
    ),
    "responder": (
        (
            "open dispatch",
            f"SELECT d.dispatch_id FROM dispatches d WHERE d.responder_id = ? AND {_OPEN}",
        ),
        (
            "resident cascade",
            "SELECT resident_id FROM resident_responders WHERE responder_id = ?",
        ),
    ),
    "device": (
        (
            "open dispatch",
            "SELECT d.dispatch_id FROM dispatches d JOIN alerts a ON a.alert_id = d.alert_id"
            f" WHERE a.device_id = ? AND {_OPEN}",
        ),
    ),
}

#: The table and key column of each kind (for existence checks and the delete).
TABLES: dict[Kind, tuple[str, str]] = {
    "site": ("sites", "site_id"),
    "resident": ("residents", "resident_id"),
    "responder": ("responders", "responder_id"),
    "device": ("devices", "device_id"),
}


def blocker_queries(kind: Kind, placeholder: str = "?") -> tuple[tuple[str, str], ...]:
    """The blocker queries of ``kind`` with ``placeholder`` for the id (``%s`` for psycopg)."""
    return tuple((what, sql.replace("?", placeholder)) for what, sql in _BLOCKERS[kind])
