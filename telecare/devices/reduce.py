"""Reduce a high-rate oximeter stream to the readings worth storing.

A CMS50D+ sends 60 samples a second and a Nonin format 2 stream 3 packets a second;
storing them all would flood the store with near-identical values. The policy, per
metric (SpO2, pulse, perfusion index), for samples in timestamp order:

1. The first value after start, or after a gap (no value: finger out, sentinel), is
   emitted at once.
2. Otherwise a value is emitted when at least ``interval`` (1 s) has passed since the
   last emission of that metric: at most one reading per metric per second.
3. A **significant change** from the last emitted value (SpO2 >= 2 points, pulse >= 10
   /min, perfusion index >= 1.0 %) is emitted at once, even within the interval, but
   never less than ``min_gap`` (0.25 s) after the previous emission, so a value
   flapping across the threshold at 60 Hz cannot flood the store.

Values are emitted as the device sent them (oximeters already average over 4-8 beats);
no further smoothing. A sample whose timestamp goes backwards is treated as a new
start (its value is emitted). Raw waveform (``pleth``) is never turned into readings.
The class is pure: no clock, no I/O; timestamps come with the samples.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from telecare.devices.codecs import Malformed
from telecare.devices.codecs.oximetry import OximeterSample, msg_id_for
from telecare.devices.model import Metric, ModelError, Reading

__all__ = ["SIGNIFICANT_CHANGE", "OximeterReducer"]

#: Change from the last emitted value that is emitted at once.
SIGNIFICANT_CHANGE: dict[Metric, float] = {
    Metric.SPO2: 2.0,
    Metric.PULSE: 10.0,
    Metric.PERFUSION_INDEX: 1.0,
}


@dataclass(slots=True)
class _Last:
    value: float
    ts: datetime


class OximeterReducer:
    """Turn a stream of ``(sample, ts)`` from one device into sparse readings."""

    def __init__(
        self,
        *,
        device_id: str,
        msg_prefix: str,
        resident_id: str | None = None,
        site_id: str | None = None,
        interval: timedelta = timedelta(seconds=1),
        min_gap: timedelta = timedelta(milliseconds=250),
        significant: dict[Metric, float] | None = None,
    ) -> None:
        self.device_id = device_id
        self.msg_prefix = msg_prefix
        self.resident_id = resident_id
        self.site_id = site_id
        self.interval = interval
        self.min_gap = min_gap
        self.significant = dict(SIGNIFICANT_CHANGE if significant is None else significant)
        self._last: dict[Metric, _Last] = {}
        #: Samples seen and readings emitted (for metrics: the reduction ratio).
        self.samples = 0
        self.emitted = 0

    def push(self, sample: OximeterSample, ts: datetime) -> list[Reading]:
        """Readings to emit for ``sample`` taken at ``ts`` (often none).

        Raises :class:`Malformed` if a value is outside the model's plausible range.
        """
        self.samples += 1
        values: dict[Metric, float | None] = {
            Metric.SPO2: sample.spo2,
            Metric.PULSE: sample.pulse,
            Metric.PERFUSION_INDEX: sample.perfusion_index,
        }
        out: list[Reading] = []
        for metric, value in values.items():
            if value is None:
                self._last.pop(metric, None)  # a gap: the next value goes out at once
                continue
            if self._due(metric, float(value), ts):
                out.append(self._reading(metric, float(value), ts))
                self._last[metric] = _Last(float(value), ts)
        self.emitted += len(out)
        return out

    def _due(self, metric: Metric, value: float, ts: datetime) -> bool:
        last = self._last.get(metric)
        if last is None or ts < last.ts:
            return True
        elapsed = ts - last.ts
        if elapsed >= self.interval:
            return True
        threshold = self.significant.get(metric)
        return (
            threshold is not None
            and abs(value - last.value) >= threshold
            and elapsed >= self.min_gap
        )

    def _reading(self, metric: Metric, value: float, ts: datetime) -> Reading:
        try:
            return Reading(
                device_id=self.device_id,
                metric=metric,
                value=value,
                unit=metric.unit,
                ts=ts,
                msg_id=msg_id_for(self.msg_prefix, ts),
                resident_id=self.resident_id,
                site_id=self.site_id,
            )
        except ModelError as exc:
            raise Malformed(f"oximeter sample rejected: {exc}") from None
