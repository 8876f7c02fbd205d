"""structlog setup: JSON in production, pretty on a terminal, personal data redacted.

Log events carry ids (``device_id``, ``site_id``, ``resident_id``, ``alarm_id``), never
names, addresses, phone numbers, NHS numbers or clinical notes. :func:`redact`, the last
processor before the renderer, enforces it for whatever reaches it anyway, at any depth
(dicts, lists, tuples and sets inside event values):

* a key that names personal data (:data:`PERSONAL_KEYS`, or any key ending in ``name``
  other than :data:`NAME_KEYS_ALLOWED`) has its value replaced by ``[redacted]``;
* a raw payload (:data:`PAYLOAD_KEYS`) is replaced by its size;
* a ``*_id`` value that is not a valid identifier (a name typed where an id belongs) is
  replaced by ``[redacted: not an id]``;
* an exception value, or the traceback that ``exc_info`` asks for, keeps the exception
  *classes* and the frames (file, line, function) but not the exception *text*, which is
  where a rejected value ends up (``ValueError('Edna Smith is not ...')``);
* a rejection ``reason`` has every quoted value that is not an identifier masked
  (:func:`scrub_reason`): the value a device sent is input, maybe a name;
* every string is scrubbed of NHS-number-shaped digits (``943 476 5919``, ``943.476.5919``,
  ``NHS9434765919``) and UK phone numbers (:func:`scrub_text`).
"""

from __future__ import annotations

import logging
import re
import sys
import traceback
from collections.abc import Mapping, MutableMapping
from typing import Any, Final

import structlog

from telecare.devices.model import ID_PATTERN

__all__ = [
    "NAME_KEYS_ALLOWED",
    "PAYLOAD_KEYS",
    "PERSONAL_KEYS",
    "REDACTED",
    "configure_logging",
    "get_logger",
    "processors",
    "redact",
    "safe_traceback",
    "scrub_reason",
    "scrub_text",
]

REDACTED: Final = "[redacted]"
_NOT_AN_ID: Final = "[redacted: not an id]"

#: Keys whose values are personal data wherever they appear (compared in lower case).
PERSONAL_KEYS: Final = frozenset(
    {
        "name",
        "full_name",
        "first_name",
        "last_name",
        "surname",
        "given_name",
        "family_name",
        "resident_name",
        "nhs_number",
        "nhs_no",
        "nhs",
        "address",
        "address_line",
        "address_line1",
        "address_line2",
        "street",
        "postcode",
        "post_code",
        "zip",
        "phone",
        "phone_number",
        "mobile",
        "telephone",
        "tel",
        "email",
        "email_address",
        "notes",
        "note_text",
        "medical_notes",
        "clinical_notes",
        "diagnosis",
        "medication",
        "dob",
        "date_of_birth",
        "birth_date",
    }
)
#: Keys ending in ``name`` that are not a person's name.
NAME_KEYS_ALLOWED: Final = frozenset(
    {"logger", "logger_name", "task_name", "username", "hostname", "metric_name", "codec_name"}
)
#: Keys that carry a raw message payload: logged as their size only.
PAYLOAD_KEYS: Final = frozenset({"payload", "raw", "body", "frame", "data_raw"})

_NHS_NUMBER: Final = re.compile(
    r"(?i)(?:\bnhs\s*(?:no\.?|number|#)?\s*[:=]?\s*)?(?<!\d)\d{3}[ .\-]?\d{3}[ .\-]?\d{4}(?!\d)"
)
_UK_PHONE: Final = re.compile(r"(?<![\d+])(?:\+44\s?|0)\d(?:[\s\-]?\d){8,9}(?!\d)")
_QUOTED: Final = re.compile(r"'(?:[^'\\\n]|\\.)*'|\"(?:[^\"\\\n]|\\.)*\"")
_MAX_DEPTH: Final = 32
#: Keys holding a rejection reason: quoted values in them are input, see scrub_reason.
_REASON_KEYS: Final = frozenset({"reason", "last_reason"})


def scrub_text(text: str) -> str:
    """``text`` with NHS-number-shaped digits and UK phone numbers masked."""
    return _UK_PHONE.sub(REDACTED, _NHS_NUMBER.sub(REDACTED, text))


def _quoted(match: re.Match[str]) -> str:
    inner = match.group(0)[1:-1]
    return match.group(0) if ID_PATTERN.match(inner) else REDACTED


def scrub_reason(text: str) -> str:
    """A rejection reason safe to log and publish: :func:`scrub_text`, and every quoted
    value that is not an identifier masked (``resident_id 'Edna Smith' is not valid``
    becomes ``resident_id [redacted] is not valid``; ``device 'pend1'`` stays)."""
    return scrub_text(_QUOTED.sub(_quoted, text))


def _personal_key(key: object) -> bool:
    if not isinstance(key, str):
        return False
    k = key.lower()
    return k in PERSONAL_KEYS or (k.endswith("name") and k not in NAME_KEYS_ALLOWED)


def _exception_classes(exc: BaseException) -> str:
    return f"{type(exc).__module__}.{type(exc).__qualname__}"


def safe_traceback(exc: BaseException) -> str:
    """A traceback of ``exc`` (and its causes) with frames and exception classes but no
    exception messages."""
    parts: list[str] = []
    seen: set[int] = set()
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        chain.append(current)
        current = current.__cause__ or (
            None if current.__suppress_context__ else current.__context__
        )
    for i, item in enumerate(reversed(chain)):
        if i:
            parts.append("\nDuring handling, or as a cause of, the above:\n\n")
        parts.append("Traceback (most recent call last):\n")
        parts.extend(traceback.format_tb(item.__traceback__))
        parts.append(f"{_exception_classes(item)}: {REDACTED}\n")
    return "".join(parts)


def _clean(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str):
        return scrub_text(value)
    if isinstance(value, BaseException):
        return _exception_classes(value)
    if depth >= _MAX_DEPTH:
        return REDACTED
    if isinstance(value, Mapping):
        return {k: _clean_item(k, v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_clean(v, depth + 1) for v in value]
    if isinstance(value, bytes | bytearray | memoryview):
        return f"[{len(value)} bytes]"
    return value


def _clean_item(key: object, value: Any, depth: int) -> Any:
    if _personal_key(key):
        return REDACTED
    if (
        isinstance(key, str)
        and key.lower().endswith("_id")
        and isinstance(value, str)
        and not ID_PATTERN.match(value)
    ):
        return _NOT_AN_ID  # a name typed where an id belongs ("resident_id": "Edna Smith")
    if isinstance(key, str) and key.lower() in _REASON_KEYS and isinstance(value, str):
        return scrub_reason(value)
    if isinstance(key, str) and key.lower() in PAYLOAD_KEYS and value is not None:
        size = len(value) if isinstance(value, str | bytes | bytearray) else None
        return REDACTED if size is None else f"[{size} bytes]"
    return _clean(value, depth)


def redact(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: remove personal data at any depth (see the module docstring).
    Handles ``exc_info`` itself, so it must run before any traceback formatter."""
    exc_info = event_dict.pop("exc_info", None)
    if exc_info:
        if exc_info is True:
            exc_info = sys.exc_info()
        exc = exc_info if isinstance(exc_info, BaseException) else exc_info[1]
        if isinstance(exc, BaseException):
            event_dict["exception"] = safe_traceback(exc)
    for key in list(event_dict):
        event_dict[key] = _clean_item(key, event_dict[key], 0)
    return event_dict


def processors() -> list[Any]:
    """The processor chain before the renderer (tests pass it to ``capture_logs``)."""
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact,  # last: also turns exc_info into a traceback without exception text
    ]


def configure_logging(level: str = "info", fmt: str = "json") -> None:
    renderer: Any
    if fmt == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    else:
        renderer = structlog.processors.JSONRenderer()
    structlog.configure(
        processors=[*processors(), renderer],
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
