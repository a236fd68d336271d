"""Two service processes on one PostgreSQL database behave like one (SPEC §6, §10)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg
import httpx
import pytest
from sqlalchemy.engine import make_url

from .conftest import EXCHANGE, truncate
from .fakes import WEB_CLIENT, FakeGoogle, serve_jwks
from .servers import Server, base_env, serve

pytestmark = pytest.mark.anyio


async def clean(url: str) -> str:
    await truncate(url)
    return url


@contextmanager
def two_servers(
    google: FakeGoogle, database_url: str, keys_dir: Path, tmp_path: Path
) -> Iterator[tuple[Server, Server]]:
    """Two service processes on one PostgreSQL database and one key directory."""
    with serve_jwks(google) as jwks_url:
        env = base_env(
            IDENTITY_DATABASE_URL=database_url,
            IDENTITY_KEYS_DIR=str(keys_dir),
            IDENTITY_GOOGLE_JWKS_URL=jwks_url,
            IDENTITY_GOOGLE_CLIENT_IDS=WEB_CLIENT,
        )
        with serve(env, tmp_path) as first, serve(env, tmp_path) as second:
            yield first, second


async def test_fifty_concurrent_first_sign_ins_make_one_user(
    pg_database: str, keys_dir: Path, tmp_path: Path, google: FakeGoogle
) -> None:
    database_url = await clean(pg_database)
    now = int(time.time())
    tokens = [google.mint(iat=now, exp=now + 3600) for _ in range(50)]  # one person, 50 tokens
    with two_servers(google, database_url, keys_dir, tmp_path) as (first, second):
        async with httpx.AsyncClient(timeout=30) as client:
            responses = await asyncio.gather(
                *(
                    client.post(
                        (first if i % 2 else second).url + "/token",
                        data={**EXCHANGE, "subject_token": token},
                    )
                    for i, token in enumerate(tokens)
                )
            )
    statuses = Counter(r.status_code for r in responses)
    assert statuses == {200: 50}, statuses
    assert len({r.json()["user"]["id"] for r in responses}) == 1
    plain = (
        make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)
    )
    connection = await asyncpg.connect(plain)
    try:
        assert await connection.fetchval("SELECT count(*) FROM users") == 1
        assert await connection.fetchval("SELECT count(*) FROM accounts") == 1
        assert await connection.fetchval("SELECT count(*) FROM sessions") == 50
    finally:
        await connection.close()


async def test_one_token_sent_to_both_processes_is_exchanged_once(
    pg_database: str, keys_dir: Path, tmp_path: Path, google: FakeGoogle
) -> None:
    database_url = await clean(pg_database)
    now = int(time.time())
    token = google.mint(iat=now, exp=now + 3600)
    with two_servers(google, database_url, keys_dir, tmp_path) as (first, second):
        async with httpx.AsyncClient(timeout=30) as client:
            responses = await asyncio.gather(
                *(
                    client.post(server.url + "/token", data={**EXCHANGE, "subject_token": token})
                    for server in [first, second] * 10
                )
            )
    assert Counter(r.status_code for r in responses) == {200: 1, 400: 19}


async def test_twenty_concurrent_refreshes_over_two_processes_one_winner(
    pg_database: str, keys_dir: Path, tmp_path: Path, google: FakeGoogle
) -> None:
    database_url = await clean(pg_database)
    now = int(time.time())
    with two_servers(google, database_url, keys_dir, tmp_path) as (first, second):
        async with httpx.AsyncClient(timeout=30) as client:
            signed_in = await client.post(
                first.url + "/token",
                data={**EXCHANGE, "subject_token": google.mint(iat=now, exp=now + 3600)},
            )
            token = signed_in.json()["refresh_token"]
            responses = await asyncio.gather(
                *(
                    client.post(
                        server.url + "/token",
                        data={"grant_type": "refresh_token", "refresh_token": token},
                    )
                    for server in [first, second] * 10
                )
            )
            winners = [r.json()["refresh_token"] for r in responses if r.status_code == 200]
            assert Counter(r.status_code for r in responses) == {200: 1, 400: 19}
            # No second live successor exists: at most the winner's token still refreshes.
            live = [
                (
                    await client.post(
                        first.url + "/token",
                        data={"grant_type": "refresh_token", "refresh_token": t},
                    )
                ).status_code
                for t in winners
            ]
            assert live in ([200], [400])
