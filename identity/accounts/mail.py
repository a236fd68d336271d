"""Sending mail: through SMTP (aiosmtplib), or into the log when IDENTITY_SMTP_URL is unset."""

from __future__ import annotations

import logging
from email.message import EmailMessage
from typing import Protocol
from urllib.parse import unquote, urlsplit

import aiosmtplib

logger = logging.getLogger("identity.mail")


class MailError(Exception):
    """The message could not be handed to the mail server."""


class Mailer(Protocol):
    async def send(self, message: EmailMessage) -> None: ...


class LogMailer:
    """Development mailer: the message, link included, goes to the log instead of a mailbox."""

    async def send(self, message: EmailMessage) -> None:
        body = message.get_body(("plain",))
        logger.warning(
            "development mailer: mail NOT sent (set IDENTITY_SMTP_URL to send it)",
            extra={
                "event": {
                    "mailer": "development",
                    "to": message["To"],
                    "subject": message["Subject"],
                    "body": body.get_content() if body is not None else "",
                }
            },
        )


class SmtpMailer:
    """smtp://user:pass@host:port uses STARTTLS when the server offers it; smtps:// is TLS."""

    def __init__(self, url: str, *, timeout: float = 10.0) -> None:
        parts = urlsplit(url)
        self._tls = parts.scheme == "smtps"
        self._host = parts.hostname or "localhost"
        self._port = parts.port or (465 if self._tls else 25)
        self._username = unquote(parts.username) if parts.username else None
        self._password = unquote(parts.password) if parts.password else None
        self._timeout = timeout

    async def send(self, message: EmailMessage) -> None:
        try:
            await aiosmtplib.send(
                message,
                hostname=self._host,
                port=self._port,
                username=self._username,
                password=self._password,
                use_tls=self._tls,
                start_tls=None if not self._tls else False,
                timeout=self._timeout,
            )
        except (aiosmtplib.SMTPException, OSError) as error:
            # The server's reply may quote the message; log the type only.
            logger.error("mail delivery failed", extra={"event": {"error": type(error).__name__}})
            raise MailError(type(error).__name__) from None


def verification_message(*, sender: str, to: str, link: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = "Confirm your email address"
    message.set_content(
        "Someone, hopefully you, asked to use this address for their account.\n\n"
        f"To confirm it, open this link within 24 hours:\n\n{link}\n\n"
        "Confirming gives the account that asked this address: whoever holds that account can\n"
        "then sign in with it. If this was not you, ignore this message; nothing changes.\n"
    )
    return message
