"""Users, linked accounts and sessions: the sign-in transaction of SPEC §6.

A sign-in is one transaction: remember the id_token (single use), find or create the user by
rules 1-4, start a session, mint the access token, commit. Two replicas signing in the same new
person at once race on unique constraints; the loser's transaction is rolled back whole and
retried, and the retry finds the winner's rows (rule 1).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from .database import Database
from .errors import AccountConflict, InvalidRequest
from .limits import RateLimiter
from .models import Account, UsedIdToken, User, iso, new_id, utc
from .sessions import Mint, Sessions
from .settings import RateLimit
from .upstream import VerifiedIdentity

logger = logging.getLogger("identity.accounts")
Clock = Callable[[], float]
_ATTEMPTS = 4


@dataclass(frozen=True)
class ProviderTokens:
    """Provider tokens from the callback, already encrypted (or None when not stored)."""

    access_token: str | None = None
    refresh_token: str | None = None
    id_token: str | None = None
    expires_at: int | None = None
    token_type: str | None = None
    scope: str | None = None
    session_state: str | None = None


@dataclass(frozen=True)
class SignIn:
    user: dict[str, Any]
    session_id: str
    refresh_token: str
    access_token: str
    expires_in: int
    created_user: bool


class Accounts:
    def __init__(
        self,
        database: Database,
        sessions: Sessions,
        *,
        limiter: RateLimiter,
        subject_limit: RateLimit | None,
        clock: Clock,
    ) -> None:
        self._db = database
        self._sessions = sessions
        self._limiter = limiter
        self._subject_limit = subject_limit
        self._clock = clock

    async def sign_in(
        self,
        identity: VerifiedIdentity,
        *,
        client_id: str,
        user_agent: str | None,
        scope: str,
        mint: Mint,
        provider_tokens: ProviderTokens | None = None,
    ) -> SignIn:
        for attempt in range(_ATTEMPTS):
            try:
                async with self._db.transaction() as tx:
                    return await self._sign_in(
                        tx, identity, client_id, user_agent, scope, mint, provider_tokens
                    )
            except IntegrityError:
                # A concurrent sign-in of the same person committed first; start over and
                # find its rows. Nothing of this attempt was written.
                if attempt == _ATTEMPTS - 1:
                    raise
                logger.info("sign-in raced a concurrent one; retrying")
        raise AssertionError("unreachable")

    async def _sign_in(
        self,
        tx: AsyncSession,
        identity: VerifiedIdentity,
        client_id: str,
        user_agent: str | None,
        scope: str,
        mint: Mint,
        provider_tokens: ProviderTokens | None,
    ) -> SignIn:
        now = self._clock()
        if not await self._remember_id_token(tx, identity):
            raise InvalidRequest("the subject token was already used", reason="replayed")
        user, account, created = await self._upsert(tx, identity, now)
        # Per user, successful sign-ins and refreshes share one budget; a 429 rolls all back.
        await self._limiter.hit(tx, f"user:{user.id}", self._subject_limit)
        if provider_tokens is not None:
            _store_provider_tokens(account, provider_tokens)
        session, refresh_token = self._sessions.start(
            tx, user_id=user.id, client_id=client_id, user_agent=user_agent, scope=scope
        )
        await tx.flush()
        access_token, expires_in = mint(user, session.id, scope)
        accounts = await self.accounts_of(tx, user.id)
        return SignIn(
            user=public_user(user, accounts),
            session_id=session.id,
            refresh_token=refresh_token,
            access_token=access_token,
            expires_in=expires_in,
            created_user=created,
        )

    async def _remember_id_token(self, tx: AsyncSession, identity: VerifiedIdentity) -> bool:
        """Insert the token's hash; False when it was there already (a replay)."""
        values = {"token_hash": identity.token_hash, "expires_at": utc(identity.expires_at)}
        insert = postgresql.insert if tx.get_bind().dialect.name == "postgresql" else sqlite.insert
        # ON CONFLICT DO NOTHING: a concurrent replay waits for the first transaction, then
        # sees its row, instead of failing with an error.
        statement = insert(UsedIdToken).values(**values).on_conflict_do_nothing()
        result = await tx.execute(statement)
        return bool(result.rowcount == 1)  # type: ignore[attr-defined]

    async def _upsert(
        self, tx: AsyncSession, identity: VerifiedIdentity, now: float
    ) -> tuple[User, Account, bool]:
        stamp = utc(now)
        found = (
            await tx.execute(
                select(Account, User)
                .join(User, col(User.id) == col(Account.user_id))
                .where(
                    col(Account.provider) == identity.provider,
                    col(Account.provider_account_id) == identity.subject,
                )
            )
        ).first()
        if found is not None:  # rule 1: a returning user
            account, user = found
            await self._refresh_profile(tx, user, identity, stamp)
            return user, account, False

        if identity.email is not None:
            holder = (
                await tx.execute(select(User).where(col(User.email) == identity.email))
            ).scalar_one_or_none()
            if holder is not None:
                # Rule 2: link only when both sides have proven ownership of the address.
                if not (
                    identity.email_verified
                    and identity.email_authoritative
                    and holder.email_verified is not None
                ):
                    raise AccountConflict(
                        "an account with this email exists; sign in with it first",
                        reason="account_conflict",
                    )
                account = _new_account(holder.id, identity, stamp)
                tx.add(account)
                await tx.flush()
                return holder, account, False

        user = User(  # rule 4: a new person
            id=new_id(),
            name=identity.name,
            email=identity.email,
            email_verified=stamp if identity.email_verified else None,
            image=identity.picture,
            created_at=stamp,
            updated_at=stamp,
        )
        tx.add(user)
        await tx.flush()
        account = _new_account(user.id, identity, stamp)
        tx.add(account)
        await tx.flush()
        return user, account, True

    async def _refresh_profile(
        self, tx: AsyncSession, user: User, identity: VerifiedIdentity, stamp: Any
    ) -> None:
        changed = False
        if not user.name_edited and identity.name and identity.name != user.name:
            user.name, changed = identity.name, True
        if not user.image_edited and identity.picture and identity.picture != user.image:
            user.image, changed = identity.picture, True
        if (
            not user.email_edited
            and identity.email_verified
            and identity.email is not None
            and identity.email != user.email
        ):
            other = (
                await tx.execute(select(col(User.id)).where(col(User.email) == identity.email))
            ).scalar_one_or_none()
            if other is None:  # never take an address another user holds
                user.email, user.email_verified, changed = identity.email, stamp, True
        if changed:
            user.updated_at = stamp
            await tx.flush()

    async def accounts_of(self, tx: AsyncSession, user_id: str) -> list[Account]:
        result = await tx.execute(
            select(Account).where(col(Account.user_id) == user_id).order_by(col(Account.created_at))
        )
        return list(result.scalars())

    async def user(self, user_id: str) -> dict[str, Any] | None:
        """The public form of a user, or None when the user is gone."""
        async with self._db.reader() as tx:
            user = await tx.get(User, user_id)
            if user is None:
                return None
            return public_user(user, await self.accounts_of(tx, user_id))

    async def prune_used_id_tokens(self) -> int:
        async with self._db.transaction() as tx:
            result = await tx.execute(
                delete(UsedIdToken).where(col(UsedIdToken.expires_at) < utc(self._clock()))
            )
            return int(result.rowcount)  # type: ignore[attr-defined]


def _new_account(user_id: str, identity: VerifiedIdentity, stamp: Any) -> Account:
    return Account(
        user_id=user_id,
        type="oidc",
        provider=identity.provider,
        provider_account_id=identity.subject,
        created_at=stamp,
        updated_at=stamp,
    )


def _store_provider_tokens(account: Account, tokens: ProviderTokens) -> None:
    for name in ProviderTokens.__dataclass_fields__:
        setattr(account, name, getattr(tokens, name))


def public_user(user: User, accounts: list[Account]) -> dict[str, Any]:
    return {
        "id": user.id,
        "name": user.name,
        "email": user.email,
        "email_verified": iso(user.email_verified),
        "image": user.image,
        "created_at": iso(user.created_at),
        "updated_at": iso(user.updated_at),
        "accounts": [
            {"provider": a.provider, "provider_account_id": a.provider_account_id} for a in accounts
        ],
    }
