"""Alembic environment: async, on SQLModel's metadata, for PostgreSQL and SQLite.

The URL comes from the caller (`identity migrate` passes it in the config attributes) or, when
run as plain `alembic`, from IDENTITY_DATABASE_URL: this is this entry point's one read of the
environment.
"""

from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlmodel import SQLModel

import identity.store.models  # noqa: F401  (registers the tables on SQLModel.metadata)
from identity.settings import Settings

config = context.config
target_metadata = SQLModel.metadata


def _url() -> str:
    if config.attributes.get("database_url"):
        return str(config.attributes["database_url"])
    # Plain `alembic`: the one variable, with identity's default and spellings.
    only = {"IDENTITY_DATABASE_URL": os.environ.get("IDENTITY_DATABASE_URL", "")}
    return Settings.from_env(only).database_url


def _configure(connection: Connection | None = None, url: str | None = None) -> None:
    context.configure(
        connection=connection,
        url=url,
        target_metadata=target_metadata,
        compare_type=True,
        render_as_batch=(url or str(connection.engine.url if connection else "")).startswith(
            "sqlite"
        ),
    )


def _run_sync(connection: Connection) -> None:
    _configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()


async def _run_async() -> None:
    engine = create_async_engine(_url())
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run_sync)
            await connection.commit()
    finally:
        await engine.dispose()


if context.is_offline_mode():
    _configure(url=_url())
    with context.begin_transaction():
        context.run_migrations()
else:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run_sync(connection)
    else:
        asyncio.run(_run_async())
