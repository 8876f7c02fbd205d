"""The console's live channel: activity-feed lines to browsers over Server-Sent Events.

::

    pipeline / dispatch ──ActivityFeed.publish──> LiveHub.publish (sync, O(clients))
                                                   │ numbered, kept in a ring of `history`
                                                   ├──> client queue (bounded) ──> SSE stream
                                                   └──> client queue (bounded) ──> SSE stream

Why this shape
    * **Never slows ingest.** ``publish`` runs in the publisher's frame and only appends
      to a ring and does ``put_nowait`` on each client's bounded queue. A client whose
      queue is full (a slow or dead browser) is *dropped*: its queue is emptied, it is
      told to go away, and its stream ends. Nothing ever waits for a browser.
    * **Nothing lost across a reconnect.** Every event has an id ``<epoch>-<seq>``. The
      browser's ``EventSource`` sends the last id it saw as ``Last-Event-ID`` when it
      reconnects (after a network cut, or after being dropped); the hub replays every
      event after it from the ring. When that is impossible (the gateway restarted: other
      epoch; or the gap is older than the ring) the first event is ``reset``: the page
      reloads its whole state from the store, which is the truth anyway.
    * **A stale screen never looks live.** The stream sends a ``ping`` event every
      ``ping_s``; the page shows its "connection lost" banner when the EventSource errors
      or when no event or ping arrived for a few ping intervals.
    * **No personal data in events.** Activity lines carry ids, states and priorities
      only, and only they are numbered and kept for replay.
    * **Snapshots are pushed, not fetched by everyone.** A client that connected with a
      scope (``?scope=queue``: the queue page) also receives :meth:`LiveHub.broadcast`
      messages for it: the queue fragment, rendered once for all of them after a change
      (``ConsoleService``), instead of every browser re-fetching it (N requests, N
      authentications per event). Snapshots hold what the page shows (names,
      addresses) to logged-in operators only; they have no id, are never kept in the
      ring and never replayed: after a reconnect the page fetches the queue itself.

Resource handling: the hub owns no task; each SSE response owns its client and removes
it when the response ends (normally, by a disconnect, or by being dropped).
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from telecare.gateway.pipeline import Activity, ActivityFeed

__all__ = [
    "CONSOLE_KINDS",
    "LiveClient",
    "LiveEvent",
    "LiveHub",
    "sse_stream",
]

#: Activity kinds the console shows or reacts to (readings and dead letters stay out:
#: high-rate, and not something an operator acts on from the queue).
CONSOLE_KINDS: Final = frozenset(
    {
        "alert",
        "dispatch",
        "restored",
        "attended",
        "folded",
        "cleared",
        "status",
        "news2",
        "console",
    }
)


@dataclass(frozen=True, slots=True)
class LiveEvent:
    """One numbered activity line. ``kind`` ``reset`` tells the page to reload."""

    event_id: str
    seq: int
    kind: str
    ts: datetime
    summary: str
    data: dict[str, Any] = field(default_factory=dict)

    def encode(self) -> bytes:
        """This event in the SSE wire format (``id``, ``event``, ``data`` lines)."""
        body = json.dumps(
            {**self.data, "kind": self.kind, "ts": self.ts.isoformat(), "summary": self.summary},
            separators=(",", ":"),
            default=str,
        )
        return f"id: {self.event_id}\nevent: {self.kind}\ndata: {body}\n\n".encode()


#: What a client's queue holds: an event, a snapshot already in the wire format, or
#: ``None`` for "you were dropped: go away".
_Item = LiveEvent | bytes | None


class LiveClient:
    """One connected browser: its bounded queue and the events to replay first."""

    def __init__(
        self, who: str, size: int, replay: list[LiveEvent], scopes: frozenset[str] = frozenset()
    ) -> None:
        self.who = who
        #: Snapshots this client wants (``queue``).
        self.scopes = scopes
        self.connected_at = datetime.now(UTC)
        self.replay = replay
        self.queue: asyncio.Queue[_Item] = asyncio.Queue(maxsize=size)
        self.dropped = False

    def drop(self) -> None:
        """Tell the stream to end now (the queue is cleared for the marker)."""
        self.dropped = True
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(None)

    def offer(self, event: LiveEvent | bytes) -> bool:
        """Queue ``event``; ``False`` (and the client marked dropped) when it is full."""
        if self.dropped:
            return False
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.drop()
            return False
        return True

    async def next(self, timeout: float) -> LiveEvent | bytes | None:
        """The next event, or ``None`` after ``timeout`` s of silence (send a ping).
        Raises :class:`ClientDropped` once the hub dropped this client."""
        if self.replay:
            return self.replay.pop(0)
        try:
            item = await asyncio.wait_for(self.queue.get(), timeout)
        except TimeoutError:
            return None
        if item is None:
            raise ClientDropped(self.who)
        return item


class ClientDropped(Exception):
    """The client fell ``queue`` events behind and was dropped (it reconnects and
    resumes from its last event id)."""


class LiveHub:
    """Numbers activity lines, keeps the last ``history`` of them, fans them out.

    ``client_queue``: events a browser may fall behind before it is dropped (256: a
    burst of a storm's worth of queue changes; a browser that cannot keep up with that
    is better served by reconnecting and reloading). ``history``: events kept for
    resuming (4096: a few minutes of a busy centre, well beyond a reconnect's second)."""

    def __init__(
        self,
        *,
        history: int = 4096,
        client_queue: int = 256,
        kinds: frozenset[str] = CONSOLE_KINDS,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.epoch = secrets.token_hex(4)
        self.client_queue = client_queue
        self.kinds = kinds
        self._clock = clock
        self._seq = 0
        self._history: deque[LiveEvent] = deque(maxlen=history)
        self._clients: set[LiveClient] = set()
        #: Called with every event emitted (the console marks its queue changed).
        self.watchers: list[Callable[[LiveEvent], None]] = []
        #: Counters for /metrics and the supervisor view.
        self.published = 0
        self.dropped_clients = 0
        self.resets = 0

    # -- in ----------------------------------------------------------------------------
    def attach(self, feed: ActivityFeed) -> None:
        """Receive every activity ``feed`` publishes."""
        feed.listen(self.on_activity)

    def publish(self, kind: str, data: Mapping[str, Any]) -> None:
        """A line from another part of the web face (``Services.live``); ``summary`` in
        ``data`` is shown in the activity list."""
        self.emit(kind, str(data.get("summary", kind)), dict(data))

    def on_activity(self, activity: Activity) -> None:
        """Number ``activity`` and hand it to every client. Never blocks, never raises
        for a client: a full one is dropped."""
        if activity.kind not in self.kinds:
            return
        self.emit(activity.kind, activity.summary, activity.data, activity.ts)

    def emit(
        self, kind: str, summary: str, data: dict[str, Any], ts: datetime | None = None
    ) -> LiveEvent:
        """Publish a line of the console's own (``kind`` ``console``: holds, notes,
        ownership) or any other kind."""
        self._seq += 1
        event = LiveEvent(
            f"{self.epoch}-{self._seq}", self._seq, kind, ts or self._clock(), summary, data
        )
        self._history.append(event)
        self.published += 1
        self._offer_all(event, self._clients)
        for watcher in self.watchers:
            watcher(event)
        return event

    def broadcast(self, scope: str, kind: str, body: str) -> int:
        """Push a snapshot (``kind``, text ``body``) to every client of ``scope``, encoded
        once; not numbered, not kept. Returns how many clients it was offered to."""
        data = "".join(f"data: {line}\n" for line in body.split("\n"))
        wire = f"event: {kind}\n{data}\n".encode()
        clients = [c for c in self._clients if scope in c.scopes]
        self._offer_all(wire, clients)
        return len(clients)

    def clients_in(self, scope: str) -> int:
        """How many connected clients want ``scope``'s snapshots."""
        return sum(1 for c in self._clients if scope in c.scopes)

    def _offer_all(
        self, item: LiveEvent | bytes, clients: set[LiveClient] | list[LiveClient]
    ) -> None:
        for client in [c for c in clients if not c.offer(item)]:
            self._clients.discard(client)
            self.dropped_clients += 1

    # -- out ---------------------------------------------------------------------------
    def connect(
        self, who: str, last_event_id: str | None = None, scopes: frozenset[str] = frozenset()
    ) -> LiveClient:
        """A new client; with ``last_event_id``, the events after it are replayed first
        (or a ``reset`` event when they cannot be); ``scopes``: snapshots it wants."""
        replay = self._replay(last_event_id) if last_event_id else []
        client = LiveClient(who, self.client_queue, replay, scopes)
        self._clients.add(client)
        return client

    def disconnect(self, client: LiveClient) -> None:
        self._clients.discard(client)

    def close(self) -> None:
        """End every client's stream (shutdown: no SSE response holds the server open).
        Browsers reconnect, and resume from their last event id, when a gateway is back."""
        for client in list(self._clients):
            client.drop()
        self._clients.clear()

    def _replay(self, last_event_id: str) -> list[LiveEvent]:
        epoch, _, seq_text = last_event_id.strip().rpartition("-")
        seq = int(seq_text) if seq_text.isdigit() else -1
        oldest = self._history[0].seq if self._history else self._seq + 1
        if epoch != self.epoch or seq < 0 or seq > self._seq or seq < oldest - 1:
            self.resets += 1
            reason = "gateway restarted" if epoch != self.epoch else "missed too much"
            return [
                LiveEvent(
                    f"{self.epoch}-{self._seq}",
                    self._seq,
                    "reset",
                    self._clock(),
                    f"reload: {reason}",
                )
            ]
        return [e for e in self._history if e.seq > seq]

    @property
    def last_id(self) -> str:
        """The id of the newest event (what a freshly rendered page resumes from)."""
        return f"{self.epoch}-{self._seq}"

    def clients(self) -> list[LiveClient]:
        """Connected clients (the supervisor view's "who is watching")."""
        return sorted(self._clients, key=lambda c: c.connected_at)

    def recent(self, limit: int = 50) -> list[LiveEvent]:
        """The newest ``limit`` events, newest first."""
        return list(reversed(list(self._history)[-limit:]))


async def sse_stream(
    hub: LiveHub,
    client: LiveClient,
    *,
    ping_s: float = 5.0,
    retry_ms: int = 1000,
) -> AsyncIterator[bytes]:
    """The SSE body for ``client``: a ``retry`` hint, then events and a ``ping`` every
    ``ping_s`` of silence. Ends when the client is dropped; always disconnects it.

    Error handling: nothing is raised to the server for a dropped client (its stream
    just ends, and the browser reconnects with its last id); cancellation (the browser
    went away) propagates after the client is removed."""
    try:
        # A ping at once: the page knows it is live before the first event.
        yield f"retry: {retry_ms}\n\n".encode() + _ping(hub)
        while True:
            try:
                event = await client.next(ping_s)
            except ClientDropped:
                return
            if event is None:
                yield _ping(hub)
            elif isinstance(event, bytes):
                yield event
            else:
                yield event.encode()
    finally:
        hub.disconnect(client)


def _ping(hub: LiveHub) -> bytes:
    return f"event: ping\ndata: {json.dumps({'last': hub.last_id})}\n\n".encode()
