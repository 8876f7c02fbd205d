"""Masimo Rad-8 serial ASCII output ("ASCII 1" mode), one line a second, 9600 8-N-1.

A line looks like (CR LF terminated)::

    02/22/16 22:47:45 SN=0000056661 SPO2=098% BPM=097 PI=03.60% SPCO=--.-% SPMET=--.-% \
DESAT=-- PIDELTA=+-- ALARM=0000 EXC=000800

Date and time (device clock, ``MM/DD/YY HH:MM:SS``) come first, then ``KEY=VALUE``
fields. Any value made of dashes (``--``, ``---``, ``--.-``) means "no value" and is
reported in ``missing``, never as a number. SPO2 and BPM are required; PI is optional;
other fields (SPCO, SPMET, DESAT, PIDELTA, SPHB...) are ignored. ``ALARM`` and ``EXC``
are kept raw as flags (``alarm:XXXX``, ``exc:XXXXXX``). ``EXC`` reports the oximeter's
exceptions (no / defective / unrecognised sensor, sensor off, low perfusion, pulse search,
interference, ambient light, low signal IQ, ...): a line with any exception bit other than
``0x800`` (set on the documented normal line, ``EXC=000800``) is **invalid**: it gives no
SpO2, pulse or PI value (``missing`` says why, the flag ``invalid`` is set), so a number
measured through a sensor problem is never stored or scored. A non-zero ``ALARM`` alone
does not invalidate the values: it is also raised for a patient's SpO2 or pulse crossing
a limit, exactly when the value matters.
Bytes before the date of a line (noise, or a line joined mid-way) are skipped.
"""

from __future__ import annotations

import re
from datetime import datetime

from telecare.devices.codecs import Incomplete, Malformed
from telecare.devices.codecs.oximetry import OximeterSample
from telecare.devices.codecs.stream import StreamDecoder

__all__ = ["MAX_LINE", "decoder", "parse", "parse_line"]

#: A Rad-8 line is about 130 characters; anything longer without a newline is noise.
MAX_LINE = 256
_START = re.compile(rb"\d\d/\d\d/\d\d \d\d:\d\d:\d\d ")
_START_LEN = 18
_NO_VALUE = re.compile(r"^[+-]?-+(\.-+)?%?$")
_INT = re.compile(r"^(\d{1,3})%?$")
#: EXC bits that are not a problem: 0x800 is set on the documented normal line.
_EXC_BENIGN = 0x800
_DECIMAL = re.compile(r"^(\d{1,3}(?:\.\d{1,3})?)%?$")


def parse(buffer: bytes) -> tuple[OximeterSample, int]:
    """Parse one line from the start of ``buffer``.

    Raises ``Incomplete`` until a newline arrives; ``Malformed`` with ``skip`` covering
    the noise before a line start, or the whole bad line.
    """
    m = _START.search(buffer)
    if m is None:
        nl = buffer.rfind(b"\n")
        if nl >= 0:
            raise Malformed("line without a Rad-8 date/time", skip=nl + 1)
        if len(buffer) > MAX_LINE:
            # keep a tail that could be the beginning of a line start
            raise Malformed("no Rad-8 line start", skip=len(buffer) - _START_LEN + 1)
        raise Incomplete("waiting for a line")
    if m.start() > 0:
        raise Malformed("noise before a Rad-8 line", skip=m.start())
    end = buffer.find(b"\n")
    if end < 0 and len(buffer) <= MAX_LINE:
        raise Incomplete("waiting for the end of the line")
    if end < 0 or end > MAX_LINE:
        raise Malformed(f"Rad-8 line longer than {MAX_LINE} bytes", skip=_START_LEN)
    nxt = _START.search(buffer, 1, end)
    if nxt is not None:
        raise Malformed("Rad-8 line cut short by a new line", skip=nxt.start())
    return parse_line(buffer[:end]), end + 1


def parse_line(line: bytes) -> OximeterSample:
    """Parse one Rad-8 line (without or with its CR LF)."""
    try:
        text = line.decode("ascii").strip()
    except UnicodeDecodeError:
        raise Malformed("Rad-8 line is not ASCII", skip=len(line) + 1) from None
    parts = text.split()
    skip = len(line) + 1
    if len(parts) < 2:
        raise Malformed("Rad-8 line without date and time", skip=skip)
    try:
        when = datetime.strptime(f"{parts[0]} {parts[1]}", "%m/%d/%y %H:%M:%S")
    except ValueError:
        raise Malformed(f"Rad-8 date/time {parts[0]} {parts[1]} is invalid", skip=skip) from None
    fields: dict[str, str] = {}
    for part in parts[2:]:
        key, sep, value = part.partition("=")
        if not sep or not key:
            raise Malformed(f"Rad-8 field {part[:20]!r} is not KEY=VALUE", skip=skip)
        fields[key.upper()] = value
    missing: list[str] = []
    spo2 = _number("SPO2", fields, missing, integer=True, skip=skip)
    pulse = _number("BPM", fields, missing, integer=True, skip=skip)
    pi = _number("PI", fields, missing, integer=False, skip=skip, required=False)
    if spo2 is not None and spo2 > 100:
        raise Malformed(f"Rad-8 SPO2 {spo2:g} is out of range 0..100", skip=skip)
    flags = set()
    for key in ("ALARM", "EXC"):
        raw = fields.get(key)
        if raw is not None:
            if not re.fullmatch(r"[0-9A-Fa-f]{1,8}", raw):
                raise Malformed(f"Rad-8 {key}={raw[:12]!r} is not hexadecimal", skip=skip)
            if int(raw, 16):
                flags.add(f"{key.lower()}:{raw.upper()}")
    exc = fields.get("EXC")
    if exc is not None and int(exc, 16) & ~_EXC_BENIGN:
        why = f"invalid: EXC={exc.upper()} reports a sensor or signal problem"
        missing.extend(
            f"{name}: {why}" for name, v in (("spo2", spo2), ("pulse", pulse)) if v is not None
        )
        spo2 = pulse = pi = None
        flags.add("invalid")
    finger_out = spo2 is None and pulse is None and "invalid" not in flags
    return OximeterSample(
        spo2=None if spo2 is None else int(spo2),
        pulse=None if pulse is None else int(pulse),
        finger_out=finger_out,
        perfusion_index=pi,
        flags=frozenset(flags),
        missing=tuple(missing),
        device_time=when,
    )


def _number(
    key: str,
    fields: dict[str, str],
    missing: list[str],
    *,
    integer: bool,
    skip: int,
    required: bool = True,
) -> float | None:
    raw = fields.get(key)
    if raw is None:
        if required:
            raise Malformed(f"Rad-8 line has no {key} field", skip=skip)
        return None
    if _NO_VALUE.match(raw):
        missing.append(f"{key.lower()}: no value ({raw})")
        return None
    m = (_INT if integer else _DECIMAL).match(raw)
    if m is None:
        raise Malformed(f"Rad-8 {key}={raw[:12]!r} is not a number", skip=skip)
    return float(m.group(1))


def decoder() -> StreamDecoder[OximeterSample]:
    """A fresh incremental decoder for one Rad-8 serial stream."""
    return StreamDecoder(parse, max_buffer=2 * MAX_LINE)
