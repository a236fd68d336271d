"""The audit log: what happened to whom, written in the transaction of the change it records.

`record` inserts one event on the caller's transaction (SQL text, so the same statement serves
the Core paths, SQLite's sign-in and, inside their functions, PostgreSQL's hot paths), so an
event exists exactly when its change does. `detail` takes only the keys listed in `DETAIL_KEYS`
— reason codes, provider names, changed field names — never a token, secret or code
(docs/admin.md lists every type).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

import orjson
from sqlalchemy import and_, select

from identity.clock import Clock, as_utc, utc
from identity.errors import InvalidRequest
from identity.store.database import Database, Sql
from identity.store.functions import Arguments
from identity.store.models import AUDIT_EVENTS
from identity.store.pruning import PRUNE_BATCH, delete_batched
from identity.store.shapes import AuditEventPublic

from .listing import event_cursor, read_event_cursor

TYPES = frozenset(
    {
        "sign_in",
        "sign_in_refused",
        "refresh_reuse",
        "logout",
        "session_revoked",
        "user_updated",
        "email_change_requested",
        "email_verification_sent",
        "email_verified",
        "email_released",
        "account_linked",
        "account_unlinked",
        "user_deleted",
        "user_disabled",
        "user_enabled",
        "sessions_revoked",
        "notice_dropped",
        "signal_received",
    }
)
DETAIL_KEYS = frozenset(
    {
        "reason",
        "provider",
        "created_user",
        "fields",
        "admin",
        "operator",
        "scope",
        "count",
        "by",
        "notice",
        "destination",
        # a provider's security event: its type, what it did, its jti (an id, not a secret)
        "event",
        "action",
        "jti",
    }
)
INSERT = """
INSERT INTO audit_events
    (created_at, type, user_id, session_id, client_id, ip, user_agent, request_id, detail)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
RETURNING id
"""


@dataclass(frozen=True, slots=True)
class Context:
    """Who asked, from where: the request side of every event."""

    client_id: str | None = None
    ip: str | None = None
    user_agent: str | None = None
    request_id: str | None = None

    @property
    def stored_ip(self) -> str | None:
        return (self.ip or "")[:64] or None  # the column's width

    @property
    def stored_agent(self) -> str | None:
        return self.user_agent[:512] if self.user_agent else None

    def fields(self) -> tuple[str | None, str | None, str | None, str | None]:
        return self.client_id, self.stored_ip, self.stored_agent, self.request_id


class Audited(Protocol):
    """A request that carries the request side of the events it writes."""

    @property
    def context(self) -> Context: ...


# The request side of an event as the hot-path functions take it (identity_sign_in,
# identity_refresh write their events themselves).
CONTEXT_ARGUMENTS: Arguments[Audited] = (
    ("p_audit_client", lambda r: r.context.client_id),
    ("p_ip", lambda r: r.context.stored_ip),
    ("p_audit_agent", lambda r: r.context.stored_agent),
    ("p_request_id", lambda r: r.context.request_id),
)


def detail_json(detail: dict[str, Any]) -> str:
    unknown = set(detail) - DETAIL_KEYS
    if unknown:  # a programming error: only vetted keys may reach the log
        raise ValueError(f"audit detail keys not allowed: {sorted(unknown)}")
    return orjson.dumps(detail).decode()


async def record(
    sql: Sql,
    type_: str,
    *,
    at: datetime,
    context: Context,
    user_id: str | None = None,
    session_id: str | None = None,
    **detail: Any,
) -> int:
    """The event's id (what the notices it causes point at)."""
    if type_ not in TYPES:
        raise ValueError(f"unknown audit event type {type_!r}")
    row = await sql.fetchone(
        INSERT, at, type_, user_id, session_id, *context.fields(), detail_json(detail)
    )
    return int(row["id"])


class AuditLog:
    def __init__(self, database: Database, *, retention: int, clock: Clock = time.time) -> None:
        self._db = database
        self._retention = retention
        self._clock = clock

    async def query(
        self,
        *,
        user_id: str | None = None,
        type_: str | None = None,
        since: float | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[AuditEventPublic], str | None]:
        """Newest first; the cursor of the next page, or None on the last one."""
        t = AUDIT_EVENTS
        conditions = []
        if user_id is not None:
            conditions.append(t.c.user_id == user_id)
        if type_ is not None:
            if type_ not in TYPES:
                raise InvalidRequest("type: not an audit event type")
            conditions.append(t.c.type == type_)
        if since is not None:
            conditions.append(t.c.created_at >= utc(since))
        if cursor is not None:
            conditions.append(t.c.id < read_event_cursor(cursor))
        statement = (
            select(t).where(and_(True, *conditions)).order_by(t.c.id.desc()).limit(limit + 1)
        )
        async with self._db.transaction() as tx:
            rows = (await tx.execute(statement)).mappings().all()
        events = [
            AuditEventPublic(
                **{
                    **row,
                    "created_at": as_utc(row["created_at"]),
                    "detail": parsed_detail(row["detail"]),
                }
            )
            for row in rows[:limit]
        ]
        more = len(rows) > limit
        return events, event_cursor(events[-1].id) if more and events else None

    async def prune(self, *, batch: int = PRUNE_BATCH) -> int:
        """Delete the events past retention, `batch` at a time."""
        cutoff = self._db.shared_now(self._clock) - timedelta(seconds=self._retention)
        past = AUDIT_EVENTS.c.created_at < cutoff
        return await delete_batched(
            self._db, AUDIT_EVENTS, AUDIT_EVENTS.c.created_at, past, batch=batch
        )


def parsed_detail(value: Any) -> dict[str, Any]:
    parsed = orjson.loads(value) if isinstance(value, str | bytes) else value
    return parsed if isinstance(parsed, dict) else {}
