"""Refresh-token rotation with a reuse interval (docs/sessions.md).

A session row holds the hash of its current refresh token and, for the reuse interval, the hash
of its parent with the current token sealed under a key derived from that parent. Presented
with a token T, these steps (numbered and named alike in `_sqlite` and `_admissible` below and
in identity/store/sql/identity_refresh.sql):

 1. T is current: compare-and-swap to a new token N (`UPDATE … WHERE session_token = hash(T)`:
    of concurrent twins exactly one matches); T becomes the parent, N is sealed under T
    ("rotated");
 2. T is the parent, within IDENTITY_REFRESH_REUSE_INTERVAL of that rotation: the same N again
    (the caller opens the seal with T), so concurrent refreshes all end holding one live token
    ("reused");
 3. T is any earlier token (or the parent after the interval): reuse — the session is revoked
    ("reuse_detected") when the session's own client presents it; another client's is refused
    and the session stays ("client_mismatch"): reuse detection applies within one client;
 4. otherwise an unknown token: refused, nothing written ("unknown_token").

Steps 1 and 2 first check that the session may be refreshed now, and refuse otherwise:
 a. the client it is bound to ("client_mismatch"; the session stays);
 b. its expiry and idle time ("session_expired"; the session is deleted), or the account it
    was started through suspended ("account_suspended"; the session ends as every session does);
 c. the failure limit of its user, when it is checked here ("locked");
 d. a narrower scope, within the session's ("bad_scope");
 e. the user's success budget ("rate_limited").

With the interval 0 nothing is sealed and step 2 never applies: any reuse revokes.

Every answer carries the session's scope and audience, which the new access token is minted
with. The rotation's time, and the reuse interval measured from it, are the database's clock on
PostgreSQL (`now()`, so replicas whose clocks disagree judge alike) and the injected clock on
SQLite, one process on one host (docs/sessions.md).

Two implementations, as for the sign-in: `identity_refresh` in PostgreSQL (one round trip, its
arguments passed by name from `ARGUMENTS`) and the statements below on SQLite; the suite runs
both.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Literal

from identity.clock import as_utc
from identity.store.database import Database, Row, Sql
from identity.store.functions import Arguments, Call

from . import audit
from .limits import WINDOW_ARGUMENTS, Window, over_budget, reached
from .outbox import NOBODY, Notices
from .sessions import end_sessions

Outcome = Literal[
    "rotated",
    "reused",
    "reuse_detected",
    "client_mismatch",
    "session_expired",
    "account_suspended",
    "unknown_token",
    "locked",
    "rate_limited",
    "bad_scope",
]


@dataclass(frozen=True, slots=True)
class RotationRequest:
    presented_hash: str
    client_id: str
    scope: tuple[str, ...] | None  # a narrower scope asked for, or None
    successor_hash: str
    sealed: bytes | None  # the successor sealed under the presented token (None: interval 0)
    interval: int
    now: datetime
    idle_since: datetime  # sessions unused since then have expired
    context: audit.Context
    lock_prefix: str | None = None  # the failure-limit key is this plus the session's user id
    lock: Window | None = None
    budget: Window | None = None
    notify: tuple[str, ...] = ()  # where the end of this client's session is told
    token_ttl: int = 960  # how long its access tokens may still live, skew included


# identity_refresh's parameters in order, each with where its value comes from: the call passes
# them by name, and tests/test_functions.py holds these names to the installed function's.
ARGUMENTS: Arguments[RotationRequest] = (
    ("p_hash", lambda r: r.presented_hash),
    ("p_client_id", lambda r: r.client_id),
    ("p_scope", lambda r: list(r.scope) if r.scope is not None else None),
    ("p_successor", lambda r: r.successor_hash),
    ("p_sealed", lambda r: r.sealed),
    ("p_interval", lambda r: r.interval),
    ("p_now", lambda r: r.now),
    ("p_idle_since", lambda r: r.idle_since),
    ("p_lock_prefix", lambda r: r.lock_prefix),
    *WINDOW_ARGUMENTS,
    *audit.CONTEXT_ARGUMENTS,
    ("p_notify", lambda r: list(r.notify)),
    ("p_token_ttl", lambda r: r.token_ttl),
)
CALL = Call("identity_refresh", ARGUMENTS)


@dataclass(frozen=True, slots=True)
class RotationResult:
    outcome: Outcome
    session_id: str | None = None
    user_id: str | None = None
    scope: str | None = None
    audience: str | None = None  # the audience its exchange granted; None: the default
    sealed: bytes | None = None  # the successor, sealed ("reused")
    email: str | None = None
    email_verified: bool = False
    name: str | None = None
    image: str | None = None


class Rotations:
    def __init__(self, database: Database, notices: Notices = NOBODY) -> None:
        self._db = database
        self._notices = notices

    async def rotate(self, request: RotationRequest) -> RotationResult:
        notices = self._notices
        request = replace(
            request, notify=notices.session_ended(request.client_id), token_ttl=notices.token_ttl
        )
        async with self._db.hot() as sql:
            if self._db.postgres:
                return await _postgres(sql, request)
            return await _sqlite(sql, request, notices)


def _result(outcome: str, row: Row | None, sealed: bytes | None = None) -> RotationResult:
    if row is None:
        return RotationResult(outcome)  # type: ignore[arg-type]
    return RotationResult(
        outcome,  # type: ignore[arg-type]
        session_id=row["session_id"],
        user_id=row["user_id"],
        scope=row["scope"],
        audience=row["audience"],
        sealed=sealed,
        email=row["email"],
        email_verified=row["email_verified"] is not None,
        name=row["name"],
        image=row["image"],
    )


async def _postgres(sql: Sql, r: RotationRequest) -> RotationResult:
    row = await CALL.fetchone(sql, r)  # steps 1-4 in one statement
    if row["session_id"] is None:
        return RotationResult(row["outcome"])
    return _result(row["outcome"], row, row["sealed"])


# -- SQLite: the same steps as statements ---------------------------------------------------

_SESSION = """
SELECT s.id AS session_id, s.user_id, s.scope, s.audience, s.client_id, s.expires,
       s.last_used_at, s.rotated_at, s.previous_sealed, u.email, u.email_verified, u.name, u.image,
       a.suspended_at
FROM sessions s JOIN users u ON u.id = s.user_id LEFT JOIN accounts a ON a.id = s.account_id
WHERE s.{column} = $1
"""
_ROTATE = """
UPDATE sessions SET session_token = $2, previous_hash = $3, previous_sealed = $4,
                    rotated_at = $5, last_used_at = $5
WHERE id = $1 AND session_token = $3
"""
_REMEMBER = (
    "INSERT INTO rotated_refresh_tokens (token_hash, session_id, rotated_at) VALUES ($1, $2, $3)"
)
_USED = "UPDATE sessions SET last_used_at = $2 WHERE id = $1"
_REUSED = """
SELECT r.session_id, s.user_id, s.client_id
FROM rotated_refresh_tokens r JOIN sessions s ON s.id = r.session_id
WHERE r.token_hash = $1
"""
_END = "DELETE FROM sessions WHERE id = $1"


async def _sqlite(sql: Sql, r: RotationRequest, notices: Notices) -> RotationResult:
    # 1. The current token: compare and swap ("rotated"). SQLite's write transaction admits no
    # concurrent twin, so the swap always matches here.
    current = await sql.fetchrow(_SESSION.format(column="session_token"), r.presented_hash)
    if current is not None:
        refusal = await _admissible(sql, r, current, notices)
        if refusal is not None:
            return refusal
        await sql.fetch(
            _ROTATE, current["session_id"], r.successor_hash, r.presented_hash, r.sealed, r.now
        )
        await sql.fetch(_REMEMBER, r.presented_hash, current["session_id"], r.now)
        return _result("rotated", current)

    # 2. The parent, within the reuse interval: the same successor again ("reused").
    parent = await sql.fetchrow(_SESSION.format(column="previous_hash"), r.presented_hash)
    if (
        parent is not None
        and r.interval > 0
        and parent["previous_sealed"] is not None
        and as_utc(parent["rotated_at"]) > r.now - timedelta(seconds=r.interval)
    ):
        refusal = await _admissible(sql, r, parent, notices)
        if refusal is not None:
            return refusal
        await sql.fetch(_USED, parent["session_id"], r.now)
        return _result("reused", parent, bytes(parent["previous_sealed"]))

    # 3. An earlier token: reuse revokes the session ("reuse_detected"). Nobody can tell the
    # thief from the owner, so neither keeps the session. Another client's is refused and the
    # session stays ("client_mismatch"): a client cannot end the sessions of another.
    reused = await sql.fetchrow(_REUSED, r.presented_hash)
    if reused is not None and reused["client_id"] != r.client_id:
        return RotationResult("client_mismatch")
    if reused is not None:
        await end_sessions(
            sql,
            notices,
            dialect="sqlite",
            reason="reuse_detected",
            at=r.now,
            context=r.context,
            event="refresh_reuse",
            session_ids=(reused["session_id"],),
            detail={"reason": "reuse_detected"},
        )
        return RotationResult(
            "reuse_detected", session_id=reused["session_id"], user_id=reused["user_id"]
        )

    # 4. Otherwise: an unknown token ("unknown_token").
    return RotationResult("unknown_token")


async def _admissible(
    sql: Sql, r: RotationRequest, s: Row, notices: Notices
) -> RotationResult | None:
    """Why this session may not be refreshed now (checks a-e of steps 1 and 2), or None (its
    budget then counted)."""
    # a. The client the session is bound to ("client_mismatch"; the session stays).
    if s["client_id"] != r.client_id:
        return _result("client_mismatch", s)
    # b. Expiry and idle time ("session_expired"; the session is deleted: nothing revives it),
    # or the account it was started through suspended ("account_suspended"; the session ends
    # as every session does): a session that began beside a suspension cannot live on.
    if as_utc(s["expires"]) <= r.now or as_utc(s["last_used_at"]) <= r.idle_since:
        await sql.fetch(_END, s["session_id"])
        return _result("session_expired", s)
    if s["suspended_at"] is not None:
        reason = {"reason": "account_suspended"}
        one = (s["session_id"],)
        await end_sessions(
            sql,
            notices,
            dialect="sqlite",
            reason="account_suspended",
            at=r.now,
            context=r.context,
            event="session_revoked",
            session_ids=one,
            detail=reason,
        )
        return RotationResult("account_suspended", session_id=one[0], user_id=s["user_id"])
    # c. The failure limit of the session's user, when it is checked here ("locked").
    lock = r.lock
    if (
        r.lock_prefix is not None
        and lock
        and await reached(sql, r.lock_prefix + s["user_id"], lock)
    ):
        return _result("locked", s)
    # d. A narrower scope, within the session's ("bad_scope").
    if r.scope is not None and not set(r.scope) <= set(str(s["scope"]).split()):
        return _result("bad_scope", s)
    # e. The user's success budget ("rate_limited").
    if await over_budget(sql, s["user_id"], r.budget):
        return _result("rate_limited", s)
    return None
