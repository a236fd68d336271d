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

from sqlalchemy import and_, delete, or_, select, update

from identity.clock import Clock, as_utc, utc
from identity.store.database import Database
from identity.store.models import ROTATED, SESSIONS
from identity.store.pruning import PRUNE_BATCH, delete_batched
from identity.store.shapes import AccountPublic, Introspection, SessionPublic, UserRecord
from identity.tokens import refresh_tokens

from . import audit

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
        self, database: Database, policy: SessionPolicy, *, clock: Clock = time.time
    ) -> None:
        self._db = database
        self._clock = clock
        self.policy = policy

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
        self, user_id: str, session_id: str, *, context: audit.Context, event: str, **detail: Any
    ) -> bool:
        """End one session of the user; False when it is not theirs (or gone already)."""
        async with self._db.transaction() as tx:
            result = await tx.execute(
                delete(SESSIONS).where(SESSIONS.c.id == session_id, SESSIONS.c.user_id == user_id)
            )
            if not result.rowcount:
                return False
            await audit.record(
                tx,
                event,
                at=utc(self._clock()),
                context=context,
                user_id=user_id,
                session_id=session_id,
                **detail,
            )
            return True

    async def end_all(
        self, user_id: str, *, context: audit.Context, event: str, **detail: Any
    ) -> int:
        async with self._db.transaction() as tx:
            result = await tx.execute(delete(SESSIONS).where(SESSIONS.c.user_id == user_id))
            count = int(result.rowcount)
            await audit.record(
                tx,
                event,
                at=utc(self._clock()),
                context=context,
                user_id=user_id,
                count=count,
                **detail,
            )
            return count

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
            await tx.execute(delete(SESSIONS).where(SESSIONS.c.id == session["id"]))
            await audit.record(
                tx,
                "session_revoked",
                at=utc(self._clock()),
                context=context,
                user_id=session["user_id"],
                session_id=session["id"],
                reason="revoke_endpoint",
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
