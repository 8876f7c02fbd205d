"""Installer commands: sites, residents, responders and devices with per-device MQTT
credentials.

    telecare site add oakhouse --kind care_home
    telecare resident add res1 --site oakhouse --name "..."       (names never logged)
    telecare resident clinical res1 --spo2-scale 2 --prescribed-by dr-k --prescribed-on
        2026-11-02 --by nurse-7                 the only way to set SpO2 scale / baseline
    telecare resident show res1                  effective clinical settings, source, history
    telecare responder add kh1 --kind keyholder
    telecare device add pend1 --site oakhouse --resident res1 --kind pendant
        -> prints the device's MQTT password once; only its hash is stored
    telecare device passwd pend1                  rotate the password
    telecare device list                          a table of devices
    telecare device mosquitto-passwd /etc/mosquitto/telecare.passwd
    telecare device test pend1 --password ...     publish a test event, wait until stored
    telecare device add unit7 ... --receiver-account contact_id:1234
    telecare device map-account unit7 contact_id:1234[:ZONE]   receiver account -> device
    telecare device unmap-account contact_id:1234[:ZONE]
    telecare device accounts                      the receiver account table

Receiver accounts: a Contact ID receiver line (serial), a DC-09 unit (``contact_id`` for
ADM-CID, ``sia`` for SIA-DCS) and a SCAIP unit (``scaip``: its controller id) identify the
subscriber by an account, not a topic. Each account (optionally per zone) maps to one
provisioned device; an account that maps to nothing is dead-lettered.

The four Typer groups (``site_app``, ``resident_app``, ``responder_app``,
``device_app``) are mounted as top-level groups by ``gateway.cli.main``; ``app`` holds
them all for mounting under one name.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import pwd
import stat
import time
import tomllib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, TypeVar

import aiomqtt
import typer
from rich.console import Console
from rich.table import Table

from telecare.devices.codecs import json_v1, registry
from telecare.devices.model import (
    DEFAULT_TEST_CALL_S,
    ID_PATTERN,
    RESERVED_IDS,
    Consciousness,
    Device,
    DeviceKind,
    EventType,
    ModelError,
    ReceiverAccount,
    Resident,
    Responder,
    ResponderKind,
    Site,
    SiteKind,
)
from telecare.gateway.auth import hash_secret, new_secret, read_password_file, write_password_file
from telecare.gateway.cli import lifecycle  # registers list/show/set/remove/pair on the groups
from telecare.gateway.cli.common import (
    ConfigOption,
    ExitCode,
    JsonOption,
    load_cli_config,
    with_store,
)
from telecare.gateway.cli.groups import app, device_app, resident_app, responder_app, site_app
from telecare.gateway.clinical import ClinicalChange, ClinicalRecord
from telecare.gateway.config import ALARM_LANE_SUFFIX, DEFAULT_CLIENT_ID, Config
from telecare.gateway.publisher import PUBLISHER_SUFFIX
from telecare.gateway.store.base import Store
from telecare.rules.config import ResidentRules, RulesConfig, RulesConfigError, load_rules_file

__all__ = ["app", "device_app", "resident_app", "responder_app", "site_app"]

_T = TypeVar("_T")

console = Console()
err_console = Console(stderr=True)

#: Device formats accepted by ``device add``: protocol v1 plus every registered codec.
FORMATS = ("json_v1", *sorted(registry.CODECS))


def _with_store(cfg: Config, action: Callable[[Store], Awaitable[_T]]) -> _T:
    return with_store(cfg, action)


def _fail(message: str, code: ExitCode = ExitCode.INVALID) -> typer.Exit:
    err_console.print(f"[red]error:[/red] {message}", highlight=False)
    return typer.Exit(code)


def _model(build: Callable[[], _T]) -> _T:
    try:
        return build()
    except ModelError as exc:
        raise _fail(str(exc)) from None


# --------------------------------------------------------------------------- sites


@site_app.command("add")
def site_add(
    site_id: str,
    kind: Annotated[SiteKind, typer.Option(help="home or care_home")] = SiteKind.HOME,
    name: Annotated[str, typer.Option(help="Display name (not logged).")] = "",
    address: Annotated[str, typer.Option(help="Address (not logged).")] = "",
    area: Annotated[str, typer.Option(help="Response area.")] = "default",
    config: ConfigOption = None,
) -> None:
    """Create or update a site."""
    site = _model(lambda: Site(site_id, kind, name, address, area))
    _with_store(load_cli_config(config), lambda store: store.upsert_site(site))
    console.print(f"site [bold]{site_id}[/bold] saved")


# --------------------------------------------------------------------------- residents


@resident_app.command("add")
def resident_add(
    resident_id: str,
    site: Annotated[str, typer.Option(help="The site the resident lives at.")],
    name: Annotated[str, typer.Option(help="Name (stored, never logged).")] = "",
    nhs_number: Annotated[str | None, typer.Option(help="NHS number (never logged).")] = None,
    notes: Annotated[
        str, typer.Option(help="Notes: key safe, access, medical (never logged).")
    ] = "",
    responders: Annotated[
        str, typer.Option(help="Responder ids in cascade order, comma separated.")
    ] = "",
    config: ConfigOption = None,
) -> None:
    """Create or update a resident (never its clinical settings: see ``resident clinical``)."""
    cascade = tuple(r.strip() for r in responders.split(",") if r.strip())
    resident = _model(
        lambda: Resident(resident_id, site, name, nhs_number, responders=cascade, notes=notes)
    )

    async def save(store: Store) -> None:
        if await store.get_site(site) is None:
            raise _fail(
                f"site {site!r} does not exist; add it with 'site add {site}'", ExitCode.NOT_FOUND
            )
        for responder_id in cascade:
            if await store.get_responder(responder_id) is None:
                raise _fail(f"responder {responder_id!r} does not exist", ExitCode.NOT_FOUND)
        await store.upsert_resident(resident)

    _with_store(load_cli_config(config), save)
    console.print(f"resident [bold]{resident_id}[/bold] saved at site {site}")


_DATE_FORMATS = ["%Y-%m-%d", "%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"]


@resident_app.command("clinical")
def resident_clinical(
    resident_id: str,
    by: Annotated[str, typer.Option("--by", help="Who is recording this (kept in the history).")],
    spo2_scale: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=2,
            help="SpO2 scale: 2 only when a clinician prescribed a target of 88-92 %.",
        ),
    ] = None,
    prescribed_by: Annotated[
        str | None, typer.Option(help="The clinician who prescribed the scale.")
    ] = None,
    prescribed_on: Annotated[
        datetime | None,
        typer.Option(formats=_DATE_FORMATS, help="When it was prescribed (UTC), e.g. 2026-11-02."),
    ] = None,
    baseline: Annotated[
        Consciousness | None,
        typer.Option(help="Consciousness baseline: A, or C for chronic confusion."),
    ] = None,
    reason: Annotated[str, typer.Option(help="Why (kept in the history).")] = "",
    config: ConfigOption = None,
) -> None:
    """Set a resident's clinical settings: SpO2 scale (with prescriber and date) and
    consciousness baseline. The only command that changes them; every change is kept
    with who recorded it, when, and the previous value (``resident show``)."""
    cfg = load_cli_config(config)
    now = datetime.now(UTC)
    when = prescribed_on.replace(tzinfo=UTC) if prescribed_on is not None else None
    if when is not None and when > now:
        raise _fail("--prescribed-on is in the future")
    change = _model(
        lambda: ClinicalChange(
            resident_id,
            by,
            now,
            spo2_scale=spo2_scale,
            prescribed_by=prescribed_by,
            prescribed_at=when,
            baseline=baseline,
            reason=reason,
        )
    )

    async def save(store: Store) -> list[ClinicalRecord]:
        try:
            return await store.set_clinical(change)
        except KeyError:
            raise _fail(f"resident {resident_id!r} does not exist", ExitCode.NOT_FOUND) from None

    for record in _with_store(cfg, save):
        console.print(
            f"resident [bold]{resident_id}[/bold]: {record.setting} = {record.value}"
            f" (was {record.previous or 'not set'})"
        )


def _overridden(from_file: ResidentRules, effective: ResidentRules) -> list[str]:
    """What the rules file says that a recorded prescription overrides (never silently)."""
    notes = []
    if (
        effective.spo2_scale_source == "prescription"
        and from_file.spo2_scale_source == "rules file"
        and from_file.spo2_scale != effective.spo2_scale
    ):
        notes.append(
            f"the rules file says SpO2 scale {from_file.spo2_scale}: ignored, the recorded"
            " prescription wins"
        )
    if (
        effective.baseline_source == "prescription"
        and from_file.baseline_source == "rules file"
        and from_file.baseline_consciousness != effective.baseline_consciousness
    ):
        notes.append(
            f"the rules file says baseline {from_file.baseline_consciousness.value}: ignored,"
            " the recorded setting wins"
        )
    return notes


@resident_app.command("show")
def resident_show(
    resident_id: str,
    personal: lifecycle.PersonalOption = False,
    json_out: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """A resident's site, responders, paired devices and effective clinical settings
    with their source (prescription, rules file or chart default) and history.
    Name, NHS number and notes only with --personal."""
    cfg = load_cli_config(config)

    async def load(store: Store) -> tuple[Resident | None, list[ClinicalRecord], list[str]]:
        devices = [d.device_id for d in await store.list_devices() if d.resident_id == resident_id]
        history = await store.clinical_history(resident_id)
        return await store.get_resident(resident_id), history, devices

    resident, history, devices = _with_store(cfg, load)
    if resident is None:
        raise _fail(f"resident {resident_id!r} does not exist", ExitCode.NOT_FOUND)
    try:
        rules = load_rules_file(cfg.rules.file) if cfg.rules.file else RulesConfig()
    except RulesConfigError as exc:
        raise _fail(str(exc)) from None
    effective = rules.resident(resident_id, resident)
    from_file = rules.residents.get(resident_id)
    if json_out:
        lifecycle.print_json(
            lifecycle.resident_json(resident, personal)
            | {
                "devices": devices,
                "effective": {
                    "spo2_scale": effective.spo2_scale,
                    "spo2_scale_source": effective.spo2_scale_source,
                    "spo2_target": effective.spo2_target,
                    "baseline_consciousness": effective.baseline_consciousness.value,
                    "baseline_source": effective.baseline_source,
                },
                "history": [
                    {
                        "recorded_at": h.recorded_at.isoformat(),
                        "setting": h.setting,
                        "value": h.value,
                        "previous": h.previous,
                        "prescribed_by": h.prescribed_by,
                        "prescribed_at": h.prescribed_at and h.prescribed_at.isoformat(),
                        "recorded_by": h.recorded_by,
                        "reason": h.reason,
                    }
                    for h in history
                ],
            }
        )
        return
    console.print(f"resident [bold]{resident.resident_id}[/bold] at site {resident.site_id}")
    if personal:
        console.print(f"name: {resident.name or '-'}", highlight=False)
        console.print(f"NHS number: {resident.nhs_number or '-'}", highlight=False)
        console.print(f"notes: {resident.notes or '-'}", highlight=False)
    console.print(f"responders: {', '.join(resident.responders) or '-'}")
    console.print(f"devices: {', '.join(devices) or '-'}")
    scale = f"SpO2 scale: [bold]{effective.spo2_scale}[/bold] ({effective.spo2_scale_source}"
    if effective.spo2_scale_set_by and effective.spo2_scale_set_at:
        scale += f", prescribed by {effective.spo2_scale_set_by}"
        scale += f" on {effective.spo2_scale_set_at:%Y-%m-%d}"
    console.print(scale + f"; SpO2 target {effective.spo2_target} %)")
    console.print(
        f"consciousness baseline: [bold]{effective.baseline_consciousness.value}[/bold]"
        f" ({effective.baseline_source})"
    )
    if from_file is not None:
        for note in _overridden(from_file, effective):
            console.print(f"[yellow]note:[/yellow] {note}")
    table = Table("recorded at", "setting", "value", "previous", "prescribed", "by", "reason")
    for h in history:
        prescribed = "-"
        if h.prescribed_by:
            prescribed = h.prescribed_by
            if h.prescribed_at:
                prescribed += f", {h.prescribed_at:%Y-%m-%d}"
        table.add_row(
            f"{h.recorded_at:%Y-%m-%d %H:%M}",
            h.setting,
            h.value,
            h.previous or "-",
            prescribed,
            h.recorded_by,
            h.reason or "-",
        )
    console.print(table if history else "no clinical settings recorded")


# --------------------------------------------------------------------------- responders


@responder_app.command("add")
def responder_add(
    responder_id: str,
    kind: Annotated[ResponderKind, typer.Option()] = ResponderKind.KEYHOLDER,
    name: Annotated[str, typer.Option(help="Name (not logged).")] = "",
    phone: Annotated[str, typer.Option(help="Phone (not logged).")] = "",
    area: Annotated[str, typer.Option()] = "default",
    config: ConfigOption = None,
) -> None:
    """Create or update a responder."""
    responder = _model(lambda: Responder(responder_id, kind, name, phone, area))
    cfg = load_cli_config(config)

    async def save(store: Store) -> None:
        if await store.get_device(responder_id) is not None:
            raise _fail(f"{responder_id!r} is a device id; a responder needs another id")
        if responder_id in _gateway_users(cfg.mqtt.username or DEFAULT_CLIENT_ID):
            raise _fail(f"{responder_id!r} is the gateway's MQTT user; choose another id")
        await store.upsert_responder(responder)

    _with_store(cfg, save)
    console.print(f"responder [bold]{responder_id}[/bold] saved")


# --------------------------------------------------------------------------- devices


def _print_secret(device_id: str, secret: str) -> None:
    console.print(
        f"MQTT username: [bold]{device_id}[/bold]\n"
        f"MQTT password: [bold]{secret}[/bold]\n"
        "[yellow]Shown once, not stored: configure the device now, then regenerate\n"
        "the broker's password file (telecare device mosquitto-passwd FILE).[/yellow]"
    )


@device_app.command("add")
def device_add(
    device_id: str,
    site: Annotated[str, typer.Option(help="The site the device is installed at.")],
    kind: Annotated[
        DeviceKind,
        typer.Option(metavar="KIND", help=f"One of: {', '.join(DeviceKind)}.", show_choices=False),
    ],
    resident: Annotated[str | None, typer.Option(help="The resident it is paired with.")] = None,
    fmt: Annotated[str, typer.Option("--format", help="Codec: json_v1, cms50d, ...")] = "json_v1",
    location: Annotated[str, typer.Option()] = "",
    heartbeat: Annotated[
        int | None,
        typer.Option(
            help="Expected heartbeat / periodic test call interval, s (0 = none). Default: "
            "24 h for pendants and fall detectors (TSA practice), else 0."
        ),
    ] = None,
    hub: Annotated[
        str | None,
        typer.Option(help="The hub or alarm receiver (same site) that forwards for it."),
    ] = None,
    receiver_account: Annotated[
        list[str] | None,
        typer.Option(
            help="KIND:ACCOUNT[:ZONE] a receiver reports this device as (contact_id, sia,"
            " scaip); repeatable."
        ),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Provision a device and generate its MQTT password (printed once).

    Only the hub or alarm receiver given with ``--hub`` may forward messages for the
    device; observation sets (NEWS2) are accepted only from a ``tablet``."""
    if fmt not in FORMATS:
        raise _fail(f"unknown format {fmt!r}; known: {', '.join(FORMATS)}")
    if heartbeat is None:
        heartbeat = DEFAULT_TEST_CALL_S.get(kind, 0)
    device = _model(
        lambda: Device(
            device_id,
            site,
            kind,
            resident,
            fmt,
            location,
            heartbeat_interval_s=heartbeat,
            hub_id=hub,
        )
    )
    accounts = [_account(text, device_id) for text in receiver_account or ()]
    secret = new_secret()

    cfg = load_cli_config(config)

    async def save(store: Store) -> None:
        why = _not_a_device(device_id, await _broker_identities(cfg, store))
        if why is not None:
            raise _fail(f"device id {device_id!r} is {why}; choose another id")
        if await store.get_site(site) is None:
            raise _fail(
                f"site {site!r} does not exist; add it with 'site add {site}'", ExitCode.NOT_FOUND
            )
        if resident is not None:
            found = await store.get_resident(resident)
            if found is None or found.site_id != site:
                raise _fail(
                    f"resident {resident!r} does not exist at site {site!r}", ExitCode.NOT_FOUND
                )
        if hub is not None:
            # Here, not at the top: the decode stage pulls in the rule engine and numpy,
            # which every ``telecare`` process (even ``--help``) would otherwise pay for.
            from telecare.gateway.decode import FORWARDERS

            parent = await store.get_device(hub)
            if parent is None or parent.site_id != site:
                raise _fail(f"hub {hub!r} does not exist at site {site!r}", ExitCode.NOT_FOUND)
            if parent.kind not in FORWARDERS:
                kinds = ", ".join(sorted(k.value for k in FORWARDERS))
                raise _fail(f"device {hub!r} is a {parent.kind.value}, not one of: {kinds}")
        for mapping in accounts:
            await _check_unmapped(store, mapping)
        await store.upsert_device(device, hash_secret(secret))
        for mapping in accounts:
            await store.upsert_receiver_account(mapping)

    _with_store(cfg, save)
    console.print(f"device [bold]{device_id}[/bold] ({kind.value}, {fmt}) saved at site {site}")
    for mapping in accounts:
        console.print(f"receiver account [bold]{mapping.label}[/bold] -> {device_id}")
    _print_secret(device_id, secret)


def _account(text: str, device_id: str) -> ReceiverAccount:
    return _model(lambda: ReceiverAccount.parse(text, device_id))


async def _check_unmapped(store: Store, mapping: ReceiverAccount) -> None:
    """Refuse to silently move an account that already reports as another device."""
    for m in await store.receiver_accounts(mapping.kind, mapping.account):
        if m.zone == mapping.zone and m.device_id != mapping.device_id:
            raise _fail(
                f"receiver account {mapping.label} already maps to device {m.device_id!r};"
                f" remove it first with 'device unmap-account {mapping.label}'"
            )


@device_app.command("map-account")
def device_map_account(
    device_id: str,
    account: Annotated[
        str, typer.Argument(help="KIND:ACCOUNT[:ZONE], e.g. contact_id:1234 or sia:5678:003")
    ],
    config: ConfigOption = None,
) -> None:
    """Map a receiver account (optionally one zone of it) to a provisioned device.

    A zone mapping wins over the account-wide one, so one account can report as several
    devices. An account nobody maps is dead-lettered by every receiver.
    """
    mapping = _account(account, device_id)

    async def save(store: Store) -> None:
        if await store.get_device(device_id) is None:
            raise _fail(f"device {device_id!r} does not exist", ExitCode.NOT_FOUND)
        await _check_unmapped(store, mapping)
        await store.upsert_receiver_account(mapping)

    _with_store(load_cli_config(config), save)
    console.print(f"receiver account [bold]{mapping.label}[/bold] -> {device_id}")


@device_app.command("unmap-account")
def device_unmap_account(
    account: Annotated[str, typer.Argument(help="KIND:ACCOUNT[:ZONE]")],
    config: ConfigOption = None,
) -> None:
    """Remove a receiver account mapping (its messages are dead-lettered from then on)."""
    mapping = _account(account, "unmapped")
    removed = _with_store(
        load_cli_config(config),
        lambda store: store.delete_receiver_account(mapping.kind, mapping.account, mapping.zone),
    )
    if not removed:
        raise _fail(f"receiver account {mapping.label} is not mapped")
    console.print(f"receiver account [bold]{mapping.label}[/bold] removed")


@device_app.command("accounts")
def device_accounts(config: ConfigOption = None) -> None:
    """List receiver accounts and the devices they map to."""
    found = _with_store(load_cli_config(config), lambda store: store.list_receiver_accounts())
    table = Table("kind", "account", "zone", "device")
    for m in found:
        table.add_row(m.kind.value, m.account, m.zone or "(any)", m.device_id)
    console.print(table)


@device_app.command("user")
def device_user(
    device_id: str,
    user_id: Annotated[int, typer.Option("--user-id", help="The device's user number, 0-254.")],
    resident: Annotated[str, typer.Option(help="The resident this user is.")],
    config: ConfigOption = None,
) -> None:
    """Map a user number of a shared BLE device (a blood-pressure cuff's user 2) to a
    resident. Readings for a user number not mapped are dead-lettered; a device with no
    map is single-user (its user 1 is the paired resident)."""
    if not 0 <= user_id <= 254:
        raise _fail(f"user id {user_id} must be 0-254 (255 means 'unknown user')")

    async def save(store: Store) -> None:
        device = await store.get_device(device_id)
        if device is None:
            raise _fail(f"device {device_id!r} does not exist", ExitCode.NOT_FOUND)
        found = await store.get_resident(resident)
        if found is None or found.site_id != device.site_id:
            raise _fail(
                f"resident {resident!r} does not exist at site {device.site_id!r}",
                ExitCode.NOT_FOUND,
            )
        await store.set_device_user(device_id, user_id, resident)

    _with_store(load_cli_config(config), save)
    console.print(f"device [bold]{device_id}[/bold] user {user_id} is resident {resident}")


@device_app.command("passwd")
def device_passwd(device_id: str, config: ConfigOption = None) -> None:
    """Rotate a device's MQTT password (the new one is printed once)."""
    secret = new_secret()

    async def save(store: Store) -> None:
        device = await store.get_device(device_id)
        if device is None:
            raise _fail(f"device {device_id!r} does not exist", ExitCode.NOT_FOUND)
        await store.upsert_device(device, hash_secret(secret))

    _with_store(load_cli_config(config), save)
    _print_secret(device_id, secret)


@device_app.command("mosquitto-passwd")
def device_mosquitto_passwd(
    file: Path,
    gateway_user: Annotated[
        str | None,
        typer.Option(
            help="Also (re)create this user for the gateway, with <user>-out (its publisher)"
            " and <user>-alarms (its alarm lane) on the same password, which is printed."
        ),
    ] = None,
    group: Annotated[
        str | None,
        typer.Option(
            help="Group owning the file (name or gid). Default: the existing file's group; "
            "for a new file the 'mosquitto' group when it exists."
        ),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Write a Mosquitto password file with every device that has credentials.

    Entries for users that are not devices (the gateway, an operator) are kept. A stored
    device whose id is not a valid identifier or names a broker identity that is not a
    device (the gateway's user, a reserved name, a responder or responder app) is refused
    and reported; the others are written (exit code 1 when any was refused). The file
    keeps its owner, group and mode. Reload the broker afterwards (``kill -HUP``).
    """
    cfg = load_cli_config(config)
    gid = _group_id(group, file)

    async def load(store: Store) -> tuple[list[tuple[str, str]], dict[str, str]]:
        return await store.device_credentials(), await _broker_identities(cfg, store)

    credentials, identities = _with_store(cfg, load)
    gateway_users: tuple[str, ...] = ()
    if gateway_user is not None:
        # The outbound publisher's session logs in as <user>-out and the alarm lane's as
        # <user>-alarms, with the same password.
        gateway_users = _gateway_users(gateway_user)
        identities.update(_gateway_identities(gateway_user))
        taken = [u for u in gateway_users if any(d == u for d, _ in credentials)]
        if taken:
            raise _fail(f"--gateway-user {taken[0]!r} is a device id; choose another name")
    devices: dict[str, str] = {}
    refused: list[str] = []
    for device_id, hashed in credentials:
        why = _not_a_device(device_id, identities)
        if why is None:
            devices[device_id] = hashed
        else:
            refused.append(f"{device_id!r}: {why}")
    entries = {u: h for u, h in read_password_file(file).items() if u not in devices}
    entries.update(devices)
    secret = None
    if gateway_users:
        secret = new_secret()
        hashed_secret = hash_secret(secret)
        for user in gateway_users:
            entries[user] = hashed_secret
    n = write_password_file(file, entries.items(), group=gid)
    console.print(f"wrote {n} entries ({len(devices)} devices) to {file}")
    if not _broker_can_read(file):
        err_console.print(
            f"[yellow]warning:[/yellow] the broker's user 'mosquitto' cannot read {file}; "
            "run again with --group mosquitto"
        )
    if gateway_user is not None and secret is not None:
        console.print(
            f"gateway user [bold]{gateway_user}[/bold], password: [bold]{secret}[/bold]\n"
            f"(shown once: set TELECARE_MQTT__PASSWORD; mqtt.username = {gateway_user!r};\n"
            f" {gateway_users[1]} and {gateway_users[2]} have the same password)",
            highlight=False,
        )
    if refused:
        for line in refused:
            err_console.print(f"[red]refused[/red] device {line}")
        raise _fail(f"{len(refused)} device(s) not written; the other entries were")


def _group_id(group: str | None, file: Path) -> int | None:
    """The gid for ``--group``; ``None`` keeps the existing file's group."""
    if group is not None:
        if group.isdigit():
            return int(group)
        try:
            return grp.getgrnam(group).gr_gid
        except KeyError:
            raise _fail(f"--group {group!r}: no such group") from None
    if file.exists():
        return None
    with contextlib.suppress(KeyError):
        return grp.getgrnam("mosquitto").gr_gid
    return None


def _broker_can_read(file: Path) -> bool:
    """Whether the ``mosquitto`` user (when it exists) may read ``file``."""
    try:
        user = pwd.getpwnam("mosquitto")
    except KeyError:
        return True  # no such user here: nothing to check against
    st = file.stat()
    groups = {user.pw_gid} | {g.gr_gid for g in grp.getgrall() if user.pw_name in g.gr_mem}
    if st.st_uid == user.pw_uid:
        return bool(st.st_mode & stat.S_IRUSR)
    if st.st_gid in groups:
        return bool(st.st_mode & stat.S_IRGRP)
    return bool(st.st_mode & stat.S_IROTH)


def _gateway_users(user: str) -> tuple[str, str, str]:
    """The gateway's broker users: its ingest session's, its outbound publisher's
    (``<user>-out``) and its alarm lane's (``<user>-alarms``)."""
    return user, user + PUBLISHER_SUFFIX, user + ALARM_LANE_SUFFIX


def _gateway_identities(user: str) -> dict[str, str]:
    ingest, out, alarms = _gateway_users(user)
    return {
        ingest: "the gateway's MQTT user",
        out: "the gateway's publisher",
        alarms: "the gateway's alarm-lane MQTT user",
    }


async def _broker_identities(cfg: Config, store: Store) -> dict[str, str]:
    """Broker user names that belong to something other than a device: the gateway's
    users, responders and responder apps (their MQTT username is the app id)."""
    user = cfg.mqtt.username or DEFAULT_CLIENT_ID
    found = _gateway_identities(user)
    for responder in await store.list_responders():
        found[responder.responder_id] = "a responder"
    found.update(await asyncio.to_thread(_dispatch_file_identities, cfg))
    return found


def _dispatch_file_identities(cfg: Config) -> dict[str, str]:
    """Responder ids and responder-app ids (``contacts.mqtt``) in ``dispatch.file``."""
    found: dict[str, str] = {}
    if not cfg.dispatch.file:
        return found
    try:
        raw = tomllib.loads(Path(cfg.dispatch.file).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise _fail(f"dispatch.file {cfg.dispatch.file}: {exc}") from None
    for entry in raw.get("responders", []):
        if "id" in entry:
            found[str(entry["id"])] = "a responder"
        app_id = dict(entry.get("contacts", {})).get("mqtt")
        if app_id:
            found[str(app_id)] = "a responder app"
    return found


def _not_a_device(device_id: str, identities: dict[str, str]) -> str | None:
    """Why ``device_id`` may not be a broker user for a device, or ``None`` if it may."""
    if not ID_PATTERN.match(device_id):
        return "not a valid identifier"
    if device_id.lower() in RESERVED_IDS:
        return "a name reserved for the gateway"
    if device_id in identities:
        return f"the name of {identities[device_id]}"
    return None


@device_app.command("test")
def device_test(
    device_id: str,
    password: Annotated[
        str | None,
        typer.Option(envvar="TELECARE_DEVICE_PASSWORD", help="The device's MQTT password."),
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the gateway.")] = 20.0,
    config: ConfigOption = None,
) -> None:
    """Publish a test event as the device and wait until the gateway has stored it.

    Sends a ``periodic_test`` event (stored, never alerted) on the device's own topic
    with its own credentials, so it proves the credentials, the ACL, the broker, the
    gateway and the store in one go. The shipped broker binds client ids to usernames, so
    the test's connection replaces the device's own for the few seconds it lasts.
    """
    cfg = load_cli_config(config)

    async def run(store: Store) -> float:
        device = await store.get_device(device_id)
        if device is None:
            raise _fail(f"device {device_id!r} does not exist", ExitCode.NOT_FOUND)
        before = await store.count("alarm_events")
        msg_id = f"test-{uuid.uuid4().hex[:12]}"
        topic = f"{cfg.mqtt.topic_prefix}/{device.site_id}/{device_id}/event"
        payload = json_v1.encode_event(msg_id, datetime.now(UTC), EventType.PERIODIC_TEST)
        started = time.monotonic()
        async with _device_client(cfg, device_id, password) as client:
            await client.publish(topic, payload, qos=1)
        console.print(f"published test event {msg_id} on {topic}", highlight=False)
        console.print("waiting for the gateway to store it...")
        while await store.count("alarm_events") <= before:
            if time.monotonic() - started > timeout:
                raise _fail(
                    f"not stored within {timeout:g}s: is the gateway running, and is "
                    "the device's site/topic right? (see the dead letters)",
                    ExitCode.NO_ANSWER,
                )
            await asyncio.sleep(0.1)
        return time.monotonic() - started

    elapsed = _with_store(cfg, run)
    console.print(f"[green]OK[/green]: stored {elapsed:.2f}s after publishing")


@contextlib.asynccontextmanager
async def _device_client(
    cfg: Config, device_id: str, password: str | None
) -> AsyncIterator[aiomqtt.Client]:
    try:
        async with aiomqtt.Client(
            cfg.mqtt.host,
            cfg.mqtt.port,
            identifier=f"test-{device_id}-{uuid.uuid4().hex[:6]}",
            username=device_id if password else None,
            password=password,
        ) as client:
            yield client
    except aiomqtt.MqttError as exc:
        raise _fail(
            f"broker {cfg.mqtt.host}:{cfg.mqtt.port} refused or failed: {exc}", ExitCode.NO_ANSWER
        ) from None
