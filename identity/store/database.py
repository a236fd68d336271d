"""The database: two ways in, one per kind of path, and the one place an outage becomes a 503.

- Cold paths (profile changes, admin, audit queries, pruning…) use SQLAlchemy Core statements on
  the typed tables of `models.py`, through `Database.transaction()`.
- Hot paths (sign-in, refresh, /users/me, the failure count) use SQL text through `Database.sql`
  and `Database.hot()`: asyncpg directly on PostgreSQL (prepared statements, records straight
  into our types, a pool sized for the worker's concurrency), the same text on SQLite through
  the driver under SQLAlchemy's connection. Statements are written with `$1` parameters; the
  two PostgreSQL functions of the sign-in and the refresh are called through `functions.Call`.

Any failure to reach the database (refused, reset, restarting, pool exhausted, SQLite locked)
raises `TemporarilyUnavailable`, here and nowhere else; any other database error is a bug and
propagates (a 500, logged by type).

Behind a transaction-mode pooler (PgBouncer, RDS Proxy, Supavisor: `pool_mode="transaction"`,
IDENTITY_DATABASE_POOL_MODE) each transaction may run on another server connection, so no
server-side prepared statement may outlive one: both doors turn their statement caches off and
asyncpg uses the unnamed statement, parsed and executed in one exchange with the server
(docs/operations.md, "PgBouncer").
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, cast

import asyncpg
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import event, func, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from identity.clock import Clock, utc
from identity.errors import TemporarilyUnavailable
from identity.tracing import NO_TRACING, Tracer

_PACKAGE = Path(__file__).resolve().parent.parent  # the identity package
_PARAM = re.compile(r"\$(\d+)")
Row = Mapping[str, Any]
POOL_MODES = ("session", "transaction")
logger = logging.getLogger("identity.database")
# What a transaction-mode pooler does to a cached prepared statement, seen from the client.
_POOLER_SYMPTOMS = (
    asyncpg.exceptions.InvalidSQLStatementNameError,  # prepared on another server connection
    asyncpg.exceptions.DuplicatePreparedStatementError,  # another client's, on this one
)


def is_outage(error: BaseException) -> bool:
    """Whether `error` means the database cannot be reached, rather than a wrong statement."""
    if isinstance(error, sa_exc.DBAPIError) and error.connection_invalidated:
        return True
    if isinstance(error, sa_exc.OperationalError | sa_exc.InterfaceError | sa_exc.TimeoutError):
        return True  # includes SQLite's "database is locked" and a full pool
    if isinstance(error, sa_exc.DBAPIError) and error.orig is not None:
        # SQLAlchemy's asyncpg adapter wraps asyncpg's error (a full server's 53300, a shutting
        # down one's 57P01) in a generic error of its own, with asyncpg's as the cause.
        cause = error.orig.__cause__
        return is_outage(error.orig) or (cause is not None and is_outage(cause))
    return isinstance(
        error,
        OSError
        | TimeoutError
        | asyncpg.PostgresConnectionError
        | asyncpg.InterfaceError
        | asyncpg.exceptions.OperatorInterventionError
        | asyncpg.exceptions.InsufficientResourcesError,
    )


def _pooler_symptom(error: BaseException) -> bool:
    """Whether `error` is what a transaction-mode pooler does to a cached prepared statement."""
    while isinstance(error, sa_exc.DBAPIError) and error.orig is not None:
        error = error.orig
    # SQLAlchemy's asyncpg adapter raises its own error with asyncpg's as the cause.
    return isinstance(error, _POOLER_SYMPTOMS) or isinstance(error.__cause__, _POOLER_SYMPTOMS)


def unavailable() -> TemporarilyUnavailable:
    return TemporarilyUnavailable(
        "the service is temporarily unavailable", reason="database_unavailable"
    )


class Sql(Protocol):
    """SQL text with `$n` parameters on one connection (and, for SQLite, one transaction)."""

    async def fetch(self, query: str, *args: Any) -> list[Row]: ...

    async def fetchrow(self, query: str, *args: Any) -> Row | None: ...

    async def fetchone(self, query: str, *args: Any) -> Row:
        """The row of a statement that always returns one (an INSERT … RETURNING, a call)."""
        ...


class _Rows(ABC):
    """`fetchrow` and `fetchone` over a connection's own `fetch`, for both kinds of connection."""

    @abstractmethod
    async def fetch(self, query: str, *args: Any) -> list[Row]: ...

    async def fetchrow(self, query: str, *args: Any) -> Row | None:
        rows = await self.fetch(query, *args)
        return rows[0] if rows else None

    async def fetchone(self, query: str, *args: Any) -> Row:
        rows = await self.fetch(query, *args)
        if not rows:
            raise RuntimeError("a statement that returns a row returned none")
        return rows[0]


class Tx(_Rows):
    """A transaction: SQLAlchemy Core statements (`execute`) or `$n` SQL text (`fetch`)."""

    def __init__(self, connection: AsyncConnection, tracer: Tracer) -> None:
        self.connection = connection
        self.dialect = connection.dialect.name
        self._tracer = tracer

    async def execute(self, statement: Any, parameters: Any = None) -> Any:
        if not self._tracer.enabled:
            return await self.connection.execute(statement, parameters)
        table = getattr(getattr(statement, "table", None), "name", "")
        with self._tracer.span("db.statement", {"db.system": self.dialect, "db.table": table}):
            return await self.connection.execute(statement, parameters)

    async def fetch(self, query: str, *args: Any) -> list[Row]:
        # asyncpg takes `$1` itself; SQLite gets its numbered `?1`, and values in the form
        # SQLAlchemy's SQLite types store, so Core statements read these rows back unchanged.
        if self.dialect == "sqlite":
            statement, values = _PARAM.sub(r"?\1", query), tuple(_sqlite_value(a) for a in args)
        else:
            statement, values = query, args
        with self._tracer.span("db.statement", _attributes(self.dialect, query)):
            result = await self.connection.exec_driver_sql(statement, values)
            return cast(list[Row], list(result.mappings().all())) if result.returns_rows else []


class Database:
    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 20,
        pool_mode: str = "session",
        tracer: Tracer = NO_TRACING,
    ) -> None:
        if pool_mode not in POOL_MODES:
            raise ValueError(f"pool_mode must be one of {POOL_MODES}")
        self.url = url
        self.postgres = url.startswith("postgresql")
        self.dialect = "postgresql" if self.postgres else "sqlite"
        self.pool_mode = pool_mode
        self._pool_size = pool_size
        self._tracer = tracer
        self.engine = create_engine(url, pool_mode=pool_mode)
        self._pool: asyncpg.Pool | None = None
        self._pool_lock = asyncio.Lock()
        self._hinted = False
        self._at_head = False

    def shared_now(self, clock: Clock) -> Any:
        """The moment stored times are compared with where replicas must agree (pruning):
        PostgreSQL's own clock, `now()`, shared by every replica; on SQLite, one process on one
        host, the injected `clock` (docs/sessions.md)."""
        return func.now() if self.postgres else utc(clock())

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
        await self.engine.dispose()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Tx]:
        """One Core transaction: committed when the block ends, rolled back on any exception."""
        try:
            async with self.engine.begin() as connection:
                yield Tx(connection, self._tracer)
        except Exception as error:
            if is_outage(error):
                raise unavailable() from None
            self._hint_pool_mode(error)
            raise

    @asynccontextmanager
    async def hot(self) -> AsyncIterator[Sql]:
        """A hot-path connection: PostgreSQL in autocommit (each call one statement, one round
        trip), SQLite in one write transaction (BEGIN IMMEDIATE)."""
        try:
            if self.postgres:
                async with (await self._asyncpg()).acquire() as connection:
                    yield _Postgres(connection, self._tracer)
            else:
                async with self.engine.begin() as connection:
                    yield Tx(connection, self._tracer)
        except Exception as error:
            if is_outage(error):
                raise unavailable() from None
            self._hint_pool_mode(error)
            raise

    def _hint_pool_mode(self, error: BaseException) -> None:
        # No detection up front (docs/operations.md, "PgBouncer"): the symptom, when it comes,
        # names the setting once, in words, beside the 500 it causes.
        if self.pool_mode == "session" and not self._hinted and _pooler_symptom(error):
            self._hinted = True
            logger.error(
                "a prepared statement vanished between two statements: the database is behind "
                "a transaction-mode pooler; set IDENTITY_DATABASE_POOL_MODE=transaction"
            )

    async def fetchrow(self, query: str, *args: Any) -> Row | None:
        async with self.hot() as sql:
            return await sql.fetchrow(query, *args)

    async def fetch(self, query: str, *args: Any) -> list[Row]:
        async with self.hot() as sql:
            return await sql.fetch(query, *args)

    async def ping(self, within: float = 2.0) -> bool:
        # Twice: after a database restart the first try meets a dead pooled connection.
        for _ in range(2):
            try:
                async with asyncio.timeout(within), self.engine.connect() as connection:
                    await connection.execute(text("SELECT 1"))
            except Exception:  # noqa: S112 - readiness reports any failure as "not ready"
                continue
            return True
        return False

    async def unmigrated(self) -> str | None:
        """Why the schema is not the one this code needs ("not migrated (at 0004, head 0005)"),
        or None when it is. A positive answer is remembered: nothing downgrades a schema under a
        running service, so a ready process asks once."""
        if self._at_head:
            return None
        async with self.engine.connect() as connection:
            current = await connection.run_sync(revision_of)
        if current == head_revision():
            self._at_head = True
            return None
        return f"database not migrated (at {current or 'none'}, head {head_revision()})"

    async def _asyncpg(self) -> asyncpg.Pool:
        if self._pool is None:
            async with self._pool_lock:
                if self._pool is None:
                    dsn = make_url(self.url).set(drivername="postgresql")
                    # min_size 0: the process starts (and answers /healthz) without a database.
                    self._pool = await asyncpg.create_pool(
                        dsn.render_as_string(hide_password=False),
                        min_size=0,
                        max_size=self._pool_size,
                        command_timeout=30,
                        max_inactive_connection_lifetime=300,
                        reset=_reset,
                        **_asyncpg_options(self.pool_mode),
                    )
        return self._pool


async def _reset(connection: asyncpg.Connection) -> None:
    # The hot paths set no session state (no SET, LISTEN, advisory lock or cursor), so asyncpg's
    # default reset query would be one more round trip per request for nothing. A transaction
    # an error left open is still rolled back before the connection is reused.
    if connection.is_in_transaction():
        await connection.execute("ROLLBACK")


class _Postgres(_Rows):
    def __init__(self, connection: asyncpg.Connection, tracer: Tracer) -> None:
        self._connection = connection
        self._tracer = tracer

    async def fetch(self, query: str, *args: Any) -> list[Row]:
        if self._tracer.enabled:
            with self._tracer.span("db.statement", _attributes("postgresql", query)):
                return list(await self._connection.fetch(query, *args))
        return list(await self._connection.fetch(query, *args))


def _attributes(system: str, query: str) -> dict[str, str]:
    # The statement text only: parameters (tokens, hashes, addresses) never become attributes.
    return {"db.system": system, "db.statement": " ".join(query.split())[:500]}


def _sqlite_value(value: Any) -> Any:
    if isinstance(value, datetime):
        # SQLAlchemy's SQLite DATETIME storage format, in UTC.
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    if isinstance(value, bool):
        return int(value)
    return value


def _asyncpg_options(pool_mode: str) -> dict[str, Any]:
    # 0: no named statement kept on the server connection; asyncpg then parses each statement as
    # the unnamed one, in the same exchange (no Sync between) as its execution, so a pooler
    # never hands the server connection to another client in between.
    return {"statement_cache_size": 0} if pool_mode == "transaction" else {}


def connect_args(url: str, pool_mode: str = "session") -> dict[str, Any]:
    """The driver options of a SQLAlchemy engine on `url` (also used by the migrations)."""
    if url.startswith("sqlite"):
        return {"timeout": 30}
    if pool_mode == "transaction":
        # SQLAlchemy's asyncpg adapter keeps its own cache of prepared statements, and prepares
        # named ones while asyncpg's cache is on: both off.
        return {"prepared_statement_cache_size": 0, **_asyncpg_options(pool_mode)}
    return {}


def create_engine(url: str, *, pool_mode: str = "session") -> AsyncEngine:
    if url.startswith("sqlite"):
        engine = create_async_engine(url, connect_args=connect_args(url))
        _sqlite_pragmas(engine)
        return engine
    # Cold paths only: a small pool (the hot paths have their own, asyncpg's).
    return create_async_engine(
        url,
        pool_size=5,
        max_overflow=5,
        pool_timeout=10,
        pool_pre_ping=True,
        connect_args=connect_args(url, pool_mode),
    )


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


def migrations_dir() -> Path:
    packaged = _PACKAGE / "migrations"  # inside an installed wheel
    return packaged if packaged.is_dir() else _PACKAGE.parent / "migrations"


def alembic_config(url: str, pool_mode: str = "session") -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    config.attributes["database_url"] = url
    config.attributes["database_pool_mode"] = pool_mode
    return config


@functools.cache
def head_revision() -> str:
    """The newest migration this code ships (read once from migrations/)."""
    head = ScriptDirectory.from_config(alembic_config("")).get_current_head()
    if head is None:
        raise RuntimeError(f"no migration in {migrations_dir()}")
    return head


def revision_of(connection: Any) -> str | None:
    """The revision a database is at (None: never migrated); `connection` is synchronous,
    as `AsyncConnection.run_sync` hands it over."""
    return MigrationContext.configure(connection).get_current_revision()


def migrate(url: str, revision: str = "head", *, pool_mode: str = "session") -> None:
    """Apply migrations (synchronous: call it before the event loop starts)."""
    command.upgrade(alembic_config(url, pool_mode), revision)
