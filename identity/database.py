"""The async engine, transactions, and Alembic migrations."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

_HERE = Path(__file__).resolve().parent


def create_engine(url: str, **options: Any) -> AsyncEngine:
    if url.startswith("sqlite"):
        engine = create_async_engine(url, connect_args={"timeout": 30}, **options)
        _sqlite_pragmas(engine)
        return engine
    options.setdefault("pool_size", 10)
    options.setdefault("max_overflow", 10)
    # No pre-ping: it costs a round trip on every checkout. A dead connection fails its request
    # with a 503 instead, and SQLAlchemy then invalidates the whole pool, so one request (not
    # one per pooled connection) pays for a database restart.
    options.setdefault("pool_pre_ping", False)
    options.setdefault("pool_timeout", 10)
    return create_async_engine(url, **options)


def _sqlite_pragmas(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, start transactions (see "begin" below).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")  # cascades on user deletion
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        # IMMEDIATE takes the write lock up front: two transactions that read, then write,
        # would otherwise deadlock and fail with "database is locked" instead of waiting.
        connection.exec_driver_sql("BEGIN IMMEDIATE")


# Either kind of transaction handle: ORM session (rare paths) or Core connection (hot paths).
Executor = AsyncSession | AsyncConnection


def dialect_name(tx: Executor) -> str:
    return tx.dialect.name if isinstance(tx, AsyncConnection) else tx.get_bind().dialect.name


class Database:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """One transaction: committed when the block ends, rolled back on any exception."""
        async with self._sessions() as session, session.begin():
            yield session

    @asynccontextmanager
    async def core(self) -> AsyncIterator[AsyncConnection]:
        """A Core transaction on a plain connection: no ORM unit of work on the hot paths."""
        async with self.engine.begin() as connection:
            yield connection

    @asynccontextmanager
    async def reader(self) -> AsyncIterator[AsyncSession]:
        async with self._sessions() as session:
            yield session

    async def ping(self, within: float = 2.0) -> bool:
        # Twice: after a database restart the first try meets a dead pooled connection, which
        # invalidates the pool; the second then reports the truth.
        for _ in range(2):
            try:
                async with asyncio.timeout(within), self.engine.connect() as connection:
                    await connection.execute(text("SELECT 1"))
            except Exception:  # noqa: S112 - readiness reports any failure as "not ready"
                continue
            return True
        return False


def migrations_dir() -> Path:
    packaged = _HERE / "migrations"  # inside an installed wheel
    return packaged if packaged.is_dir() else _HERE.parent / "migrations"


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    config.attributes["database_url"] = url
    return config


def migrate(url: str, revision: str = "head") -> None:
    """Apply migrations (synchronous: call it before the event loop starts)."""
    command.upgrade(alembic_config(url), revision)
