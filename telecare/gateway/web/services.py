"""What every web router works with: the :class:`Services` object, built once per app.

Routers never build collaborators of their own: they take ``Services`` through the
:func:`services` dependency (``svc: Services = Depends(services)``) and read through the
store, act through the dispatch service and score through the rules. Tests build a
``Services`` around a real store, dispatch service and fake clock, and hand it to
``create_app``.

The console engineer's live-event hub plugs in as :attr:`Services.live` (anything with
``publish``); :attr:`Services.metrics` holds the Prometheus instruments every part sets.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from fastapi import Request

from telecare.devices.model import ObservationSet
from telecare.dispatch import DispatchService
from telecare.gateway.config import Config
from telecare.gateway.store.accounts import Accounts
from telecare.gateway.store.base import Store
from telecare.gateway.web.metrics import Metrics
from telecare.rules.clock import Clock
from telecare.rules.config import RulesConfig
from telecare.rules.engine import EngineResult
from telecare.rules.news2 import News2Result

__all__ = ["LiveHub", "LoginThrottle", "ObservationSink", "Readiness", "Services", "services"]


class LiveHub(Protocol):
    """The live-event hub (SSE) the console fills in (``web/live.py``)."""

    def publish(self, kind: str, data: Mapping[str, Any]) -> None: ...


class ObservationSink(Protocol):
    """Hands an observation set to the pipeline; returns once it is stored and scored
    (``Pipeline.handle_observation`` in the running gateway)."""

    def __call__(
        self,
        obs: ObservationSet,
        *,
        received_at: datetime | None = None,
        on_scored: Callable[[ObservationSet, News2Result, EngineResult], None] | None = None,
    ) -> Awaitable[News2Result | None]: ...


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


def services(request: Request) -> Services:
    """FastAPI dependency: the app's :class:`Services`."""
    svc: Services = request.app.state.services
    return svc
