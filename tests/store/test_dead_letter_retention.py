"""Dead letters keep a bounded preview of the payload and its full size, and are deleted
by the store's periodic maintenance once past their retention (both backends)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from telecare.gateway.app import open_store
from telecare.gateway.config import Config, StoreConfig, load_config
from telecare.gateway.store.base import Store
from telecare.gateway.store.durable import decode, encode
from telecare.gateway.store.postgres import PostgresStore
from telecare.gateway.store.rows import DEAD_LETTER_PREVIEW, DeadLetter
from telecare.gateway.store.sqlite import SqliteStore

NOW = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)


def test_a_dead_letter_keeps_a_bounded_preview() -> None:
    payload = b'{"resident_id": "x", "pad": "' + b"a" * 1_000_000 + b'"}'
    letter = DeadLetter(NOW, "mqtt", "t/x", "too large", payload, "d1")
    assert len(letter.payload) == DEAD_LETTER_PREVIEW
    assert payload.startswith(letter.payload)
    assert letter.payload_bytes == len(payload)
    assert letter.payload_bytes > len(letter.payload)  # cut
    small = DeadLetter(NOW, "mqtt", "t/x", "bad", b"{", "d1")
    assert (small.payload, small.payload_bytes) == (b"{", len(small.payload))  # whole


def test_the_spool_keeps_the_full_size() -> None:
    letter = DeadLetter(NOW, "mqtt", "t/x", "too large", b"a" * 5000, "d1")
    assert decode(encode(letter)) == letter


async def test_a_1_mb_payload_is_stored_as_its_preview(store: Store) -> None:
    payload = b"\x00" * 1_048_576
    await store.write_dead_letter(DeadLetter(NOW, "mqtt", "t/x", "too large", payload, "d1"))
    (stored,) = await store.dead_letters()
    assert stored.payload == payload[:DEAD_LETTER_PREVIEW]
    assert stored.payload_bytes == 1_048_576


async def test_maintenance_removes_dead_letters_past_their_retention(store: Store) -> None:
    retention = timedelta(days=30)
    assert getattr(store, "dead_letter_retention", None) == retention  # the default
    old = DeadLetter(NOW - retention - timedelta(seconds=1), "mqtt", "t/old", "bad", b"o", "d1")
    edge = DeadLetter(NOW - retention + timedelta(seconds=1), "mqtt", "t/edge", "bad", b"e", "d1")
    new = DeadLetter(NOW, "mqtt", "t/new", "bad", b"n", "d1")
    for letter in (old, edge, new):
        await store.write_dead_letter(letter)
    await store.maintain(NOW)
    assert [d.origin for d in await store.dead_letters()] == ["t/new", "t/edge"]
    assert await store.prune_dead_letters(NOW + timedelta(days=31)) == 2
    assert await store.count("dead_letters") == 0


async def test_no_retention_keeps_every_dead_letter(store: Store) -> None:
    store.dead_letter_retention = None  # type: ignore[attr-defined]  # both backends have it
    await store.write_dead_letter(DeadLetter(NOW - timedelta(days=3650), "mqtt", "t", "x", b""))
    await store.maintain(NOW)
    assert await store.count("dead_letters") == 1


def test_retention_is_configured_in_days(tmp_path: Path) -> None:
    def store_for(days: int) -> SqliteStore | PostgresStore:
        sc = StoreConfig(sqlite_path=str(tmp_path / "t.db"), dead_letter_retention_days=days)
        return open_store(Config(store=sc))

    assert store_for(7).dead_letter_retention == timedelta(days=7)
    assert store_for(0).dead_letter_retention is None
    env = {"TELECARE_STORE__DEAD_LETTER_RETENTION_DAYS": "90"}
    assert load_config(None, env).store.dead_letter_retention_days == 90
