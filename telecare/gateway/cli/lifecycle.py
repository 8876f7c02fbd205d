"""Registry lifecycle for installers: ``list``, ``show``, ``set`` and ``remove`` for
sites, residents, responders and devices, and ``device pair|unpair``.

``list`` never shows personal data (names, addresses, phone numbers, NHS numbers, notes
such as a key safe code or medical notes); ``show --personal`` is the only way to see
them. ``set`` changes only what is given and never a resident's clinical settings
(``resident clinical`` does). ``remove`` refuses while anything references the thing
(an open alarm's dispatch, a paired device, a responder cascade), says which, and is
audited with the person who did it (``--by``, else the OS user) in the same transaction.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from telecare.devices.codecs import registry as codecs
from telecare.devices.model import (
    Device,
    DeviceKind,
    ModelError,
    Resident,
    Responder,
    ResponderKind,
    Site,
    SiteKind,
)
from telecare.gateway.cli.common import (
    ByOption,
    ConfigOption,
    ExitCode,
    JsonOption,
    actor,
    fail,
    load_cli_config,
    print_json,
    with_store,
)
from telecare.gateway.cli.groups import device_app, resident_app, responder_app, site_app
from telecare.gateway.store.base import Store
from telecare.gateway.store.registry import Blocker, Kind, RegistryChange

__all__ = [
    "PersonalOption",
    "device_json",
    "print_json",
    "resident_json",
    "responder_json",
    "site_json",
]

console = Console()

PersonalOption = Annotated[
    bool,
    typer.Option("--personal", help="Also show personal data (names, addresses, numbers)."),
]

_FORMATS = ("json_v1", *sorted(codecs.CODECS))


# --------------------------------------------------------------------------- shapes


def site_json(s: Site, personal: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"site_id": s.site_id, "kind": s.kind.value, "area": s.area}
    if personal:
        out |= {"name": s.name, "address": s.address}
    return out


def resident_json(r: Resident, personal: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "resident_id": r.resident_id,
        "site_id": r.site_id,
        "responders": list(r.responders),
        "spo2_scale": r.spo2_scale,
        "baseline_consciousness": (
            None if r.baseline_consciousness is None else r.baseline_consciousness.value
        ),
    }
    if personal:
        out |= {"name": r.name, "nhs_number": r.nhs_number, "notes": r.notes}
    return out


def responder_json(r: Responder, personal: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "responder_id": r.responder_id,
        "kind": r.kind.value,
        "area": r.area,
        "skills": list(r.skills),
    }
    if personal:
        out |= {"name": r.name, "phone": r.phone}
    return out


def device_json(d: Device, credentials: bool) -> dict[str, Any]:
    return {
        "device_id": d.device_id,
        "site_id": d.site_id,
        "resident_id": d.resident_id,
        "kind": d.kind.value,
        "format": d.format,
        "location": d.location,
        "heartbeat_interval_s": d.heartbeat_interval_s,
        "hub_id": d.hub_id,
        "credentials": credentials,
    }


_HEADERS = {"credentials": "creds", "spo2_scale": "SpO2 scale"}
#: Free text wraps (at spaces) when the terminal is narrow; ids and kinds never break.
_WRAPS = {"location", "responders", "area"}


def _table(rows: list[dict[str, Any]], columns: list[str], site: str | None = None) -> Table:
    """Rows as a table; with ``site`` (a ``--site`` filter) its name is the title and the
    site column, the same on every row, is left out (room for the rest at 80 columns)."""
    if site is not None:
        columns = [c for c in columns if c != "site_id"]
    table = Table(
        title=f"site {site}" if site is not None else None,
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    for c in columns:
        header = _HEADERS.get(c, c.removesuffix("_id").replace("_", " "))
        table.add_column(header, overflow="fold", no_wrap=c not in _WRAPS)
    for row in rows:
        table.add_row(*(_cell(row.get(c)) for c in columns))
    return table


def _cell(value: Any) -> str:
    if value is None or value == "" or value == []:
        return "-"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    if isinstance(value, bool):
        return "yes" if value else "[red]no[/red]"
    return str(value)


def _show(title: str, fields: dict[str, Any]) -> None:
    table = Table(title=title, show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    for key, value in fields.items():
        table.add_row(key, _cell(value))
    console.print(table)


def _model(build: Callable[[], Any]) -> Any:
    try:
        return build()
    except ModelError as exc:
        fail(str(exc))


def _change(
    by: str | None, action: str, kind: Kind, entity_id: str, **detail: Any
) -> RegistryChange:
    return RegistryChange(datetime.now(UTC), actor(by), action, kind, entity_id, detail)


def _changed(old: object, new: object, fields: tuple[str, ...]) -> list[str]:
    return [f for f in fields if getattr(old, f) != getattr(new, f)]


async def _remove(store: Store, kind: Kind, entity_id: str, by: str | None) -> None:
    try:
        blockers = await store.remove_entity(
            kind, entity_id, _change(by, "remove", kind, entity_id)
        )
    except KeyError:
        fail(f"{kind} {entity_id!r} does not exist", ExitCode.NOT_FOUND)
    if blockers:
        fail(
            f"{kind} {entity_id!r} is still in use, nothing removed: {_describe(blockers)}",
            ExitCode.IN_USE,
        )


def _describe(blockers: list[Blocker]) -> str:
    grouped: dict[str, list[str]] = {}
    for b in blockers:
        grouped.setdefault(b.what, []).append(b.ref)
    hints = {
        "open dispatch": "close the alarm first",
        "paired device": "unpair or remove it first",
        "resident cascade": "take it out of the cascade first (resident set --responders)",
        "resident": "remove or move them first",
        "device": "remove it first",
        "device user": "remap the shared device's user first",
        "clinical history": "kept as a clinical record; residents with one are not removed",
    }
    return "; ".join(
        f"{what} {', '.join(refs)} ({hints.get(what, 'resolve it first')})"
        for what, refs in grouped.items()
    )


# --------------------------------------------------------------------------- sites


@site_app.command("list")
def site_list(json_out: JsonOption = False, config: ConfigOption = None) -> None:
    """List sites (ids, kinds and areas; no names or addresses)."""
    sites = with_store(load_cli_config(config), lambda store: store.list_sites())
    rows = [site_json(s) for s in sites]
    if json_out:
        print_json(rows)
    else:
        console.print(_table(rows, ["site_id", "kind", "area"]))


@site_app.command("show")
def site_show(
    site_id: str,
    personal: PersonalOption = False,
    json_out: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """One site with its residents and devices (name and address only with --personal)."""

    async def load(store: Store) -> tuple[Site | None, list[Resident], list[Device]]:
        devices = [d for d in await store.list_devices() if d.site_id == site_id]
        return await store.get_site(site_id), await store.list_residents(site_id), devices

    site, residents, devices = with_store(load_cli_config(config), load)
    if site is None:
        fail(f"site {site_id!r} does not exist", ExitCode.NOT_FOUND)
    out = site_json(site, personal) | {
        "residents": [r.resident_id for r in residents],
        "devices": [d.device_id for d in devices],
    }
    if json_out:
        print_json(out)
    else:
        _show(f"site {site_id}", out)


@site_app.command("set")
def site_set(
    site_id: str,
    kind: Annotated[SiteKind | None, typer.Option(help="home or care_home")] = None,
    name: Annotated[str | None, typer.Option(help="Display name (not logged).")] = None,
    address: Annotated[str | None, typer.Option(help="Address (not logged).")] = None,
    area: Annotated[str | None, typer.Option(help="Response area.")] = None,
    by: ByOption = None,
    config: ConfigOption = None,
) -> None:
    """Change a site's fields; what is not given stays as it is."""

    async def save(store: Store) -> list[str]:
        old = await store.get_site(site_id)
        if old is None:
            fail(f"site {site_id!r} does not exist", ExitCode.NOT_FOUND)
        new = _model(
            lambda: Site(
                site_id,
                kind or old.kind,
                old.name if name is None else name,
                old.address if address is None else address,
                old.area if area is None else area,
            )
        )
        changed = _changed(old, new, ("kind", "name", "address", "area"))
        if changed:
            await store.upsert_site(new)
            await store.record_registry_change(_change(by, "set", "site", site_id, fields=changed))
        return changed

    changed = with_store(load_cli_config(config), save)
    console.print(f"site [bold]{site_id}[/bold]: {', '.join(changed) or 'nothing'} changed")


@site_app.command("remove")
def site_remove(site_id: str, by: ByOption = None, config: ConfigOption = None) -> None:
    """Remove a site. Refused while it has residents, devices or open alarms."""
    with_store(load_cli_config(config), lambda store: _remove(store, "site", site_id, by))
    console.print(f"site [bold]{site_id}[/bold] removed")


# --------------------------------------------------------------------------- residents


@resident_app.command("list")
def resident_list(
    site: Annotated[str | None, typer.Option(help="Only this site's residents.")] = None,
    json_out: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """List residents: ids, sites, cascades and prescribed SpO2 scale; never names."""
    residents = with_store(load_cli_config(config), lambda store: store.list_residents(site))
    rows = [resident_json(r) for r in residents]
    if json_out:
        print_json(rows)
    else:
        console.print(_table(rows, ["resident_id", "site_id", "responders", "spo2_scale"], site))


@resident_app.command("set")
def resident_set(
    resident_id: str,
    site: Annotated[str | None, typer.Option(help="Move to this site.")] = None,
    name: Annotated[str | None, typer.Option(help="Name (never logged).")] = None,
    nhs_number: Annotated[str | None, typer.Option(help="NHS number (never logged).")] = None,
    notes: Annotated[
        str | None, typer.Option(help="Notes: key safe, access, medical (never logged).")
    ] = None,
    responders: Annotated[
        str | None, typer.Option(help="Responder ids in cascade order, comma separated.")
    ] = None,
    by: ByOption = None,
    config: ConfigOption = None,
) -> None:
    """Change a resident's registry fields; what is not given stays as it is.
    Clinical settings change only through 'resident clinical'."""

    async def save(store: Store) -> list[str]:
        old = await store.get_resident(resident_id)
        if old is None:
            fail(f"resident {resident_id!r} does not exist", ExitCode.NOT_FOUND)
        cascade = old.responders
        if responders is not None:
            cascade = tuple(r.strip() for r in responders.split(",") if r.strip())
            for rid in cascade:
                if await store.get_responder(rid) is None:
                    fail(f"responder {rid!r} does not exist", ExitCode.NOT_FOUND)
        if site is not None and site != old.site_id:
            if await store.get_site(site) is None:
                fail(f"site {site!r} does not exist", ExitCode.NOT_FOUND)
            paired = [
                d.device_id for d in await store.list_devices() if d.resident_id == resident_id
            ]
            if paired:
                fail(
                    f"resident {resident_id!r} has paired devices {', '.join(paired)}:"
                    " unpair them before moving the resident",
                    ExitCode.IN_USE,
                )
        new = _model(
            lambda: replace(
                old,
                site_id=old.site_id if site is None else site,
                name=old.name if name is None else name,
                nhs_number=old.nhs_number if nhs_number is None else (nhs_number or None),
                notes=old.notes if notes is None else notes,
                responders=cascade,
            )
        )
        changed = _changed(old, new, ("site_id", "name", "nhs_number", "notes", "responders"))
        if changed:
            await store.upsert_resident(new)
            await store.record_registry_change(
                _change(by, "set", "resident", resident_id, fields=changed)
            )
        return changed

    changed = with_store(load_cli_config(config), save)
    console.print(f"resident [bold]{resident_id}[/bold]: {', '.join(changed) or 'nothing'} changed")


@resident_app.command("remove")
def resident_remove(resident_id: str, by: ByOption = None, config: ConfigOption = None) -> None:
    """Remove a resident. Refused while devices are paired, alarms are open, or
    clinical settings are recorded (their history is a clinical record)."""
    with_store(load_cli_config(config), lambda store: _remove(store, "resident", resident_id, by))
    console.print(f"resident [bold]{resident_id}[/bold] removed")


# --------------------------------------------------------------------------- responders


@responder_app.command("list")
def responder_list(json_out: JsonOption = False, config: ConfigOption = None) -> None:
    """List responders (ids, kinds and areas; no names or phone numbers)."""
    found = with_store(load_cli_config(config), lambda store: store.list_responders())
    rows = [responder_json(r) for r in found]
    if json_out:
        print_json(rows)
    else:
        console.print(_table(rows, ["responder_id", "kind", "area"]))


@responder_app.command("show")
def responder_show(
    responder_id: str,
    personal: PersonalOption = False,
    json_out: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """One responder and the residents whose cascade includes them."""

    async def load(store: Store) -> tuple[Responder | None, list[str]]:
        residents = [
            r.resident_id for r in await store.list_residents() if responder_id in r.responders
        ]
        return await store.get_responder(responder_id), residents

    responder, residents = with_store(load_cli_config(config), load)
    if responder is None:
        fail(f"responder {responder_id!r} does not exist", ExitCode.NOT_FOUND)
    out = responder_json(responder, personal) | {"residents": residents}
    if json_out:
        print_json(out)
    else:
        _show(f"responder {responder_id}", out)


@responder_app.command("set")
def responder_set(
    responder_id: str,
    kind: Annotated[ResponderKind | None, typer.Option(help="Responder kind.")] = None,
    name: Annotated[str | None, typer.Option(help="Name (not logged).")] = None,
    phone: Annotated[str | None, typer.Option(help="Phone (not logged).")] = None,
    area: Annotated[str | None, typer.Option(help="Response area.")] = None,
    by: ByOption = None,
    config: ConfigOption = None,
) -> None:
    """Change a responder's fields; what is not given stays as it is."""

    async def save(store: Store) -> list[str]:
        old = await store.get_responder(responder_id)
        if old is None:
            fail(f"responder {responder_id!r} does not exist", ExitCode.NOT_FOUND)
        new = _model(
            lambda: replace(
                old,
                kind=kind or old.kind,
                name=old.name if name is None else name,
                phone=old.phone if phone is None else phone,
                area=old.area if area is None else area,
            )
        )
        changed = _changed(old, new, ("kind", "name", "phone", "area"))
        if changed:
            await store.upsert_responder(new)
            await store.record_registry_change(
                _change(by, "set", "responder", responder_id, fields=changed)
            )
        return changed

    changed = with_store(load_cli_config(config), save)
    console.print(
        f"responder [bold]{responder_id}[/bold]: {', '.join(changed) or 'nothing'} changed"
    )


@responder_app.command("remove")
def responder_remove(responder_id: str, by: ByOption = None, config: ConfigOption = None) -> None:
    """Remove a responder. Refused while in a cascade or on an open alarm."""
    with_store(load_cli_config(config), lambda store: _remove(store, "responder", responder_id, by))
    console.print(f"responder [bold]{responder_id}[/bold] removed")


# --------------------------------------------------------------------------- devices


async def _devices(store: Store) -> list[dict[str, Any]]:
    credentials = dict(await store.device_credentials())
    return [device_json(d, d.device_id in credentials) for d in await store.list_devices()]


@device_app.command("list")
def device_list(
    site: Annotated[str | None, typer.Option(help="Only this site's devices.")] = None,
    json_out: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """List devices with their pairing and whether they have MQTT credentials."""
    rows = with_store(load_cli_config(config), _devices)
    rows = [r for r in rows if site is None or r["site_id"] == site]
    if json_out:
        print_json(rows)
        return
    columns = ["device_id", "site_id", "resident_id", "kind", "format", "location", "hub_id"]
    console.print(_table(rows, [*columns, "credentials"], site))


@device_app.command("show")
def device_show(device_id: str, json_out: JsonOption = False, config: ConfigOption = None) -> None:
    """One device: site, pairing, codec, heartbeat, credentials, shared-device users."""

    async def load(store: Store) -> dict[str, Any] | None:
        device = await store.get_device(device_id)
        if device is None:
            return None
        has_secret = device_id in dict(await store.device_credentials())
        users = await store.device_users(device_id)
        return device_json(device, has_secret) | {"users": {str(k): v for k, v in users.items()}}

    out = with_store(load_cli_config(config), load)
    if out is None:
        fail(f"device {device_id!r} does not exist", ExitCode.NOT_FOUND)
    if json_out:
        print_json(out)
    else:
        shown = dict(out)
        shown["users"] = [f"{k}: {v}" for k, v in out["users"].items()]
        _show(f"device {device_id}", shown)


@device_app.command("set")
def device_set(
    device_id: str,
    kind: Annotated[
        DeviceKind | None,
        typer.Option(metavar="KIND", help=f"One of: {', '.join(DeviceKind)}.", show_choices=False),
    ] = None,
    fmt: Annotated[str | None, typer.Option("--format", help="Codec: json_v1, cms50d, ...")] = None,
    heartbeat: Annotated[
        int | None, typer.Option(help="Expected heartbeat interval, s (0 = none).")
    ] = None,
    by: ByOption = None,
    config: ConfigOption = None,
) -> None:
    """Change a device's kind, codec or heartbeat; 'device pair' changes its resident
    and location. Its credentials stay (rotate them with 'device passwd')."""
    if fmt is not None and fmt not in _FORMATS:
        fail(f"unknown format {fmt!r}; known: {', '.join(_FORMATS)}")

    async def save(store: Store) -> list[str]:
        old = await store.get_device(device_id)
        if old is None:
            fail(f"device {device_id!r} does not exist", ExitCode.NOT_FOUND)
        new = _model(
            lambda: replace(
                old,
                kind=kind or old.kind,
                format=fmt or old.format,
                heartbeat_interval_s=old.heartbeat_interval_s if heartbeat is None else heartbeat,
            )
        )
        changed = _changed(old, new, ("kind", "format", "heartbeat_interval_s"))
        if changed:
            await store.upsert_device(new)
            await store.record_registry_change(
                _change(by, "set", "device", device_id, fields=changed)
            )
        return changed

    changed = with_store(load_cli_config(config), save)
    console.print(f"device [bold]{device_id}[/bold]: {', '.join(changed) or 'nothing'} changed")


@device_app.command("remove")
def device_remove(device_id: str, by: ByOption = None, config: ConfigOption = None) -> None:
    """Remove a device and its credentials. Refused while one of its alarms is open.
    A running gateway stops accepting it within about a second; regenerate
    the broker's password file (device mosquitto-passwd) to stop it connecting."""
    with_store(load_cli_config(config), lambda store: _remove(store, "device", device_id, by))
    console.print(f"device [bold]{device_id}[/bold] removed")


async def _pair(
    store: Store, device_id: str, resident: str | None, location: str | None, by: str | None
) -> Device:
    action = "pair" if resident is not None else "unpair"
    change = _change(by, action, "device", device_id, resident_id=resident)
    try:
        return await store.pair_device(device_id, resident, location, change)
    except KeyError:
        fail(f"device {device_id!r} does not exist", ExitCode.NOT_FOUND)
    except ValueError as exc:
        fail(str(exc), ExitCode.NOT_FOUND)


@device_app.command("pair")
def device_pair(
    device_id: str,
    resident: Annotated[str, typer.Option(help="The resident (at the device's site).")],
    location: Annotated[str | None, typer.Option(help="Where it is, e.g. 'room 4'.")] = None,
    by: ByOption = None,
    config: ConfigOption = None,
) -> None:
    """Pair a device with a resident of its site, optionally setting its location."""
    device = with_store(
        load_cli_config(config), lambda store: _pair(store, device_id, resident, location, by)
    )
    console.print(
        f"device [bold]{device_id}[/bold] paired with resident {resident}"
        f" ({device.location or 'no location'})"
    )


@device_app.command("unpair")
def device_unpair(
    device_id: str,
    location: Annotated[str | None, typer.Option(help="New location, if it moved.")] = None,
    by: ByOption = None,
    config: ConfigOption = None,
) -> None:
    """Unpair a device from its resident (it stays installed at its site)."""
    with_store(load_cli_config(config), lambda store: _pair(store, device_id, None, location, by))
    console.print(f"device [bold]{device_id}[/bold] unpaired")
