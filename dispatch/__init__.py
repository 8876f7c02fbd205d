"""Dispatch (layer 3): responders, cascades, the alarm lifecycle, timers, notifiers, reports.

Imports ``devices`` and ``rules`` only. The public surface is re-exported here; the
gateway implements :class:`DispatchRepository` (``gateway/store/dispatch_pg.py``,
``gateway/store/dispatch_sqlite.py``) and builds a :class:`DispatchService`. See
``docs/dispatch.md``.
"""

from dispatch.attend import AttendConfig, AttendTarget, Measure
from dispatch.cascades import CascadeConfig, Route, RouteRule, StepTemplate, resolve_cascade
from dispatch.errors import (
    CascadeConfigError,
    DispatchError,
    IllegalTransition,
    StaleDispatch,
    UnknownDispatch,
    WrongResponder,
)
from dispatch.machine import OUTCOMES, Event, EventKind, TimerPolicy, open_dispatch, transition
from dispatch.notify import Notifier
from dispatch.records import AuditRecord, CascadeEntry, Receipt, Timer, TimerKind
from dispatch.reports import PeriodFigures, RouteFigures, build_report, response_report
from dispatch.repository import DispatchRepository, Registry
from dispatch.responders import Contact, OnCall, ResponderDirectory, ResponderProfile
from dispatch.service import DispatchService
from dispatch.storm import AlarmQueue

__all__ = [
    "OUTCOMES",
    "AlarmQueue",
    "AttendConfig",
    "AttendTarget",
    "AuditRecord",
    "CascadeConfig",
    "CascadeConfigError",
    "CascadeEntry",
    "Contact",
    "DispatchError",
    "DispatchRepository",
    "DispatchService",
    "Event",
    "EventKind",
    "IllegalTransition",
    "Measure",
    "Notifier",
    "OnCall",
    "PeriodFigures",
    "Receipt",
    "Registry",
    "ResponderDirectory",
    "ResponderProfile",
    "Route",
    "RouteFigures",
    "RouteRule",
    "StaleDispatch",
    "StepTemplate",
    "Timer",
    "TimerKind",
    "TimerPolicy",
    "UnknownDispatch",
    "WrongResponder",
    "build_report",
    "open_dispatch",
    "resolve_cascade",
    "response_report",
    "transition",
]
