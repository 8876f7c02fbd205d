"""E-mail through SMTP (stdlib ``smtplib`` in a worker thread).

``starttls=True`` (the default) upgrades the connection with STARTTLS, verifying the
server's certificate (system trust store, or ``ca_file``), before anything else is
sent; a server that does not offer STARTTLS, or whose certificate is not trusted, is a
permanent failure, never a silent fall-back to clear text. ``username``/``password``
log in after the upgrade. Without STARTTLS only a loopback relay is accepted, and never
with a login.

SMTP 4xx replies and network errors are temporary; 5xx (unknown mailbox, relay denied,
authentication refused) are permanent.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import smtplib
import ssl
from email.message import EmailMessage

from telecare.dispatch.notifiers.base import Message, PermanentDeliveryError, TemporaryDeliveryError

__all__ = ["SmtpTransport"]


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class SmtpTransport:
    channel = "email"

    def __init__(
        self,
        host: str,
        port: int = 587,
        *,
        sender: str,
        starttls: bool = True,
        username: str | None = None,
        password: str | None = None,
        ca_file: str | None = None,
        timeout_s: float = 15.0,
    ) -> None:
        if not starttls and not _loopback(host):
            raise ValueError(
                f"SMTP to {host} without STARTTLS refused: mail would cross the network in"
                " clear (dispatch.smtp_starttls)"
            )
        if not starttls and (username or password):
            raise ValueError("an SMTP login needs STARTTLS (dispatch.smtp_starttls)")
        self.host, self.port, self.sender = host, port, sender
        self._tls = ssl.create_default_context(cafile=ca_file or None) if starttls else None
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
        mail["X-Telecare-Delivery"] = message.delivery_id
        mail.set_content(json.dumps(json.loads(message.payload()), indent=2, sort_keys=True))
        return mail

    def _send(self, message: Message) -> str:
        mail = self._build(message)
        where = f"{self.host}:{self.port}"
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self._timeout) as smtp:
                if self._tls is not None:
                    smtp.starttls(context=self._tls)
                if self._login:
                    smtp.login(*self._login)
                refused = smtp.send_message(mail)
        except smtplib.SMTPNotSupportedError:
            raise PermanentDeliveryError(f"{where} does not offer STARTTLS") from None
        except ssl.SSLCertVerificationError as exc:
            raise PermanentDeliveryError(
                f"{where}: certificate not trusted ({exc.verify_message})"
            ) from None
        except smtplib.SMTPResponseException as exc:
            text = f"{where} answered {exc.smtp_code}"
            if 400 <= exc.smtp_code < 500:
                raise TemporaryDeliveryError(text) from None
            raise PermanentDeliveryError(text) from None
        except smtplib.SMTPRecipientsRefused:
            raise PermanentDeliveryError(f"{where} refused the recipient") from None
        except (smtplib.SMTPException, OSError) as exc:
            raise TemporaryDeliveryError(f"{where}: {exc}") from None
        if refused:
            raise PermanentDeliveryError(f"{where} refused the recipient")
        tls = " over TLS" if self._tls is not None else ""
        return f"accepted by {where}{tls}"
