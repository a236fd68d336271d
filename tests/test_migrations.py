"""Alembic migrations: they run on both databases and agree with the models."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import Connection, make_url
from sqlmodel import SQLModel

from identity.store.database import alembic_config, create_engine

import identity.store.models  # noqa: F401  isort: skip

pytestmark = pytest.mark.anyio


def _diff(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, SQLModel.metadata))


async def test_models_and_migrations_agree(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            assert await connection.run_sync(_diff) == []
            tables = await connection.run_sync(lambda c: set(inspect(c).get_table_names()))
    finally:
        await engine.dispose()
    assert {
        "users",
        "accounts",
        "sessions",
        "verification_tokens",
        "used_id_tokens",
        "audit_events",
    } <= tables


def test_downgrade_and_upgrade_again(tmp_path: Path) -> None:
    config = alembic_config(f"sqlite+aiosqlite:///{tmp_path}/m.db")
    command.upgrade(config, "head")
    command.downgrade(config, "base")
    command.upgrade(config, "head")


async def test_postgresql_gets_the_hot_path_functions_and_loses_them_on_downgrade(
    pg_database: str,
) -> None:
    plain = make_url(pg_database).set(drivername="postgresql").render_as_string(hide_password=False)

    async def functions() -> set[str]:
        connection = await asyncpg.connect(plain)
        try:
            rows = await connection.fetch(
                "SELECT proname FROM pg_proc WHERE proname LIKE 'identity_%'"
            )
            return {r["proname"] for r in rows}
        finally:
            await connection.close()

    # identity_revocation_order: the trigger numbering revocations in commit order (0013).
    everything = {"identity_sign_in", "identity_refresh", "identity_revocation_order"}
    assert await functions() == everything
    config = alembic_config(pg_database)
    # Alembic runs its own event loop: in a thread, beside this test's.
    await asyncio.to_thread(command.downgrade, config, "0004")
    assert await functions() == set()
    await asyncio.to_thread(command.upgrade, config, "head")
    assert await functions() == everything


def test_the_pruning_indexes_made_beforehand_are_kept(tmp_path: Path) -> None:
    # An operator makes them with CREATE INDEX CONCURRENTLY on a large table first
    # (docs/operations.md, "Pruning"); the migration then finds them and goes on.
    path = tmp_path / "m.db"
    config = alembic_config(f"sqlite+aiosqlite:///{path}")
    command.upgrade(config, "0009")
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE INDEX ix_sessions_expires ON sessions (expires)")
    command.upgrade(config, "0010")
    with sqlite3.connect(path) as connection:
        names = {
            row[0]
            for row in connection.execute(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'sessions'"
            )
        }
    assert {"ix_sessions_expires", "ix_sessions_last_used_at", "ix_sessions_sealed"} <= names
    command.downgrade(config, "0009")
    with sqlite3.connect(path) as connection:
        left = {
            row[0]
            for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'index'")
        }
    assert not left & {"ix_sessions_expires", "ix_sessions_last_used_at", "ix_sessions_sealed"}


def test_apple_revocations_leave_with_their_column_on_downgrade(tmp_path: Path) -> None:
    # 0011 adds outbox.sealed (an Apple revocation's sealed token); the release before knows no
    # apple.revoke notice, so a downgrade drops those still pending and keeps every other one.
    path = tmp_path / "m.db"
    config = alembic_config(f"sqlite+aiosqlite:///{path}")
    command.upgrade(config, "0011")
    insert = (
        "INSERT INTO outbox (event, destination, payload, created_at, next_attempt_at, attempts, "
        "state, sealed) VALUES (?, ?, '{}', '2026-12-05', '2026-12-05', 0, 'pending', ?)"
    )
    with sqlite3.connect(path) as connection:
        connection.execute(insert, ("apple.revoke", "apple:web", "gAAAA-sealed"))
        connection.execute(insert, ("user.deleted", "webhook:https://hooks.example", None))
    command.downgrade(config, "0010")
    with sqlite3.connect(path) as connection:
        columns = {row[1] for row in connection.execute("PRAGMA table_info(outbox)")}
        events = [row[0] for row in connection.execute("SELECT event FROM outbox")]
    assert "sealed" not in columns
    assert events == ["user.deleted"]


def test_sqlite_ids_are_never_reused_from_0013_and_rows_survive_its_downgrade(
    tmp_path: Path,
) -> None:
    # 0013 rebuilds revocations and outbox as AUTOINCREMENT tables: an id the janitor deleted
    # is never handed out again (a feed cursor or a webhook-id past it would skip new rows).
    path = tmp_path / "m.db"
    config = alembic_config(f"sqlite+aiosqlite:///{path}")
    command.upgrade(config, "0012")
    revocation = (
        "INSERT INTO revocations (txid, session_id, client_id, user_id, ended_at, expires_at)"
        " VALUES (0, ?, 'web', 'u', '2026-12-05', '2026-12-05')"
    )
    with sqlite3.connect(path) as connection:
        connection.execute(revocation, ("kept",))
    command.upgrade(config, "head")
    with sqlite3.connect(path) as connection:
        assert [r[0] for r in connection.execute("SELECT session_id FROM revocations")] == ["kept"]
        connection.execute(revocation, ("second",))
        connection.execute("DELETE FROM revocations")
        connection.execute(revocation, ("third",))
        assert connection.execute("SELECT id FROM revocations").fetchall() == [(3,)]
    command.downgrade(config, "0012")
    with sqlite3.connect(path) as connection:
        assert connection.execute("SELECT session_id FROM revocations").fetchall() == [("third",)]
