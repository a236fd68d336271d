"""A user's own account: reading it, changing it, deleting it, linking and unlinking providers.

Access style: SQLAlchemy Core on the typed tables, one transaction per operation, each audit
event in the transaction of its change. The rules for addresses are docs/accounts.md's: a new
address is only pending until its mailed link is redeemed, and an address held verified by
another user is refused at once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from identity.clock import Clock, utc
from identity.errors import (
    AccountConflict,
    Conflict,
    InvalidSubjectToken,
    NotFound,
)
from identity.store.database import Database, Tx
from identity.store.models import ACCOUNTS, USERS, new_id
from identity.store.shapes import AccountPublic, UserPublic, UserRecord
from identity.tokens.apple_revocation import StoredAppleToken
from identity.tokens.id_tokens import VerifiedIdentity

from . import audit, outbox
from .email_verification import EmailVerification
from .outbox import NOBODY, Notices
from .sessions import Ended, end_sessions
from .sign_in import REMEMBER_REPLAY


async def apple_tokens(
    tx: Tx, *, user_id: str | None = None, account_id: str | None = None
) -> list[StoredAppleToken]:
    """The stored (sealed) Apple refresh tokens of a user's or one account's Apple accounts,
    read in the transaction that deletes them: their revocations are written in it too."""
    statement = select(ACCOUNTS.c.refresh_token, ACCOUNTS.c.id_token).where(
        ACCOUNTS.c.provider == "apple", ACCOUNTS.c.refresh_token.is_not(None)
    )
    if user_id is not None:
        statement = statement.where(ACCOUNTS.c.user_id == user_id)
    if account_id is not None:
        statement = statement.where(ACCOUNTS.c.id == account_id)
    rows = (await tx.execute(statement)).all()
    return [StoredAppleToken(r.refresh_token, r.id_token) for r in rows]


async def delete_user(
    tx: Tx,
    notices: Notices,
    user_id: str,
    *,
    at: datetime,
    context: audit.Context,
    reason: str = "user_deleted",
    detail: dict[str, Any] | None = None,
) -> Ended:
    """The one way a user is deleted (DELETE /users/me, an admin, the CLI, a provider's signal
    that unlinks their last account): its sessions end as every session does (their notices,
    the revocation feed), its stored Apple tokens get their revocations, the user goes with its
    accounts, rotated tokens and mail tokens (ON DELETE CASCADE), and `user.deleted` is told;
    all on the caller's transaction. NotFound when there is no such user."""
    stored = await apple_tokens(tx, user_id=user_id) if notices.apple is not None else []
    ended = await end_sessions(
        tx,
        notices,
        dialect=tx.dialect,
        reason=reason,
        at=at,
        context=context,
        event="user_deleted",
        user_id=user_id,
        always=True,
        detail=detail,
    )
    await outbox.revoke_at_apple(
        tx, notices, stored, user_id=user_id, at=at, audit_event_id=ended.event_id
    )
    result = await tx.execute(delete(USERS).where(USERS.c.id == user_id))
    if not result.rowcount:
        raise NotFound("no such user")  # rolls back everything written above
    await outbox.tell(
        tx, notices, "user.deleted", {"user_id": user_id}, at=at, audit_event_id=ended.event_id
    )
    return ended


async def unlink_account(
    tx: Tx,
    notices: Notices,
    *,
    user_id: str,
    account_id: str,
    provider: str,
    at: datetime,
    context: audit.Context,
    end: bool = False,
    reason: str = "account_unlinked",
    detail: dict[str, Any] | None = None,
) -> Ended:
    """The one way an account is unlinked (the user's own unlink, a provider's signal): the
    `account_unlinked` event, the sessions it started ended when `end` (the user's own unlink
    leaves them, docs/accounts.md), its stored Apple token's revocation, the row deleted and
    `account.unlinked` told; all on the caller's transaction, which holds the user's row."""
    stored = await apple_tokens(tx, account_id=account_id) if notices.apple is not None else []
    ended = await end_sessions(
        tx,
        notices,
        dialect=tx.dialect,
        reason=reason,
        at=at,
        context=context,
        event="account_unlinked",
        user_id=user_id,
        account_id=account_id if end else "",  # "": no session matches, the event is recorded
        always=True,
        detail={"provider": provider, **(detail or {})},
    )
    await outbox.revoke_at_apple(
        tx, notices, stored, user_id=user_id, at=at, audit_event_id=ended.event_id
    )
    await tx.execute(delete(ACCOUNTS).where(ACCOUNTS.c.id == account_id))
    payload = {"user_id": user_id, "provider": provider}
    await outbox.tell(
        tx, notices, "account.unlinked", payload, at=at, audit_event_id=ended.event_id
    )
    return ended


async def public_user(tx: Tx, user_id: str, *, lock: bool = False) -> UserPublic | None:
    """The user's public form, read in `tx` (locked for update when asked)."""
    statement = select(USERS).where(USERS.c.id == user_id)
    row = (await tx.execute(statement.with_for_update() if lock else statement)).mappings().first()
    if row is None:
        return None
    accounts = (
        await tx.execute(
            select(ACCOUNTS.c.provider, ACCOUNTS.c.provider_account_id)
            .where(ACCOUNTS.c.user_id == user_id)
            .order_by(ACCOUNTS.c.created_at, ACCOUNTS.c.id)
        )
    ).mappings()
    return UserRecord.of(row).public([AccountPublic(**a) for a in accounts])


@dataclass(frozen=True, slots=True)
class ProfileChange:
    """A validated PATCH /users/me: `fields` names what was sent (a `name` or `image` of None
    clears it); `email` asks for a new address."""

    fields: frozenset[str]
    name: str | None = None
    image: str | None = None
    email: str | None = None


class Users:
    def __init__(
        self,
        database: Database,
        verification: EmailVerification,
        *,
        clock: Clock = time.time,
        notices: Notices = NOBODY,
    ) -> None:
        self._db = database
        self._verification = verification
        self._clock = clock
        self._notices = notices

    async def get(self, user_id: str) -> UserPublic:
        async with self._db.transaction() as tx:
            user = await public_user(tx, user_id)
        if user is None:
            raise NotFound("no such user")
        return user

    async def update(
        self, user_id: str, changes: ProfileChange, *, context: audit.Context
    ) -> UserPublic:
        """Apply a validated PATCH: nothing changes unless all of it can."""
        fields = changes.fields
        if changes.email is not None:
            # Charged before the address is looked at, and committed: a held address's 409
            # costs what a mail costs, so probing addresses meets the limit (no oracle).
            await self._verification.charge(user_id, changes.email)
        elif "email" in fields:
            self._verification.require_enabled()  # before anything is written
        now = utc(self._clock())
        async with self._db.transaction() as tx:
            user = await public_user(tx, user_id, lock=True)
            if user is None:
                raise NotFound("no such user")
            values: dict[str, object] = {}
            if "name" in fields:
                values.update(name=changes.name, name_edited=True)
            if "image" in fields:
                values.update(image=changes.image, image_edited=True)
            if changes.email is not None and changes.email != user.email:
                await self._ask_for(tx, user_id, changes.email, now, context)
                values["pending_email"] = changes.email
            elif changes.email is not None and user.pending_email is not None:
                values["pending_email"] = None  # back to the current address: nothing pending
            if values:
                values["updated_at"] = now
                await tx.execute(update(USERS).where(USERS.c.id == user_id).values(**values))
                edited = sorted(fields & {"name", "image"})
                if edited:
                    event_id = await audit.record(
                        tx, "user_updated", at=now, context=context, user_id=user_id, fields=edited
                    )
                    payload = {"user_id": user_id, "fields": edited}
                    await outbox.tell(
                        tx, self._notices, "user.updated", payload, at=now, audit_event_id=event_id
                    )
            result = await public_user(tx, user_id)
        if result is None:  # we hold its row lock: it cannot have gone
            raise NotFound("no such user")
        return result

    async def _ask_for(
        self, tx: Tx, user_id: str, address: str, now: datetime, context: audit.Context
    ) -> None:
        holder = (
            (await tx.execute(select(USERS.c.email_verified).where(USERS.c.email == address)))
            .mappings()
            .first()
        )
        if holder is not None and holder["email_verified"] is not None:
            raise Conflict("this email address belongs to another account")
        # Mail inside the transaction: if it cannot be sent, nothing changes.
        await self._verification.send(tx, user_id, address, context=context, charged=True)
        await audit.record(
            tx, "email_change_requested", at=now, context=context, user_id=user_id, fields=["email"]
        )

    async def delete(self, user_id: str, *, context: audit.Context, **detail: Any) -> None:
        """The user, accounts, sessions and mail tokens, gone in one transaction."""
        now = utc(self._clock())
        async with self._db.transaction() as tx:
            await delete_user(tx, self._notices, user_id, at=now, context=context, detail=detail)

    async def link(
        self,
        user_id: str,
        identity: VerifiedIdentity,
        *,
        context: audit.Context,
    ) -> UserPublic:
        """Link another provider's account to this user, whatever its address says."""
        now = utc(self._clock())
        try:
            async with self._db.transaction() as tx:
                owner = (
                    await tx.execute(
                        select(ACCOUNTS.c.user_id).where(
                            ACCOUNTS.c.provider == identity.provider,
                            ACCOUNTS.c.provider_account_id == identity.account_key,
                        )
                    )
                ).first()
                if owner is not None and owner.user_id != user_id:
                    raise AccountConflict(
                        "this account belongs to another user", reason="account_conflict"
                    )
                if (
                    await tx.fetchrow(REMEMBER_REPLAY, identity.replay_key, identity.replay_expires)
                    is None
                ):
                    # The same answer as any other bad id_token (docs/security.md).
                    raise InvalidSubjectToken("replayed")
                if owner is None:
                    await tx.execute(
                        ACCOUNTS.insert().values(
                            id=new_id(),
                            user_id=user_id,
                            type="oidc",
                            provider=identity.provider,
                            provider_account_id=identity.account_key,
                            created_at=now,
                            updated_at=now,
                        )
                    )
                    event_id = await audit.record(
                        tx,
                        "account_linked",
                        at=now,
                        context=context,
                        user_id=user_id,
                        provider=identity.provider,
                    )
                    payload = {"user_id": user_id, "provider": identity.provider}
                    await outbox.tell(
                        tx,
                        self._notices,
                        "account.linked",
                        payload,
                        at=now,
                        audit_event_id=event_id,
                    )
                user = await public_user(tx, user_id)
        except IntegrityError:
            # The same account was linked elsewhere between our read and our write.
            raise AccountConflict("this account belongs to another user") from None
        if user is None:
            raise NotFound("no such user")
        return user

    async def unlink(
        self,
        user_id: str,
        provider: str,
        account_key: str,
        *,
        context: audit.Context,
    ) -> None:
        async with self._db.transaction() as tx:
            # The user's row, locked: two concurrent unlinks cannot both see a second account.
            if await public_user(tx, user_id, lock=True) is None:
                raise NotFound("no such user")
            accounts = (
                await tx.execute(
                    select(
                        ACCOUNTS.c.id, ACCOUNTS.c.provider, ACCOUNTS.c.provider_account_id
                    ).where(ACCOUNTS.c.user_id == user_id)
                )
            ).all()
            target = [
                a.id
                for a in accounts
                if (a.provider, a.provider_account_id) == (provider, account_key)
            ]
            if not target:
                raise NotFound("no such account of this user")
            if len(accounts) == 1:
                raise Conflict("this is the user's only account: they could never sign in again")
            await unlink_account(
                tx,
                self._notices,
                user_id=user_id,
                account_id=target[0],
                provider=provider,
                at=utc(self._clock()),
                context=context,
            )
