"""Alarm rules: event taxonomy -> priority, restore pairing, folding repeats.

Priorities (1 = most urgent), documented in ``docs/rules.md``:

1. life-critical: pendant, fall, post-fall inactivity, smoke, carbon monoxide
2. wellbeing: daily-living inactivity, bed/chair not re-occupied, door exit
3. environmental: flood, temperature extremes
4. technical: mains fail, low battery, tamper, jamming, supervision, missed heartbeat
"""

from __future__ import annotations

from typing import Final

from devices.model import EventType

__all__ = ["PRIORITY", "is_technical", "priority_of"]

PRIORITY: Final[dict[EventType, int]] = {
    EventType.PENDANT: 1,
    EventType.FALL: 1,
    EventType.POST_FALL_INACTIVITY: 1,
    EventType.SMOKE: 1,
    EventType.CO: 1,
    EventType.INACTIVITY: 2,
    EventType.BED_NOT_REOCCUPIED: 2,
    EventType.CHAIR_NOT_REOCCUPIED: 2,
    EventType.DOOR_EXIT: 2,
    EventType.FLOOD: 3,
    EventType.TEMPERATURE_HIGH: 3,
    EventType.TEMPERATURE_LOW: 3,
    EventType.MAINS_FAIL: 4,
    EventType.LOW_BATTERY: 4,
    EventType.TAMPER: 4,
    EventType.JAMMING: 4,
    EventType.SUPERVISION: 4,
    EventType.HEARTBEAT_MISSED: 4,
}


def priority_of(event_type: EventType) -> int | None:
    """The priority an alarm of this type raises, or ``None`` if it raises no alert
    (periodic test, cancel, carer arrived: these close or confirm, they never alarm)."""
    return PRIORITY.get(event_type)


def is_technical(event_type: EventType) -> bool:
    return PRIORITY.get(event_type) == 4
