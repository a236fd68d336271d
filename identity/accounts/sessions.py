"""Sessions: is one alive, whose profile it speaks for, listing, ending, revoking, pruning.

Access style: the two reads every protected request makes (`profile`, `alive`) are SQL text on
the hot-path runner, one statement each; everything else is SQLAlchemy Core on the typed tables.
A session is alive until its absolute end (`expires`) or until it has been idle for
IDENTITY_REFRESH_IDLE_TTL, whichever comes first (docs/sessions.md).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, select, update

from identity.clock import Clock, as_utc, utc
from identity.store.database import Database, Sql, Tx
from identity.store.models import ROTATED, SESSIONS
from identity.store.pruning import PRUNE_BATCH, delete_batched
from identity.store.shapes import AccountPublic, Introspection, SessionPublic, UserRecord
from identity.tokens import refresh_tokens

from . import audit, outbox
from .outbox import NOBODY, Notices

_PROFILE = """
SELECT u.id, u.name, u.email, u.email_verified, u.image, u.pending_email, u.created_at,
       u.updated_at, a.provider, a.provider_account_id
FROM sessions s JOIN users u ON u.id = s.user_id LEFT JOIN accounts a ON a.user_id = u.id
WHERE s.id = $1 AND s.user_id = $2 AND s.expires > $3 AND s.last_used_at > $4
ORDER BY a.created_at, a.id
"""
_ALIVE = """
SELECT 1 AS alive FROM sessions
WHERE id = $1 AND user_id = $2 AND expires > $3 AND last_used_at > $4
"""


@dataclass(frozen=True, slots=True)
class Ended:
    """What `end_sessions` ended: (session id, user id, client id) each, and its audit event."""

    sessions: list[tuple[str, str, str]]
    event_id: int | None

    def __len__(self) -> int:
        return len(self.sessions)


async def end_sessions(
    sql: Sql,
    notices: Notices,
    *,
    dialect: str,
    reason: str,
    at: datetime,
    context: audit.Context,
    event: str | None = None,
    user_id: str | None = None,
    session_ids: tuple[str, ...] | None = None,
    account_id: str | None = None,
    upstream_sid: str | None = None,
    always: bool = False,
    counted: bool = False,
    detail: dict[str, Any] | None = None,
) -> Ended:
    """The one way sessions end (logout, revocation, an admin, reuse detection, an unlink, a
    provider's signal): the sessions matching every condition given are deleted, the audit
    `event` recorded (when one ended, or `always`), and each ended session gets its revocation
    feed row and its `session.ended` notices, all on the caller's transaction."""
    conditions, values = [], []
    for column, value in (
        ("user_id", user_id),
        ("account_id", account_id),
        ("upstream_sid", upstream_sid),
    ):
        if value is not None:
            values.append(value)
            conditions.append(f"{column} = ${len(values)}")
    if session_ids is not None:
        marks = ", ".join(f"${len(values) + n}" for n in range(1, len(session_ids) + 1))
        values += session_ids
        conditions.append(f"id IN ({marks or 'NULL'})")
    if not conditions:
        raise ValueError("end_sessions: no condition, which would end every session")
    # Column names from the constant list above; values are bound parameters.
    query = (
        f"DELETE FROM sessions WHERE {' AND '.join(conditions)} RETURNING id, user_id, client_id"  # noqa: S608
    )
    rows = await sql.fetch(query, *values)
    ended = [(str(r["id"]), str(r["user_id"]), str(r["client_id"])) for r in rows]
    event_id = None
    if event is not None and (ended or always):
        detail = dict(detail or {})
        if counted:
            detail["count"] = len(ended)
        one = session_ids[0] if session_ids is not None and len(session_ids) == 1 else None
        event_id = await audit.record(
            sql,
            event,
            at=at,
            context=context,
            user_id=user_id or (ended[0][1] if ended else None),
            session_id=one,
            **detail,
        )
    expires = notices.revocation_expiry(at)
    for sid, owner, client in ended:
        await outbox.revoked(
            sql, dialect, session_id=sid, client_id=client, user_id=owner, at=at, expires_at=expires
        )
        payload = {"sid": sid, "user_id": owner, "client_id": client, "reason": reason}
        await outbox.write(
            sql,
            notices.session_ended(client),
            "session.ended",
            payload,
            at=at,
            audit_event_id=event_id,
        )
    return Ended(ended, event_id)


@dataclass(frozen=True, slots=True)
class SessionPolicy:
    """How long sessions live and how refresh tokens rotate (docs/sessions.md): one object,
    built once from the settings, shared by `Sessions` and the grants."""

    absolute_ttl: int  # IDENTITY_REFRESH_TOKEN_TTL
    idle_ttl: int  # IDENTITY_REFRESH_IDLE_TTL
    reuse_interval: int  # IDENTITY_REFRESH_REUSE_INTERVAL
    clock_skew: int = 60  # IDENTITY_CLOCK_SKEW

    def idle_since(self, now: datetime) -> datetime:
        """Sessions unused since this moment have expired."""
        return now - timedelta(seconds=self.idle_ttl)


class Sessions:
    def __init__(
        self,
        database: Database,
        policy: SessionPolicy,
        *,
        clock: Clock = time.time,
        notices: Notices = NOBODY,
    ) -> None:
        self._db = database
        self._clock = clock
        self.policy = policy
        self.notices = notices

    def _bounds(self) -> tuple[datetime, datetime]:
        now = utc(self._clock())
        return now, self.policy.idle_since(now)

    async def profile(
        self, session_id: str, user_id: str
    ) -> tuple[UserRecord, tuple[AccountPublic, ...]] | None:
        """The user and their accounts if this session of theirs is alive (one statement)."""
        rows = await self._db.fetch(_PROFILE, session_id, user_id, *self._bounds())
        if not rows:
            return None
        # One row per account (outer join): a user without accounts has one row of NULLs.
        accounts = tuple(
            AccountPublic(provider=r["provider"], provider_account_id=r["provider_account_id"])
            for r in rows
            if r["provider"] is not None
        )
        return UserRecord.of(rows[0]), accounts

    async def alive(self, session_id: str, user_id: str) -> bool:
        return await self._db.fetchrow(_ALIVE, session_id, user_id, *self._bounds()) is not None

    def _alive(self) -> Any:
        now, idle_since = self._bounds()
        return and_(SESSIONS.c.expires > now, SESSIONS.c.last_used_at > idle_since)

    def ends(self, expires: datetime, last_used_at: datetime) -> datetime:
        """When a session dies unless used: absolute end or idle limit, whichever is first."""
        return min(as_utc(expires), as_utc(last_used_at) + timedelta(seconds=self.policy.idle_ttl))

    async def live(self, user_id: str, current: str | None = None) -> list[SessionPublic]:
        statement = (
            select(SESSIONS)
            .where(SESSIONS.c.user_id == user_id, self._alive())
            .order_by(SESSIONS.c.created_at, SESSIONS.c.id)
        )
        async with self._db.transaction() as tx:
            rows = (await tx.execute(statement)).mappings().all()
        return [
            SessionPublic(
                id=s["id"],
                created_at=s["created_at"],
                last_used_at=s["last_used_at"],
                expires_at=self.ends(s["expires"], s["last_used_at"]),
                user_agent=s["user_agent"],
                client_id=s["client_id"],
                current=s["id"] == current,
            )
            for s in rows
        ]

    async def end(
        self,
        user_id: str,
        session_id: str,
        *,
        context: audit.Context,
        event: str,
        reason: str | None = None,
        **detail: Any,
    ) -> bool:
        """End one session of the user; False when it is not theirs (or gone already)."""
        if reason is not None:
            detail["reason"] = reason
        async with self._db.transaction() as tx:
            ended = await self.ending(
                tx,
                reason=reason or event,
                context=context,
                event=event,
                user_id=user_id,
                session_ids=(session_id,),
                detail=detail,
            )
            return bool(ended)

    async def end_all(
        self, user_id: str, *, context: audit.Context, event: str, **detail: Any
    ) -> int:
        async with self._db.transaction() as tx:
            ended = await self.ending(
                tx,
                reason=str(detail.get("reason") or event),
                context=context,
                event=event,
                user_id=user_id,
                always=True,
                counted=True,
                detail=detail,
            )
            return len(ended)

    async def ending(self, tx: Tx, *, reason: str, context: audit.Context, **how: Any) -> Ended:
        """`end_sessions` on the caller's transaction, with this service's notices and clock."""
        return await end_sessions(
            tx,
            self.notices,
            dialect=tx.dialect,
            reason=reason,
            at=utc(self._clock()),
            context=context,
            **how,
        )

    async def revoke(
        self, presented: str, *, client_id: str | None, context: audit.Context
    ) -> str | None:
        """End the session of a current or earlier refresh token; its id, or None (RFC 7009)."""
        token_hash = refresh_tokens.digest(presented)
        earlier = select(ROTATED.c.session_id).where(ROTATED.c.token_hash == token_hash)
        async with self._db.transaction() as tx:
            session = (
                (
                    await tx.execute(
                        select(SESSIONS.c.id, SESSIONS.c.user_id, SESSIONS.c.client_id).where(
                            or_(SESSIONS.c.session_token == token_hash, SESSIONS.c.id.in_(earlier))
                        )
                    )
                )
                .mappings()
                .first()
            )
            # RFC 7009 §2.1: a client may revoke only its own tokens.
            if session is None or (client_id is not None and session["client_id"] != client_id):
                return None
            await self.ending(
                tx,
                reason="revoke_endpoint",
                context=context,
                event="session_revoked",
                session_ids=(str(session["id"]),),
                detail={"reason": "revoke_endpoint"},
            )
            return str(session["id"])

    async def introspect_refresh(self, presented: str, *, client_id: str | None) -> Introspection:
        statement = select(SESSIONS).where(
            SESSIONS.c.session_token == refresh_tokens.digest(presented), self._alive()
        )
        async with self._db.transaction() as tx:
            s = (await tx.execute(statement)).mappings().first()
        # Another client's refresh token is none of the asking client's business.
        if s is None or (client_id is not None and s["client_id"] != client_id):
            return Introspection(active=False)
        return Introspection(
            active=True,
            token_type="refresh_token",  # noqa: S106 - a token type name
            sub=s["user_id"],
            sid=s["id"],
            client_id=s["client_id"],
            scope=s["scope"],
            exp=int(self.ends(s["expires"], s["last_used_at"]).timestamp()),
            iat=int(as_utc(s["last_used_at"]).timestamp()),
        )

    async def prune(self, *, batch: int = PRUNE_BATCH) -> int:
        """Delete expired sessions (by the database's clock on PostgreSQL), `batch` at a time
        (their earlier tokens go with them): past their end, then idle too long, each through
        its own index."""
        now = self._db.shared_now(self._clock)
        idle_since = now - timedelta(seconds=self.policy.idle_ttl)
        ended = await delete_batched(
            self._db, SESSIONS, SESSIONS.c.expires, SESSIONS.c.expires <= now, batch=batch
        )
        idle = SESSIONS.c.last_used_at <= idle_since
        return ended + await delete_batched(
            self._db, SESSIONS, SESSIONS.c.last_used_at, idle, batch=batch
        )

    async def forget_sealed(self) -> int:
        """Delete sealed successors whose reuse interval has ended (every housekeeping round;
        they are never used after it, sealed or not). Measured on the clock the rotation's
        time was taken from: the database's on PostgreSQL, so no replica forgets one early."""
        interval_end = self._db.shared_now(self._clock) - timedelta(
            seconds=self.policy.reuse_interval
        )
        async with self._db.transaction() as tx:
            result = await tx.execute(
                update(SESSIONS)
                .where(
                    SESSIONS.c.previous_sealed.is_not(None), SESSIONS.c.rotated_at <= interval_end
                )
                .values(previous_sealed=None)
            )
            return int(result.rowcount)
