"""The operators' back office: one service behind both the admin API and `identity users`.

Listing is newest first with keyset pagination on (created_at, id); the cursor is opaque to the
caller and strictly validated on the way back by `listing` (anything but a cursor of this
listing is a 400).
Every action writes an audit event naming who did it (docs/admin.md).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import and_, exists, or_, select, update

from identity.clock import Clock, as_utc, utc
from identity.errors import InvalidRequest, NotFound
from identity.store.database import Database
from identity.store.models import ACCOUNTS, USERS
from identity.store.shapes import AdminAccount, AdminUser, AdminUserList, UserRecord

from . import audit, outbox
from .listing import MAX_LIMIT, read_user_cursor, user_cursor
from .sessions import Sessions
from .users import Users

__all__ = ["MAX_LIMIT", "Admin"]


class Admin:
    def __init__(
        self, database: Database, users: Users, sessions: Sessions, *, clock: Clock = time.time
    ) -> None:
        self._db = database
        self._users = users
        self._sessions = sessions
        self._clock = clock

    async def search(
        self,
        *,
        email: str | None = None,
        provider: str | None = None,
        provider_account_id: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> AdminUserList:
        if not 1 <= limit <= MAX_LIMIT:
            raise InvalidRequest(f"limit: must be between 1 and {MAX_LIMIT}")
        conditions: list[Any] = []
        if email is not None:
            conditions.append(USERS.c.email == email.strip().lower())
        if provider is not None or provider_account_id is not None:
            account = [ACCOUNTS.c.user_id == USERS.c.id]
            if provider is not None:
                account.append(ACCOUNTS.c.provider == provider)
            if provider_account_id is not None:
                account.append(ACCOUNTS.c.provider_account_id == provider_account_id)
            conditions.append(exists().where(*account))
        if cursor is not None:
            created, user_id = read_user_cursor(cursor)
            conditions.append(
                or_(
                    USERS.c.created_at < created,
                    and_(USERS.c.created_at == created, USERS.c.id < user_id),
                )
            )
        statement = (
            select(USERS)
            .where(and_(True, *conditions))
            .order_by(USERS.c.created_at.desc(), USERS.c.id.desc())
            .limit(limit + 1)
        )
        async with self._db.transaction() as tx:
            rows = list((await tx.execute(statement)).mappings().all())
            users = await self._with_accounts(tx, rows[:limit])
        more = len(rows) > limit
        return AdminUserList(
            users=users,
            next_cursor=user_cursor(users[-1].created_at, users[-1].id) if more else None,
        )

    async def detail(self, user_id: str) -> AdminUser:
        async with self._db.transaction() as tx:
            row = (await tx.execute(select(USERS).where(USERS.c.id == user_id))).mappings().first()
            if row is None:
                raise NotFound("no such user")
            (user,) = await self._with_accounts(tx, [row])
        return user.model_copy(update={"sessions": await self._sessions.live(user_id)})

    async def set_disabled(
        self, user_id: str, disabled: bool, *, context: audit.Context, **detail: Any
    ) -> AdminUser:
        """Disable (ending every session at once) or enable a user; idempotent."""
        now = utc(self._clock())
        async with self._db.transaction() as tx:
            condition = (
                USERS.c.disabled_at.is_(None) if disabled else USERS.c.disabled_at.is_not(None)
            )
            changed = await tx.execute(
                update(USERS)
                .where(USERS.c.id == user_id, condition)
                .values(disabled_at=now if disabled else None, updated_at=now)
            )
            if changed.rowcount:
                if disabled:  # every session ends with it (its count in the event)
                    ended = await self._sessions.ending(
                        tx,
                        reason="user_disabled",
                        context=context,
                        event="user_disabled",
                        user_id=user_id,
                        always=True,
                        counted=True,
                        detail=detail,
                    )
                    event_id = ended.event_id
                else:
                    event_id = await audit.record(
                        tx, "user_enabled", at=now, context=context, user_id=user_id, **detail
                    )
                await outbox.tell(
                    tx,
                    self._sessions.notices,
                    "user.disabled" if disabled else "user.enabled",
                    {"user_id": user_id},
                    at=now,
                    audit_event_id=event_id,
                )
            elif (
                await tx.execute(select(USERS.c.id).where(USERS.c.id == user_id))
            ).first() is None:
                raise NotFound("no such user")
        return await self.detail(user_id)

    async def revoke_sessions(self, user_id: str, *, context: audit.Context, **detail: Any) -> int:
        await self.detail(user_id)  # 404 for an unknown id
        return await self._sessions.end_all(
            user_id, context=context, event="sessions_revoked", **detail
        )

    async def delete(self, user_id: str, *, context: audit.Context, **detail: Any) -> None:
        await self._users.delete(user_id, context=context, **detail)

    async def _with_accounts(self, tx: Any, rows: Sequence[Any]) -> list[AdminUser]:
        ids = [r["id"] for r in rows]
        accounts: dict[str, list[AdminAccount]] = {i: [] for i in ids}
        if ids:
            found = await tx.execute(
                select(
                    ACCOUNTS.c.user_id,
                    ACCOUNTS.c.provider,
                    ACCOUNTS.c.provider_account_id,
                    ACCOUNTS.c.created_at,
                )
                .where(ACCOUNTS.c.user_id.in_(ids))
                .order_by(ACCOUNTS.c.created_at, ACCOUNTS.c.id)
            )
            for a in found.mappings():
                accounts[a["user_id"]].append(
                    AdminAccount(
                        provider=a["provider"],
                        provider_account_id=a["provider_account_id"],
                        created_at=as_utc(a["created_at"]),
                    )
                )
        return [
            AdminUser(
                **UserRecord.of(r).public([]).model_dump(exclude={"accounts"}),
                accounts=accounts[r["id"]],
                disabled_at=as_utc(r["disabled_at"]) if r["disabled_at"] else None,
                last_sign_in_at=as_utc(r["last_sign_in_at"]) if r["last_sign_in_at"] else None,
            )
            for r in rows
        ]
