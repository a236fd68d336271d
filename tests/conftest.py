"""Fixtures: a fresh app per test, on SQLite and (with IDENTITY_TEST_DATABASE_URL) PostgreSQL.

This file is the test suite's one read of the environment.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from joserfc.jwk import RSAKey
from sqlalchemy import text
from sqlalchemy.engine import make_url
from starlette.applications import Starlette

from identity.app import Services, create_app
from identity.database import migrate
from identity.keys import KeyStore
from identity.settings import Settings

from .fakes import IOS_CLIENT, WEB_CLIENT, FakeClock, FakeGoogle, serve_jwks
from .servers import base_env, free_port, serve
from .smtp import Inbox, smtp_server

PG_URL = os.environ.get("IDENTITY_TEST_DATABASE_URL", "")
ISSUER = "http://127.0.0.1:8001"
TABLES = (
    "users",
    "accounts",
    "sessions",
    "rotated_refresh_tokens",
    "verification_tokens",
    "used_id_tokens",
    "rate_limits",
)
BACKENDS = ["sqlite", "postgresql"] if PG_URL else ["sqlite"]


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def google_key() -> RSAKey:
    return RSAKey.generate_key(2048, private=True)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def google(google_key: RSAKey, clock: FakeClock) -> FakeGoogle:
    return FakeGoogle(key=google_key, clock=clock)


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


async def _admin(url: str, statement: str) -> None:
    connection = await asyncpg.connect(url)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        path = tmp_path / "identity.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        return f"sqlite+aiosqlite:///{path}"
    url: str = request.getfixturevalue("pg_database")
    asyncio.run(truncate(url))
    return url


async def truncate(url: str) -> None:
    plain = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    connection = await asyncpg.connect(plain)
    try:
        await connection.execute(f"TRUNCATE {', '.join(TABLES)} CASCADE")
    finally:
        await connection.close()


@pytest.fixture
def settings(database_url: str, keys_dir: Path) -> Settings:
    return Settings(
        issuer=ISSUER,
        database_url=database_url,
        keys_dir=keys_dir,
        google_client_ids=(WEB_CLIENT, IOS_CLIENT),
        log_format="json",
    )


@pytest.fixture
async def app(settings: Settings, google: FakeGoogle, clock: FakeClock) -> AsyncIterator[Starlette]:
    async with google.client() as http:
        application = create_app(settings, http_client=http, clock=clock)
        async with application.router.lifespan_context(application):
            yield application


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=ISSUER) as http:
        yield http


def services(app: Starlette) -> Services:
    result: Services = app.state.services
    return result


async def row_counts(app: Starlette) -> dict[str, int]:
    async with services(app).database.reader() as session:
        counts = {}
        for table in TABLES:
            counts[table] = int(
                (await session.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one()
            )
        return counts


EXCHANGE = {
    "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
    "subject_token_type": "urn:ietf:params:oauth:token-type:id_token",
}


async def exchange(client: httpx.AsyncClient, token: str, **extra: Any) -> httpx.Response:
    return await client.post("/token", data={**EXCHANGE, "subject_token": token, **extra})


@dataclass
class Live:
    """A real `identity serve` process with its fake Google, for black-box tests."""

    url: str
    google: FakeGoogle

    def access_token(self, **claims: Any) -> str:
        now = int(time.time())
        token = self.google.mint(**{"iat": now, "exp": now + 3600, **claims})
        response = httpx.post(self.url + "/token", data={**EXCHANGE, "subject_token": token})
        assert response.status_code == 200, response.text
        access: str = response.json()["access_token"]
        return access


@pytest.fixture(scope="session")
def live(tmp_path_factory: pytest.TempPathFactory, google_key: RSAKey) -> Iterator[Live]:
    google = FakeGoogle(key=google_key, clock=time.time)
    directory = tmp_path_factory.mktemp("live")
    with serve_jwks(google) as jwks_url:
        port = free_port()
        env = base_env(
            IDENTITY_GOOGLE_JWKS_URL=jwks_url,
            IDENTITY_GOOGLE_CLIENT_IDS=WEB_CLIENT,
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
async def mail_app(
    settings: Settings, google: FakeGoogle, clock: FakeClock, smtp: tuple[Inbox, str]
) -> AsyncIterator[Starlette]:
    configured = Settings(
        **{**settings.__dict__, "smtp_url": smtp[1], "mail_from": "id@example.com"}
    )
    async with google.client() as http:
        application = create_app(configured, http_client=http, clock=clock)
        async with application.router.lifespan_context(application):
            yield application


@pytest.fixture
async def mail_client(mail_app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=mail_app), base_url=ISSUER) as c:
        yield c
