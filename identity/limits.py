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
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlmodel import col, select
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .database import Database, Executor, dialect_name
from .errors import RateLimited
from .middleware import send_error
from .models import RateLimitWindow, utc
from .settings import RateLimit

Clock = Callable[[], float]


class RateLimiter:
    def __init__(self, *, clock: Clock = time.time) -> None:
        self._clock = clock

    async def hit(self, tx: Executor, key: str, limit: RateLimit | None) -> None:
        """Count one event for `key` in `tx`; RateLimited (429) once the window is full."""
        if limit is None:
            return
        count, start = await self.increment(tx, key, limit.period)
        if count > limit.count:
            raise RateLimited(
                "too many requests; try again later",
                retry_after=max(1, math.ceil(start + limit.period - self._clock())),
            )

    async def increment(self, tx: Executor, key: str, period: int) -> tuple[int, int]:
        """Count one event; return the window's count and start."""
        start = int(self._clock() // period * period)
        insert = postgresql.insert if dialect_name(tx) == "postgresql" else sqlite.insert
        table = RateLimitWindow.__table__  # type: ignore[attr-defined]
        statement = (
            insert(table)
            .values(key=key[:200], window_start=start, count=1, expires_at=utc(start + period))
            .on_conflict_do_update(
                index_elements=["key", "window_start"], set_={"count": table.c.count + 1}
            )
            .returning(table.c.count)
        )
        return int((await tx.execute(statement)).scalar_one()), start

    async def exceeded(self, tx: Executor, key: str, limit: RateLimit) -> int | None:
        """Seconds until the window ends if `key` is over `limit`, else None (a read only)."""
        now = self._clock()
        start = int(now // limit.period * limit.period)
        count = (
            await tx.execute(
                select(col(RateLimitWindow.count)).where(
                    col(RateLimitWindow.key) == key[:200],
                    col(RateLimitWindow.window_start) == start,
                )
            )
        ).scalar_one_or_none()
        if count is None or count < limit.count:
            return None
        return max(1, math.ceil(start + limit.period - now))

    async def prune(self, tx: Executor) -> None:
        await tx.execute(
            delete(RateLimitWindow).where(col(RateLimitWindow.expires_at) < utc(self._clock()))
        )


GUARDED = ("/token", "/auth/", "/revoke", "/introspect")


class FailureGuard:
    """Per client IP: once its failed requests in a window reach the limit, every request from it
    to the guarded endpoints gets 429 until the window passes (IDENTITY_RATE_LIMIT_FAILURES)."""

    def __init__(
        self, app: ASGIApp, *, database: Database, limiter: RateLimiter, limit: RateLimit | None
    ) -> None:
        self.app = app
        self._db = database
        self._limiter = limiter
        self._limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        limit = self._limit
        if limit is None or scope["type"] != "http" or not scope["path"].startswith(GUARDED):
            await self.app(scope, receive, send)
            return
        key = f"fail:{(scope.get('client') or ('unknown',))[0]}"
        try:
            async with self._db.transaction() as tx:
                retry_after = await self._limiter.exceeded(tx, key, limit)
        except (DBAPIError, PoolTimeout, OSError):
            retry_after = None  # the database is down: the endpoint itself will answer 503
        if retry_after is not None:
            error = RateLimited(
                "too many failed requests; try again later", retry_after=retry_after
            )
            await send_error(send, error)
            return
        status = 0

        async def watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        await self.app(scope, receive, watch)
        # Client errors count; our own failures (5xx) and the 429s themselves do not.
        if 400 <= status < 500 and status != 429:
            try:
                async with self._db.transaction() as tx:
                    await self._limiter.increment(tx, key, limit.period)
            except (DBAPIError, PoolTimeout, OSError):
                pass  # counting is best effort; the answer was already sent
