"""Failures of what we depend on (issue #7): the database through a fault-injecting proxy,
and Google's key endpoint down, slow or returning garbage. Never a 500."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from sqlalchemy.engine import make_url
from starlette.applications import Starlette

from identity.app import create_app
from identity.settings import Settings

from .conftest import ISSUER, exchange, truncate
from .fakes import WEB_CLIENT, FakeClock, FakeGoogle
from .faultproxy import FaultProxy, fault_proxy

pytestmark = pytest.mark.anyio


@pytest.fixture
def proxy(pg_database: str) -> Iterator[tuple[FaultProxy, str]]:
    url = make_url(pg_database)
    with fault_proxy(url.host or "127.0.0.1", url.port or 5432) as running:
        proxied = url.set(host="127.0.0.1", port=running.port).render_as_string(hide_password=False)
        yield running, proxied


@pytest.fixture
async def proxied_client(
    proxy: tuple[FaultProxy, str],
    pg_database: str,
    keys_dir: Path,
    google: FakeGoogle,
    clock: FakeClock,
) -> AsyncIterator[httpx.AsyncClient]:
    await truncate(pg_database)
    settings = Settings(
        issuer=ISSUER, database_url=proxy[1], keys_dir=keys_dir, google_client_ids=(WEB_CLIENT,)
    )
    async with google.client() as http:
        app = create_app(settings, http_client=http, clock=clock)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ISSUER) as client,
        ):
            yield client


async def users_with_email(pg_database: str, email: str) -> int:
    plain = make_url(pg_database).set(drivername="postgresql").render_as_string(hide_password=False)
    connection = await asyncpg.connect(plain)
    try:
        return int(await connection.fetchval("SELECT count(*) FROM users WHERE email = $1", email))
    finally:
        await connection.close()


async def test_database_down_then_back(
    proxy: tuple[FaultProxy, str], proxied_client: httpx.AsyncClient, google: FakeGoogle
) -> None:
    running, _ = proxy
    first = await exchange(proxied_client, google.mint())
    assert first.status_code == 200
    auth = {"Authorization": f"Bearer {first.json()['access_token']}"}
    running.down = True
    running.cut_all()
    for response in (
        await exchange(proxied_client, google.mint()),
        await proxied_client.get("/users/me", headers=auth),
        await proxied_client.post(
            "/token",
            data={"grant_type": "refresh_token", "refresh_token": first.json()["refresh_token"]},
        ),
    ):
        assert response.status_code == 503, response.text
        assert response.json()["error"] == "temporarily_unavailable"
        assert int(response.headers["retry-after"]) > 0
    ready = await proxied_client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json() == {"status": "unavailable", "reasons": ["database unreachable"]}
    assert (await proxied_client.get("/healthz")).status_code == 200
    # Back: the same process recovers, no restart.
    running.down = False
    assert (await proxied_client.get("/readyz")).status_code == 200
    assert (await exchange(proxied_client, google.mint())).status_code == 200
    assert (await proxied_client.get("/users/me", headers=auth)).status_code == 200


async def test_cut_in_the_middle_of_an_exchange_writes_nothing(
    proxy: tuple[FaultProxy, str],
    proxied_client: httpx.AsyncClient,
    google: FakeGoogle,
    pg_database: str,
) -> None:
    running, _ = proxy
    # The user row is already sent when the account insert goes out: cut right there.
    running.cut_on = b"INSERT INTO accounts"
    response = await exchange(proxied_client, google.mint(sub="cut", email="cut@gmail.com"))
    assert response.status_code == 503
    assert await users_with_email(pg_database, "cut@gmail.com") == 0
    running.cut_on = None
    retried = await exchange(proxied_client, google.mint(sub="cut", email="cut@gmail.com"))
    assert retried.status_code == 200
    assert await users_with_email(pg_database, "cut@gmail.com") == 1


@pytest.mark.parametrize("failure", ["down", "slow", "garbage", "empty"])
async def test_google_failures_keep_cached_keys(
    app: Starlette, client: httpx.AsyncClient, google: FakeGoogle, clock: FakeClock, failure: str
) -> None:
    assert (await exchange(client, google.mint())).status_code == 200  # keys cached
    clock.advance(3601)  # and stale
    if failure == "down":
        google.status = 503
    elif failure == "garbage":
        google.body = b"\x00\xff<html>"
    elif failure == "empty":
        google.body = b'{"keys": []}'
    else:

        def too_slow(request: httpx.Request) -> httpx.Response:
            raise httpx.ReadTimeout("beyond the HTTP timeout", request=request)

        google.handler = too_slow  # type: ignore[method-assign]
    response = await exchange(client, google.mint())
    assert response.status_code == 200, response.text
