"""structlog setup: JSON in production, pretty on a terminal, personal data redacted.

Log events carry ids (``device_id``, ``site_id``, ``resident_id``, ``alarm_id``), never
names, addresses, phone numbers or NHS numbers: :func:`redact` drops any such key that
reaches the renderer anyway and masks anything shaped like an NHS number.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, Final

import structlog

__all__ = ["configure_logging", "get_logger", "redact"]

PERSONAL_KEYS: Final = frozenset(
    {"name", "resident_name", "nhs_number", "address", "phone", "email", "notes", "dob"}
)
_NHS_NUMBER: Final = re.compile(r"\b\d{3}[ -]?\d{3}[ -]?\d{4}\b")


def redact(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: remove personal-data keys and mask NHS-number-like digits."""
    for key in list(event_dict):
        if key in PERSONAL_KEYS:
            event_dict[key] = "[redacted]"
        elif isinstance(event_dict[key], str):
            event_dict[key] = _NHS_NUMBER.sub("[redacted]", event_dict[key])
    return event_dict


def configure_logging(level: str = "info", fmt: str = "json") -> None:
    renderer: Any
    if fmt == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    else:
        renderer = structlog.processors.JSONRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    # Libraries that use stdlib logging (amqtt, paho, uvicorn) stay quiet below WARNING.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
