"""Deleting what has expired in bounded batches (docs/operations.md, "Pruning").

Each batch is taken in the order of the time column that decides expiry, through its index: the
oldest first. Without the order, a `LIMIT` lets the planner read the table from the start and
stop at the first `batch` rows that match, which it supposes spread evenly; expired rows sit
wherever they were written, so that read can cross the whole table before it finds one.

A backlog of a million expired rows deleted by one statement holds a million row locks and one
long transaction: a refresh of one of those sessions waits for all of it, and the table's dead
rows cannot be vacuumed until it ends. Here each batch is its own short transaction: it picks
at most `batch` matching rows through an index, skips any a request holds (`FOR UPDATE SKIP
LOCKED` on PostgreSQL: the janitor never waits on a sign-in, and a sign-in waits on the janitor
for one batch at most), deletes them and commits; the next batch follows, after a short pause,
until one comes back short. SQLite, one writer at a time, takes its write lock per batch the
same way.
"""

from __future__ import annotations

import asyncio
from typing import Any

import sqlalchemy as sa

from .database import Database

PRUNE_BATCH = 1000  # rows per transaction: a few milliseconds of locks (docs/performance.md)
# A pause after each full batch: the janitor shares the cores with the requests, and a backlog
# worked off at full speed doubles their tail latency (docs/performance.md, "Data at scale").
PRUNE_PAUSE = 0.02


async def delete_batched(
    database: Database,
    table: sa.Table,
    expires: sa.Column[Any],
    condition: sa.ColumnElement[bool],
    *,
    batch: int,
    pause: float = PRUNE_PAUSE,
) -> int:
    """Delete the rows of `table` that match `condition` (on the indexed time column
    `expires`), oldest first, `batch` per transaction; how many."""
    keys = list(table.primary_key.columns)
    chosen = (
        sa.select(*keys)
        .where(condition)
        .order_by(expires)
        .limit(batch)
        .with_for_update(skip_locked=True)
    )
    target = keys[0] if len(keys) == 1 else sa.tuple_(*keys)
    statement = sa.delete(table).where(target.in_(chosen))
    total = 0
    while True:
        async with database.transaction() as tx:
            deleted = int((await tx.execute(statement)).rowcount)
        total += deleted
        if deleted < batch:
            return total
        await asyncio.sleep(pause)
