"""The audit trail's hash chain: pure functions, no I/O.

Every audit row carries ``seq`` (1, 2, 3, ... with no gaps, one chain per store),
``prev_hash`` (the previous row's ``row_hash``; :data:`GENESIS` for ``seq`` 1) and
``row_hash = sha256(prev_hash + "\\n" + canonical content)``. The canonical content is
the JSON array ``[seq, dispatch_id, at, from_state, to_state, actor, reason, detail]``
with ``at`` in UTC at microsecond precision and ``detail`` with sorted keys, so both
dialects hash the same bytes for the same row.

:func:`verify_chain` walks rows in ``seq`` order and names every row whose content no
longer matches its hash (changed), whose ``prev_hash`` does not match the row before it
(the row before was changed or replaced), or that follows a gap (rows removed). Removing
the *last* rows leaves a shorter valid chain: that is caught by comparing with a head
recorded earlier (:class:`Anchor`, ``telecare audit verify --anchor``) and by the
store's cross-check that each dispatch's state is the one its last audit row recorded.

The chain is not keyed: whoever owns the tables can rewrite every hash after a change.
It proves integrity against anyone below the owner role and, with an anchor kept outside
the database, against the owner too (see docs/security.md).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from telecare.devices.model import DispatchState

__all__ = [
    "GENESIS",
    "Anchor",
    "ChainReport",
    "ChainRow",
    "ChainVerifier",
    "canonical",
    "row_hash",
    "verify_chain",
]

#: ``prev_hash`` of the first row of a chain.
GENESIS = "0" * 64


def _at(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _state(state: DispatchState | str) -> str:
    return state.value if isinstance(state, DispatchState) else state


def canonical(
    seq: int,
    dispatch_id: str,
    at: datetime,
    from_state: DispatchState | str | None,
    to_state: DispatchState | str,
    actor: str,
    reason: str,
    detail: dict[str, Any],
) -> bytes:
    """The bytes a row's hash covers (the same on PostgreSQL and SQLite)."""
    doc = [
        seq,
        dispatch_id,
        _at(at),
        None if from_state is None else _state(from_state),
        _state(to_state),
        actor,
        reason,
        detail,
    ]
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def row_hash(prev_hash: str, content: bytes) -> str:
    return hashlib.sha256(prev_hash.encode() + b"\n" + content).hexdigest()


@dataclass(frozen=True, slots=True)
class ChainRow:
    """One stored audit row as :func:`verify_chain` needs it."""

    audit_id: int
    seq: int
    prev_hash: str
    row_hash: str
    dispatch_id: str
    at: datetime
    from_state: str | None
    to_state: str
    actor: str
    reason: str
    detail: dict[str, Any]

    def content(self) -> bytes:
        return canonical(
            self.seq,
            self.dispatch_id,
            self.at,
            self.from_state,
            self.to_state,
            self.actor,
            self.reason,
            self.detail,
        )


@dataclass(frozen=True, slots=True)
class Anchor:
    """A chain head recorded earlier (``<seq>:<hash>``): that row must still be there,
    unchanged, and the chain must not have become shorter."""

    seq: int
    hash: str

    @classmethod
    def parse(cls, text: str) -> Anchor:
        seq, sep, digest = text.strip().partition(":")
        if not sep or not seq.isdigit() or len(digest) != 64:
            raise ValueError(f"anchor {text!r} is not '<seq>:<64 hex digits>'")
        try:
            int(digest, 16)
        except ValueError:
            raise ValueError(f"anchor {text!r} is not '<seq>:<64 hex digits>'") from None
        return cls(int(seq), digest.lower())

    def __str__(self) -> str:
        return f"{self.seq}:{self.hash}"


@dataclass(slots=True)
class ChainReport:
    """What :func:`verify_chain` found. ``ok`` when ``problems`` is empty."""

    rows: int = 0
    head: Anchor | None = None
    problems: list[str] = field(default_factory=list)
    #: Rows written before the chain existed (migration 0008): listed, not provable.
    unchained: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


def _name(row: ChainRow) -> str:
    return f"audit row {row.audit_id} (seq {row.seq}, dispatch {row.dispatch_id})"


class ChainVerifier:
    """Checks rows fed one at a time in ``seq`` order (so a store can stream them)."""

    def __init__(self, anchor: Anchor | None = None) -> None:
        self.report = ChainReport()
        self._anchor = anchor
        self._anchor_seen = False
        self._prev: ChainRow | None = None

    def feed(self, row: ChainRow) -> None:
        report, prev, anchor = self.report, self._prev, self._anchor
        report.rows += 1
        expected_seq = 1 if prev is None else prev.seq + 1
        expected_prev = GENESIS if prev is None else prev.row_hash
        if row.seq != expected_seq:
            gap = f"seq {expected_seq}" + (
                f" to {row.seq - 1}" if row.seq - 1 > expected_seq else ""
            )
            report.problems.append(f"{gap} missing before {_name(row)}: rows were removed")
        elif row.prev_hash != expected_prev:
            report.problems.append(
                f"{_name(row)} does not follow the row before it (prev_hash mismatch):"
                f" seq {expected_seq - 1} was changed or replaced"
            )
        if row_hash(row.prev_hash, row.content()) != row.row_hash:
            report.problems.append(f"{_name(row)} was changed: its content no longer matches")
        if anchor is not None and row.seq == anchor.seq:
            self._anchor_seen = True
            if row.row_hash != anchor.hash:
                report.problems.append(f"{_name(row)} differs from the recorded anchor {anchor}")
        self._prev = row

    def finish(self) -> ChainReport:
        prev, anchor = self._prev, self._anchor
        if prev is not None:
            self.report.head = Anchor(prev.seq, prev.row_hash)
        if anchor is not None and not self._anchor_seen:
            last = prev.seq if prev else 0
            self.report.problems.append(
                f"anchor seq {anchor.seq} is gone: the chain ends at seq {last}, rows were removed"
            )
        return self.report


def verify_chain(rows: Iterable[ChainRow], anchor: Anchor | None = None) -> ChainReport:
    """Check ``rows`` (in ``seq`` order); every problem names the row concerned."""
    verifier = ChainVerifier(anchor)
    for row in rows:
        verifier.feed(row)
    return verifier.finish()
