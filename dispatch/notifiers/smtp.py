"""E-mail through SMTP (stdlib ``smtplib`` in a worker thread).

SMTP 4xx replies and network errors are temporary; 5xx (unknown mailbox, relay denied)
are permanent. ``starttls=True`` upgrades the connection before authenticating.
"""

from __future__ import annotations

import asyncio
import json
import smtplib
from email.message import EmailMessage

from dispatch.notifiers.base import Message, PermanentDeliveryError, TemporaryDeliveryError

__all__ = ["SmtpTransport"]


class SmtpTransport:
    channel = "email"

    def __init__(
        self,
        host: str,
        port: int = 25,
        *,
        sender: str,
        starttls: bool = False,
        username: str | None = None,
        password: str | None = None,
        timeout_s: float = 15.0,
    ) -> None:
        self.host, self.port, self.sender = host, port, sender
        self._starttls = starttls
        self._login = (username, password) if username and password else None
        self._timeout = timeout_s

    async def send(self, message: Message) -> str:
        return await asyncio.to_thread(self._send, message)

    def _build(self, message: Message) -> EmailMessage:
        mail = EmailMessage()
        mail["From"] = self.sender
        mail["To"] = message.address
        mail["Subject"] = message.subject
        mail["X-Telecare-Dispatch"] = message.dispatch_id
        mail.set_content(json.dumps(json.loads(message.payload()), indent=2, sort_keys=True))
        return mail

    def _send(self, message: Message) -> str:
        mail = self._build(message)
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self._timeout) as smtp:
                if self._starttls:
                    smtp.starttls()
                if self._login:
                    smtp.login(*self._login)
                refused = smtp.send_message(mail)
        except smtplib.SMTPResponseException as exc:
            text = f"{self.host}:{self.port} answered {exc.smtp_code}"
            if 400 <= exc.smtp_code < 500:
                raise TemporaryDeliveryError(text) from None
            raise PermanentDeliveryError(text) from None
        except smtplib.SMTPRecipientsRefused:
            raise PermanentDeliveryError(f"{self.host}:{self.port} refused the recipient") from None
        except (smtplib.SMTPException, OSError) as exc:
            raise TemporaryDeliveryError(f"{self.host}:{self.port}: {exc}") from None
        if refused:
            raise PermanentDeliveryError(f"{self.host}:{self.port} refused the recipient")
        return f"accepted by {self.host}:{self.port}"
