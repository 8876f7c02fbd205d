"""Responders as dispatch sees them: the registry's :class:`~devices.model.Responder`
(kind, area, skills) plus on-call windows, the areas they cover and how to reach them.

A :class:`ResponderDirectory` answers "who of kind K, covering area A, with skills S, is
on call now?" in a stable order (the order the configuration lists them, then the
registry's).

Two sources: the dispatch file's profiles (on-call windows, contacts, areas), fixed at
start, and the registry's responders (``telecare responder add``), which the gateway
keeps in step while it runs (:meth:`ResponderDirectory.register`, called by its registry
watch): a responder added, moved to another area or removed with the CLI is dispatched
as the registry has them now. A responder the file describes is used as the file says.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, time
from typing import Any, Final
from zoneinfo import ZoneInfo

from telecare.devices.model import Responder, ResponderKind
from telecare.dispatch.errors import CascadeConfigError

__all__ = ["CHANNELS", "Contact", "OnCall", "ResponderDirectory", "ResponderProfile"]

#: The channels the shipped transports serve (a deployment may add its own).
CHANNELS: Final = frozenset({"webhook", "mqtt", "email"})
_DAYS: Final = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
LONDON: Final = ZoneInfo("Europe/London")


@dataclass(frozen=True, slots=True)
class Contact:
    channel: str  # "webhook" | "mqtt" | "email"
    address: str  # URL, responder-app id (topic level) or e-mail address

    def __post_init__(self) -> None:
        if not self.channel.isidentifier():
            raise CascadeConfigError(
                "channel", self.channel, f"Name a transport channel, e.g. {sorted(CHANNELS)}."
            )


@dataclass(frozen=True, slots=True)
class OnCall:
    """A weekly window in local (UK) time. ``end <= start`` means it runs past midnight."""

    days: frozenset[int]  # 0 = Monday
    start: time
    end: time

    def covers(self, at: datetime, tz: ZoneInfo = LONDON) -> bool:
        local = at.astimezone(tz)
        t, day = local.time(), local.weekday()
        if self.start < self.end:
            return day in self.days and self.start <= t < self.end
        # Overnight: the evening part belongs to ``day``, the morning part to the day before.
        return (day in self.days and t >= self.start) or (
            (day - 1) % 7 in self.days and t < self.end
        )

    @classmethod
    def parse(cls, text: str) -> OnCall:
        """``"mon-fri 08:00-18:00"``, ``"sat,sun 22:00-07:00"`` or ``"always"``."""
        if text.strip() == "always":
            return cls(frozenset(range(7)), time(0), time(0))
        try:
            days_text, hours = text.split()
            start_text, end_text = hours.split("-")
            return cls(
                _days(days_text), time.fromisoformat(start_text), time.fromisoformat(end_text)
            )
        except ValueError:
            raise CascadeConfigError(
                "on_call", text, "Write it as 'mon-fri 08:00-18:00' or 'always'."
            ) from None


def _days(text: str) -> frozenset[int]:
    days: set[int] = set()
    for part in text.lower().split(","):
        if "-" in part:
            a, b = (_DAYS.index(p) for p in part.split("-"))
            days.update(range(a, b + 1) if a <= b else [*range(a, 7), *range(b + 1)])
        else:
            days.add(_DAYS.index(part))
    return frozenset(days)


@dataclass(frozen=True, slots=True)
class ResponderProfile:
    responder: Responder
    contacts: tuple[Contact, ...] = ()
    #: Empty means always on call (a keyholder has no rota; an ambulance service neither).
    on_call: tuple[OnCall, ...] = ()
    #: Areas covered; empty means the responder's own ``area``.
    areas: tuple[str, ...] = ()

    @property
    def responder_id(self) -> str:
        return self.responder.responder_id

    def available(self, at: datetime) -> bool:
        return not self.on_call or any(w.covers(at) for w in self.on_call)

    def covers(self, area: str) -> bool:
        return area in (self.areas or (self.responder.area,))


class ResponderDirectory:
    """Every responder profile the dispatcher may use: the configured ones in
    configuration order, then the registry's others (see the module docstring)."""

    def __init__(self, profiles: Iterable[ResponderProfile] = ()) -> None:
        self._configured: dict[str, ResponderProfile] = {}
        for p in profiles:
            self._configured[p.responder_id] = p
        #: The registry's responders the configuration does not describe.
        self._registered: dict[str, ResponderProfile] = {}
        self._profiles = dict(self._configured)

    def get(self, responder_id: str) -> ResponderProfile | None:
        return self._profiles.get(responder_id)

    def add(self, profile: ResponderProfile) -> None:
        """Add (or replace) a configured profile."""
        self._configured[profile.responder_id] = profile
        self._registered.pop(profile.responder_id, None)
        self._profiles = {**self._configured, **self._registered}

    def register(self, responders: Iterable[Responder]) -> int:
        """The registry's responders as they are now, all of them: each one the
        configuration does not describe gets a plain profile (always on call, its own
        area, no contacts: the operator phones them); one no longer listed is dropped.
        Returns how many are registered so."""
        registered: dict[str, ResponderProfile] = {}
        for r in responders:
            if r.responder_id in self._configured:
                continue
            old = self._registered.get(r.responder_id)
            registered[r.responder_id] = old if old and old.responder == r else ResponderProfile(r)
        self._registered = registered
        self._profiles = {**self._configured, **registered}
        return len(registered)

    def profiles(self) -> list[ResponderProfile]:
        """Every profile, in configuration order (then the registry's)."""
        return list(self._profiles.values())

    def candidates(
        self, kind: ResponderKind, area: str, at: datetime, skills: Sequence[str] = ()
    ) -> list[ResponderProfile]:
        """On-call responders of ``kind`` covering ``area`` with every skill in ``skills``."""
        return [
            p
            for p in self._profiles.values()
            if p.responder.kind is kind
            and p.covers(area)
            and p.available(at)
            and set(skills) <= set(p.responder.skills)
        ]

    @classmethod
    def from_mapping(cls, entries: Sequence[Mapping[str, Any]]) -> ResponderDirectory:
        """From config (TOML ``[[responders]]``): ``id``, ``kind``, ``area``, ``areas``,
        ``skills``, ``on_call`` (list of windows) and ``contacts`` (``{channel = address}``)."""
        profiles = []
        for e in entries:
            responder = Responder(
                e["id"], e["kind"], area=e.get("area", "default"), skills=e.get("skills", ())
            )
            contacts = tuple(Contact(ch, addr) for ch, addr in dict(e.get("contacts", {})).items())
            windows = tuple(OnCall.parse(w) for w in e.get("on_call", ()))
            profiles.append(
                ResponderProfile(responder, contacts, windows, tuple(e.get("areas", ())))
            )
        return cls(profiles)
