"""The delivery worker: every replica runs one (docs/notifications.md).

A round claims due notices (PostgreSQL: `FOR UPDATE SKIP LOCKED`, so two replicas never claim
one row; SQLite: the one process) and moves each one's next attempt a lease ahead, longer than a
request can take, before sending; so while one replica sends a notice no other does, and a
replica that dies mid-send leaves it due again when the lease ends (at least once). Each attempt
is recorded (`deliveries`); a failure is retried with exponential backoff, and a notice still
undelivered 24 hours after it was written is dropped with an audit event (`notice_dropped`).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from identity.clock import Clock, as_utc, utc
from identity.metrics import Metrics
from identity.store.database import Database, Row, Tx

from . import audit
from .revocations import Revocations
from .senders import Attempt, Notice, Senders

logger = logging.getLogger("identity.delivery")
LEASE = 30  # seconds a claimed notice is left alone: well past the 5 s request timeout
GIVE_UP = 86_400  # a notice this old is dropped
FIRST_RETRY = 5.0
LONGEST_WAIT = 3600.0
_CLAIM = {
    "postgresql": """
UPDATE outbox SET next_attempt_at = now() + make_interval(secs => $2)
WHERE id IN (SELECT id FROM outbox WHERE state = 'pending' AND next_attempt_at <= now()
             ORDER BY next_attempt_at, id LIMIT $1 FOR UPDATE SKIP LOCKED)
RETURNING id, event, destination, payload, attempts, created_at, audit_event_id, sealed
""",
    "sqlite": """
UPDATE outbox SET next_attempt_at = $3
WHERE id IN (SELECT id FROM outbox WHERE state = 'pending' AND next_attempt_at <= $2
             ORDER BY next_attempt_at, id LIMIT $1)
RETURNING id, event, destination, payload, attempts, created_at, audit_event_id, sealed
""",
}
_ATTEMPTED = """
INSERT INTO deliveries (outbox_id, attempted_at, outcome, status_code, error)
VALUES ($1, $2, $3, $4, $5)
"""
# A finished notice forgets its sealed token: kept a week for `identity outbox list`, not it.
_FINISHED = (
    "UPDATE outbox SET state = $2, attempts = attempts + 1, finished_at = $3, sealed = NULL "
    "WHERE id = $1"
)
# When a notice is next due is the database's clock on PostgreSQL, as every replica reads it.
_RETRY = {
    "postgresql": "UPDATE outbox SET attempts = attempts + 1, "
    "next_attempt_at = now() + make_interval(secs => $2) WHERE id = $1",
    "sqlite": "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = $2 WHERE id = $1",
}
# On PostgreSQL the common outcomes are recorded in one statement on the hot paths' door (asyncpg
# directly, autocommit: the statement is its own transaction) rather than a Core transaction of
# two, with the claim on the same door: 1.79 -> 1.00 ms of CPU per notice (docs/performance.md,
# "With the outbox on"). A dropped notice, with its audit event, keeps the transaction below.
_RECORDED = {
    "delivered": """
WITH attempted AS (
    INSERT INTO deliveries (outbox_id, attempted_at, outcome, status_code, error)
    VALUES ($1, $2, 'delivered', $3, $4)
)
UPDATE outbox SET state = 'delivered', attempts = attempts + 1, finished_at = $2, sealed = NULL
WHERE id = $1
""",
    "failed": """
WITH attempted AS (
    INSERT INTO deliveries (outbox_id, attempted_at, outcome, status_code, error)
    VALUES ($1, $2, 'failed', $3, $4)
)
UPDATE outbox SET attempts = attempts + 1, next_attempt_at = now() + make_interval(secs => $5)
WHERE id = $1
""",
}
_PENDING = "SELECT count(*) AS n FROM outbox WHERE state = 'pending'"


class Deliveries:
    def __init__(
        self,
        database: Database,
        senders: Senders,
        metrics: Metrics | None,
        *,
        clock: Clock = time.time,
        batch: int = 20,
        interval: float = 1.0,
    ) -> None:
        self._db = database
        self._senders = senders
        self._metrics = metrics
        self._clock = clock
        self._batch = batch
        self.interval = interval

    async def run(self) -> None:
        """Forever: rest `interval` seconds, then deliver what is due, at once again while
        rounds find work."""
        done = 0
        while True:
            if not done:
                await asyncio.sleep(self.interval)
            try:
                done = await self.round()
            except Exception as error:  # a database outage: the next round tries again
                name = type(error).__name__
                logger.warning("delivery round failed", extra={"event": {"error": name}})
                done = 0

    async def round(self) -> int:
        """Claim up to a batch of due notices and attempt each; how many were claimed."""
        notices = await self.claim()
        await asyncio.gather(*(self.attempt(n) for n in notices))
        if self._metrics is not None:
            async with self._db.transaction() as tx:
                row = await tx.fetchone(_PENDING)
            self._metrics.outbox_pending.set(int(row["n"]))
            self._metrics.revocation_feed_lag.set(await Revocations(self._db).lag())
        return len(notices)

    async def claim(self) -> list[Notice]:
        now = utc(self._clock())
        # One statement: on PostgreSQL its own transaction, the rows locked until it commits.
        async with self._db.hot() as sql:
            if self._db.postgres:
                rows = await sql.fetch(_CLAIM["postgresql"], self._batch, LEASE)
            else:
                lease_end = now + timedelta(seconds=LEASE)
                rows = await sql.fetch(_CLAIM["sqlite"], self._batch, now, lease_end)
        return [_notice(r) for r in rows]

    async def attempt(self, notice: Notice) -> Attempt:
        try:
            attempt = await self._senders.send(notice)
        except Exception as error:  # a bug of ours must not stop the others: retried
            attempt = Attempt("failed", error=type(error).__name__)
        now = utc(self._clock())
        outcome = _outcome(notice, attempt, now)
        if self._db.postgres and outcome in _RECORDED:
            values: tuple[Any, ...] = (notice.id, now, attempt.status, attempt.error)
            if outcome == "failed":
                values += (backoff(notice.attempts),)
            async with self._db.hot() as sql:
                await sql.fetch(_RECORDED[outcome], *values)
        else:
            async with self._db.transaction() as tx:
                await self._record(tx, notice, attempt, now)
        if self._metrics is not None:
            self._metrics.deliveries.labels(notice.kind, attempt.outcome).inc()
            if attempt.outcome == "delivered":
                self._metrics.delivery_lag.observe(
                    max(0.0, (now - notice.created_at).total_seconds())
                )
        return attempt

    async def _record(self, tx: Tx, notice: Notice, attempt: Attempt, now: datetime) -> None:
        outcome = _outcome(notice, attempt, now)
        await tx.fetch(_ATTEMPTED, notice.id, now, outcome, attempt.status, attempt.error)
        if outcome == "delivered":
            await tx.fetch(_FINISHED, notice.id, "delivered", now)
        elif outcome == "dropped":
            await tx.fetch(_FINISHED, notice.id, "dropped", now)
            await audit.record(
                tx,
                "notice_dropped",
                at=now,
                context=audit.Context(),
                user_id=notice.payload.get("user_id"),
                notice=notice.event,
                destination=notice.destination,
                reason=attempt.error or "undeliverable",
            )
            logger.warning(
                "notice dropped",
                extra={"event": {"id": notice.id, "kind": notice.kind, "error": attempt.error}},
            )
        else:
            wait = backoff(notice.attempts)
            due = now + timedelta(seconds=wait)
            await tx.fetch(_RETRY[tx.dialect], notice.id, due if tx.dialect == "sqlite" else wait)


def _outcome(notice: Notice, attempt: Attempt, now: datetime) -> str:
    """What is recorded: the attempt's outcome, or `dropped` for a notice whose destination is
    gone or that failed once more past `GIVE_UP`."""
    too_old = now - notice.created_at >= timedelta(seconds=GIVE_UP)
    if (attempt.outcome == "failed" and too_old) or attempt.outcome == "gone":
        return "dropped"
    return attempt.outcome


def backoff(attempts: int) -> float:
    """Seconds before the next attempt after `attempts` earlier ones: 5 s doubling to an hour,
    give or take a fifth (so many notices failing at once do not return at once)."""
    wait = min(FIRST_RETRY * 2 ** min(attempts, 20), LONGEST_WAIT)
    return float(wait * random.uniform(0.8, 1.2))  # noqa: S311 - spreading retries, not a secret


def _notice(row: Row) -> Notice:
    payload = row["payload"]
    if isinstance(payload, str | bytes):
        payload = orjson.loads(payload)
    return Notice(
        id=int(row["id"]),
        event=str(row["event"]),
        destination=str(row["destination"]),
        payload=payload if isinstance(payload, dict) else {},
        attempts=int(row["attempts"]),
        created_at=_time(row["created_at"]),
        audit_event_id=row["audit_event_id"],
        sealed=row["sealed"],
    )


def _time(value: Any) -> datetime:
    if isinstance(value, str):  # SQLite's stored form, in UTC
        return datetime.fromisoformat(value).replace(tzinfo=UTC)
    return as_utc(value)
