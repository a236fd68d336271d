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
from identity.store.database import connect_args

config = context.config
target_metadata = SQLModel.metadata


def _url() -> tuple[str, str]:
    """The database URL and pool mode (IDENTITY_DATABASE_POOL_MODE: through a pooler?)."""
    if config.attributes.get("database_url"):
        return (
            str(config.attributes["database_url"]),
            str(config.attributes.get("database_pool_mode", "session")),
        )
    # Plain `alembic`: the two variables, with identity's defaults and spellings.
    names = ("IDENTITY_DATABASE_URL", "IDENTITY_DATABASE_POOL_MODE")
    settings = Settings.from_env({name: os.environ.get(name, "") for name in names})
    return settings.database_url, settings.database_pool_mode


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
    url, pool_mode = _url()
    engine = create_async_engine(url, connect_args=connect_args(url, pool_mode))
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run_sync)
            await connection.commit()
    finally:
        await engine.dispose()


if context.is_offline_mode():
    _configure(url=_url()[0])
    with context.begin_transaction():
        context.run_migrations()
else:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run_sync(connection)
    else:
        asyncio.run(_run_async())
