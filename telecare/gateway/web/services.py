"""What every web router works with: the :class:`Services` object, built once per app.

Routers never build collaborators of their own: they take ``Services`` through the
:func:`services` dependency (``svc: Services = Depends(services)``) and read through the
store, score through the rules and the pipeline (``web/observations.py``), and act on a
dispatch through :meth:`Services.act`: the one place where the operator API and the
console turn a person's decision (:class:`Act`) into a dispatch-service call, with that
person's user name as the audit actor and, when they give the ``version`` they decided
on, compare-and-set (:class:`~telecare.dispatch.errors.StaleDispatch` when someone else
changed it first). Tests build a ``Services`` around a real store, dispatch service and
fake clock, and hand it to ``create_app``.

The console engineer's live-event hub plugs in as :attr:`Services.live` (anything with
``publish``); :attr:`Services.metrics` holds the Prometheus instruments every part sets.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final, Protocol

from fastapi import Request

from telecare.devices.model import Dispatch
from telecare.dispatch import DispatchService
from telecare.dispatch.errors import StaleDispatch, UnknownDispatch
from telecare.dispatch.machine import Event, EventKind
from telecare.gateway.config import Config
from telecare.gateway.store.accounts import Accounts, User
from telecare.gateway.store.base import Store
from telecare.gateway.tasks import Supervisor
from telecare.gateway.web.metrics import Metrics
from telecare.gateway.web.observations import ObservationSink
from telecare.rules.clock import Clock
from telecare.rules.config import RulesConfig

__all__ = [
    "ACTIONS",
    "Act",
    "LiveHub",
    "LoginThrottle",
    "ObservationSink",
    "Readiness",
    "Services",
    "SessionCache",
    "services",
]


class LiveHub(Protocol):
    """The live-event hub (SSE) the console fills in (``web/live.py``)."""

    def publish(self, kind: str, data: Mapping[str, Any]) -> None: ...


#: One readiness check: ``(name, ok, detail)`` (broker, store, spool ...).
Readiness = Callable[[], Awaitable[tuple[str, bool, str]]]


class LoginThrottle:
    """Failed logins per user name: after :attr:`limit` within :attr:`window` the name is
    refused until the oldest of them is that old (password guessing gets ~20 an hour)."""

    def __init__(self, limit: int = 5, window: timedelta = timedelta(minutes=15)) -> None:
        self.limit, self.window = limit, window
        self._failures: dict[str, list[datetime]] = {}

    def retry_after(self, username: str, now: datetime) -> float:
        """Seconds until ``username`` may try again (0: now)."""
        recent = [t for t in self._failures.get(username.lower(), []) if now - t < self.window]
        if len(recent) < self.limit:
            return 0.0
        return (recent[0] + self.window - now).total_seconds()

    def failed(self, username: str, now: datetime) -> None:
        if len(self._failures) > 10_000:  # bounded: forget names with no recent failure
            self._failures = {k: v for k, v in self._failures.items() if now - v[-1] < self.window}
        times = self._failures.setdefault(username.lower(), [])
        times.append(now)
        del times[: -self.limit]

    def succeeded(self, username: str) -> None:
        self._failures.pop(username.lower(), None)


class SessionCache:
    """Sessions read for page fetches, kept :attr:`ttl_s` (a live console re-fetches its
    queue on every event: without this, every browser's every fetch is one more database
    read queued behind ingest). Only safe requests (GET) use it; a request that changes
    something always reads the session from the store. A logout through this gateway
    drops the entry at once; a session ended elsewhere (another gateway process, the CLI
    disabling a user) stops working for page fetches within :attr:`ttl_s`."""

    def __init__(self, ttl_s: float = 2.0, size: int = 1000) -> None:
        self.ttl_s, self.size = ttl_s, size
        self._kept: dict[str, tuple[float, Any]] = {}

    def get(self, key: str, now: float) -> Any | None:
        found = self._kept.get(key)
        if found is None or now - found[0] > self.ttl_s:
            return None
        return found[1]

    def put(self, key: str, session: Any, now: float) -> None:
        if len(self._kept) >= self.size:  # bounded: forget what is stale anyway
            self._kept = {k: v for k, v in self._kept.items() if now - v[0] <= self.ttl_s}
        self._kept[key] = (now, session)

    def drop(self, key: str) -> None:
        self._kept.pop(key, None)


#: What the contacted responder reported, recorded by the operator: event and reason.
_RESPONDER_SAID: Final = {
    "answered": (EventKind.ACCEPT, "answered: will attend"),
    "no_answer": (EventKind.NO_ANSWER, "no answer"),
    "declined": (EventKind.DECLINE, "declined"),
    "en_route": (EventKind.EN_ROUTE, "responder on the way"),
    "on_scene": (EventKind.ON_SCENE, "responder arrived"),
}
#: Every verb :meth:`Services.act` knows (the console's buttons, the API's routes).
ACTIONS: Final = frozenset(
    {"acknowledge", "contact", "close", "injury", "handover", "escalate", "note"}
    | _RESPONDER_SAID.keys()
)


@dataclass(frozen=True, slots=True)
class Act:
    """One decision of an operator about a dispatch (see :meth:`Services.act`)."""

    #: One of :data:`ACTIONS`.
    action: str
    #: The dispatch's ``version`` the person decided on: the action applies only if it is
    #: still that (else ``StaleDispatch``). ``None``: the dispatch as it is now.
    version: int | None = None
    #: Why, for the audit row (a default per action when empty).
    note: str = ""
    #: ``contact``: a responder of their choosing (default: the cascade's proposal).
    responder_id: str | None = None
    timeout_s: int | None = None
    #: ``handover``: the ambulance service's incident reference.
    reference: str = ""
    #: ``close``: the outcome code.
    outcome: str = ""


@dataclass
class Services:
    """Everything the web face uses; one per app (``app.state.services``)."""

    config: Config
    store: Store
    dispatcher: DispatchService
    accounts: Accounts
    clock: Clock
    #: Per-site NEWS2 advice and alert priorities (``rules.config``).
    rules: RulesConfig = field(default_factory=RulesConfig)
    metrics: Metrics = field(default_factory=Metrics)
    #: The live-event hub; ``None`` until the console's hub is attached.
    live: LiveHub | None = None
    #: Where submitted observation sets go (the pipeline); ``None``: not accepted.
    observations: ObservationSink | None = None
    #: Checks ``/readyz`` runs (the gateway adds broker, store and spool).
    readiness: list[Readiness] = field(default_factory=list)
    throttle: LoginThrottle = field(default_factory=LoginThrottle)
    sessions: SessionCache = field(default_factory=SessionCache)
    #: The gateway's supervisor: the web face's own loops (console timers) run in it, so
    #: one that fails stops the gateway loudly. ``None``: a private one (tests, tools).
    supervisor: Supervisor | None = None

    async def act(self, user: User, dispatch_id: str, act: Act) -> Dispatch:
        """Apply ``act`` to the dispatch through the dispatch service, as ``user`` (their
        user name is the audit row's actor). Returns the dispatch as stored after it.

        Raises ``UnknownDispatch``; ``StaleDispatch`` when ``act.version`` is given and no
        longer current; ``IllegalTransition`` when the state machine does not allow it
        now; ``ValueError`` for an unknown action or a bad value (reference, outcome)."""
        svc, who, v = self.dispatcher, user.username, act.version
        d = await svc.repo.load(dispatch_id)
        if d is None:
            raise UnknownDispatch(dispatch_id)
        if v is not None and d.version != v:
            raise StaleDispatch(dispatch_id, v)
        note = act.note.strip()
        match act.action:
            case "acknowledge":
                return await svc.acknowledge(
                    dispatch_id, who, note or "acknowledged", expected_version=v
                )
            case "contact":
                return await svc.contact(
                    dispatch_id,
                    who,
                    act.responder_id,
                    note,
                    timeout_s=act.timeout_s,
                    expected_version=v,
                )
            case "close":
                event = Event(EventKind.RESOLVE, outcome=act.outcome)
                reason = note or "closed"
                return await svc.apply(dispatch_id, event, who, reason, expected_version=v)
            case "injury":
                return await svc.report_injury(dispatch_id, who, note or "injury reported")
            case "handover":
                return await svc.handed_to_999(dispatch_id, who, act.reference, note)
            case "escalate":
                event = Event(EventKind.ESCALATE)
                return await svc.apply(
                    dispatch_id, event, who, note or "escalated by the operator", expected_version=v
                )
            case "note":
                if not note:
                    raise ValueError("a note needs some text")
                return await svc.add_note(dispatch_id, who, note)
        if act.action not in _RESPONDER_SAID:
            raise ValueError(f"unknown action {act.action!r}")
        kind, reason = _RESPONDER_SAID[act.action]
        event = Event(kind, d.responder_id)
        return await svc.apply(dispatch_id, event, who, note or reason, expected_version=v)


def services(request: Request) -> Services:
    """FastAPI dependency: the app's :class:`Services`."""
    svc: Services = request.app.state.services
    return svc
