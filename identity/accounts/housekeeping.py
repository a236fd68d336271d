"""Background work of a running server, and the janitor that `identity prune` runs once.

Every round does each item on its own: a key file that vanished, a database that is down or any
other error of one item is logged and the next item, and the next round, go on. Nothing here can
end the loop but the server's shutdown (docs/operations.md).

The janitor prunes once per round of JANITOR_INTERVAL across every worker and replica, the
rounds counted on the database's clock: the first to look after a round begins does it, the
others skip it. On PostgreSQL the round runs under an advisory transaction lock (one janitor at a
time, also through a transaction-mode pooler) and is marked done in `rate_limits` (key
`janitor:round`, a window of one) in the same transaction, so a janitor that dies half-way
leaves the round to the next one that looks.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from sqlalchemy import delete

from identity.clock import Clock, utc
from identity.store.database import Database, Tx
from identity.store.models import (
    RATE_LIMITS,
    RECEIVED_SIGNALS,
    USED_ID_TOKENS,
    VERIFICATION_TOKENS,
)
from identity.tokens.signing_keys import KeyManager

from .audit import AuditLog
from .sessions import Sessions

logger = logging.getLogger("identity.housekeeping")
KEY_RELOAD_INTERVAL = 30.0
JANITOR_INTERVAL = 600
# PostgreSQL advisory locks of the jobs done by one replica at a time: identity's class ("id"
# in ASCII), then the job. The janitor is 1; a later job (automatic key rotation) takes its own.
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
    ) -> None:
        self._db = database
        self._sessions = sessions
        self._audit = audit_log
        self._clock = clock
        self.interval = interval
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
            "used_id_tokens": self._expired(
                USED_ID_TOKENS.delete().where(USED_ID_TOKENS.c.expires_at < self._now())
            ),
            # Like used id_tokens: a security event's jti is kept while it could be accepted.
            "received_signals": self._expired(
                delete(RECEIVED_SIGNALS).where(RECEIVED_SIGNALS.c.expires_at < self._now())
            ),
            "sessions": self._sessions.prune,
            "rate_limits": self._expired(
                delete(RATE_LIMITS).where(RATE_LIMITS.c.expires_at < self._now())
            ),
            "verification_tokens": self._expired(
                delete(VERIFICATION_TOKENS).where(VERIFICATION_TOKENS.c.expires < self._now())
            ),
            "audit_events": self._audit.prune,
        }
        done: dict[str, int | None] = {}
        for name, job in jobs.items():
            done[name] = await _guarded(f"pruning {name}", job)
        return done

    def _now(self) -> object:
        # The database's clock on PostgreSQL: a pruner whose host runs ahead must not delete
        # what the other replicas still rely on (docs/sessions.md).
        return self._db.shared_now(self._clock)

    def _expired(self, statement: object) -> Callable[[], Awaitable[int]]:
        async def run() -> int:
            async with self._db.transaction() as tx:
                return int((await tx.execute(statement)).rowcount)

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
) -> None:
    """Forever: notice key changes on disk; forget sealed successors; prune once per round
    across the replicas (each look costs a statement or two; most are answered from memory)."""
    while True:
        await asyncio.sleep(key_interval)
        try:
            keys.reload_if_changed()
        except Exception as error:  # reload logs what it can; anything else must not end us
            logger.error("key reload failed", extra={"event": {"error": type(error).__name__}})
        await _guarded("forgetting sealed successors", sessions.forget_sealed)
        try:
            await janitor.round()  # prune guards each kind itself; this catches the rest
        except Exception as error:
            logger.error("pruning failed", extra={"event": {"error": type(error).__name__}})
