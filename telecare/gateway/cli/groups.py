"""The installer's Typer groups, defined apart so that ``provision`` (add, credentials,
clinical settings) and ``lifecycle`` (list, show, set, remove, pair) both register on them."""

from __future__ import annotations

import typer

__all__ = ["app", "device_app", "resident_app", "responder_app", "site_app"]

site_app = typer.Typer(help="Sites: homes and care homes.", no_args_is_help=True)
resident_app = typer.Typer(help="Residents (personal data is never logged).", no_args_is_help=True)
responder_app = typer.Typer(help="Responders: keyholders, wardens, crews.", no_args_is_help=True)
device_app = typer.Typer(help="Devices and their MQTT credentials.", no_args_is_help=True)
app = typer.Typer(help="Provisioning.", no_args_is_help=True)
app.add_typer(site_app, name="site")
app.add_typer(resident_app, name="resident")
app.add_typer(responder_app, name="responder")
app.add_typer(device_app, name="device")
