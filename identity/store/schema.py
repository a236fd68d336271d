"""The schema, seen from the command line: migrating it once however many processes start at
the same time, and what stands between the service and its database, said in the words an
operator acts on (docs/operations.md, "The database").

- `upgrade(url)` applies the migrations under a lock and says from which revision to which: a
  lock file beside a SQLite database (`identity.db.lock`), an advisory lock on PostgreSQL. The
  second of two processes started at once waits, then finds the schema at head.
- `diagnose(url)` is one line about the database, or None when it is reachable and migrated:
  "database "x" does not exist", "role "y" does not exist", "not migrated (at 0004, head 0005)".
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import asyncpg
from alembic import command
from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import create_async_engine

from .database import alembic_config, connect_args, create_engine, head_revision, revision_of

_WITHIN = 5.0  # seconds to reach the database before saying it cannot be reached
# pg_advisory_lock's key for "migrating identity's schema": any constant no other code uses.
_MIGRATION_LOCK = 0x1D3E_7171


def upgrade(url: str, pool_mode: str = "session") -> tuple[str | None, str | None]:
    """Apply every pending migration; the revisions before and after (None: an empty database).
    Synchronous: call it before an event loop runs."""
    with _file_lock(sqlite_path(url)):
        return asyncio.run(_upgrade(url, pool_mode))


async def _upgrade(url: str, pool_mode: str) -> tuple[str | None, str | None]:
    # A plain engine, as migrations/env.py makes: none of the service's SQLite pragmas (with
    # foreign keys on, a batch migration's table copy would cascade deletes).
    engine = create_async_engine(url, connect_args=connect_args(url, pool_mode))
    try:
        async with engine.connect() as connection:
            if connection.dialect.name == "postgresql":
                # Held until the migrations' one transaction ends; the second process waits
                # here, then finds the schema at head and applies nothing. A transaction lock:
                # behind a transaction-mode pooler a session lock would stay on the server
                # connection after this process has gone (docs/operations.md, "PgBouncer").
                await connection.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK}
                )
            before = await connection.run_sync(revision_of)
            await connection.run_sync(_apply, url, pool_mode)
            await connection.commit()
            after = await connection.run_sync(revision_of)
    finally:
        await engine.dispose()
    return before, after


def _apply(connection: Connection, url: str, pool_mode: str) -> None:
    config = alembic_config(url, pool_mode)
    config.attributes["connection"] = connection  # migrations/env.py runs on this connection
    command.upgrade(config, "head")


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL (None for PostgreSQL and for an in-memory database)."""
    if not url.startswith("sqlite"):
        return None
    database = make_url(url).database
    return Path(database) if database and database != ":memory:" else None


@contextlib.contextmanager
def _file_lock(database: Path | None) -> Iterator[None]:
    if database is None:
        yield
        return
    database.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{database}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file closes, or the process ends
        yield


async def diagnose(url: str, pool_mode: str = "session") -> str | None:
    """One line about what keeps the service from its schema, or None when nothing does."""
    path = sqlite_path(url)
    if path is not None and not path.exists():
        # Connecting would create an empty file: say it before anything does.
        return f"the SQLite file {path} does not exist: run `identity migrate`"
    engine = create_engine(url, pool_mode=pool_mode)
    try:
        async with asyncio.timeout(_WITHIN), engine.connect() as connection:
            current = await connection.run_sync(revision_of)
    except Exception as error:  # every failure to reach the database is the answer
        return unreachable(url, error) or f"database unreachable ({type(error).__name__})"
    finally:
        await engine.dispose()
    if current != head_revision():
        return (
            f"not migrated (at {current or 'none'}, head {head_revision()}): run `identity migrate`"
        )
    return None


def unreachable(url: str, error: BaseException) -> str | None:
    """Why `url` could not be reached, naming the database, role or address (never a password
    nor the driver's own message); None for an error that is not one of those."""
    address = make_url(url)
    cause = _cause(error)
    database, role = address.database or "", address.username or ""
    if isinstance(cause, asyncpg.InvalidCatalogNameError):
        options = {"-h": address.host, "-p": address.port, "-U": role}
        createdb = " ".join(
            ["createdb", *(f"{flag} {value}" for flag, value in options.items() if value), database]
        )
        return f'database "{database}" does not exist: {createdb}, then `identity migrate`'

    if isinstance(cause, asyncpg.InvalidPasswordError):
        return f'password authentication failed for role "{role}"'
    if isinstance(cause, asyncpg.InvalidAuthorizationSpecificationError):
        if "does not exist" in str(cause):
            return f'role "{role}" does not exist'
        return f'role "{role}" may not connect to "{database}" (pg_hba.conf)'
    where = f"{address.host}:{address.port or 5432}"
    if isinstance(cause, TimeoutError):
        return f"database unreachable at {where} (no answer within {_WITHIN:g} s)"
    if isinstance(cause, ConnectionRefusedError):
        return f"database unreachable at {where} (connection refused)"
    if isinstance(cause, OSError):
        return f"database unreachable at {where} ({cause.strerror or type(cause).__name__})"
    path = sqlite_path(url)
    if isinstance(cause, sqlite3.OperationalError) and "unable to open" in str(cause):
        return f"cannot open the SQLite file {path}"
    return None


def _cause(error: BaseException) -> BaseException:
    """The driver's exception under SQLAlchemy's wrappers."""
    seen: BaseException = error
    while isinstance(seen, sa_exc.DBAPIError) and isinstance(seen.orig, BaseException):
        seen = seen.orig
    # SQLAlchemy's asyncpg adapter keeps asyncpg's exception as the cause of its own.
    return seen.__cause__ if isinstance(seen.__cause__, asyncpg.PostgresError) else seen
