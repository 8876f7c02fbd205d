"""Builds the dispatch service for the running gateway: the repository for the configured
backend, the cascade and responder configuration, the notifier transports, the runner of
its loops and the registry it reads.

Transports: the responder-app MQTT topic is always available (through the gateway's own
MQTT connection); signed webhooks when ``dispatch.webhook_secret`` is set; e-mail when
``dispatch.smtp_host`` is set.

Loops: the service's loops (``dispatch.loops``) run in the gateway's supervisor
(:class:`SupervisedLoops` adapts ``gateway.tasks.Loops`` to the ``Runner`` dispatch
declares): named, retried with the shared backoff (capped at the loop's ``retry_s``),
and a failure it does not retry stops the gateway loudly.

Registry: residents and sites come from the gateway's warm registry cache
(:class:`CachedRegistry`), so opening a dispatch for a resident's alarm reads nothing from
the telemetry's pool, and a resident or site changed anywhere (the CLI in another process)
is dispatched as it is now once the registry watch has applied the change. Responders
likewise: the watch hands every responder to the directory after each change
(``ResponderDirectory.register``), so one added, moved or removed is dispatched so.
"""

from __future__ import annotations

import tomllib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiomqtt

from telecare.devices.model import Resident, Site
from telecare.dispatch import (
    AttendConfig,
    CascadeConfig,
    CascadeConfigError,
    Contact,
    DispatchRepository,
    DispatchService,
    Notifier,
    ResponderDirectory,
    TimerPolicy,
)
from telecare.dispatch.loops import LoopSpec
from telecare.dispatch.notifiers.base import (
    Message,
    PermanentDeliveryError,
    TemporaryDeliveryError,
    Transport,
)
from telecare.dispatch.notifiers.mqtt import responder_topic
from telecare.dispatch.notifiers.smtp import SmtpTransport
from telecare.dispatch.notifiers.webhook import WebhookTransport, check_address
from telecare.gateway.backoff import Backoff
from telecare.gateway.config import Config
from telecare.gateway.errors import ConfigError
from telecare.gateway.registry_cache import Registry as RegistryCache
from telecare.gateway.store.base import Store
from telecare.gateway.store.postgres import PostgresStore
from telecare.gateway.store.sqlite import SqliteStore
from telecare.gateway.tasks import Loop, Loops, Supervisor
from telecare.rules.clock import Clock

__all__ = [
    "CachedRegistry",
    "GatewayMqttTransport",
    "SupervisedLoops",
    "add_store_responders",
    "attend_config",
    "build_dispatcher",
    "dispatch_repository",
]

Publish = Callable[[str, bytes], Awaitable[None]]


class GatewayMqttTransport:
    """Responder-app messages on ``<prefix>/_gateway/responders/<app id>/dispatch`` (QoS 1), sent
    through the gateway's own MQTT connection (which reconnects on its own)."""

    channel = "mqtt"

    def __init__(self, publish: Publish, topic_prefix: str) -> None:
        self._publish = publish
        self._prefix = topic_prefix.rstrip("/")

    async def send(self, message: Message) -> str:
        topic = responder_topic(self._prefix, message.address)
        try:
            await self._publish(topic, message.payload())
        except (aiomqtt.MqttError, RuntimeError) as exc:
            raise TemporaryDeliveryError(f"publish to {topic}: {exc}") from None
        return f"published {topic}"


class SupervisedLoops:
    """The dispatch service's ``Runner``: its loops in the gateway's supervisor (a private
    one when ``supervisor`` is ``None``), each retried with the shared backoff up to its
    ``retry_s``."""

    def __init__(self, supervisor: Supervisor | None = None) -> None:
        self._loops = Loops(supervisor)

    async def start(self, *loops: LoopSpec) -> None:
        await self._loops.start(*(_loop(spec) for spec in loops))

    async def stop(self) -> None:
        await self._loops.stop()


def _loop(spec: LoopSpec) -> Loop:
    backoff = Backoff(initial=min(0.5, spec.retry_s), cap=spec.retry_s)
    return Loop(spec.name, spec.step, retry=spec.retry, backoff=backoff)


class CachedRegistry:
    """What dispatch reads of the registry (``dispatch.Registry``): residents and sites
    from the gateway's warm cache, invalidated on change by ``RegistryWatch`` (a site
    moved to another area is dispatched in its new area)."""

    def __init__(self, cache: RegistryCache) -> None:
        self._cache = cache

    async def get_resident(self, resident_id: str) -> Resident | None:
        return await self._cache.resident(resident_id)

    async def get_site(self, site_id: str) -> Site | None:
        return await self._cache.site(site_id)


def dispatch_repository(backend: PostgresStore | SqliteStore) -> DispatchRepository:
    return backend.dispatches


def _load_dispatch_file(path: str) -> dict[str, Any]:
    if not path:
        return {}
    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"Config 'dispatch.file': {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"Config 'dispatch.file': {path} is not valid TOML: {exc}") from None


def attend_config(config: Config) -> AttendConfig:
    """The attend targets per route and site from ``dispatch.file`` (``[dispatch.attend]``)."""
    raw = _load_dispatch_file(config.dispatch.file)
    try:
        return AttendConfig.from_mapping(raw.get("dispatch", {}).get("attend", {}))
    except (ValueError, CascadeConfigError) as exc:
        raise ConfigError(f"Config 'dispatch.file' {config.dispatch.file}: {exc}") from None


async def add_store_responders(directory: ResponderDirectory, store: Store) -> int:
    """Responders provisioned in the store (``telecare responder add``) join the directory
    unless the dispatch file already describes them (on-call windows, contacts); how many
    joined. The running gateway's registry watch then keeps them in step
    (``RegistryWatch(on_responders=directory.register)``)."""
    return directory.register(await store.list_responders())


def _check_webhook_addresses(directory: ResponderDirectory) -> None:
    """A webhook contact that could never be delivered (``file://``, plain http across
    the network) is a configuration error at start, not a failed receipt at 3 a.m."""
    for profile in directory.profiles():
        for contact in profile.contacts:
            if contact.channel != "webhook":
                continue
            try:
                check_address(contact.address)
            except PermanentDeliveryError as exc:
                raise ConfigError(
                    f"Config 'dispatch.file': responder {profile.responder_id}: {exc}"
                ) from None


def build_dispatcher(
    config: Config,
    backend: PostgresStore | SqliteStore,
    registry: Store,
    clock: Clock,
    publish: Publish,
    *,
    supervisor: Supervisor | None = None,
) -> DispatchService:
    """The dispatch service, not yet started (``async with`` it); its loops run in
    ``supervisor`` (the gateway's). ``registry`` is read until the gateway hands it the
    warm cache (:class:`CachedRegistry`)."""
    dc = config.dispatch
    raw = _load_dispatch_file(dc.file)
    try:
        cascades = CascadeConfig.from_mapping(raw.get("dispatch", {}))
        directory = ResponderDirectory.from_mapping(raw.get("responders", []))
    except (ValueError, CascadeConfigError) as exc:
        raise ConfigError(f"Config 'dispatch.file' {dc.file}: {exc}") from None
    _check_webhook_addresses(directory)
    repo = dispatch_repository(backend)
    transports: list[Transport] = [GatewayMqttTransport(publish, config.mqtt.topic_prefix)]
    if dc.webhook_secret:
        transports.append(WebhookTransport(dc.webhook_secret.reveal().encode()))
    if dc.smtp_host:
        try:
            smtp = SmtpTransport(
                dc.smtp_host,
                dc.smtp_port,
                sender=dc.smtp_sender,
                starttls=dc.smtp_starttls,
                username=dc.smtp_username or None,
                password=dc.smtp_password.reveal() or None,
                ca_file=dc.smtp_ca_file or None,
            )
        except ValueError as exc:
            raise ConfigError(f"Config 'dispatch.smtp_*': {exc}") from None
        transports.append(smtp)
    supervisors = [Contact("email", dc.supervisor_email)] if dc.supervisor_email else []
    notifier = Notifier(
        repo, clock, transports=transports, directory=directory, supervisors=supervisors
    )
    return DispatchService(
        repo,
        registry,
        clock,
        cascades=cascades,
        directory=directory,
        notifier=notifier,
        policy=TimerPolicy(ack_after_s=dc.ack_within_s),
        attend=attend_config(config),
        runner=SupervisedLoops(supervisor),
    )
