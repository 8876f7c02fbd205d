"""Turn a notification effect into messages on each of the recipient's channels, deliver
them (with retries) and record a receipt for every one, delivered or not."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import structlog

from telecare.devices.model import Dispatch
from telecare.dispatch.machine import NotifyResponder, NotifySupervisors
from telecare.dispatch.notifiers.base import Message, Transport
from telecare.dispatch.notifiers.delivery import RetryPolicy, deliver
from telecare.dispatch.records import Receipt
from telecare.dispatch.repository import DispatchRepository
from telecare.dispatch.responders import Contact, ResponderDirectory
from telecare.rules.clock import Clock

__all__ = ["Notifier"]

log = structlog.get_logger(__name__)


class Notifier:
    def __init__(
        self,
        repo: DispatchRepository,
        clock: Clock,
        *,
        transports: Mapping[str, Transport] | Sequence[Transport] = (),
        directory: ResponderDirectory | None = None,
        supervisors: Sequence[Contact] = (),
        retry: RetryPolicy = RetryPolicy(),
    ) -> None:
        self._repo = repo
        self._clock = clock
        if isinstance(transports, Mapping):
            self._transports = dict(transports)
        else:
            self._transports = {t.channel: t for t in transports}
        self.directory = directory or ResponderDirectory()
        self._supervisors = tuple(supervisors)
        self._retry = retry

    def messages(
        self, dispatch: Dispatch, effect: NotifyResponder | NotifySupervisors
    ) -> list[Message]:
        body = {
            "alert_id": dispatch.alert_id,
            "state": dispatch.state.value,
            "priority": dispatch.priority,
            "site_id": dispatch.site_id,
            "cascade_step": dispatch.cascade_step,
            "reason": effect.reason,
        }
        if isinstance(effect, NotifyResponder):
            recipient = effect.responder_id
            profile = self.directory.get(recipient)
            contacts: Sequence[Contact] = profile.contacts if profile else ()
            subject = f"Please attend: alarm priority {dispatch.priority}"
        else:
            recipient, contacts = "supervisors", self._supervisors
            subject = f"Escalated: alarm priority {dispatch.priority}"
        return [
            Message(dispatch.dispatch_id, recipient, c.channel, c.address, subject, body)
            for c in contacts
        ]

    async def notify(self, dispatch: Dispatch, effect: NotifyResponder | NotifySupervisors) -> None:
        """Deliver on every channel of the recipient; one receipt per channel."""
        for message in self.messages(dispatch, effect):
            transport = self._transports.get(message.channel)
            if transport is None:
                receipt = Receipt(
                    message.dispatch_id,
                    message.channel,
                    message.recipient,
                    "failed",
                    0,
                    self._clock.now(),
                    f"no {message.channel} transport configured",
                )
            else:
                receipt = await deliver(transport, message, now=self._clock.now, policy=self._retry)
            log.info(
                "notification",
                dispatch_id=receipt.dispatch_id,
                channel=receipt.channel,
                recipient=receipt.recipient,
                status=receipt.status,
                attempts=receipt.attempts,
            )
            await self._repo.record_receipt(receipt)
