"""Rate limits kept in the database, so every worker and replica counts together.

A fixed-window counter per key: `INSERT … ON CONFLICT DO UPDATE SET count = count + 1
RETURNING count`, one round trip, atomic on PostgreSQL and SQLite alike.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from sqlalchemy import delete
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from .errors import RateLimited
from .models import RateLimitWindow, utc
from .settings import RateLimit

Clock = Callable[[], float]


class RateLimiter:
    def __init__(self, *, clock: Clock = time.time) -> None:
        self._clock = clock

    async def hit(self, tx: AsyncSession, key: str, limit: RateLimit | None) -> None:
        """Count one event for `key` in `tx`; RateLimited (429) once the window is full."""
        if limit is None:
            return
        now = self._clock()
        start = int(now // limit.period * limit.period)
        insert = postgresql.insert if tx.get_bind().dialect.name == "postgresql" else sqlite.insert
        table = RateLimitWindow.__table__  # type: ignore[attr-defined]
        statement = (
            insert(table)
            .values(
                key=key[:200], window_start=start, count=1, expires_at=utc(start + limit.period)
            )
            .on_conflict_do_update(
                index_elements=["key", "window_start"], set_={"count": table.c.count + 1}
            )
            .returning(table.c.count)
        )
        count = int((await tx.execute(statement)).scalar_one())
        if count > limit.count:
            raise RateLimited(
                "too many requests; try again later",
                retry_after=max(1, math.ceil(start + limit.period - now)),
            )

    async def prune(self, tx: AsyncSession) -> None:
        await tx.execute(
            delete(RateLimitWindow).where(col(RateLimitWindow.expires_at) < utc(self._clock()))
        )
