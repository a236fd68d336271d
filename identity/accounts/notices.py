"""What the outbox holds, for people: an audit event's notices with their delivery attempts
(`identity events ID`, GET /admin/events/{id}) and what is pending or failing
(`identity outbox list`); docs/notifications.md."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from identity.clock import as_utc
from identity.errors import NotFound
from identity.store.database import Database, Tx
from identity.store.models import AUDIT_EVENTS, DELIVERIES, OUTBOX
from identity.store.shapes import AuditEventDetail, DeliveryPublic, NoticePublic

from .audit import parsed_detail


class NoticeLog:
    def __init__(self, database: Database) -> None:
        self._db = database

    async def event(self, event_id: int) -> AuditEventDetail:
        async with self._db.transaction() as tx:
            row = (
                (await tx.execute(select(AUDIT_EVENTS).where(AUDIT_EVENTS.c.id == event_id)))
                .mappings()
                .first()
            )
            if row is None:
                raise NotFound("no such event")
            notices = await _notices(tx, OUTBOX.c.audit_event_id == event_id, limit=1000)
        return AuditEventDetail(
            **{
                **row,
                "created_at": as_utc(row["created_at"]),
                "detail": parsed_detail(row["detail"]),
            },
            notices=notices,
        )

    async def listing(self, *, finished: bool = False, limit: int = 100) -> list[NoticePublic]:
        """Pending notices (failing ones show their attempts), oldest first; with `finished`,
        the delivered and dropped ones still kept too."""
        condition = OUTBOX.c.id.is_not(None) if finished else OUTBOX.c.state == "pending"
        async with self._db.transaction() as tx:
            return await _notices(tx, condition, limit=limit)


async def _notices(tx: Tx, condition: Any, *, limit: int) -> list[NoticePublic]:
    rows = (
        (await tx.execute(select(OUTBOX).where(condition).order_by(OUTBOX.c.id).limit(limit)))
        .mappings()
        .all()
    )
    ids = [r["id"] for r in rows]
    attempts: dict[int, list[DeliveryPublic]] = {i: [] for i in ids}
    if ids:
        found = await tx.execute(
            select(DELIVERIES).where(DELIVERIES.c.outbox_id.in_(ids)).order_by(DELIVERIES.c.id)
        )
        for d in found.mappings():
            attempts[d["outbox_id"]].append(
                DeliveryPublic(
                    attempted_at=as_utc(d["attempted_at"]),
                    outcome=d["outcome"],
                    status_code=d["status_code"],
                    error=d["error"],
                )
            )
    return [
        NoticePublic(
            id=r["id"],
            event=r["event"],
            destination=r["destination"],
            state=r["state"],
            attempts=r["attempts"],
            created_at=as_utc(r["created_at"]),
            next_attempt_at=as_utc(r["next_attempt_at"]) if r["state"] == "pending" else None,
            audit_event_id=r["audit_event_id"],
            deliveries=attempts[r["id"]],
        )
        for r in rows
    ]
