"""A small sans-IO SIP message parser and response builder (RFC 3261), enough for a
SCAIP receiver: requests in, final responses out. No I/O, no dialogs, no transactions
(the listener keeps its own retransmission cache).

``parse(buffer, stream=...)`` returns ``(message, consumed)`` or raises
:class:`~devices.codecs.Incomplete` / :class:`~devices.codecs.Malformed`:

* **stream** transports (TCP, TLS) frame messages by ``Content-Length``, which is then
  mandatory (RFC 3261 18.3); a body not yet complete is ``Incomplete``. Blank lines
  before a message (CRLF keep-alives, RFC 5626) are skipped with ``Malformed(skip=n)``
  whose reason starts with ``keep-alive``.
* **datagram** transports (UDP) carry one message a datagram: without ``Content-Length``
  the body is the rest of the datagram; a body shorter than ``Content-Length`` is
  ``Malformed``.

Header names are matched case-insensitively and compact forms are expanded (``f`` From,
``t`` To, ``i`` Call-ID, ``v`` Via, ``l`` Content-Length, ``c`` Content-Type, ``m``
Contact, ``k`` Supported). Header values keep their order; folded lines are unfolded.
Limits: the header block is at most :data:`MAX_HEADER` bytes and a body at most
:data:`MAX_BODY`: anything longer is ``Malformed`` (the caller answers 413 / closes).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from telecare.devices.codecs import Incomplete, Malformed

__all__ = [
    "MAX_BODY",
    "MAX_HEADER",
    "SipRequest",
    "SipResponse",
    "TooLarge",
    "build_request",
    "build_response",
    "parse",
    "uri_user",
]

MAX_HEADER = 8192
MAX_BODY = 16384
_COMPACT = {
    "f": "from",
    "t": "to",
    "i": "call-id",
    "v": "via",
    "l": "content-length",
    "c": "content-type",
    "m": "contact",
    "k": "supported",
    "s": "subject",
}
#: Headers a response copies from its request (RFC 3261 8.2.6.2), in this order.
_COPIED = ("via", "from", "to", "call-id", "cseq")
_CANONICAL = {
    "via": "Via",
    "from": "From",
    "to": "To",
    "call-id": "Call-ID",
    "cseq": "CSeq",
    "content-type": "Content-Type",
    "content-length": "Content-Length",
}
_REQUEST_LINE = re.compile(r"^([A-Z][A-Z0-9._!%*+`'~-]*) (\S+) (SIP/2\.0)$")
_STATUS_LINE = re.compile(r"^SIP/2\.0 ([1-6]\d\d) ?(.*)$")
_USER = re.compile(r"<?\s*sips?:([^@;>\s]+)@", re.IGNORECASE)


class TooLarge(Malformed):
    """The message is larger than the limits (answer 413, or close the stream)."""


@dataclass(frozen=True, slots=True)
class SipRequest:
    method: str
    uri: str
    #: ``(lower-case name, value)`` in arrival order, compact forms expanded.
    headers: tuple[tuple[str, str], ...]
    body: bytes = b""

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), or ``None``."""
        key = name.lower()
        for n, v in self.headers:
            if n == key:
                return v
        return None

    def header_all(self, name: str) -> list[str]:
        key = name.lower()
        return [v for n, v in self.headers if n == key]

    @property
    def content_type(self) -> str:
        """The media type without parameters, lower-case (``""`` when absent)."""
        raw = self.header("content-type") or ""
        return raw.split(";", 1)[0].strip().lower()

    @property
    def transaction_key(self) -> tuple[str, str, str]:
        """``(top Via branch, Call-ID, CSeq)``: equal for a retransmission of this request."""
        via = self.header("via") or ""
        m = re.search(r";\s*branch=([^;,\s]+)", via, re.IGNORECASE)
        return (m.group(1) if m else via, self.header("call-id") or "", self.header("cseq") or "")


@dataclass(frozen=True, slots=True)
class SipResponse:
    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]
    body: bytes = b""

    def header(self, name: str) -> str | None:
        key = name.lower()
        for n, v in self.headers:
            if n == key:
                return v
        return None


@dataclass(frozen=True, slots=True)
class _Head:
    start: str
    headers: tuple[tuple[str, str], ...] = field(default_factory=tuple)


def parse(buffer: bytes, *, stream: bool) -> tuple[SipRequest | SipResponse, int]:
    """Parse one SIP message from the start of ``buffer`` (see the module docstring)."""
    if not buffer:
        raise Incomplete("empty buffer")
    if buffer[:1] in (b"\r", b"\n"):
        n = len(buffer) - len(buffer.lstrip(b"\r\n"))
        raise Malformed("keep-alive line break", skip=n)
    end = buffer.find(b"\r\n\r\n")
    sep = 4
    if end < 0:
        end = buffer.find(b"\n\n")
        sep = 2
    if end < 0:
        if len(buffer) > MAX_HEADER:
            raise TooLarge(f"SIP header block longer than {MAX_HEADER} bytes", skip=len(buffer))
        if stream:
            raise Incomplete("waiting for the end of the SIP header block")
        raise Malformed("SIP message without an empty line after its headers", skip=len(buffer))
    if end > MAX_HEADER:
        raise TooLarge(f"SIP header block longer than {MAX_HEADER} bytes", skip=end + sep)
    head = _head(buffer[:end], skip=end + sep)
    body_at = end + sep
    length_text = _first(head.headers, "content-length")
    if length_text is None:
        if stream:
            raise Malformed("SIP message on a stream without Content-Length", skip=body_at)
        length = len(buffer) - body_at
    else:
        if not length_text.strip().isdigit():
            raise Malformed(
                f"SIP Content-Length {length_text[:12]!r} is not a number", skip=body_at
            )
        length = int(length_text)
    if length > MAX_BODY:
        raise TooLarge(f"SIP body of {length} bytes is over {MAX_BODY}", skip=len(buffer))
    if len(buffer) < body_at + length:
        if stream:
            raise Incomplete(f"{len(buffer) - body_at} of {length} body bytes")
        raise Malformed(
            f"SIP body shorter ({len(buffer) - body_at} bytes) than Content-Length {length}",
            skip=len(buffer),
        )
    body = buffer[body_at : body_at + length]
    used = body_at + length if stream else len(buffer)
    m = _REQUEST_LINE.match(head.start)
    if m is not None:
        return SipRequest(m.group(1), m.group(2), head.headers, body), used
    s = _STATUS_LINE.match(head.start)
    if s is not None:
        return SipResponse(int(s.group(1)), s.group(2), head.headers, body), used
    raise Malformed(f"not a SIP request or status line: {head.start[:40]!r}", skip=used)


def _head(block: bytes, *, skip: int) -> _Head:
    try:
        text = block.decode("utf-8")
    except UnicodeDecodeError:
        raise Malformed("SIP header block is not UTF-8", skip=skip) from None
    lines = text.replace("\r\n", "\n").split("\n")
    start = lines[0].strip()
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if line[:1] in (" ", "\t") and headers:  # folded continuation
            name, value = headers[-1]
            headers[-1] = (name, f"{value} {line.strip()}")
            continue
        name, sep, value = line.partition(":")
        name = name.strip().lower()
        if not sep or not name or " " in name:
            raise Malformed(f"SIP header line {line[:30]!r} is not 'Name: value'", skip=skip)
        headers.append((_COMPACT.get(name, name), value.strip()))
    return _Head(start, tuple(headers))


def _first(headers: tuple[tuple[str, str], ...], name: str) -> str | None:
    for n, v in headers:
        if n == name:
            return v
    return None


def uri_user(value: str) -> str | None:
    """The user part of the SIP URI in a From/To value (``"Unit" <sip:26317@host>;tag=1``
    -> ``26317``), or ``None``."""
    m = _USER.search(value)
    return m.group(1) if m else None


def build_response(
    request: SipRequest,
    status: int,
    reason: str,
    *,
    to_tag: str = "",
    headers: tuple[tuple[str, str], ...] = (),
    body: bytes = b"",
    content_type: str = "",
) -> bytes:
    """A response to ``request``: Via (all, in order), From, To (with ``to_tag`` added
    when the request's To has none), Call-ID and CSeq copied; then ``headers``;
    Content-Type when there is a body; Content-Length always."""
    out = [f"SIP/2.0 {status} {reason}"]
    for name in _COPIED:
        for value in request.header_all(name):
            if name == "to" and to_tag and ";tag=" not in value.replace(" ", "").lower():
                value = f"{value};tag={to_tag}"
            out.append(f"{_CANONICAL[name]}: {value}")
    for name, value in headers:
        out.append(f"{name}: {value}")
    if body:
        out.append(f"Content-Type: {content_type or 'application/octet-stream'}")
    out.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(out) + "\r\n\r\n").encode("utf-8") + body


def build_request(
    method: str,
    uri: str,
    headers: tuple[tuple[str, str], ...],
    body: bytes = b"",
    content_type: str = "",
) -> bytes:
    """A request with ``headers`` as given, then Content-Type (with a body) and
    Content-Length (the simulated units use this)."""
    out = [f"{method} {uri} SIP/2.0"]
    out.extend(f"{n}: {v}" for n, v in headers)
    if body:
        out.append(f"Content-Type: {content_type or 'application/octet-stream'}")
    out.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(out) + "\r\n\r\n").encode("utf-8") + body
