"""Users, linked accounts and sessions: the sign-in transaction of SPEC §6.

A sign-in is one transaction: remember the id_token (single use), find or create the user by
rules 1-4, start a session, mint the access token, commit. Two replicas signing in the same new
person at once race on unique constraints; the loser's transaction is rolled back whole and
retried, and the retry finds the winner's rows (rule 1).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from types import SimpleNamespace
from typing import Any

from sqlalchemy import bindparam, delete
from sqlalchemy import select as sa_select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlmodel import col

from .database import Database, dialect_name
from .errors import AccountConflict, InvalidRequest
from .limits import RateLimiter
from .models import Account, UsedIdToken, User, new_id, public_user, utc
from .sessions import Mint, Sessions
from .settings import RateLimit
from .tokens import profile_claims
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


_USERS = User.__table__  # type: ignore[attr-defined]
_ACCOUNTS = Account.__table__  # type: ignore[attr-defined]
_USER_COLUMNS = (
    _USERS.c.id,
    _USERS.c.name,
    _USERS.c.email,
    _USERS.c.email_verified,
    _USERS.c.image,
    _USERS.c.name_edited,
    _USERS.c.image_edited,
    _USERS.c.email_edited,
    _USERS.c.created_at,
    _USERS.c.updated_at,
)
# Statements built once; executed with bound parameters on the sign-in path.
_OWN = _ACCOUNTS.alias("own")
# A returning user: the user, the account that signed in, and all of the user's accounts (one
# row each), in one round trip.
_BY_ACCOUNT = (
    sa_select(
        *_USER_COLUMNS,
        _OWN.c.id.label("account_id"),
        _ACCOUNTS.c.provider,
        _ACCOUNTS.c.provider_account_id,
    )
    .select_from(
        _OWN.join(_USERS, _USERS.c.id == _OWN.c.user_id).join(
            _ACCOUNTS, _ACCOUNTS.c.user_id == _USERS.c.id
        )
    )
    .where(_OWN.c.provider == bindparam("provider"), _OWN.c.provider_account_id == bindparam("sub"))
    .order_by(_ACCOUNTS.c.created_at)
)
_BY_EMAIL = sa_select(*_USER_COLUMNS).where(_USERS.c.email == bindparam("email"))
_ACCOUNTS_OF = (
    sa_select(_ACCOUNTS.c.provider, _ACCOUNTS.c.provider_account_id)
    .where(_ACCOUNTS.c.user_id == bindparam("uid"))
    .order_by(_ACCOUNTS.c.created_at)
)


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
                async with self._db.core() as tx:
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
        tx: AsyncConnection,
        identity: VerifiedIdentity,
        client_id: str,
        user_agent: str | None,
        scope: str,
        mint: Mint,
        provider_tokens: ProviderTokens | None,
    ) -> SignIn:
        stamp = utc(self._clock())
        if not await self._remember_id_token(tx, identity):
            raise InvalidRequest("the subject token was already used", reason="replayed")
        user, account_id, created, accounts = await self._upsert(tx, identity, stamp)
        # Per user, successful sign-ins and refreshes share one budget; a 429 rolls all back.
        await self._limiter.hit(tx, f"user:{user.id}", self._subject_limit)
        if provider_tokens is not None:
            await tx.execute(
                _ACCOUNTS.update()
                .where(_ACCOUNTS.c.id == account_id)
                .values(**asdict(provider_tokens), updated_at=stamp)
            )
        session_id, refresh_token = await self._sessions.start(
            tx, user_id=user.id, client_id=client_id, user_agent=user_agent, scope=scope
        )
        access_token, expires_in = mint(user.id, session_id, scope, profile_claims(user))
        return SignIn(
            user=public_user(user, accounts),
            session_id=session_id,
            refresh_token=refresh_token,
            access_token=access_token,
            expires_in=expires_in,
            created_user=created,
        )

    async def _remember_id_token(self, tx: AsyncConnection, identity: VerifiedIdentity) -> bool:
        """Insert the token's hash; False when it was there already (a replay)."""
        values = {"token_hash": identity.token_hash, "expires_at": utc(identity.expires_at)}
        insert = postgresql.insert if dialect_name(tx) == "postgresql" else sqlite.insert
        # ON CONFLICT DO NOTHING: a concurrent replay waits for the first transaction, then
        # sees its row, instead of failing with an error.
        statement = insert(UsedIdToken).values(**values).on_conflict_do_nothing()
        result = await tx.execute(statement)
        return bool(result.rowcount == 1)

    async def _upsert(
        self, tx: AsyncConnection, identity: VerifiedIdentity, stamp: datetime
    ) -> tuple[SimpleNamespace, str, bool, list[Any]]:
        """The user (a plain record), the account id, whether the user is new, their accounts."""
        rows = (
            await tx.execute(_BY_ACCOUNT, {"provider": identity.provider, "sub": identity.subject})
        ).all()
        if rows:  # rule 1: a returning user
            user = SimpleNamespace(**rows[0]._mapping)
            await self._refresh_profile(tx, user, identity, stamp)
            return user, user.account_id, False, list(rows)

        if identity.email is not None:
            holder = (await tx.execute(_BY_EMAIL, {"email": identity.email})).first()
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
                user = SimpleNamespace(**holder._mapping)
                account_id = await _insert_account(tx, user.id, identity, stamp)
                accounts = (await tx.execute(_ACCOUNTS_OF, {"uid": user.id})).all()
                return user, account_id, False, list(accounts)

        user = SimpleNamespace(  # rule 4: a new person
            id=new_id(),
            name=identity.name,
            email=identity.email,
            email_verified=stamp if identity.email_verified else None,
            image=identity.picture,
            name_edited=False,
            image_edited=False,
            email_edited=False,
            created_at=stamp,
            updated_at=stamp,
        )
        await tx.execute(_USERS.insert().values(**vars(user)))
        account_id = await _insert_account(tx, user.id, identity, stamp)
        only = SimpleNamespace(provider=identity.provider, provider_account_id=identity.subject)
        return user, account_id, True, [only]

    async def _refresh_profile(
        self,
        tx: AsyncConnection,
        user: SimpleNamespace,
        identity: VerifiedIdentity,
        stamp: datetime,
    ) -> None:
        changes: dict[str, Any] = {}
        if not user.name_edited and identity.name and identity.name != user.name:
            changes["name"] = identity.name
        if not user.image_edited and identity.picture and identity.picture != user.image:
            changes["image"] = identity.picture
        if (
            not user.email_edited
            and identity.email_verified
            and identity.email is not None
            and identity.email != user.email
        ):
            other = (await tx.execute(_BY_EMAIL, {"email": identity.email})).first()
            if other is None:  # never take an address another user holds
                changes.update(email=identity.email, email_verified=stamp)
        if changes:
            changes["updated_at"] = stamp
            await tx.execute(_USERS.update().where(_USERS.c.id == user.id).values(**changes))
            vars(user).update(changes)

    async def accounts_of(self, tx: AsyncSession, user_id: str) -> list[Any]:
        return list((await tx.execute(_ACCOUNTS_OF, {"uid": user_id})).all())

    async def prune_used_id_tokens(self) -> int:
        async with self._db.transaction() as tx:
            result = await tx.execute(
                delete(UsedIdToken).where(col(UsedIdToken.expires_at) < utc(self._clock()))
            )
            return int(result.rowcount)  # type: ignore[attr-defined]


async def _insert_account(
    tx: AsyncConnection, user_id: str, identity: VerifiedIdentity, stamp: datetime
) -> str:
    account_id = new_id()
    await tx.execute(
        _ACCOUNTS.insert().values(
            id=account_id,
            user_id=user_id,
            type="oidc",
            provider=identity.provider,
            provider_account_id=identity.subject,
            created_at=stamp,
            updated_at=stamp,
        )
    )
    return account_id
