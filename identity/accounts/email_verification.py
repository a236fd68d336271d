"""Email verification: a single-use mailed token proves control of an address (docs/api.md).

A token is 256 bits from `secrets`, stored only as SHA-256 in `verification_tokens` with the
address and the user who asked, valid 24 hours. The mail is sent inside the transaction that
stores the token: if the mail server refuses, nothing is stored. Redeeming it is one `DELETE …
RETURNING`, so of two concurrent redemptions exactly one gets the row; then, by the rules of
docs/accounts.md, the address becomes the asking user's: refused (409) when another user holds it
verified, taken from its holder when they never proved it. An address that is merely pending
reserves nothing.

IDENTITY_RATE_LIMIT_MAIL counts per user and per recipient address (several users claiming one
address cannot mail it more often), every mail sent writes `email_verification_sent`, and the
mail names the account that asked — its providers and name — so a confirmation asked by someone
else's account can be recognised (docs/security.md, "Verification mail").
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from datetime import datetime
from urllib.parse import urlencode

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from identity import addresses
from identity.clock import Clock, utc
from identity.errors import (
    Conflict,
    InvalidRequest,
    InvalidVerificationToken,
    MailDisabled,
    MailUndeliverable,
    NotFound,
    RateLimited,
    TemporarilyUnavailable,
)
from identity.store.database import Database, Tx
from identity.store.models import (
    ACCOUNTS,
    UNDELIVERABLE,
    USERS,
    VERIFICATION_TOKENS,
    VERIFIED_BY_MAIL,
)
from identity.store.shapes import UserRecord

from . import audit
from .limits import Counter
from .mail import Asker, Mailer, MailError, verification_message

logger = logging.getLogger("identity.verification")
TOKEN_TTL = 24 * 3600
MAX_TOKEN_LENGTH = 512
_REFUSED = "the verification link is invalid or has expired"


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


class EmailVerification:
    def __init__(
        self,
        database: Database,
        *,
        mailer: Mailer,
        budget: Counter,
        sender: str,
        link_base: str,
        enabled: bool = True,
        clock: Clock = time.time,
    ) -> None:
        self._db = database
        self._mailer = mailer
        self._budget = budget
        self._sender = sender
        self._link_base = link_base
        self.enabled = enabled
        self._clock = clock

    def require_enabled(self) -> None:
        if not self.enabled:
            raise MailDisabled("email verification is turned off on this service")

    async def _charge(self, tx: Tx, user_id: str, address: str) -> RateLimited | None:
        """Count one mail against the user's budget and the recipient's; the 429 when over."""
        recipient = hashlib.sha256(address.encode()).hexdigest()[:32]  # no address in the table
        return await self._budget.hit(tx, f"mail:{user_id}") or await self._budget.hit(
            tx, f"mail:to:{recipient}"
        )

    async def charge(self, user_id: str, address: str) -> None:
        """Charge the budget for a mail to `address` in a transaction of its own, committed
        whatever follows: an answer about the address (409 held) costs what a mail costs, so
        probing addresses meets the limit like mailing them does. Free when `address` is the
        user's own (nothing will be mailed)."""
        self.require_enabled()
        async with self._db.transaction() as tx:
            current = (
                await tx.execute(select(USERS.c.email).where(USERS.c.id == user_id))
            ).scalar()
            refusal = None if current == address else await self._charge(tx, user_id, address)
        if refusal is not None:
            raise refusal

    async def send(
        self,
        tx: Tx,
        user_id: str,
        address: str,
        *,
        context: audit.Context,
        charged: bool = False,
    ) -> None:
        """Store a new token for `address` and mail its link, inside `tx` (`charged`: the
        budget was charged already, by `charge`)."""
        self.require_enabled()
        # The provider said this address takes no mail (Apple's relay, forwarding off).
        undeliverable = select(UNDELIVERABLE.c.address).where(UNDELIVERABLE.c.address == address)
        if (await tx.execute(undeliverable)).first() is not None:
            raise MailUndeliverable(
                "this address takes no mail at present (its provider says so)",
                reason="mail_undeliverable",
            )
        refusal = None if charged else await self._charge(tx, user_id, address)
        if refusal is not None:
            raise refusal
        asker = await _asker(tx, user_id, address)
        token = secrets.token_urlsafe(32)
        await tx.execute(
            VERIFICATION_TOKENS.insert().values(
                identifier=address,
                token=_hash(token),
                expires=utc(self._clock() + TOKEN_TTL),
                user_id=user_id,
            )
        )
        separator = "&" if "?" in self._link_base else "?"
        link = f"{self._link_base}{separator}{urlencode({'email': address, 'token': token})}"
        try:
            await self._mailer.send(
                verification_message(sender=self._sender, to=address, link=link, asker=asker)
            )
        except MailError:
            # Raising rolls the token back: no usable token exists for a mail never sent.
            raise TemporarilyUnavailable(
                "the verification mail could not be sent; try again later",
                reason="mail_failed",
                retry_after=60,
            ) from None
        await audit.record(
            tx, "email_verification_sent", at=utc(self._clock()), context=context, user_id=user_id
        )

    async def request(self, user_id: str, *, context: audit.Context) -> None:
        """Mail a new link for the user's pending address, or for their unverified one."""
        self.require_enabled()
        async with self._db.transaction() as tx:
            user = (await tx.execute(select(USERS).where(USERS.c.id == user_id))).mappings().first()
            if user is None:
                raise NotFound("no such user")
            address = user["pending_email"] or (
                user["email"] if user["email_verified"] is None else None
            )
            if address is None:
                raise InvalidRequest("there is no unverified email address to verify")
            await self.send(tx, user_id, address, context=context)

    async def redeem(self, email: object, token: object, *, context: audit.Context) -> UserRecord:
        # One answer for unknown, expired, used and mismatched tokens: nothing to probe.
        address = addresses.normalize(email)
        if address is None or not isinstance(token, str) or not 0 < len(token) <= MAX_TOKEN_LENGTH:
            raise InvalidVerificationToken(_REFUSED, reason="malformed")
        self.require_enabled()
        now = utc(self._clock())
        try:
            async with self._db.transaction() as tx:
                return await self._redeem(tx, address, _hash(token), now, context)
        except IntegrityError:
            # A sign-in took the address between our check and our write.
            raise Conflict("this email address belongs to another account") from None

    async def _redeem(
        self, tx: Tx, address: str, token_hash: str, now: datetime, context: audit.Context
    ) -> UserRecord:
        t = VERIFICATION_TOKENS
        taken = (
            await tx.execute(
                delete(t)
                .where(t.c.identifier == address, t.c.token == token_hash, t.c.expires > now)
                .returning(t.c.user_id)
            )
        ).first()
        if taken is None:
            raise InvalidVerificationToken(_REFUSED, reason="unknown_token")
        user_id = taken.user_id
        user = (
            (await tx.execute(select(USERS).where(USERS.c.id == user_id).with_for_update()))
            .mappings()
            .first()
        )
        if user is None:
            raise InvalidVerificationToken(_REFUSED, reason="user_gone")
        if user["email"] == address:
            reason = "current"
        elif user["pending_email"] == address:
            reason = "pending_email"
        else:  # the user has asked for another address since this mail was sent
            raise InvalidVerificationToken(_REFUSED, reason="address_changed")
        holder = (
            (
                await tx.execute(
                    select(USERS.c.id, USERS.c.email_verified).where(
                        USERS.c.email == address, USERS.c.id != user_id
                    )
                )
            )
            .mappings()
            .first()
        )
        if holder is not None:
            if holder["email_verified"] is not None:
                # Raising rolls the DELETE back: the token stays as it was.
                raise Conflict("this email address belongs to another account")
            await tx.execute(
                update(USERS).where(USERS.c.id == holder["id"]).values(email=None, updated_at=now)
            )
            await audit.record(
                tx,
                "email_released",
                at=now,
                context=context,
                user_id=holder["id"],
                reason="proven_by_mail",
            )
        changes: dict[str, object] = {"pending_email": None, "updated_at": now}
        if user["email"] != address or user["email_verified"] is None:
            # Proven by our mail only: never enough to link a sign-in by address (docs/accounts.md).
            changes.update(email=address, email_verified=now, email_verified_by=VERIFIED_BY_MAIL)
        if reason == "pending_email":
            changes["email_edited"] = True  # the user's own choice: sign-ins no longer change it
        # The address is proven: its other outstanding tokens, and the old address's, are void.
        await tx.execute(delete(t).where(t.c.user_id == user_id))
        row = (
            (
                await tx.execute(
                    update(USERS).where(USERS.c.id == user_id).values(**changes).returning(USERS)
                )
            )
            .mappings()
            .one()
        )
        await audit.record(
            tx, "email_verified", at=now, context=context, user_id=user_id, reason=reason
        )
        return UserRecord.of(row)


async def _asker(tx: Tx, user_id: str, recipient: str) -> Asker:
    """The account that asked, as the mail names it: its providers, name, and its address when
    that is not the recipient (never a token)."""
    user = (
        (await tx.execute(select(USERS.c.name, USERS.c.email).where(USERS.c.id == user_id)))
        .mappings()
        .one()
    )
    providers = (
        await tx.execute(
            select(ACCOUNTS.c.provider)
            .where(ACCOUNTS.c.user_id == user_id)
            .order_by(ACCOUNTS.c.created_at, ACCOUNTS.c.id)
        )
    ).scalars()
    email = user["email"] if user["email"] != recipient else None
    return Asker(providers=tuple(dict.fromkeys(providers)), name=user["name"], email=email)
