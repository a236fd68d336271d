"""Sessions and refresh-token rotation (SPEC §7.1, §8; RFC 9700 §4.14.2).

A session row holds the SHA-256 of its current refresh token. A refresh is one compare-and-swap:

    UPDATE sessions SET session_token = new WHERE session_token = old AND <alive, same client>

which the database applies to one row atomically, so of any number of concurrent refreshes with
one token, on any number of replicas, exactly one matches. The old hash is kept in
`rotated_refresh_tokens`; presenting it again (an attacker, or the loser of a race) revokes the
whole session: nobody can tell a thief from the owner, so neither keeps it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, bindparam, delete, or_, update
from sqlalchemy import select as sa_select
from sqlmodel import col, select

from . import logs
from .database import Database, Executor
from .errors import InvalidGrant, InvalidScope
from .limits import RateLimiter
from .models import (
    DEFAULT_SCOPE,
    Account,
    RotatedRefreshToken,
    Session,
    User,
    iso,
    new_id,
    public_user,
    utc,
)
from .settings import RateLimit
from .tokens import new_refresh_token, profile_claims, refresh_token_hash

Clock = Callable[[], float]
SUPPORTED_SCOPES = frozenset(DEFAULT_SCOPE.split())
# Called inside the transaction with (user id, session id, scope, profile claims); returns the
# access token and its lifetime.
Mint = Callable[[str, str, str, dict[str, Any]], tuple[str, int]]


@dataclass(frozen=True)
class Rotation:
    access_token: str
    expires_in: int
    refresh_token: str
    scope: str
    session_id: str
    user_id: str


def granted_scope(requested: str | None, allowed: str = DEFAULT_SCOPE) -> str:
    """The scope to grant: all of `allowed` by default; a wider request is invalid_scope."""
    if requested is None:
        return allowed
    wanted = requested.split()
    if not wanted or not set(wanted) <= set(allowed.split()):
        raise InvalidScope("the requested scope exceeds what was granted", reason="bad_scope")
    return " ".join(dict.fromkeys(wanted))


_users = User.__table__  # type: ignore[attr-defined]
_sessions = Session.__table__  # type: ignore[attr-defined]
_accounts = Account.__table__  # type: ignore[attr-defined]
_rotated = RotatedRefreshToken.__table__  # type: ignore[attr-defined]
_CLAIMS = sa_select(_users.c.email, _users.c.email_verified, _users.c.name, _users.c.image).where(
    _users.c.id == bindparam("uid")
)
# The profile of a user whose session is alive, with their accounts: one round trip, built once
# (the hot path of GET /users/me and /userinfo).
_PROFILE = (
    sa_select(
        _users.c.id,
        _users.c.name,
        _users.c.email,
        _users.c.email_verified,
        _users.c.image,
        _users.c.created_at,
        _users.c.updated_at,
        _accounts.c.provider,
        _accounts.c.provider_account_id,
    )
    .select_from(
        _sessions.join(_users, _users.c.id == _sessions.c.user_id).outerjoin(
            _accounts, _accounts.c.user_id == _users.c.id
        )
    )
    .where(
        _sessions.c.id == bindparam("sid"),
        _sessions.c.user_id == bindparam("uid"),
        _sessions.c.expires > bindparam("now"),
        _sessions.c.last_used_at > bindparam("idle_since"),
    )
    .order_by(_accounts.c.created_at)
)


class Sessions:
    def __init__(
        self,
        database: Database,
        *,
        limiter: RateLimiter,
        subject_limit: RateLimit | None,
        clock: Clock = time.time,
        absolute_ttl: int,
        idle_ttl: int,
    ) -> None:
        self._db = database
        self._limiter = limiter
        self._subject_limit = subject_limit
        self._clock = clock
        self._absolute = absolute_ttl
        self._idle = idle_ttl

    async def start(
        self,
        tx: Executor,
        *,
        user_id: str,
        client_id: str,
        user_agent: str | None,
        scope: str,
    ) -> tuple[str, str]:
        """Insert a session in `tx`; return its id and its first refresh token."""
        now = self._clock()
        refresh_token, refresh_hash = new_refresh_token()
        session_id = new_id()
        await tx.execute(
            _sessions.insert().values(
                id=session_id,
                session_token=refresh_hash,
                user_id=user_id,
                expires=utc(now + self._absolute),
                client_id=client_id,
                scope=scope,
                user_agent=user_agent[:512] if user_agent else None,
                created_at=utc(now),
                last_used_at=utc(now),
            )
        )
        return session_id, refresh_token

    def _alive(self, now: float) -> Any:
        return and_(
            col(Session.expires) > utc(now),
            col(Session.last_used_at) > utc(now - self._idle),
        )

    async def rotate(
        self, presented: str, *, client_id: str, scope: str | None, mint: Mint, request_id: str
    ) -> Rotation:
        old_hash = refresh_token_hash(presented)
        new_token, new_hash = new_refresh_token()
        now = self._clock()
        async with self._db.core() as tx:
            swapped = (
                await tx.execute(
                    update(Session)
                    .where(
                        col(Session.session_token) == old_hash,
                        col(Session.client_id) == client_id,
                        self._alive(now),
                    )
                    .values(session_token=new_hash, last_used_at=utc(now))
                    .returning(col(Session.id), col(Session.user_id), col(Session.scope))
                )
            ).first()
            if swapped is not None:
                session_id, user_id, session_scope = swapped
                # Raising here rolls the swap back: a wider scope or a 429 changes nothing.
                granted = granted_scope(scope, session_scope)
                await self._limiter.hit(tx, f"user:{user_id}", self._subject_limit)
                await tx.execute(
                    _rotated.insert().values(
                        token_hash=old_hash, session_id=session_id, rotated_at=utc(now)
                    )
                )
                user = (await tx.execute(_CLAIMS, {"uid": user_id})).first()
                if user is None:  # deleted concurrently; the cascade removes the session
                    raise InvalidGrant("the refresh token is invalid", reason="user_deleted")
                access_token, expires_in = mint(user_id, session_id, granted, profile_claims(user))
                return Rotation(access_token, expires_in, new_token, granted, session_id, user_id)
        reason = await self._refused(old_hash, client_id, now, request_id)
        raise InvalidGrant("the refresh token is invalid, expired or revoked", reason=reason)

    async def _refused(self, token_hash: str, client_id: str, now: float, request_id: str) -> str:
        """Why a refresh failed; a reused token revokes its session (committed here)."""
        async with self._db.transaction() as tx:
            reused = (
                await tx.execute(
                    select(col(RotatedRefreshToken.session_id), col(Session.user_id))
                    .join(Session, col(Session.id) == col(RotatedRefreshToken.session_id))
                    .where(col(RotatedRefreshToken.token_hash) == token_hash)
                )
            ).first()
            if reused is not None:
                session_id, user_id = reused
                await tx.execute(delete(Session).where(col(Session.id) == session_id))
                logs.auth_event(
                    event="refresh_reuse",
                    outcome="revoked",
                    reason="reuse_detected",
                    user_id=user_id,
                    sid=session_id,
                    client=client_id,
                    request_id=request_id,
                )
                return "reuse_detected"
            current = (
                await tx.execute(select(Session).where(col(Session.session_token) == token_hash))
            ).scalar_one_or_none()
            if current is None:
                return "unknown_token"
            if current.client_id != client_id:
                return "client_mismatch"  # bound to another client; that client's session stays
            await tx.delete(current)  # expired: nothing can revive it
            return "session_expired"

    async def revoke_refresh(self, presented: str, *, client_id: str | None) -> str | None:
        """End the session of a current or rotated refresh token; its id, or None."""
        token_hash = refresh_token_hash(presented)
        async with self._db.transaction() as tx:
            session = (
                await tx.execute(
                    select(Session).where(
                        or_(
                            col(Session.session_token) == token_hash,
                            col(Session.id).in_(
                                select(col(RotatedRefreshToken.session_id)).where(
                                    col(RotatedRefreshToken.token_hash) == token_hash
                                )
                            ),
                        )
                    )
                )
            ).scalar_one_or_none()
            # RFC 7009 §2.1: a client may revoke only its own tokens.
            if session is None or (client_id is not None and session.client_id != client_id):
                return None
            await tx.delete(session)
            return session.id

    async def end(self, user_id: str, session_id: str) -> bool:
        async with self._db.transaction() as tx:
            result = await tx.execute(
                delete(Session).where(
                    col(Session.id) == session_id, col(Session.user_id) == user_id
                )
            )
            return bool(result.rowcount)  # type: ignore[attr-defined]

    async def end_all(self, user_id: str) -> int:
        async with self._db.transaction() as tx:
            result = await tx.execute(delete(Session).where(col(Session.user_id) == user_id))
            return int(result.rowcount)  # type: ignore[attr-defined]

    async def is_alive(self, session_id: str, user_id: str) -> bool:
        now = self._clock()
        async with self._db.reader() as tx:
            found = await tx.execute(
                select(col(Session.id)).where(
                    col(Session.id) == session_id, col(Session.user_id) == user_id, self._alive(now)
                )
            )
            return found.first() is not None

    async def profile(self, session_id: str, user_id: str) -> dict[str, Any] | None:
        """The user's public form if this session of theirs is alive, else None."""
        now = self._clock()
        params = {
            "sid": session_id,
            "uid": user_id,
            "now": utc(now),
            "idle_since": utc(now - self._idle),
        }
        async with self._db.engine.connect() as connection:
            rows = (await connection.execute(_PROFILE, params)).all()
        if not rows:
            return None
        # One row per account (outer join): a user without accounts has one row of NULLs.
        return public_user(rows[0], [r for r in rows if r.provider is not None])

    async def list(self, user_id: str, current: str) -> list[dict[str, Any]]:
        now = self._clock()
        async with self._db.reader() as tx:
            rows = await tx.execute(
                select(Session)
                .where(col(Session.user_id) == user_id, self._alive(now))
                .order_by(col(Session.created_at))
            )
            return [self._public(s, current) for s in rows.scalars()]

    async def introspect_refresh(self, presented: str) -> dict[str, Any] | None:
        now = self._clock()
        async with self._db.reader() as tx:
            session = (
                await tx.execute(
                    select(Session).where(
                        col(Session.session_token) == refresh_token_hash(presented),
                        self._alive(now),
                    )
                )
            ).scalar_one_or_none()
        if session is None:
            return None
        return {
            "active": True,
            "token_type": "refresh_token",
            "sub": session.user_id,
            "sid": session.id,
            "client_id": session.client_id,
            "scope": session.scope,
            "exp": int(self._ends(session).timestamp()),
            "iat": int(session.last_used_at.timestamp()),
        }

    async def prune(self) -> int:
        now = self._clock()
        async with self._db.transaction() as tx:
            result = await tx.execute(
                delete(Session).where(
                    or_(
                        col(Session.expires) <= utc(now),
                        col(Session.last_used_at) <= utc(now - self._idle),
                    )
                )
            )
            return int(result.rowcount)  # type: ignore[attr-defined]

    def _ends(self, session: Session) -> datetime:
        """When the session dies unless used: absolute expiry or idle limit, whichever is first."""
        return min(session.expires, session.last_used_at + timedelta(seconds=self._idle))

    def _public(self, session: Session, current: str) -> dict[str, Any]:
        return {
            "id": session.id,
            "created_at": iso(session.created_at),
            "last_used_at": iso(session.last_used_at),
            "expires_at": iso(self._ends(session)),
            "user_agent": session.user_agent,
            "client_id": session.client_id,
            "current": session.id == current,
        }
