"""Sending mail: through SMTP (aiosmtplib), or into the log when IDENTITY_SMTP_URL is unset."""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Protocol

import aiosmtplib

from identity.credentials import smtp_server

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
    """Sends through the server of an IDENTITY_SMTP_URL (docs/configuration.md, "Mail").

    smtps:// is TLS from the first byte; smtp://…?starttls=required upgrades with STARTTLS or
    fails before the login or the message is sent; plain smtp:// upgrades only when offered.
    `tls_context` replaces the system's trusted certificates (tests).
    """

    def __init__(
        self, url: str, *, timeout: float = 10.0, tls_context: ssl.SSLContext | None = None
    ) -> None:
        self._server = smtp_server(url)
        self._timeout = timeout
        self._tls_context = tls_context

    async def send(self, message: EmailMessage) -> None:
        server = self._server
        # True: STARTTLS or nothing (aiosmtplib raises when the server does not offer it);
        # None: STARTTLS if offered; False: the connection is TLS already.
        start_tls = {"required": True, "opportunistic": None, "implicit": False}[server.tls]
        try:
            await aiosmtplib.send(
                message,
                hostname=server.host,
                port=server.port,
                username=server.username,
                password=server.password,
                use_tls=server.tls == "implicit",
                start_tls=start_tls,
                tls_context=self._tls_context,
                timeout=self._timeout,
            )
        except (aiosmtplib.SMTPException, OSError) as error:
            # The server's reply may quote the message; log the type only.
            logger.error("mail delivery failed", extra={"event": {"error": type(error).__name__}})
            raise MailError(type(error).__name__) from None


@dataclass(frozen=True, slots=True)
class Asker:
    """The account that asked for a verification mail, as the mail names it."""

    providers: tuple[str, ...]
    name: str | None
    email: str | None  # its own address, when not the recipient

    def describe(self) -> str:
        signed_in = ", ".join(self.providers) or "no provider"
        parts = [f"signed in with {signed_in}"]
        if self.name:
            parts.append(f"name {_printable(self.name)!r}")
        if self.email:
            parts.append(f"address {self.email}")
        return "; ".join(parts)


def _printable(text: str) -> str:
    # A name is the asker's own words: no line breaks or controls to forge the mail's layout.
    return "".join(c for c in text if c.isprintable())[:100]


def verification_message(*, sender: str, to: str, link: str, asker: Asker) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = "Confirm your email address"
    message.set_content(
        "Someone, hopefully you, asked to use this address for their account.\n\n"
        f"The account that asked: {asker.describe()}.\n"
        "If that is not an account of yours, do not confirm: ignore this message.\n\n"
        f"To confirm it, open this link within 24 hours:\n\n{link}\n\n"
        "Confirming gives the account that asked this address: whoever holds that account can\n"
        "then sign in with it. If this was not you, ignore this message; nothing changes.\n"
    )
    return message
