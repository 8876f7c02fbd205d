"""The frame every oximeter stream codec yields, and its conversion to readings.

``OximeterSample`` is what a CMS50D+, Nonin (formats 2 and 8) or Masimo Rad-8 says at
one instant. "No value" markers (sentinels such as SpO2 127 or pulse 255/511, a
finger-out flag, Masimo ``--``) are never numbers here: the field is ``None`` and
``missing`` says why, so they can never become a :class:`~devices.model.Reading`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from telecare.devices.codecs import Malformed
from telecare.devices.model import Metric, ModelError, Reading

__all__ = ["OximeterSample", "msg_id_for", "sample_readings"]


@dataclass(frozen=True, slots=True)
class OximeterSample:
    """One oximeter measurement. ``None`` means "no value"; ``missing`` says why."""

    spo2: int | None
    pulse: int | None
    finger_out: bool = False
    perfusion_index: float | None = None
    #: Status flags the device reported (``searching``, ``artifact``, ``low_battery``...).
    flags: frozenset[str] = frozenset()
    #: Why a metric has no value, e.g. ``("spo2: sentinel 127", "pulse: finger out")``.
    missing: tuple[str, ...] = ()
    #: Raw plethysmogram samples carried by this frame (optional waveform).
    pleth: tuple[int, ...] = field(default=(), repr=False)
    #: The device's own clock (local, naive) when the format carries one.
    device_time: datetime | None = None


def msg_id_for(prefix: str, ts: datetime) -> str:
    """A deterministic message id for a sample taken at ``ts``: ``<prefix>-<epoch ms>``.

    Re-reading the same sample (same device, same timestamp) gives the same id, so the
    store's idempotency key ``(device_id, msg_id, metric)`` drops the duplicate.
    """
    return f"{prefix}-{round(ts.timestamp() * 1000)}"


def sample_readings(
    sample: OximeterSample,
    *,
    device_id: str,
    ts: datetime,
    msg_id: str,
    resident_id: str | None = None,
    site_id: str | None = None,
) -> list[Reading]:
    """Readings for every metric of ``sample`` that has a value (none for "no value").

    Raises :class:`Malformed` when a value is outside the canonical model's plausible
    range or an identifier is invalid (the model's ``ModelError`` names the field).
    """
    values: list[tuple[Metric, float]] = []
    if sample.spo2 is not None:
        values.append((Metric.SPO2, sample.spo2))
    if sample.pulse is not None:
        values.append((Metric.PULSE, sample.pulse))
    if sample.perfusion_index is not None:
        values.append((Metric.PERFUSION_INDEX, sample.perfusion_index))
    try:
        return [
            Reading(
                device_id=device_id,
                metric=metric,
                value=value,
                unit=metric.unit,
                ts=ts,
                msg_id=msg_id,
                resident_id=resident_id,
                site_id=site_id,
            )
            for metric, value in values
        ]
    except ModelError as exc:
        raise Malformed(f"oximeter sample rejected: {exc}") from None
