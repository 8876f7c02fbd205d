"""Physiologically impossible combinations in an observation set.

Each value may be within its own bounds (``Metric.bounds``) and the set still be
impossible as a whole: a pulse of 0 or a respiration rate of 0 in a person who is alert.
Such a set is a measurement error (probe off, miscounted, typo), not a reading to score:
it is refused with a reason that asks for the set to be re-measured, and nothing of it is
stored as a vital sign. (A pulse of 0 with a resident who is unresponsive is possible and is
scored as red: it raises the alarm it should.)
"""

from __future__ import annotations

from telecare.rules.news2 import News2ValueError, Observation

__all__ = ["ImplausibleObservation", "check_plausible"]


class ImplausibleObservation(News2ValueError):
    """An observation set combines values no living, alert person can have."""


def check_plausible(obs: Observation) -> None:
    """Raise :class:`ImplausibleObservation` for an impossible combination."""
    if obs.consciousness != "A":
        return
    for name, label in (("pulse", "a pulse"), ("respiration_rate", "a respiration rate")):
        value = getattr(obs, name)
        if value is not None and not isinstance(value, bool) and value == 0:
            raise ImplausibleObservation(
                name,
                f"{label} of zero with consciousness A (alert) is physiologically "
                "impossible; re-measure and send the set again",
            )
