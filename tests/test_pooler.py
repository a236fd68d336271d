"""PostgreSQL behind PgBouncer in transaction mode (IDENTITY_DATABASE_POOL_MODE=transaction).

The database tests of the modules in conftest's THROUGH_PGBOUNCER and the two-process races run
through the same PgBouncer; here: that it is a real transaction pooler (what breaks without the
setting, and the line that names it), and the migrations and the CLI through it.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from alembic import command
from sqlalchemy.engine import make_url

from identity.store.database import Database, alembic_config

from .poolers import PgBouncer
from .servers import base_env, run_cli

pytestmark = pytest.mark.anyio
STATEMENTS = [f"SELECT $1::integer + {i}" for i in range(4)]


async def _concurrently(database: Database, rounds: int = 60) -> list[BaseException]:
    """Hot-path and cold-path statements from many connections at once; the errors."""

    async def hot(i: int) -> None:
        await database.fetchrow(STATEMENTS[i % 4], i)

    async def cold(i: int) -> None:
        async with database.transaction() as tx:
            await tx.fetch(STATEMENTS[i % 4], i)

    results = await asyncio.gather(
        *(hot(i) for i in range(rounds)), *(cold(i) for i in range(rounds)), return_exceptions=True
    )
    return [r for r in results if isinstance(r, BaseException)]


async def test_without_the_pool_mode_prepared_statements_break_and_the_log_says_why(
    pgbouncer_database: str, caplog: pytest.LogCaptureFixture
) -> None:
    # The proof that the backend the other tests call "pgbouncer" pools per transaction: the
    # default (session) mode fails through it, with the error the log line explains.
    caplog.set_level(logging.ERROR, logger="identity.database")
    database = Database(pgbouncer_database, pool_size=20)
    try:
        errors = await _concurrently(database)
    finally:
        await database.close()
    assert errors, "session mode worked through PgBouncer: it is not pooling per transaction"
    allowed = {"InvalidSQLStatementNameError", "DuplicatePreparedStatementError", "DBAPIError"}
    assert {type(e).__name__ for e in errors} <= allowed
    hints = [
        r.getMessage() for r in caplog.records if "IDENTITY_DATABASE_POOL_MODE" in r.getMessage()
    ]
    assert len(hints) == 1, hints  # once per process, not once per failure


async def test_with_the_pool_mode_every_statement_works(
    pgbouncer_database: str, caplog: pytest.LogCaptureFixture
) -> None:
    database = Database(pgbouncer_database, pool_size=20, pool_mode="transaction")
    try:
        assert await _concurrently(database, rounds=200) == []
    finally:
        await database.close()
    assert not [r for r in caplog.records if r.name == "identity.database"]


@pytest.fixture
def fresh_database(pg_database: str) -> Iterator[str]:
    """An empty database on the test PostgreSQL (not migrated), dropped afterwards."""
    name = f"identity_pooler_{secrets.token_hex(4)}"
    admin = make_url(pg_database).set(drivername="postgresql")
    asyncio.run(_execute(admin.render_as_string(hide_password=False), f'CREATE DATABASE "{name}"'))
    try:
        yield admin.set(drivername="postgresql+asyncpg", database=name).render_as_string(
            hide_password=False
        )
    finally:
        statement = f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'
        asyncio.run(_execute(admin.render_as_string(hide_password=False), statement))


async def _execute(url: str, statement: str) -> None:
    connection = await asyncpg.connect(url)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


def test_migrations_and_the_cli_through_pgbouncer(
    fresh_database: str, pgbouncer_server: PgBouncer, tmp_path: Path
) -> None:
    pooled = pgbouncer_server.url(fresh_database)
    env = base_env(
        IDENTITY_DATABASE_URL=pooled,
        IDENTITY_DATABASE_POOL_MODE="transaction",
        IDENTITY_KEYS_DIR=str(tmp_path / "keys"),
    )
    migrated = run_cli("migrate", env=env, cwd=tmp_path)
    assert migrated.returncode == 0, migrated.stderr
    # Down to before the hot-path functions and up again: every migration, both ways.
    config = alembic_config(pooled, "transaction")
    command.downgrade(config, "0004")
    command.upgrade(config, "head")
    pruned = run_cli("prune", "--json", env=env, cwd=tmp_path)
    assert pruned.returncode == 0, pruned.stderr
    listed = run_cli("users", "list", "--json", env=env, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
