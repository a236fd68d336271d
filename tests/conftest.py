"""Fixtures: a fresh app per test, on SQLite and (with IDENTITY_TEST_DATABASE_URL) PostgreSQL,
and, for the modules of THROUGH_PGBOUNCER, PostgreSQL through PgBouncer in transaction mode.

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
from .kube import podman
from .poolers import PgBouncer, find, pgbouncer
from .servers import base_env, free_port, serve
from .smtp import Inbox, smtp_server
from .support import ISSUER, Live, Sql, running, sql_for, truncate

PG_URL = os.environ.get("IDENTITY_TEST_DATABASE_URL", "")
BACKENDS = ["sqlite", "postgresql"] if PG_URL else ["sqlite"]
# PgBouncer in transaction mode, as a third backend: IDENTITY_TEST_PGBOUNCER=1 demands it (a
# missing pgbouncer fails), 0 turns it off, unset runs it where PostgreSQL is configured and
# pgbouncer is installed. Where it does not run, tests/test_pooler.py says why.
_PGBOUNCER_WANTED = os.environ.get("IDENTITY_TEST_PGBOUNCER", "")
PGBOUNCER = bool(PG_URL) and (
    _PGBOUNCER_WANTED == "1" or (_PGBOUNCER_WANTED != "0" and find("pgbouncer") is not None)
)
# The database tests that also run through PgBouncer, each test function once (its first
# parameter set): together they reach every statement path the service has — sign-in and the
# exchange's checks (test_exchange), refresh, logout and session listing (test_sessions), the
# profile, linking and deletion (test_users), the admin API (test_admin), mail verification
# (test_email_verification), the limits (test_limits), the audit log and its pruning
# (test_audit), the models against the migrations (test_migrations), the janitor's rounds
# (test_housekeeping). The migrations themselves and the CLI are in test_pooler, the
# two-process races in test_multiprocess (`service_database`).
THROUGH_PGBOUNCER = frozenset(
    {
        "test_exchange",
        "test_sessions",
        "test_users",
        "test_admin",
        "test_email_verification",
        "test_limits",
        "test_audit",
        "test_migrations",
        "test_housekeeping",
    }
)
OKTA = OidcProviderConfig(
    name="okta",
    issuer=fakes.OKTA_ISSUER,
    client_ids=(fakes.OKTA_CLIENT,),
    jwks_url=None,
    algorithms=("ES256",),
    email_domains=("example.com",),
    backchannel_logout=True,
)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "database_url" in metafunc.fixturenames:
        backends = list(BACKENDS)
        if PGBOUNCER and metafunc.module.__name__.rpartition(".")[2] in THROUGH_PGBOUNCER:
            backends.append("pgbouncer")
        metafunc.parametrize("database_url", backends, indirect=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Through PgBouncer, each test function runs with its first parameter set only."""
    seen: set[tuple[str, str]] = set()
    kept, dropped = [], []
    for item in items:
        if isinstance(item, pytest.Function) and _backend(item) == "pgbouncer":
            function = (item.module.__name__ if item.module else "", item.originalname)
            if function in seen:
                dropped.append(item)
                continue
            seen.add(function)
        kept.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


def _backend(item: pytest.Function) -> object:
    callspec = getattr(item, "callspec", None)
    return callspec.params.get("database_url") if callspec is not None else None


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


@pytest.fixture(scope="session")
def pgbouncer_server() -> Iterator[PgBouncer]:
    """PgBouncer in transaction mode in front of the test PostgreSQL, for the whole run."""
    if not PG_URL:
        pytest.skip("IDENTITY_TEST_DATABASE_URL is not set: no PostgreSQL to put PgBouncer before")
    if find("pgbouncer") is None:
        if _PGBOUNCER_WANTED == "1":
            pytest.fail("IDENTITY_TEST_PGBOUNCER=1 but pgbouncer is not installed")
        pytest.skip("pgbouncer is not installed (apt-get install pgbouncer)")
    with pgbouncer(PG_URL) as bouncer:
        yield bouncer


@pytest.fixture(scope="session")
def pgbouncer_database(pg_database: str, pgbouncer_server: PgBouncer) -> str:
    """This run's PostgreSQL database, reached through PgBouncer (transaction pooling)."""
    return pgbouncer_server.url(pg_database)


@pytest.fixture(params=["postgresql", "pgbouncer"])
def service_database(request: pytest.FixtureRequest, pg_database: str) -> dict[str, str]:
    """How service processes reach this run's PostgreSQL database (emptied): directly, or
    through PgBouncer in transaction mode. Their IDENTITY_DATABASE_* variables."""
    asyncio.run(truncate(pg_database))
    if request.param == "postgresql":
        return {"IDENTITY_DATABASE_URL": pg_database}
    if not PGBOUNCER and _PGBOUNCER_WANTED == "0":
        pytest.skip("IDENTITY_TEST_PGBOUNCER=0")
    return {
        "IDENTITY_DATABASE_URL": request.getfixturevalue("pgbouncer_database"),
        "IDENTITY_DATABASE_POOL_MODE": "transaction",
    }


def direct(url: str) -> str:
    """The URL a test reads the database through: PostgreSQL itself, never the pooler."""
    return _DIRECT.get(url, url)


_DIRECT: dict[str, str] = {}


@pytest.fixture
def postgres_or_none(request: pytest.FixtureRequest) -> str | None:
    """This run's PostgreSQL database, emptied, when there is one (for process-level tests)."""
    if not PG_URL:
        return None
    url: str = request.getfixturevalue("pg_database")
    asyncio.run(truncate(url))
    return url


@pytest.fixture
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database for one test, emptied: parametrized by `pytest_generate_tests` above."""
    if request.param == "sqlite":
        path = tmp_path / "identity.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        return f"sqlite+aiosqlite:///{path}"
    url: str = request.getfixturevalue("pg_database")
    asyncio.run(truncate(url))
    if request.param == "pgbouncer":
        pooled: str = request.getfixturevalue("pgbouncer_database")
        _DIRECT[pooled] = url
        return pooled
    return url


@pytest.fixture
def settings(database_url: str, keys_dir: Path) -> Settings:
    return Settings(
        issuer=ISSUER,
        database_url=database_url,
        database_pool_mode="session" if direct(database_url) == database_url else "transaction",
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
    async with sql_for(direct(database_url)) as handle:
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


@pytest.fixture(scope="session")
def identity_image() -> Iterator[str]:
    """The Dockerfile built once per run with rootful podman (../shared/container/prepare.sh),
    for the container test and the Kubernetes test alike; removed at the end."""
    standin, image = "localhost/python-standin:3.11", "localhost/identity-test:latest"
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed (run ../shared/container/prepare.sh as root)")
    if podman("image", "exists", standin).returncode != 0:
        pytest.skip(f"the base image {standin} is missing (run ../shared/container/prepare.sh)")
    root = Path(__file__).resolve().parent.parent
    built = podman(
        *("build", "-q", "--pull=never", "--format", "docker", "--network", "host"),
        *("--build-arg", f"PYTHON_IMAGE={standin}", "-t", image, str(root)),
    )
    if built.returncode != 0:
        pytest.fail(f"podman build failed:\n{built.stderr[-3000:]}")
    yield image
    podman("rmi", "-f", image)


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
