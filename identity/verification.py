"""Email verification (SPEC §7.4): a single-use mailed token proves control of an address.

Tokens are 256 bits from `secrets`, stored only as SHA-256 in `verification_tokens`
(identifier = the address), valid 24 hours. The mail is sent inside the transaction that stores
the token: if the mail server refuses, the transaction rolls back and no token exists.
Redemption is one `DELETE … RETURNING`: of two concurrent redemptions exactly one gets the row.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from . import logs
from .accounts import Accounts
from .database import Database
from .errors import InvalidRequest, InvalidVerificationToken, TemporarilyUnavailable
from .limits import RateLimiter
from .mail import Mailer, MailError, verification_message
from .models import User, VerificationToken, public_user, utc
from .settings import RateLimit

logger = logging.getLogger("identity.verification")
Clock = Callable[[], float]
TOKEN_TTL = 24 * 3600
_REFUSED = "the verification link is invalid or has expired"


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


class EmailVerification:
    def __init__(
        self,
        database: Database,
        accounts: Accounts,
        *,
        mailer: Mailer,
        limiter: RateLimiter,
        rate: RateLimit | None,
        sender: str,
        link_base: str,
        clock: Clock = time.time,
    ) -> None:
        self._db = database
        self._accounts = accounts
        self._mailer = mailer
        self._limiter = limiter
        self._rate = rate
        self._sender = sender
        self._link_base = link_base
        self._clock = clock

    async def send(self, tx: AsyncSession, user: User) -> None:
        """Store a new token for the user's address and mail the link, inside `tx`."""
        if user.email is None:
            raise InvalidRequest("the account has no email address to verify")
        await self._limiter.hit(tx, f"mail:{user.id}", self._rate)
        token = secrets.token_urlsafe(32)
        tx.add(
            VerificationToken(
                identifier=user.email, token=_hash(token), expires=utc(self._clock() + TOKEN_TTL)
            )
        )
        await tx.flush()
        separator = "&" if "?" in self._link_base else "?"
        link = f"{self._link_base}{separator}{urlencode({'email': user.email, 'token': token})}"
        try:
            await self._mailer.send(
                verification_message(sender=self._sender, to=user.email, link=link)
            )
        except MailError:
            # Raising rolls the token back: no usable token exists for a mail never sent.
            raise TemporarilyUnavailable(
                "the verification mail could not be sent; try again later",
                reason="mail_failed",
                retry_after=60,
            ) from None

    async def request(self, user_id: str) -> None:
        async with self._db.transaction() as tx:
            user = await tx.get(User, user_id)
            if user is None or user.email is None:
                raise InvalidRequest("the account has no email address to verify")
            if user.email_verified is not None:
                raise InvalidRequest("the email address is already verified")
            await self.send(tx, user)
        logs.auth_event(
            event="verification_mail", outcome="success", reason="sent", user_id=user_id
        )

    async def redeem(self, email: object, token: object) -> dict[str, Any]:
        # One answer for unknown, expired, used and mismatched tokens: nothing to probe.
        if (
            not isinstance(email, str)
            or not isinstance(token, str)
            or not token
            or len(token) > 512
        ):
            raise InvalidVerificationToken(_REFUSED, reason="malformed")
        address = email.strip().lower()
        now = utc(self._clock())
        async with self._db.transaction() as tx:
            taken = (
                await tx.execute(
                    delete(VerificationToken)
                    .where(
                        col(VerificationToken.identifier) == address,
                        col(VerificationToken.token) == _hash(token),
                        col(VerificationToken.expires) > now,
                    )
                    .returning(col(VerificationToken.identifier))
                )
            ).first()
            if taken is None:
                raise InvalidVerificationToken(_REFUSED, reason="unknown_token")
            user = (
                await tx.execute(select(User).where(col(User.email) == address))
            ).scalar_one_or_none()
            if user is None:  # the address changed since the mail was sent
                raise InvalidVerificationToken(_REFUSED, reason="address_changed")
            if user.email_verified is None:
                user.email_verified = now
                user.updated_at = now
            # The address is proven: its other outstanding tokens are pointless.
            await tx.execute(
                delete(VerificationToken).where(col(VerificationToken.identifier) == address)
            )
            await tx.flush()
            result = public_user(user, await self._accounts.accounts_of(tx, user.id))
        logs.auth_event(
            event="email_verified", outcome="success", reason="verified", user_id=user.id
        )
        return result

    async def forget(self, tx: AsyncSession, address: str | None) -> None:
        if address is not None:
            await tx.execute(
                delete(VerificationToken).where(col(VerificationToken.identifier) == address)
            )
