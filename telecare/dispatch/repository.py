"""What dispatch needs from storage, declared here and implemented in the gateway layer
(``gateway/store/dispatch.py``, once for both backends).

The one rule every implementation keeps: :meth:`DispatchRepository.apply` is a single
transaction that compare-and-sets ``version``, appends the audit record and sets/clears
the dispatch's timers, all or nothing. That is what makes racing actions resolve to
exactly one winner and what lets timers survive a restart. Audit records are appended
to one hash chain per store (``dispatch.audit_chain``), serialised so that racing
transactions still make one gapless chain.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from telecare.devices.model import Dispatch, Resident, Site
from telecare.dispatch.audit_chain import Anchor, ChainReport
from telecare.dispatch.records import AuditRecord, CascadeEntry, Receipt, Timer, TimerKind

__all__ = ["DispatchRepository", "Registry"]


class DispatchRepository(Protocol):
    async def create(
        self,
        dispatch: Dispatch,
        audit: AuditRecord,
        cascade: Sequence[CascadeEntry],
        timers: Sequence[Timer],
        *,
        group_key: str | None = None,
        members: Sequence[str] = (),
    ) -> bool:
        """Insert dispatch, first audit record, cascade and timers in one transaction;
        with ``group_key``, also the group and its ``members`` (alert ids, the first
        alert's included). ``False`` (and nothing written) when the alert already has a
        dispatch: its own, or a group dispatch it is a member of (checked in the
        transaction, so that the service need not read first)."""
        ...

    async def load(self, dispatch_id: str) -> Dispatch | None: ...

    async def load_for_alert(self, alert_id: str) -> Dispatch | None:
        """The dispatch opened for ``alert_id``, or the group dispatch it is a member of."""
        ...

    async def open_group(self, group_key: str) -> Dispatch | None:
        """The newest open (not resolved or cancelled) group dispatch with this key."""
        ...

    async def add_members(self, dispatch_id: str, alert_ids: Sequence[str]) -> int:
        """Add alerts to a group dispatch; returns how many were new members."""
        ...

    async def members(self, dispatch_id: str) -> list[str]:
        """The alert ids of a group dispatch's members (empty for a single dispatch)."""
        ...

    async def clear_member(self, alert_id: str, at: datetime) -> tuple[str, int] | None:
        """Record that a member's condition cleared; ``(dispatch id, members still not
        cleared)``, or ``None`` when the alert is no group member."""
        ...

    async def apply(
        self,
        expected_version: int,
        dispatch: Dispatch,
        audit: AuditRecord,
        set_timers: Sequence[Timer],
        clear_timers: Sequence[TimerKind],
    ) -> bool:
        """Store ``dispatch`` if the stored version is still ``expected_version``, with
        its audit record, clearing ``clear_timers`` kinds then setting ``set_timers``.
        ``False`` (and nothing written) when somebody else changed it first."""
        ...

    async def reroute(
        self,
        expected_version: int,
        dispatch: Dispatch,
        audit: AuditRecord,
        cascade: Sequence[CascadeEntry],
    ) -> bool:
        """Replace a dispatch's cascade (and its proposed responder and step) if the stored
        version is still ``expected_version``, with its audit record, in one transaction.
        ``False`` (and nothing written) when somebody else changed it first."""
        ...

    async def cascade(self, dispatch_id: str) -> list[CascadeEntry]: ...

    async def timers(self, dispatch_id: str) -> list[Timer]: ...

    async def due_timers(self, now: datetime, limit: int = 100) -> list[Timer]:
        """Timers with ``due_at <= now``, earliest first."""
        ...

    async def next_due(self) -> datetime | None:
        """The earliest pending deadline, or ``None`` when there is none."""
        ...

    async def drop_timer(self, timer: Timer) -> None:
        """Delete exactly this timer (same kind, due time and step), if still there."""
        ...

    async def audit(self, dispatch_id: str) -> list[AuditRecord]: ...

    async def audit_between(self, start: datetime, end: datetime) -> list[AuditRecord]:
        """Every audit record of the dispatches created in ``[start, end)``, in order."""
        ...

    async def verify_audit(self, anchor: Anchor | None = None) -> ChainReport:
        """Walk the hash-chained audit trail (``dispatch.audit_chain``): every appended
        record carries the hash of the one before it, so a changed or removed record is
        named in the report."""
        ...

    async def record_receipt(self, receipt: Receipt) -> None: ...


class Registry(Protocol):
    """The registry lookups dispatch needs; the gateway's ``Store`` already has them.

    Asked at every submit and open (and re-route), never cached by dispatch: the answer
    must be the registry as it is now (a site moved to another area, a resident's new
    responders). The gateway answers from its warm registry cache (invalidated on
    change), so these cost no query on the alarm path."""

    async def get_site(self, site_id: str) -> Site | None: ...

    async def get_resident(self, resident_id: str) -> Resident | None: ...
