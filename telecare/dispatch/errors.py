"""The dispatch error hierarchy, split by what the caller does next::

DispatchError               base; never raised itself
├── IllegalTransition       the event does not apply in this state: tell the operator, move on
│   └── WrongResponder      an accept/decline came from someone not currently contacted
├── StaleDispatch           someone else changed it first (version moved): reload, decide again
├── UnknownDispatch         no such dispatch id: reject the request (404)
└── CascadeConfigError      the cascade/responder configuration is invalid: fix the config
"""

from __future__ import annotations

__all__ = [
    "CascadeConfigError",
    "DispatchError",
    "IllegalTransition",
    "StaleDispatch",
    "UnknownDispatch",
    "WrongResponder",
]


class DispatchError(Exception):
    """Base class of every dispatch error."""


class IllegalTransition(DispatchError):
    """``event`` is not allowed from ``state`` (for example acknowledging a resolved alarm)."""

    def __init__(self, dispatch_id: str, state: str, event: str, hint: str = "") -> None:
        message = f"dispatch {dispatch_id}: cannot {event} when {state}"
        super().__init__(f"{message}; {hint}" if hint else message)
        self.dispatch_id = dispatch_id
        self.state = state
        self.event = event


class WrongResponder(IllegalTransition):
    """A responder answered for a dispatch that is waiting on somebody else."""


class StaleDispatch(DispatchError):
    """The stored version is not the one the caller decided on: somebody else won."""

    def __init__(self, dispatch_id: str, expected_version: int) -> None:
        super().__init__(
            f"dispatch {dispatch_id}: changed by someone else since version {expected_version};"
            " reload it and decide again"
        )
        self.dispatch_id = dispatch_id
        self.expected_version = expected_version


class UnknownDispatch(DispatchError):
    def __init__(self, dispatch_id: str) -> None:
        super().__init__(f"no dispatch {dispatch_id!r}")
        self.dispatch_id = dispatch_id


class CascadeConfigError(DispatchError):
    """Configuration that cannot work: names the key and the value."""

    def __init__(self, key: str, value: object, why: str) -> None:
        super().__init__(f"Config {key!r} has value {value!r}. {why}")
        self.key = key
        self.value = value
