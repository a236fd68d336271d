"""Failures of what we depend on: the database through a fault-injecting proxy, a provider's
key endpoint down, slow or returning garbage. Never a 500, never half a change."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import make_url

from identity.settings import Settings

from .fakes import FakeClock, FakeIssuer, Issuers
from .faultproxy import FaultProxy, fault_proxy
from .support import Sql, bearer, exchange, refresh, running, sql_for, truncate

pytestmark = pytest.mark.anyio


@pytest.fixture
def proxy(pg_database: str) -> Iterator[tuple[FaultProxy, str]]:
    url = make_url(pg_database)
    with fault_proxy(url.host or "127.0.0.1", url.port or 5432) as proxied:
        yield (
            proxied,
            url.set(host="127.0.0.1", port=proxied.port).render_as_string(hide_password=False),
        )


@pytest.fixture
async def proxied_client(
    proxy: tuple[FaultProxy, str],
    pg_database: str,
    settings: Settings,
    keys_dir: Path,
    issuers: Issuers,
    clock: FakeClock,
) -> AsyncIterator[httpx.AsyncClient]:
    await truncate(pg_database)
    configured = dataclasses.replace(settings, database_url=proxy[1], keys_dir=keys_dir)
    async with running(configured, issuers, clock) as (_, client):
        yield client


@pytest.fixture
async def pg(pg_database: str) -> AsyncIterator[Sql]:
    async with sql_for(pg_database) as handle:
        yield handle


async def test_database_down_then_back(
    proxy: tuple[FaultProxy, str], proxied_client: httpx.AsyncClient, google: FakeIssuer
) -> None:
    proxied, _ = proxy
    first = await exchange(proxied_client, google.mint())
    assert first.status_code == 200
    auth = bearer(first.json()["access_token"])
    proxied.down = True
    proxied.cut_all()
    for response in (
        await exchange(proxied_client, google.mint()),
        await proxied_client.get("/users/me", headers=auth),
        await refresh(proxied_client, first.json()["refresh_token"]),
        await proxied_client.patch("/users/me", json={"name": "x"}, headers=auth),
    ):
        assert response.status_code == 503, response.text
        assert response.json()["error"] == "temporarily_unavailable"
        assert int(response.headers["retry-after"]) > 0
    ready = await proxied_client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json() == {"status": "unavailable", "reasons": ["database unreachable"]}
    assert (await proxied_client.get("/healthz")).status_code == 200
    # Back: the same process recovers, no restart.
    proxied.down = False
    assert (await proxied_client.get("/readyz")).status_code == 200
    assert (await exchange(proxied_client, google.mint())).status_code == 200
    assert (await proxied_client.get("/users/me", headers=auth)).status_code == 200


async def test_a_database_out_of_connection_slots_is_a_503_on_every_path(
    proxy: tuple[FaultProxy, str], proxied_client: httpx.AsyncClient, google: FakeIssuer, pg: Sql
) -> None:
    """PostgreSQL at max_connections answers a new connection with an error (53300), not a
    refusal: every path, the ones on SQLAlchemy's pool included, says 503 and writes nothing."""
    proxied, _ = proxy
    tokens = [(await exchange(proxied_client, google.mint())).json() for _ in range(2)]
    before = await pg.counts()
    proxied.full = True
    proxied.cut_all()  # the pools' connections are gone: each path must open a new one
    for response in (
        await exchange(proxied_client, google.mint()),
        await proxied_client.get("/users/me", headers=bearer(tokens[0]["access_token"])),
        await refresh(proxied_client, tokens[0]["refresh_token"]),
        await proxied_client.post("/revoke", data={"token": tokens[0]["refresh_token"]}),
        await proxied_client.post("/auth/logout", headers=bearer(tokens[1]["access_token"])),
    ):
        assert response.status_code == 503, response.text
        assert response.json()["error"] == "temporarily_unavailable"
        assert int(response.headers["retry-after"]) > 0
    assert await pg.counts() == before
    proxied.full = False
    assert (await refresh(proxied_client, tokens[0]["refresh_token"])).status_code == 200
    logout = await proxied_client.post("/auth/logout", headers=bearer(tokens[1]["access_token"]))
    assert logout.status_code == 204


async def test_a_cut_sign_in_writes_nothing(
    proxy: tuple[FaultProxy, str], proxied_client: httpx.AsyncClient, google: FakeIssuer, pg: Sql
) -> None:
    proxied, _ = proxy
    proxied.cut_on = b"identity_sign_in"  # the one statement of a sign-in never arrives
    response = await exchange(proxied_client, google.mint(sub="cut", email="cut@gmail.com"))
    assert response.status_code == 503
    assert await pg.counts() == dict.fromkeys(await pg.counts(), 0)
    proxied.cut_on = None
    assert (
        await exchange(proxied_client, google.mint(sub="cut", email="cut@gmail.com"))
    ).status_code == 200
    assert await pg.scalar("SELECT count(*) FROM users WHERE email = 'cut@gmail.com'") == 1


async def test_a_cut_in_the_middle_of_a_transaction_leaves_neither_change_nor_event(
    proxy: tuple[FaultProxy, str], proxied_client: httpx.AsyncClient, google: FakeIssuer, pg: Sql
) -> None:
    proxied, _ = proxy
    auth = bearer((await exchange(proxied_client, google.mint())).json()["access_token"])
    # PATCH updates the user, then writes its audit event: cut between the two.
    proxied.cut_on = b"INSERT INTO audit_events"
    response = await proxied_client.patch("/users/me", json={"name": "Half Done"}, headers=auth)
    assert response.status_code == 503
    assert await pg.scalar("SELECT name FROM users") == "Ada Lovelace"
    assert await pg.events("user_updated") == []
    proxied.cut_on = None
    assert (
        await proxied_client.patch("/users/me", json={"name": "Whole"}, headers=auth)
    ).status_code == 200
    assert len(await pg.events("user_updated")) == 1


@pytest.mark.parametrize("failure", ["down", "slow", "garbage", "empty"])
async def test_provider_failures_keep_cached_keys(
    client: httpx.AsyncClient, issuers: Issuers, google: FakeIssuer, clock: FakeClock, failure: str
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

        def too_slow(url: str) -> httpx.Response:
            raise httpx.ReadTimeout("beyond the HTTP timeout")

        google.handle = too_slow  # type: ignore[method-assign]
    response = await exchange(client, google.mint())
    assert response.status_code == 200, response.text
