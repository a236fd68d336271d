"""Background work of a running server, and the janitor that `identity prune` runs once.

Every round does each item on its own: a key file that vanished, a database that is down or any
other error of one item is logged and the next item, and the next round, go on. Nothing here can
end the loop but the server's shutdown (docs/operations.md).

The janitor prunes once per round of JANITOR_INTERVAL across every worker and replica, the
rounds counted on the database's clock: the first to look after a round begins does it, the
others skip it. On PostgreSQL the round runs under an advisory transaction lock (one janitor at a
time, also through a transaction-mode pooler) and is marked done in `rate_limits` (key
`janitor:round`, a window of one) in the same transaction, so a janitor that dies half-way
leaves the round to the next one that looks. Each kind is deleted in bounded batches, each its
own short transaction (identity/store/pruning.py), so a large backlog never holds a lock a
sign-in waits on for longer than one batch.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import Column, Table

from identity.clock import Clock, utc
from identity.store.database import Database, Tx
from identity.store.models import (
    ENDED_UPSTREAM,
    OUTBOX,
    RATE_LIMITS,
    RECEIVED_SIGNALS,
    REVOCATIONS,
    USED_ID_TOKENS,
    VERIFICATION_TOKENS,
)
from identity.store.pruning import PRUNE_BATCH, delete_batched
from identity.tokens.signing_keys import KeyManager

from .audit import AuditLog
from .sessions import Sessions

logger = logging.getLogger("identity.housekeeping")
KEY_RELOAD_INTERVAL = 30.0
JANITOR_INTERVAL = 600
NOTICES_KEPT = 7 * 86_400  # seconds a finished notice and its attempts stay for `identity events`
# PostgreSQL advisory locks of the jobs done by one replica at a time: identity's class ("id"
# in ASCII), then the job. The janitor is 1; automatic key rotation is 2 (tokens/key_database.py).
LOCK_CLASS = 0x6964
JANITOR_LOCK = 1
ROUND_KEY = "janitor:round"
_ROUND = """
SELECT r.round, EXISTS (
    SELECT 1 FROM rate_limits WHERE key = $1 AND window_start = r.round
) AS done
FROM (SELECT (floor(extract(epoch FROM now()) / $2::integer) * $2::integer)::bigint AS round) r
"""
_LOCK = "SELECT pg_try_advisory_xact_lock($1, $2) AS locked"
_DONE = "SELECT count FROM rate_limits WHERE key = $1 AND window_start = $2"
_MARK = """
INSERT INTO rate_limits (key, window_start, count, expires_at) VALUES ($1, $2, 1, $3)
ON CONFLICT (key, window_start) DO NOTHING RETURNING count
"""


class Janitor:
    """Deletes what has expired: used id_tokens, received signals' jtis, sessions, rate-limit
    windows, mail tokens, audit events past retention; forgets sealed refresh successors past
    the reuse interval."""

    def __init__(
        self,
        database: Database,
        sessions: Sessions,
        audit_log: AuditLog,
        *,
        clock: Clock = time.time,
        interval: int = JANITOR_INTERVAL,
        batch: int = PRUNE_BATCH,
    ) -> None:
        self._db = database
        self._sessions = sessions
        self._audit = audit_log
        self._clock = clock
        self.interval = interval
        self.batch = batch
        self._done_round: int | None = None  # the last round known done, here or elsewhere

    async def round(self) -> dict[str, int | None] | None:
        """Prune unless this round is done or under way elsewhere: what `prune` returned, or
        None when skipped."""
        if self._done_round == self._round_of(self._clock()):
            return None  # known done: not even a question to the database
        if self._db.postgres:
            async with self._db.transaction() as tx:
                return await self._locked_round(tx)
        # SQLite: one host, one file; the mark (taken first, under SQLite's write lock) is
        # enough, and no transaction may stay open while pruning writes.
        started = self._round_of(self._clock())
        async with self._db.transaction() as tx:
            marked = await self._mark(tx, started)
        if not marked:
            self._done_elsewhere(started)
            return None
        return await self._pruned(started)

    async def _locked_round(self, tx: Tx) -> dict[str, int | None] | None:
        row = await tx.fetchone(_ROUND, ROUND_KEY, self.interval)
        started = int(row["round"])
        # Done, then under way, then done again: the lock taken, a statement of its own sees
        # what a janitor that released it in between had committed.
        if not row["done"]:
            locked = await tx.fetchone(_LOCK, LOCK_CLASS, JANITOR_LOCK)
            if not locked["locked"]:
                return None  # under way elsewhere; not noted, so asked again at the next look
        if row["done"] or await tx.fetchrow(_DONE, ROUND_KEY, started) is not None:
            self._done_elsewhere(started)
            return None
        done = await self._pruned(started)  # each kind on its own connection and transaction
        await self._mark(tx, started)  # committed with the lock's release
        return done

    async def _mark(self, tx: Tx, started: int) -> bool:
        ends = utc(started + self.interval)  # then pruned like any other window
        return await tx.fetchrow(_MARK, ROUND_KEY, started, ends) is not None

    async def _pruned(self, started: int) -> dict[str, int | None]:
        done = await self.prune()
        self._done_round = started
        logger.info("janitor round done", extra={"event": {"round": started, "deleted": done}})
        return done

    def _done_elsewhere(self, started: int) -> None:
        if self._done_round != started:  # said once per round, not at every look
            logger.info("janitor round done elsewhere", extra={"event": {"round": started}})
        self._done_round = started

    def _round_of(self, now: float) -> int:
        return int(now // self.interval * self.interval)

    async def prune(self) -> dict[str, int | None]:
        """Each kind pruned on its own; None for a kind whose pruning failed (logged)."""
        jobs: dict[str, Callable[[], Awaitable[int]]] = {
            "used_id_tokens": self._expired(USED_ID_TOKENS, USED_ID_TOKENS.c.expires_at),
            "sessions": lambda: self._sessions.prune(batch=self.batch),
            "rate_limits": self._expired(RATE_LIMITS, RATE_LIMITS.c.expires_at),
            # Like used id_tokens: a security event's jti is kept while it could be accepted.
            "received_signals": self._expired(RECEIVED_SIGNALS, RECEIVED_SIGNALS.c.expires_at),
            # And an upstream session a logout ended, while its id_tokens could be accepted.
            "ended_upstream_sessions": self._expired(ENDED_UPSTREAM, ENDED_UPSTREAM.c.expires_at),
            "verification_tokens": self._expired(
                VERIFICATION_TOKENS, VERIFICATION_TOKENS.c.expires
            ),
            "audit_events": lambda: self._audit.prune(batch=self.batch),
            # Ended sessions whose access tokens have all expired leave the revocation feed;
            # delivered and dropped notices (with their attempts) go a week after.
            "revocations": self._expired(REVOCATIONS, REVOCATIONS.c.expires_at),
            "outbox": self._finished_notices,
        }
        done: dict[str, int | None] = {}
        for name, job in jobs.items():
            done[name] = await _guarded(f"pruning {name}", job)
        return done

    def _now(self) -> object:
        # The database's clock on PostgreSQL: a pruner whose host runs ahead must not delete
        # what the other replicas still rely on (docs/sessions.md).
        return self._db.shared_now(self._clock)

    async def _finished_notices(self) -> int:
        # Delivered and dropped notices (with their attempts) are kept a week, then go.
        finished = OUTBOX.c.finished_at
        past = (OUTBOX.c.state != "pending") & (finished < utc(self._clock() - NOTICES_KEPT))
        return await delete_batched(self._db, OUTBOX, finished, past, batch=self.batch)

    def _expired(self, table: Table, expires: Column[Any]) -> Callable[[], Awaitable[int]]:
        async def run() -> int:
            past = expires < self._now()
            return await delete_batched(self._db, table, expires, past, batch=self.batch)

        return run


async def _guarded(what: str, job: Callable[[], Awaitable[int]]) -> int | None:
    try:
        return await job()
    except Exception as error:  # this item failed; the others and the next round go on
        logger.warning("%s failed", what, extra={"event": {"error": type(error).__name__}})
        return None


async def run(
    keys: KeyManager,
    janitor: Janitor,
    sessions: Sessions,
    *,
    key_interval: float = KEY_RELOAD_INTERVAL,
    rotate: Callable[[], Awaitable[object]] | None = None,
) -> None:
    """Forever: notice key changes (on disk or in the database); rotate the database's keys
    when due (`rotate`, one replica at a time); forget sealed successors; prune once per round
    across the replicas (each look costs a statement or two; most are answered from memory)."""
    while True:
        await asyncio.sleep(key_interval)
        try:
            await keys.refresh()
            if rotate is not None and await rotate() is not None:
                await keys.refresh()  # the key this replica made, published here at once
        except Exception as error:  # refresh logs what it can; anything else must not end us
            logger.error("key reload failed", extra={"event": {"error": type(error).__name__}})
        await _guarded("forgetting sealed successors", sessions.forget_sealed)
        try:
            await janitor.round()  # prune guards each kind itself; this catches the rest
        except Exception as error:
            logger.error("pruning failed", extra={"event": {"error": type(error).__name__}})
