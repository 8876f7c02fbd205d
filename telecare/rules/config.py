"""Rule configuration: per-site and per-resident settings and the declarative rules file.

What is configurable (the NEWS2 score itself never is):

* **per site** (:class:`SiteRules`, inheriting from ``[defaults]``): the local escalation
  advice for each NEWS2 band (e.g. GP / NHS 111 / 999 in a care home), the alert
  priority each band raises (0 = advice only, no alert), the trend rule (rise and
  window), how long before observations are due for each band, the missed-heartbeat
  multiple, the alarm fold window, the time zone for daily-living windows;
* **per resident** (:class:`ResidentRules`): SpO2 scale 2 with who prescribed it and
  when, baseline consciousness (chronic confusion ``C`` is not *new* confusion), the
  SpO2 target and how long below it counts as sustained, daily-living inactivity windows.

The rules file is TOML (``docs/examples/rules.toml``). :func:`load_rules_file` validates
it completely and raises :class:`RulesConfigError` naming the file, the key and, where
it can be found, the line. Unknown keys are errors (a typo must not silently fall back
to a default).
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field, fields, replace
from datetime import datetime, time
from pathlib import Path
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from telecare.devices.model import ID_PATTERN, Consciousness, Resident

__all__ = [
    "DEFAULT_ADVICE",
    "DEFAULT_NEWS2_PRIORITY",
    "DEFAULT_OBS_DUE_S",
    "NEWS2_PRIORITY_FLOOR",
    "OBS_DUE_MAX_S",
    "InactivityWindow",
    "ResidentRules",
    "RulesConfig",
    "RulesConfigError",
    "SiteRules",
    "load_rules_file",
    "parse_rules",
]

_BANDS: Final = ("low", "low-medium", "medium", "high")

DEFAULT_ADVICE: Final[dict[str, str]] = {
    "zero": "Continue routine observations (at least every 12 hours).",
    "low": "Inform the senior carer or nurse; repeat observations within 4-6 hours.",
    "low-medium": (
        "A single sign scored 3: contact the GP (in hours) or NHS 111 (out of hours) "
        "for an urgent review; repeat observations hourly."
    ),
    "medium": "Urgent: contact the GP or NHS 111 now for assessment within 1 hour.",
    "high": "Emergency: call 999.",
}
#: Alert priority per NEWS2 band (``None`` = no alert, advice only).
DEFAULT_NEWS2_PRIORITY: Final[dict[str, int | None]] = {
    "low": None,
    "low-medium": 2,
    "medium": 2,
    "high": 1,
}
#: The least urgent alert priority each band may be configured to (RCP chart 4: a high
#: score needs an emergency response, a single red 3 or 5-6 an urgent one). A rules file
#: may only make these more urgent (a smaller number); ``None`` = no minimum.
NEWS2_PRIORITY_FLOOR: Final[dict[str, int | None]] = {
    "low": None,
    "low-medium": 2,
    "medium": 2,
    "high": 1,
}
#: The longest a rules file may set ``obs_due_s`` to per band: the RCP minimum monitoring
#: frequency (12-hourly; 4-6-hourly; hourly; "continuous", here the 15-minute reminder).
OBS_DUE_MAX_S: Final[dict[str, int]] = {
    "zero": 12 * 3600,
    "low": 6 * 3600,
    "low-medium": 3600,
    "medium": 3600,
    "high": 15 * 60,
}
#: Seconds until the next set is due, per band (``zero`` = total 0). From the RCP minimum
#: monitoring frequency, taking the stricter end of "4-6-hourly"; ``high`` is
#: "continuous", here a reminder after 15 minutes without a new set.
DEFAULT_OBS_DUE_S: Final[dict[str, int]] = {
    "zero": 12 * 3600,
    "low": 4 * 3600,
    "low-medium": 3600,
    "medium": 3600,
    "high": 15 * 60,
}


class RulesConfigError(ValueError):
    """The rules configuration is invalid. The message names the file, key and line."""

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        key: str | None = None,
        line: int | None = None,
    ) -> None:
        where = ":".join(p for p in (path, str(line) if line else None) if p)
        prefix = f"{where}: " if where else ""
        keypart = f"{key}: " if key else ""
        super().__init__(f"{prefix}{keypart}{message}")
        self.path = path
        self.key = key
        self.line = line


@dataclass(frozen=True, slots=True)
class InactivityWindow:
    """Expect activity between ``start`` and ``end`` (site local time, same day)."""

    start: time
    end: time

    def __post_init__(self) -> None:
        if not self.start < self.end:
            raise ValueError(f"window start {self.start} must be before end {self.end}")


@dataclass(frozen=True, slots=True)
class SiteRules:
    site_id: str = "default"
    timezone: str = "Europe/London"
    advice: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_ADVICE))
    news2_priority: dict[str, int | None] = field(
        default_factory=lambda: dict(DEFAULT_NEWS2_PRIORITY)
    )
    obs_due_s: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_OBS_DUE_S))
    #: Raise a trend alert when the total rises by this much within the window.
    news2_trend_rise: int = 2
    news2_trend_window_h: int = 24
    news2_trend_priority: int = 3
    obs_due_priority: int = 3
    #: A device is missing after this many heartbeat intervals without a message.
    heartbeat_miss_multiple: float = 3.0
    #: Alarm presses within this many seconds of the alarm fold into it.
    fold_window_s: int = 120
    inactivity_priority: int = 2
    spo2_low_priority: int = 2
    #: A device timestamp more than this far ahead of the gateway's receive time is an
    #: implausible clock: rules use the receive time and the device gets a clock fault.
    clock_skew_s: int = 120
    #: An input whose device time is this much older than its receipt is "late": it is
    #: raised with its true time and how late it arrived.
    late_after_s: int = 300
    #: An observation set older than this when it arrives is stored and shown as late,
    #: never escalated as if it were current.
    stale_obs_s: int = 3600

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def advice_for(self, total: int, risk: str) -> str:
        """The site's escalation advice for a NEWS2 score."""
        if total == 0 and "zero" in self.advice:
            return self.advice["zero"]
        return self.advice[risk]

    def due_after_s(self, total: int, risk: str) -> int:
        return self.obs_due_s["zero" if total == 0 else risk]


@dataclass(frozen=True, slots=True)
class ResidentRules:
    resident_id: str
    site_id: str | None = None
    spo2_scale: int = 1
    spo2_scale_set_by: str | None = None
    spo2_scale_set_at: datetime | None = None
    baseline_consciousness: Consciousness = Consciousness.ALERT
    #: Where the scale and the baseline came from: ``"prescription"`` (the store's record,
    #: set by ``telecare resident clinical``), ``"rules file"`` or ``"default"`` (chart).
    spo2_scale_source: str = "default"
    baseline_source: str = "default"
    #: Lowest acceptable SpO2; ``None`` = 94 % on scale 1, 88 % on scale 2.
    spo2_target_min: int | None = None
    #: How long SpO2 must stay below target before it alerts.
    spo2_sustained_s: int = 300
    inactivity_windows: tuple[InactivityWindow, ...] = ()

    @property
    def spo2_target(self) -> int:
        if self.spo2_target_min is not None:
            return self.spo2_target_min
        return 88 if self.spo2_scale == 2 else 94

    def with_resident(self, resident: Resident) -> ResidentRules:
        """Merge the store's record: a recorded prescription (scale, baseline) wins over
        the rules file, which is only a default; a setting never recorded keeps the rules
        file's value (or the chart's default)."""
        changes: dict[str, Any] = {"site_id": resident.site_id}
        if resident.spo2_scale is not None:
            changes.update(
                spo2_scale=resident.spo2_scale,
                spo2_scale_set_by=resident.spo2_scale_set_by,
                spo2_scale_set_at=resident.spo2_scale_set_at,
                spo2_scale_source="prescription",
            )
        if resident.baseline_consciousness is not None:
            changes.update(
                baseline_consciousness=resident.baseline_consciousness,
                baseline_source="prescription",
            )
        return replace(self, **changes)


@dataclass(frozen=True, slots=True)
class RulesConfig:
    defaults: SiteRules = field(default_factory=SiteRules)
    sites: dict[str, SiteRules] = field(default_factory=dict)
    residents: dict[str, ResidentRules] = field(default_factory=dict)
    source: str | None = None
    #: ``resident()`` results for store records, memoised: it runs for every SpO2
    #: reading. Records are frozen and hashable; a changed record is a new key. The
    #: config itself is treated as immutable once built.
    _merged: dict[Resident, ResidentRules] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def site(self, site_id: str | None) -> SiteRules:
        if site_id is None:
            return self.defaults
        return self.sites.get(site_id, self.defaults)

    def resident(self, resident_id: str | None, resident: Resident | None = None) -> ResidentRules:
        """Settings for a resident: the rules file's entry (or defaults) merged with the
        store's :class:`Resident` record when one is given."""
        if resident is not None:
            merged = self._merged.get(resident)
            if merged is None:
                base = self.residents.get(resident.resident_id) or ResidentRules(
                    resident_id=resident.resident_id
                )
                if len(self._merged) >= _MERGED_MAX:
                    self._merged.clear()  # outdated records pile up only over a long run
                merged = self._merged[resident] = base.with_resident(resident)
            return merged
        rid = resident_id
        return self.residents.get(rid or "") or ResidentRules(resident_id=rid or "unknown")


#: Bound on :attr:`RulesConfig._merged` (more than any site's residents).
_MERGED_MAX: Final = 65536


# --------------------------------------------------------------------------- loading


def load_rules_file(path: str | Path) -> RulesConfig:
    """Read and validate a TOML rules file; :class:`RulesConfigError` names what is wrong."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise RulesConfigError(f"cannot read: {exc.strerror}", path=str(p)) from None
    return parse_rules(text, source=str(p))


def parse_rules(text: str, *, source: str = "<rules>") -> RulesConfig:
    """Validate TOML text (see :func:`load_rules_file`)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"line (\d+)", str(exc))
        raise RulesConfigError(
            f"not valid TOML: {exc}", path=source, line=int(m.group(1)) if m else None
        ) from None
    return _Loader(text, source).load(data)


_SITE_SCALARS: Final = {
    f.name: f
    for f in fields(SiteRules)
    if f.name not in {"site_id", "advice", "news2_priority", "obs_due_s"}
}


class _Loader:
    def __init__(self, text: str, source: str) -> None:
        self.lines = text.splitlines()
        self.source = source

    def error(self, key: str, message: str) -> RulesConfigError:
        return RulesConfigError(message, path=self.source, key=key, line=self.line_of(key))

    def line_of(self, key: str) -> int | None:
        """Best-effort line of a dotted key: its table header, then the key inside it."""
        parts = [re.sub(r"\[\d+\]$", "", p) for p in key.split(".")]
        for cut in range(len(parts), 0, -1):
            header = ".".join(parts[:cut])
            hdr = re.compile(r"^\s*\[+\s*" + re.escape(header) + r"\s*\]+")
            for i, line in enumerate(self.lines):
                if hdr.match(line):
                    if cut == len(parts):
                        return i + 1
                    leaf = re.compile(r"^\s*\"?" + re.escape(parts[cut]) + r"\"?\s*=")
                    for j in range(i + 1, len(self.lines)):
                        if self.lines[j].lstrip().startswith("["):
                            break
                        if leaf.match(self.lines[j]):
                            return j + 1
                    return i + 1
        leaf = re.compile(r"^\s*\"?" + re.escape(parts[0]) + r"\"?\s*=")
        for i, line in enumerate(self.lines):
            if leaf.match(line):
                return i + 1
        return None

    def load(self, data: dict[str, Any]) -> RulesConfig:
        self.check_keys("", data, {"version", "defaults", "sites", "residents"})
        version = data.get("version", 1)
        if version != 1:
            raise self.error("version", f"{version!r} is not supported (use 1)")
        defaults = self.site(
            "defaults", self.table("defaults", data.get("defaults", {})), SiteRules()
        )
        sites = {}
        for site_id, body in self.table("sites", data.get("sites", {})).items():
            self.check_id(f"sites.{site_id}", site_id)
            sites[site_id] = self.site(
                f"sites.{site_id}",
                self.table(f"sites.{site_id}", body),
                replace(defaults, site_id=site_id),
            )
        residents = {}
        for rid, body in self.table("residents", data.get("residents", {})).items():
            self.check_id(f"residents.{rid}", rid)
            residents[rid] = self.resident(
                f"residents.{rid}", rid, self.table(f"residents.{rid}", body), sites
            )
        return RulesConfig(defaults=defaults, sites=sites, residents=residents, source=self.source)

    # -- helpers

    def table(self, key: str, value: object) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.error(key, f"must be a table, got {type(value).__name__}")
        return value

    def check_keys(self, prefix: str, body: dict[str, Any], allowed: set[str]) -> None:
        for k in body:
            if k not in allowed:
                known = ", ".join(sorted(allowed))
                raise self.error(
                    f"{prefix}{k}" if not prefix else f"{prefix}.{k}",
                    f"unknown key; known keys: {known}",
                )

    def check_id(self, key: str, value: str) -> None:
        if not ID_PATTERN.match(value):
            raise self.error(key, f"{value!r} is not a valid identifier")

    def int_(self, key: str, value: object, lo: int, hi: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise self.error(key, f"{value!r} must be an integer {lo}..{hi}")
        return value

    def site(self, prefix: str, body: dict[str, Any], base: SiteRules) -> SiteRules:
        allowed = {*_SITE_SCALARS, "advice", "news2_priority", "obs_due_s", "kind", "name"}
        self.check_keys(prefix, body, allowed)
        changes: dict[str, Any] = {}
        for name, value in body.items():
            key = f"{prefix}.{name}"
            if name in ("kind", "name"):
                if not isinstance(value, str):
                    raise self.error(key, "must be a string")
            elif name == "timezone":
                if not isinstance(value, str):
                    raise self.error(key, "must be a string such as 'Europe/London'")
                try:
                    ZoneInfo(value)
                except (ZoneInfoNotFoundError, ValueError):
                    raise self.error(key, f"unknown time zone {value!r}") from None
                changes[name] = value
            elif name == "advice":
                advice = dict(base.advice)
                table = self.table(key, value)
                self.check_keys(key, table, {"zero", *_BANDS})
                for band, text in table.items():
                    if not isinstance(text, str) or not text.strip():
                        raise self.error(f"{key}.{band}", "must be a non-empty string")
                    advice[band] = text.strip()
                changes[name] = advice
            elif name == "news2_priority":
                prio = dict(base.news2_priority)
                table = self.table(key, value)
                self.check_keys(key, table, set(_BANDS))
                for band, p in table.items():
                    value = self.int_(f"{key}.{band}", p, 0, 5) or None
                    floor = NEWS2_PRIORITY_FLOOR[band]
                    if floor is not None and (value is None or value > floor):
                        raise self.error(
                            f"{key}.{band}",
                            f"{p!r} would lower escalation below the RCP chart minimum: "
                            f"{band} risk must raise an alert of priority {floor} or more "
                            f"urgent (1..{floor}); a site may only raise urgency or change "
                            "the advice text",
                        )
                    prio[band] = value
                changes[name] = prio
            elif name == "obs_due_s":
                due = dict(base.obs_due_s)
                table = self.table(key, value)
                self.check_keys(key, table, {"zero", *_BANDS})
                for band, s in table.items():
                    due[band] = self.int_(f"{key}.{band}", s, 60, OBS_DUE_MAX_S[band])
                changes[name] = due
            elif name == "heartbeat_miss_multiple":
                ok = isinstance(value, int | float) and not isinstance(value, bool)
                if not ok or not 1.0 <= float(value) <= 100.0:
                    raise self.error(key, f"{value!r} must be a number 1..100")
                changes[name] = float(value)
            elif name.endswith("_priority"):
                changes[name] = self.int_(key, value, 1, 5)
            elif name == "news2_trend_rise":
                changes[name] = self.int_(key, value, 1, 20)
            elif name == "news2_trend_window_h":
                changes[name] = self.int_(key, value, 1, 168)
            elif name == "fold_window_s":
                changes[name] = self.int_(key, value, 0, 3600)
        return replace(base, **changes)

    def resident(
        self, prefix: str, rid: str, body: dict[str, Any], sites: dict[str, SiteRules]
    ) -> ResidentRules:
        allowed = {f.name for f in fields(ResidentRules)} - {"resident_id", "site_id"} | {"site"}
        self.check_keys(prefix, body, allowed)
        site_id = body.get("site")
        if site_id is not None and site_id not in sites:
            raise self.error(f"{prefix}.site", f"{site_id!r} is not a site in this file")
        scale = self.int_(f"{prefix}.spo2_scale", body.get("spo2_scale", 1), 1, 2)
        set_by = body.get("spo2_scale_set_by")
        set_at = body.get("spo2_scale_set_at")
        if scale == 2:
            if not isinstance(set_by, str) or not set_by.strip():
                raise self.error(
                    f"{prefix}.spo2_scale_set_by", "scale 2 needs the prescribing clinician"
                )
            if not isinstance(set_at, datetime) or set_at.tzinfo is None:
                raise self.error(
                    f"{prefix}.spo2_scale_set_at",
                    "scale 2 needs the date prescribed, e.g. 2026-01-05T09:00:00Z",
                )
        baseline = body.get("baseline_consciousness", "A")
        if baseline not in {c.value for c in Consciousness}:
            raise self.error(
                f"{prefix}.baseline_consciousness", f"{baseline!r} is not one of A, C, V, P, U"
            )
        target = body.get("spo2_target_min")
        if target is not None:
            target = self.int_(f"{prefix}.spo2_target_min", target, 70, 100)
        sustained = self.int_(
            f"{prefix}.spo2_sustained_s", body.get("spo2_sustained_s", 300), 10, 86400
        )
        windows = []
        raw_windows = body.get("inactivity_windows", [])
        if not isinstance(raw_windows, list):
            raise self.error(f"{prefix}.inactivity_windows", "must be an array of tables")
        for i, w in enumerate(raw_windows):
            wkey = f"{prefix}.inactivity_windows[{i}]"
            if not isinstance(w, dict):
                raise self.error(wkey, "must be a table {start = ..., end = ...}")
            self.check_keys(wkey, w, {"start", "end"})
            start = self.clock_time(f"{wkey}.start", w.get("start"))
            end = self.clock_time(f"{wkey}.end", w.get("end"))
            if not start < end:
                raise self.error(wkey, f"start {start} must be before end {end}")
            windows.append(InactivityWindow(start, end))
        return ResidentRules(
            resident_id=rid,
            site_id=site_id,
            spo2_scale_source="rules file" if "spo2_scale" in body else "default",
            baseline_source="rules file" if "baseline_consciousness" in body else "default",
            spo2_scale=scale,
            spo2_scale_set_by=set_by if scale == 2 else None,
            spo2_scale_set_at=set_at if scale == 2 else None,
            baseline_consciousness=Consciousness(baseline),
            spo2_target_min=target,
            spo2_sustained_s=sustained,
            inactivity_windows=tuple(windows),
        )

    def clock_time(self, key: str, value: object) -> time:
        if isinstance(value, time):
            return value
        if isinstance(value, str) and re.fullmatch(r"\d{2}:\d{2}", value):
            try:
                return time.fromisoformat(value)
            except ValueError:
                pass
        raise self.error(key, f'{value!r} must be a time such as 07:30 or "07:30"')
