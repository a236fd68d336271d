"""What a provider's signal leaves for later sign-ins (docs/signals.md, "Guarantees").

Ending an account's sessions is not enough: a hijacker holding a fresh, unused id_token of the
account (valid up to an hour) would exchange it for a new session a second later. So a signal
that ends sessions records when on the account (`accounts.sessions_revoked_at`), and a
back-channel logout by `sid` remembers that upstream session (`ended_upstream_sessions`); the
sign-in refuses an id_token issued no later, or carrying that `sid` ("revoked"). Here: what the
signals write, and the SQLite sign-in's check (identity_sign_in.sql makes the same).

Suspend and enable events are applied in the order of their `iat` (`suspension_event_at`):
deliveries are retried and arrive in any order, and a late older one must not undo a newer one.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import case, literal, select, update

from identity.clock import as_utc
from identity.store.database import Row, Sql, Tx
from identity.store.models import ACCOUNTS, UTCDateTime
from identity.tokens.id_tokens import VerifiedIdentity

_REMEMBER_UPSTREAM = """
INSERT INTO ended_upstream_sessions (provider, sid, expires_at) VALUES ($1, $2, $3)
ON CONFLICT (provider, sid) DO UPDATE SET expires_at = excluded.expires_at
RETURNING sid
"""
_UPSTREAM_ENDED = "SELECT 1 AS found FROM ended_upstream_sessions WHERE provider = $1 AND sid = $2"


async def revoke_sessions(tx: Tx, account_id: str, at: datetime, **values: object) -> None:
    """The account's id_tokens issued until `at` are refused from here on (never moved back
    by an older event); `values`: other columns to set in the same statement."""
    column, value = ACCOUNTS.c.sessions_revoked_at, literal(at, UTCDateTime)
    later = case((column.is_(None) | (column < value), value), else_=column)
    statement = update(ACCOUNTS).where(ACCOUNTS.c.id == account_id)
    await tx.execute(statement.values(sessions_revoked_at=later, **values))


async def end_upstream(tx: Tx, provider: str, sid: str, keep_until: datetime) -> None:
    """An upstream session is over: its id_tokens are refused until `keep_until`."""
    await tx.fetchrow(_REMEMBER_UPSTREAM, provider, sid, keep_until)


async def revoked(sql: Sql, identity: VerifiedIdentity, account: Row | None) -> bool:
    """Issued no later than a signal ended this account's sessions (`account`: its row, with
    `sessions_revoked_at`), or in an upstream session a back-channel logout ended."""
    cutoff = account["sessions_revoked_at"] if account is not None else None
    issued = identity.issued_at
    if cutoff is not None and issued is not None and issued <= as_utc(cutoff):
        return True
    if identity.upstream_sid is None:
        return False
    found = await sql.fetchrow(_UPSTREAM_ENDED, identity.provider, identity.upstream_sid)
    return found is not None


async def newest(tx: Tx, account_id: str, issued_at: datetime) -> bool:
    """Whether a suspend or enable event issued at `issued_at` is no older than the last one
    applied to the account (its row is locked). Of two with the same `iat`, the later arrival
    wins."""
    last = (
        await tx.execute(select(ACCOUNTS.c.suspension_event_at).where(ACCOUNTS.c.id == account_id))
    ).scalar()
    return last is None or issued_at >= as_utc(last)


async def applied(tx: Tx, account_id: str, issued_at: datetime) -> None:
    """Remember the `iat` of the suspend or enable event just applied (see `newest`)."""
    statement = update(ACCOUNTS).where(ACCOUNTS.c.id == account_id)
    await tx.execute(statement.values(suspension_event_at=issued_at))
