"""Fixtures: a fresh app per test, on SQLite and (with IDENTITY_TEST_DATABASE_URL) PostgreSQL.

This file is the test suite's one read of the environment.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import secrets
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy.engine import make_url
from starlette.applications import Starlette

from identity.providers_file import OidcProviderConfig
from identity.settings import Settings
from identity.store.database import migrate
from identity.tokens.signing_keys import KeyStore

from . import fakes
from .fakes import FakeClock, Issuers
from .servers import base_env, free_port, serve
from .smtp import Inbox, smtp_server
from .support import ISSUER, Live, Sql, running, sql_for, truncate

PG_URL = os.environ.get("IDENTITY_TEST_DATABASE_URL", "")
BACKENDS = ["sqlite", "postgresql"] if PG_URL else ["sqlite"]
OKTA = OidcProviderConfig(
    name="okta",
    issuer=fakes.OKTA_ISSUER,
    client_ids=(fakes.OKTA_CLIENT,),
    jwks_url=None,
    algorithms=("ES256",),
    email_domains=("example.com",),
)


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def keys() -> dict[str, Any]:
    return fakes.new_keys()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def issuers(keys: dict[str, Any], clock: FakeClock) -> Issuers:
    return Issuers(
        google=fakes.google(clock, keys["google"]),
        microsoft=fakes.microsoft(clock, keys["microsoft"]),
        apple=fakes.apple(clock, keys["apple"]),
        okta=fakes.okta(clock, keys["okta"]),
    )


@pytest.fixture
def google(issuers: Issuers) -> fakes.FakeIssuer:
    return issuers.google


@pytest.fixture(scope="session")
def key_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("key-template")
    KeyStore(directory).generate(now=1_700_000_000)
    return directory


@pytest.fixture
def keys_dir(tmp_path: Path, key_template: Path) -> Path:
    target = tmp_path / "keys"
    shutil.copytree(key_template, target)
    return target


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite") / "template.db"
    migrate(f"sqlite+aiosqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A PostgreSQL database made for this test run, migrated once, dropped at the end."""
    if not PG_URL:
        pytest.skip("IDENTITY_TEST_DATABASE_URL is not set")
    base = make_url(PG_URL)
    name = f"identity_test_{secrets.token_hex(4)}"
    admin = base.set(drivername="postgresql").render_as_string(hide_password=False)
    asyncio.run(_admin(admin, f'CREATE DATABASE "{name}"'))
    url = base.set(database=name).render_as_string(hide_password=False)
    try:
        migrate(url)
        yield url
    finally:
        asyncio.run(_admin(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def empty_pg_database() -> Iterator[str]:
    """A PostgreSQL database that exists and was never migrated, dropped at the end."""
    if not PG_URL:
        pytest.skip("IDENTITY_TEST_DATABASE_URL is not set")
    base = make_url(PG_URL)
    name = f"identity_empty_{secrets.token_hex(4)}"
    admin = base.set(drivername="postgresql").render_as_string(hide_password=False)
    asyncio.run(_admin(admin, f'CREATE DATABASE "{name}"'))
    try:
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(_admin(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _admin(url: str, statement: str) -> None:
    connection = await asyncpg.connect(url)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


@pytest.fixture
def postgres_or_none(request: pytest.FixtureRequest) -> str | None:
    """This run's PostgreSQL database, emptied, when there is one (for process-level tests)."""
    if not PG_URL:
        return None
    url: str = request.getfixturevalue("pg_database")
    asyncio.run(truncate(url))
    return url


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        path = tmp_path / "identity.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        return f"sqlite+aiosqlite:///{path}"
    url: str = request.getfixturevalue("pg_database")
    asyncio.run(truncate(url))
    return url


@pytest.fixture
def settings(database_url: str, keys_dir: Path) -> Settings:
    return Settings(
        issuer=ISSUER,
        database_url=database_url,
        keys_dir=keys_dir,
        google_client_ids=(fakes.WEB_CLIENT, fakes.IOS_CLIENT),
        microsoft_client_ids=(fakes.MS_CLIENT, fakes.MS_OTHER_APP),
        microsoft_tenants=(fakes.MS_TENANT, fakes.MS_CONSUMERS),
        apple_client_ids=(fakes.APPLE_WEB, fakes.APPLE_APP),
        oidc_providers=(OKTA,),
        log_format="json",
        # Off here as in tests/servers.py: tests sign the same person in many times a minute.
        # Settings() has them on, like an empty environment; test_limits.py turns them on.
        rate_limit_failures=None,
        rate_limit_subject=None,
    )


@pytest.fixture
async def app(settings: Settings, issuers: Issuers, clock: FakeClock) -> AsyncIterator[Starlette]:
    async with running(settings, issuers, clock) as (application, _):
        yield application


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=ISSUER) as http:
        yield http


@pytest.fixture
async def sql(database_url: str) -> AsyncIterator[Sql]:
    async with sql_for(database_url) as handle:
        yield handle


@pytest.fixture(scope="session")
def live(tmp_path_factory: pytest.TempPathFactory, keys: dict[str, Any]) -> Iterator[Live]:
    directory = tmp_path_factory.mktemp("live")
    with fakes.serve_issuers() as served:
        google = served.add(fakes.http_google(keys["google"], served.base))
        port = free_port()
        env = base_env(
            IDENTITY_GOOGLE_JWKS_URL=google.jwks_url,
            IDENTITY_GOOGLE_CLIENT_IDS=fakes.WEB_CLIENT,
            IDENTITY_PORT=str(port),
            IDENTITY_ISSUER=f"http://127.0.0.1:{port}",
        )
        with serve(env, directory) as server:
            yield Live(server.url, google)


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, str]]:
    with smtp_server() as server:
        yield server


@pytest.fixture
def inbox(smtp: tuple[Inbox, str]) -> Inbox:
    return smtp[0]


@pytest.fixture
async def mail_client(
    settings: Settings, issuers: Issuers, clock: FakeClock, smtp: tuple[Inbox, str]
) -> AsyncIterator[httpx.AsyncClient]:
    """A service that sends mail to a real SMTP server on loopback."""
    configured = dataclasses.replace(settings, smtp_url=smtp[1], mail_from="id@example.com")
    async with running(configured, issuers, clock) as (_, client):
        yield client
