"""``telecare import``: a care home's residents, devices and pairings from one CSV file.

The file is validated as a whole before anything is written (every error reported with
its line and column); then only what differs from the store is written, so importing
the same file again changes nothing. The writes and their audit rows are ONE registry
transaction (``store.registry_transaction()``: the registry role's writes, not SQL of
the importer's own): if anything fails half-way (the database goes away, a constraint
the validation could not foresee, someone removed the site meanwhile), nothing of the
file is in the store. Columns are documented in ``docs/cli.md``; an example is
``docs/examples/care-home.csv``.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from telecare.devices.codecs import registry as codecs
from telecare.devices.model import DEFAULT_TEST_CALL_S, Device, DeviceKind, ModelError, Resident
from telecare.gateway.store.base import Store
from telecare.gateway.store.registry import Kind, RegistryChange

__all__ = ["COLUMNS", "ImportError_", "Plan", "apply_plan", "parse_file", "plan_changes"]

#: Every column the file may have, in the documented order. ``site`` is required.
COLUMNS = (
    "site",
    "resident",
    "name",
    "nhs_number",
    "notes",
    "responders",
    "device",
    "kind",
    "format",
    "location",
    "heartbeat_s",
)
_RESIDENT_FIELDS = ("name", "nhs_number", "notes", "responders")
_FORMATS = ("json_v1", *sorted(codecs.CODECS))


@dataclass(frozen=True, slots=True)
class ImportError_:
    """One problem in the file: 1-based line (the header is line 1) and column name;
    line 0 for the file as a whole (unreadable, or refused by the store)."""

    line: int
    column: str
    message: str

    def __str__(self) -> str:
        if self.line == 0:
            return self.message
        return f"line {self.line}, column {self.column}: {self.message}"


@dataclass
class _ResidentRow:
    site: str
    line: int
    values: dict[str, str] = field(default_factory=dict)
    lines: dict[str, int] = field(default_factory=dict)


@dataclass
class Parsed:
    """What the file asks for (validated for shape, not yet against the store)."""

    lines: int = 0
    residents: dict[str, _ResidentRow] = field(default_factory=dict)
    devices: dict[str, tuple[int, Device]] = field(default_factory=dict)
    errors: list[ImportError_] = field(default_factory=list)


@dataclass
class Plan:
    """What importing would change: new and updated things, and what is unchanged."""

    residents: list[Resident] = field(default_factory=list)
    devices: list[Device] = field(default_factory=list)
    created: list[tuple[str, str]] = field(default_factory=list)
    updated: list[tuple[str, str]] = field(default_factory=list)
    unchanged: int = 0
    errors: list[ImportError_] = field(default_factory=list)

    @property
    def changed(self) -> int:
        return len(self.created) + len(self.updated)


def parse_file(path: Path) -> Parsed:
    """Read and check the file's shape: header, ids, kinds, formats, numbers, duplicates."""
    out = Parsed()
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        out.errors.append(ImportError_(0, "-", f"cannot read the file: {exc}"))
        return out
    reader = csv.DictReader(text.splitlines(keepends=True))
    header = [h.strip() for h in reader.fieldnames or []]
    reader.fieldnames = header
    for column in header:
        if column not in COLUMNS:
            out.errors.append(
                ImportError_(1, column, f"unknown column; known: {', '.join(COLUMNS)}")
            )
    if "site" not in header:
        out.errors.append(ImportError_(1, "site", "the column is required"))
    if out.errors:
        return out
    start = 1
    for raw in reader:
        line = start + 1
        start = reader.line_num
        out.lines += 1
        row = {k: (v or "").strip() for k, v in raw.items() if k is not None}
        if None in raw:
            out.errors.append(ImportError_(line, "-", "more cells than columns"))
            continue
        _parse_row(out, line, row)
    return out


def _parse_row(out: Parsed, line: int, row: dict[str, str]) -> None:
    def err(column: str, message: str) -> None:
        out.errors.append(ImportError_(line, column, message))

    site, resident_id, device_id = (
        row.get("site", ""),
        row.get("resident", ""),
        row.get("device", ""),
    )
    if not site:
        err("site", "required")
        return
    if not resident_id and not device_id:
        err("resident", "a line needs a resident, a device, or both")
        return
    if resident_id:
        _resident_row(out, line, site, resident_id, row, err)
    elif any(row.get(c) for c in _RESIDENT_FIELDS):
        column = next(c for c in _RESIDENT_FIELDS if row.get(c))
        err(column, "resident details without a resident id")
    if device_id:
        _device_row(out, line, site, device_id, resident_id or None, row, err)


def _resident_row(
    out: Parsed,
    line: int,
    site: str,
    resident_id: str,
    row: dict[str, str],
    err: Callable[[str, str], None],
) -> None:
    try:
        Resident(resident_id, site)
    except ModelError as exc:
        err("resident" if exc.field == "resident_id" else "site", exc.reason)
        return
    entry = out.residents.setdefault(resident_id, _ResidentRow(site, line))
    if entry.site != site:
        err("site", f"resident {resident_id} is at site {entry.site} on line {entry.line}")
        return
    for column in _RESIDENT_FIELDS:
        value = row.get(column, "")
        if not value:
            continue
        if column in entry.values and entry.values[column] != value:
            err(column, f"differs from line {entry.lines[column]} for resident {resident_id}")
            continue
        entry.values[column] = value
        entry.lines[column] = line


def _device_row(
    out: Parsed,
    line: int,
    site: str,
    device_id: str,
    resident_id: str | None,
    row: dict[str, str],
    err: Callable[[str, str], None],
) -> None:
    if device_id in out.devices:
        err("device", f"device {device_id} is already on line {out.devices[device_id][0]}")
        return
    kind_text = row.get("kind", "")
    if not kind_text:
        err("kind", "required for a device")
        return
    try:
        kind = DeviceKind(kind_text)
    except ValueError:
        err("kind", f"unknown device kind {kind_text!r}; known: {', '.join(DeviceKind)}")
        return
    fmt = row.get("format", "") or "json_v1"
    if fmt not in _FORMATS:
        err("format", f"unknown format {fmt!r}; known: {', '.join(_FORMATS)}")
        return
    heartbeat_text = row.get("heartbeat_s", "")
    heartbeat = DEFAULT_TEST_CALL_S.get(kind, 0)
    if heartbeat_text:
        try:
            heartbeat = int(heartbeat_text)
        except ValueError:
            err("heartbeat_s", f"{heartbeat_text!r} is not a whole number of seconds")
            return
    try:
        device = Device(device_id, site, kind, resident_id, fmt, row.get("location", ""), heartbeat)
    except ModelError as exc:
        column = {"device_id": "device", "heartbeat_interval_s": "heartbeat_s"}.get(
            exc.field, exc.field.removesuffix("_id")
        )
        err(column, exc.reason)
        return
    out.devices[device_id] = (line, device)


async def plan_changes(store: Store, parsed: Parsed) -> Plan:
    """Check the parsed file against the store (sites, responders, sites of existing
    residents and devices) and work out what would change."""
    plan = Plan(errors=list(parsed.errors))
    sites = {s.site_id for s in await store.list_sites()}
    responders = {r.responder_id for r in await store.list_responders()}
    for resident_id, entry in parsed.residents.items():
        if entry.site not in sites:
            plan.errors.append(
                ImportError_(entry.line, "site", f"site {entry.site} does not exist")
            )
            continue
        cascade = tuple(
            r.strip() for r in entry.values.get("responders", "").split(";") if r.strip()
        )
        missing = [r for r in cascade if r not in responders]
        if missing:
            line = entry.lines["responders"]
            plan.errors.append(
                ImportError_(line, "responders", f"unknown responder {', '.join(missing)}")
            )
            continue
        old = await store.get_resident(resident_id)
        new = Resident(
            resident_id,
            entry.site,
            entry.values.get("name", ""),
            entry.values.get("nhs_number") or None,
            responders=cascade,
            notes=entry.values.get("notes", ""),
        )
        if old is not None and old.site_id != entry.site:
            plan.errors.append(
                ImportError_(
                    entry.line, "site", f"resident {resident_id} exists at site {old.site_id}"
                )
            )
            continue
        if old is None:
            plan.created.append(("resident", resident_id))
        elif _registry_fields(old) != _registry_fields(new):
            plan.updated.append(("resident", resident_id))
        else:
            plan.unchanged += 1
            continue
        plan.residents.append(new)
    for device_id, (line, device) in parsed.devices.items():
        if device.site_id not in sites:
            plan.errors.append(ImportError_(line, "site", f"site {device.site_id} does not exist"))
            continue
        if device.resident_id is not None and device.resident_id not in parsed.residents:
            found = await store.get_resident(device.resident_id)
            if found is None or found.site_id != device.site_id:
                plan.errors.append(
                    ImportError_(
                        line,
                        "resident",
                        f"resident {device.resident_id} not at site {device.site_id}",
                    )
                )
                continue
        old_device = await store.get_device(device_id)
        if old_device is not None and old_device.site_id != device.site_id:
            plan.errors.append(
                ImportError_(
                    line, "site", f"device {device_id} exists at site {old_device.site_id}"
                )
            )
            continue
        if old_device is not None:  # the file has no hub column: a hub link stays
            device = replace(device, hub_id=old_device.hub_id)
        if old_device is None:
            plan.created.append(("device", device_id))
        elif old_device != device:
            plan.updated.append(("device", device_id))
        else:
            plan.unchanged += 1
            continue
        plan.devices.append(device)
    plan.errors.sort(key=lambda e: (e.line, e.column))
    return plan


def _registry_fields(r: Resident) -> tuple[Any, ...]:
    return (r.site_id, r.name, r.nhs_number, r.notes, r.responders)


async def apply_plan(
    store: Store,
    plan: Plan,
    change: Callable[[str, Kind, str], RegistryChange],
    secret_hash: Callable[[str], str | None],
    advance: Callable[[], None],
) -> None:
    """Write a validated plan in one registry transaction: residents first (devices pair
    with them), each change audited; all of it or, if any statement fails, none of it.
    ``secret_hash(device_id)`` gives a new device's credentials (an existing device keeps
    its own)."""
    created = set(plan.created)
    async with store.registry_transaction() as registry:
        for resident in plan.residents:
            await registry.upsert_resident(resident)
            await registry.record_change(_change(change, created, "resident", resident.resident_id))
            advance()
        for device in plan.devices:
            new = ("device", device.device_id) in created
            await registry.upsert_device(device, secret_hash(device.device_id) if new else None)
            await registry.record_change(_change(change, created, "device", device.device_id))
            advance()


def _change(
    change: Callable[[str, Kind, str], RegistryChange], created: set[Any], kind: Kind, key: str
) -> RegistryChange:
    new = (kind, key) in created
    return change("import-create" if new else "import-update", kind, key)
