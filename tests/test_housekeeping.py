"""The background loop of every worker outlives any error of one of its items, and its janitor
prunes once per round across workers and replicas (directly, or through PgBouncer)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any, cast

import asyncpg
import pytest
from sqlalchemy import bindparam, insert, text
from sqlalchemy.engine import make_url

from identity.accounts import housekeeping
from identity.accounts.audit import AuditLog
from identity.accounts.sessions import SessionPolicy, Sessions
from identity.clock import utc
from identity.settings import Settings
from identity.store.database import Database
from identity.store.models import AUDIT_EVENTS, SESSIONS, USED_ID_TOKENS, USERS, UTCDateTime

from .support import LONG_AGO, Sql

pytestmark = pytest.mark.anyio


class Flaky:
    """Raises on its first `failures` calls, then counts successes."""

    def __init__(self, failures: int, error: Exception) -> None:
        self.failures = failures
        self.error = error
        self.calls = 0
        self.successes = 0

    def __call__(self) -> int:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        self.successes += 1
        return 0

    async def async_call(self, **_: object) -> int:  # a job, or `prune(batch=…)`
        return self()


async def test_every_item_of_a_round_survives_the_others_and_the_next_round_runs() -> None:
    # A key file vanishing between listing and stat(), a database outage, anything else.
    reload = Flaky(2, FileNotFoundError("keys/rsa-1.pem"))
    forget = Flaky(2, ConnectionRefusedError())
    prune = Flaky(1, RuntimeError("boom"))
    keys = cast(Any, type("Keys", (), {"refresh": staticmethod(reload.async_call)})())
    sessions = cast(Any, type("S", (), {"forget_sealed": staticmethod(forget.async_call)})())
    janitor = cast(Any, type("J", (), {"round": staticmethod(prune.async_call)})())
    task = asyncio.create_task(housekeeping.run(keys, janitor, sessions, key_interval=0.01))
    await asyncio.sleep(0.3)
    assert not task.done(), "the loop ended"
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert reload.successes >= 3 and forget.successes >= 3
    assert prune.calls >= 3  # a round whose janitor failed did not stop the next ones


async def test_one_failing_kind_of_pruning_leaves_the_others(tmp_path: Any) -> None:
    database = Database(f"sqlite+aiosqlite:///{tmp_path}/none.db")  # no tables: each job fails
    sessions = Sessions(database, SessionPolicy(absolute_ttl=60, idle_ttl=60, reuse_interval=10))
    audit = AuditLog(database, retention=60)
    ok = Flaky(0, RuntimeError())
    cast(Any, sessions).prune = ok.async_call  # this one works
    try:
        done = await housekeeping.Janitor(database, sessions, audit).prune()
    finally:
        await database.close()
    assert done["sessions"] == 0 and ok.successes == 1
    assert done["used_id_tokens"] is None and done["audit_events"] is None  # failed, logged


POLICY = SessionPolicy(absolute_ttl=60, idle_ttl=60, reuse_interval=10)


async def _expired_windows(sql: Sql, n: int) -> None:
    """`n` rate-limit windows that ended long ago: what one round of the janitor deletes."""
    async with sql.engine.begin() as connection:
        for i in range(n):
            await connection.execute(
                text(
                    "INSERT INTO rate_limits (key, window_start, count, expires_at)"
                    " VALUES (:key, 0, 1, '2000-01-01 00:00:00')"
                ),
                {"key": f"old:{i}"},
            )


@contextlib.asynccontextmanager
async def _replicas(url: str, pool_mode: str, n: int) -> AsyncIterator[list[housekeeping.Janitor]]:
    """`n` janitors, each on its own connections, as in `n` replicas; rounds of 2 seconds."""
    databases = [Database(url, pool_mode=pool_mode) for _ in range(n)]
    try:
        yield [
            housekeeping.Janitor(d, Sessions(d, POLICY), AuditLog(d, retention=3600), interval=2)
            for d in databases
        ]
    finally:
        for database in databases:
            await database.close()


async def test_three_replicas_prune_each_round_once(
    database_url: str, settings: Settings, sql: Sql, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="identity.housekeeping")
    await _expired_windows(sql, 7)
    async with _replicas(database_url, settings.database_pool_mode, 3) as janitors:
        _wait_for_a_fresh_round(2)
        first = await asyncio.gather(*(j.round() for j in janitors))
        again = await asyncio.gather(*(j.round() for j in janitors))  # the same round
        await _expired_windows(sql, 5)
        _wait_for_a_fresh_round(2)
        second = await asyncio.gather(*(j.round() for j in janitors))
        assert await asyncio.gather(*(j.round() for j in janitors)) == [None, None, None]
    done = [r for r in first if r is not None]
    assert len(done) == 1 and done[0]["rate_limits"] == 7, first
    assert again == [None, None, None]
    done = [r for r in second if r is not None]
    # The five, and the first round's mark: its window is over.
    assert len(done) == 1 and done[0]["rate_limits"] == 6, second
    lines = [r.getMessage() for r in caplog.records]
    assert lines.count("janitor round done") == 2
    # Each replica that did not prune a round heard that it was done, once per round.
    assert lines.count("janitor round done elsewhere") == 4
    assert await sql.scalar("SELECT count(*) FROM rate_limits WHERE key LIKE 'old:%'") == 0
    marks = await sql.scalar("SELECT count(*) FROM rate_limits WHERE key = 'janitor:round'")
    assert marks == 1


def _wait_for_a_fresh_round(interval: int) -> None:
    """Sleep until a round has just begun, so the next looks all fall in one round."""
    time.sleep(interval - time.time() % interval + 0.05)


async def test_a_round_under_way_elsewhere_is_skipped_and_taken_if_it_dies(
    database_url: str, settings: Settings, sql: Sql
) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("advisory locks are PostgreSQL's")
    await _expired_windows(sql, 3)
    async with _replicas(database_url, settings.database_pool_mode, 2) as janitors:
        _wait_for_a_fresh_round(2)
        # Another replica's round, under way: its lock held, not yet marked done.
        plain = make_url(str(sql.engine.url)).set(drivername="postgresql")
        other = await asyncpg.connect(plain.render_as_string(hide_password=False))
        try:
            async with other.transaction():
                await other.execute(
                    "SELECT pg_advisory_xact_lock($1, $2)",
                    housekeeping.LOCK_CLASS,
                    housekeeping.JANITOR_LOCK,
                )
                assert await asyncio.gather(*(j.round() for j in janitors)) == [None, None]
                raise RuntimeError("that replica dies before it marks the round")
        except RuntimeError:
            pass
        finally:
            await other.close()
        # Its lock went with it; the round is still to do, and one of these does it.
        results = await asyncio.gather(*(j.round() for j in janitors))
    assert sorted(r is None for r in results) == [False, True]
    assert await sql.scalar("SELECT count(*) FROM rate_limits WHERE key LIKE 'old:%'") == 0


async def _backlog(database: Database) -> None:
    """An expired backlog beside live rows: 23 used id_tokens past their time (2 live); 25
    sessions past their end and 3 idle too long (2 alive); 21 audit events past retention (2
    kept)."""
    now, later = utc(time.time()), utc(time.time() + 3600)
    user = {"name_edited": False, "image_edited": False, "email_edited": False}
    session = {"client_id": "web", "scope": "openid", "created_at": LONG_AGO}
    async with database.transaction() as tx:
        await tx.execute(
            insert(USERS), [{"id": "u1", **user, "created_at": now, "updated_at": now}]
        )
        await tx.execute(
            insert(USED_ID_TOKENS),
            [{"replay_key": f"old{i}", "expires_at": LONG_AGO} for i in range(23)]
            + [{"replay_key": f"new{i}", "expires_at": later} for i in range(2)],
        )
        ends = [(LONG_AGO, now)] * 25 + [(later, LONG_AGO)] * 3 + [(later, now)] * 2
        await tx.execute(
            insert(SESSIONS),
            [
                {
                    "id": f"s{i}",
                    "session_token": f"t{i}",
                    "user_id": "u1",
                    "expires": expires,
                    "last_used_at": used,
                    **session,
                }
                for i, (expires, used) in enumerate(ends)
            ],
        )
        await tx.execute(
            insert(AUDIT_EVENTS),
            [{"created_at": LONG_AGO, "type": "sign_in", "detail": {}}] * 21
            + [{"created_at": now, "type": "sign_in", "detail": {}}] * 2,
        )


def _counting_transactions(database: Database) -> list[int]:
    """Count the transactions `database` begins from now on (in the list's one item)."""
    count = [0]
    begin = database.transaction

    @contextlib.asynccontextmanager
    async def counted() -> AsyncIterator[Any]:
        count[0] += 1
        async with begin() as tx:
            yield tx

    cast(Any, database).transaction = counted
    return count


async def test_a_backlog_is_pruned_in_bounded_batches_and_the_live_rows_stay(
    database_url: str, settings: Settings, sql: Sql
) -> None:
    database = Database(database_url, pool_mode=settings.database_pool_mode)
    try:
        await _backlog(database)
        began = _counting_transactions(database)
        sessions = Sessions(database, POLICY)
        janitor = housekeeping.Janitor(
            database, sessions, AuditLog(database, retention=3600), batch=10
        )
        done = await janitor.prune()
    finally:
        await database.close()
    assert done == {
        "used_id_tokens": 23,
        "sessions": 28,
        "rate_limits": 0,
        "verification_tokens": 0,
        "audit_events": 21,
        "revocations": 0,
        "outbox": 0,
        "received_signals": 0,
        "ended_upstream_sessions": 0,
    }
    # Ten rows per transaction: 3 for the id_tokens, 3 + 1 for the sessions (past their end,
    # then idle), 3 for the events, one each for the empty kinds (seven of them).
    assert began[0] == 16
    assert await sql.scalar("SELECT count(*) FROM used_id_tokens") == 2
    assert await sql.scalar("SELECT count(*) FROM sessions") == 2
    assert await sql.scalar("SELECT count(*) FROM audit_events") == 2


async def test_pruning_skips_a_row_a_request_holds_instead_of_waiting(
    database_url: str, settings: Settings, sql: Sql
) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite has one writer at a time: nothing to skip")
    database = Database(database_url, pool_mode=settings.database_pool_mode)
    plain = make_url(str(sql.engine.url)).set(drivername="postgresql")
    other = await asyncpg.connect(plain.render_as_string(hide_password=False))
    try:
        await _backlog(database)
        async with other.transaction():  # a refresh of an expired session, under way
            await other.execute("SELECT 1 FROM sessions WHERE id = 's7' FOR UPDATE")
            janitor = housekeeping.Janitor(
                database, Sessions(database, POLICY), AuditLog(database, retention=3600), batch=10
            )
            pruned = await asyncio.wait_for(janitor.prune(), timeout=10)
    finally:
        await other.close()
        await database.close()
    assert pruned["sessions"] == 27
    assert await sql.scalar("SELECT count(*) FROM sessions WHERE id = 's7'") == 1


async def test_the_janitor_prunes_expired_signal_records(database_url: str, sql: Sql) -> None:
    database = Database(database_url)
    sessions = Sessions(database, POLICY)
    async with sql.engine.begin() as connection:
        await connection.execute(
            text(
                "INSERT INTO received_signals (provider, jti, expires_at) VALUES "
                "('google', 'old', :old), ('google', 'new', :new)"
            ).bindparams(
                bindparam("old", type_=UTCDateTime()), bindparam("new", type_=UTCDateTime())
            ),
            {"old": LONG_AGO, "new": datetime(2999, 1, 1, tzinfo=UTC)},
        )
    try:
        done = await housekeeping.Janitor(
            database, sessions, AuditLog(database, retention=60)
        ).prune()
    finally:
        await database.close()
    assert done["received_signals"] == 1
    assert [r["jti"] for r in await sql.rows("SELECT jti FROM received_signals")] == ["new"]


async def test_the_janitor_prunes_expired_ended_upstream_sessions(
    database_url: str, sql: Sql
) -> None:
    database = Database(database_url)
    sessions = Sessions(database, POLICY)
    async with sql.engine.begin() as connection:
        await connection.execute(
            text(
                "INSERT INTO ended_upstream_sessions (provider, sid, expires_at) VALUES "
                "('okta', 'old', :old), ('okta', 'new', :new)"
            ).bindparams(
                bindparam("old", type_=UTCDateTime()), bindparam("new", type_=UTCDateTime())
            ),
            {"old": LONG_AGO, "new": datetime(2999, 1, 1, tzinfo=UTC)},
        )
    try:
        done = await housekeeping.Janitor(
            database, sessions, AuditLog(database, retention=60)
        ).prune()
    finally:
        await database.close()
    assert done["ended_upstream_sessions"] == 1
    assert [r["sid"] for r in await sql.rows("SELECT sid FROM ended_upstream_sessions")] == ["new"]
