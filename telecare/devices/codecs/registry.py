"""Codec registry: codec name (a device's ``format``) -> how to decode it.

Two kinds, so the ingest readers can be generic:

* :class:`StreamCodec` (serial): ``new_decoder()`` gives a fresh incremental decoder
  (``feed(bytes) -> frames``, ``pop_skips()``), ``line`` the port settings, and
  ``to_model(frame, ...)`` turns one frame into readings or alarm events.
* :class:`MessageCodec` (one payload per MQTT message): ``decode(payload) -> frame``
  raising ``Malformed``, and ``to_model`` as above.

``to_model`` derives a deterministic ``msg_id`` from the codec name and ``ts`` (and, for
Contact ID, the message itself). High-rate oximeter streams should go through
:class:`devices.reduce.OximeterReducer` instead of ``to_model`` for every frame.
``json_v1`` (protocol v1 JSON over MQTT) is registered by its own module.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

from telecare.devices.codecs import ble, cms50d, contact_id, masimo, nonin, ua767pbt
from telecare.devices.codecs.oximetry import OximeterSample, msg_id_for, sample_readings
from telecare.devices.codecs.stream import FrameDecoder
from telecare.devices.model import AlarmEvent, Reading

__all__ = ["CODECS", "LineSettings", "MessageCodec", "StreamCodec", "get"]


class ToModel(Protocol):
    def __call__(
        self,
        frame: Any,
        *,
        device_id: str,
        ts: datetime,
        resident_id: str | None = None,
        site_id: str | None = None,
    ) -> list[Reading | AlarmEvent]: ...


@dataclass(frozen=True, slots=True)
class LineSettings:
    """Serial port settings, named as pyserial names them."""

    baudrate: int
    bytesize: int = 8
    parity: Literal["N", "E", "O"] = "N"
    stopbits: int = 1


@dataclass(frozen=True, slots=True)
class StreamCodec:
    name: str
    new_decoder: Callable[[], FrameDecoder[Any]]
    line: LineSettings
    to_model: ToModel
    #: Frames per second the device sends (for stubs and for sizing queues).
    rate_hz: float
    kind: Literal["stream"] = "stream"


@dataclass(frozen=True, slots=True)
class MessageCodec:
    name: str
    decode: Callable[[bytes], Any]
    to_model: ToModel
    kind: Literal["message"] = "message"


def _oximeter(name: str) -> ToModel:
    def to_model(
        frame: Any,
        *,
        device_id: str,
        ts: datetime,
        resident_id: str | None = None,
        site_id: str | None = None,
    ) -> list[Reading | AlarmEvent]:
        assert isinstance(frame, OximeterSample)
        return list(
            sample_readings(
                frame,
                device_id=device_id,
                ts=ts,
                msg_id=msg_id_for(name, ts),
                resident_id=resident_id,
                site_id=site_id,
            )
        )

    return to_model


def _ble(name: str) -> ToModel:
    def to_model(
        frame: Any,
        *,
        device_id: str,
        ts: datetime,
        resident_id: str | None = None,
        site_id: str | None = None,
    ) -> list[Reading | AlarmEvent]:
        convert = ble.bp_readings if isinstance(frame, ble.BloodPressure) else ble.plx_readings
        return list(
            convert(
                frame,
                device_id=device_id,
                ts=ts,
                msg_id=msg_id_for(name, ts),
                resident_id=resident_id,
                site_id=site_id,
            )
        )

    return to_model


def _contact_id(
    frame: Any,
    *,
    device_id: str,
    ts: datetime,
    resident_id: str | None = None,
    site_id: str | None = None,
) -> list[Reading | AlarmEvent]:
    assert isinstance(frame, contact_id.ContactIdMessage)
    event = contact_id.to_event(
        frame, device_id=device_id, ts=ts, site_id=site_id, resident_id=resident_id
    )
    return [event]


def _ua767pbt(
    frame: Any,
    *,
    device_id: str,
    ts: datetime,
    resident_id: str | None = None,
    site_id: str | None = None,
) -> list[Reading | AlarmEvent]:
    assert isinstance(frame, ua767pbt.CuffMeasurement)
    return list(
        ua767pbt.readings(
            frame,
            device_id=device_id,
            ts=ts,
            msg_id=ua767pbt.msg_id_of(frame) or msg_id_for("ua767pbt", ts),
            resident_id=resident_id,
            site_id=site_id,
        )
    )


CODECS: dict[str, StreamCodec | MessageCodec] = {
    "cms50d": StreamCodec(
        "cms50d", cms50d.decoder, LineSettings(19200, 8, "O", 1), _oximeter("cms50d"), 60.0
    ),
    "nonin2": StreamCodec(
        "nonin2", nonin.decoder2, LineSettings(9600, 8, "N", 1), _oximeter("nonin2"), 3.0
    ),
    "nonin8": StreamCodec(
        "nonin8", nonin.decoder8, LineSettings(9600, 8, "N", 1), _oximeter("nonin8"), 1.0
    ),
    "masimo_rad8": StreamCodec(
        "masimo_rad8",
        masimo.decoder,
        LineSettings(9600, 8, "N", 1),
        _oximeter("masimo_rad8"),
        1.0,
    ),
    "contact_id": StreamCodec(
        "contact_id", contact_id.decoder, LineSettings(9600, 8, "N", 1), _contact_id, 0.0
    ),
    # Bluetooth SPP (rfcomm): the line settings are nominal, the link ignores them.
    "ua767pbt": StreamCodec(
        "ua767pbt", ua767pbt.decoder, LineSettings(9600, 8, "N", 1), _ua767pbt, 0.0
    ),
    "ble_2a5e": MessageCodec("ble_2a5e", ble.decode_2a5e, _ble("ble_2a5e")),
    "ble_2a5f": MessageCodec("ble_2a5f", ble.decode_2a5f, _ble("ble_2a5f")),
    "ble_2a35": MessageCodec("ble_2a35", ble.decode_2a35, _ble("ble_2a35")),
}


def get(name: str) -> StreamCodec | MessageCodec:
    """The codec called ``name``; ``KeyError`` names the known ones."""
    try:
        return CODECS[name]
    except KeyError:
        raise KeyError(f"unknown codec {name!r}; known: {', '.join(sorted(CODECS))}") from None
