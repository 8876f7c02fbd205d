"""Dispatch (layer 3): responders, cascades, the alarm lifecycle, timers, notifiers, reports.

Imports ``devices`` and ``rules`` only. The public surface is re-exported here; the
gateway implements :class:`DispatchRepository` (``gateway/store/dispatch.py``, on
both backends) and builds a :class:`DispatchService`. See
``docs/dispatch.md``.
"""

from telecare.dispatch.attend import AttendConfig, AttendTarget, Measure
from telecare.dispatch.cascades import (
    CascadeConfig,
    Route,
    RouteRule,
    StepTemplate,
    resolve_cascade,
)
from telecare.dispatch.errors import (
    CascadeConfigError,
    DispatchError,
    IllegalTransition,
    StaleDispatch,
    UnknownDispatch,
    WrongResponder,
)
from telecare.dispatch.machine import (
    OUTCOMES,
    Event,
    EventKind,
    TimerPolicy,
    open_dispatch,
    transition,
)
from telecare.dispatch.notify import Notifier
from telecare.dispatch.records import AuditRecord, CascadeEntry, Receipt, Timer, TimerKind
from telecare.dispatch.reports import PeriodFigures, RouteFigures, build_report, response_report
from telecare.dispatch.repository import DispatchRepository, Registry
from telecare.dispatch.responders import Contact, OnCall, ResponderDirectory, ResponderProfile
from telecare.dispatch.service import DispatchService
from telecare.dispatch.storm import AlarmQueue

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
