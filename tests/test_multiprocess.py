"""Two service processes on one PostgreSQL database behave like one, reaching it directly or
through PgBouncer in transaction mode (`service_database`)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from . import fakes
from .fakes import FakeIssuer, http_google, http_microsoft, serve_issuers
from .security_events import google_set
from .servers import Server, base_env, serve
from .support import EXCHANGE, sql_for

pytestmark = pytest.mark.anyio


@contextmanager
def two_servers(
    keys: dict[str, Any], database: dict[str, str], keys_dir: Path, tmp_path: Path, **extra: str
) -> Iterator[tuple[Server, Server, FakeIssuer, FakeIssuer]]:
    """Two service processes on one PostgreSQL database and one key directory."""
    with serve_issuers() as served:
        google = served.add(http_google(keys["google"], served.base))
        microsoft = served.add(http_microsoft(keys["microsoft"], served.base))
        env = base_env(
            **database,
            IDENTITY_KEYS_DIR=str(keys_dir),
            IDENTITY_GOOGLE_JWKS_URL=google.jwks_url,
            IDENTITY_GOOGLE_CLIENT_IDS=fakes.WEB_CLIENT,
            IDENTITY_MICROSOFT_CLIENT_IDS=fakes.MS_CLIENT,
            IDENTITY_MICROSOFT_TENANTS=fakes.MS_TENANT,
            IDENTITY_MICROSOFT_AUTHORITY=f"{served.base}/ms",
            **extra,
        )
        with serve(env, tmp_path) as first, serve(env, tmp_path) as second:
            yield first, second, google, microsoft


async def post_all(
    servers: tuple[Server, Server], bodies: list[dict[str, str]]
) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=30) as client:
        return list(
            await asyncio.gather(
                *(client.post(servers[i % 2].url + "/token", data=b) for i, b in enumerate(bodies))
            )
        )


@pytest.mark.parametrize("provider", ["google", "microsoft"])
async def test_fifty_concurrent_first_sign_ins_make_one_user(
    pg_database: str,
    service_database: dict[str, str],
    keys: dict[str, Any],
    keys_dir: Path,
    tmp_path: Path,
    provider: str,
) -> None:
    with two_servers(keys, service_database, keys_dir, tmp_path) as (
        first,
        second,
        google,
        microsoft,
    ):
        issuer = google if provider == "google" else microsoft
        tokens = [issuer.mint() for _ in range(50)]  # one person, fifty tokens
        responses = await post_all(
            (first, second), [{**EXCHANGE, "subject_token": t} for t in tokens]
        )
    assert Counter(r.status_code for r in responses) == {200: 50}, [
        r.text for r in responses if r.status_code != 200
    ][:3]
    assert len({r.json()["user"]["id"] for r in responses}) == 1
    async with sql_for(pg_database) as sql:
        counts = await sql.counts()
    assert (counts["users"], counts["accounts"], counts["sessions"]) == (1, 1, 50)
    assert len(await _events(pg_database, "sign_in")) == 50


async def _events(url: str, type_: str) -> list[dict[str, Any]]:
    async with sql_for(url) as sql:
        return await sql.events(type_)


async def test_one_token_sent_to_both_processes_is_exchanged_once(
    service_database: dict[str, str],
    keys: dict[str, Any],
    keys_dir: Path,
    tmp_path: Path,
) -> None:
    with two_servers(keys, service_database, keys_dir, tmp_path) as (first, second, google, _):
        token = google.mint()
        responses = await post_all((first, second), [{**EXCHANGE, "subject_token": token}] * 20)
        # And every re-spelling of it, after: refused too.
        spellings = [token + "\n", token + "=", token.replace(".", ".=", 1)]
        more = await post_all(
            (first, second), [{**EXCHANGE, "subject_token": t} for t in spellings]
        )
    assert Counter(r.status_code for r in responses) == {200: 1, 400: 19}
    assert {r.status_code for r in more} == {400}


async def test_twenty_concurrent_refreshes_over_two_processes_share_one_successor(
    pg_database: str,
    service_database: dict[str, str],
    keys: dict[str, Any],
    keys_dir: Path,
    tmp_path: Path,
) -> None:
    with two_servers(keys, service_database, keys_dir, tmp_path) as (first, second, google, _):
        async with httpx.AsyncClient(timeout=30) as client:
            signed_in = await client.post(
                first.url + "/token", data={**EXCHANGE, "subject_token": google.mint()}
            )
        token = signed_in.json()["refresh_token"]
        responses = await post_all(
            (first, second), [{"grant_type": "refresh_token", "refresh_token": token}] * 20
        )
    assert Counter(r.status_code for r in responses) == {200: 20}
    assert len({r.json()["refresh_token"] for r in responses}) == 1
    async with sql_for(pg_database) as sql:
        assert await sql.scalar("SELECT count(*) FROM sessions") == 1


async def test_strict_mode_over_two_processes_one_winner(
    service_database: dict[str, str], keys: dict[str, Any], keys_dir: Path, tmp_path: Path
) -> None:
    with two_servers(
        keys, service_database, keys_dir, tmp_path, IDENTITY_REFRESH_REUSE_INTERVAL="0"
    ) as (first, second, google, _):
        async with httpx.AsyncClient(timeout=30) as client:
            signed_in = await client.post(
                first.url + "/token", data={**EXCHANGE, "subject_token": google.mint()}
            )
            token = signed_in.json()["refresh_token"]
            responses = await post_all(
                (first, second), [{"grant_type": "refresh_token", "refresh_token": token}] * 20
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


async def test_one_security_event_sent_to_both_processes_acts_once(
    pg_database: str,
    service_database: dict[str, str],
    keys: dict[str, Any],
    keys_dir: Path,
    tmp_path: Path,
) -> None:
    with two_servers(keys, service_database, keys_dir, tmp_path) as (first, second, google, _):
        async with httpx.AsyncClient(timeout=30) as client:
            for server in (first, second):
                signed_in = await client.post(
                    server.url + "/token", data={**EXCHANGE, "subject_token": google.mint()}
                )
                assert signed_in.status_code == 200, signed_in.text
            token = google_set(google, "sessions-revoked")
            responses = await asyncio.gather(
                *(
                    client.post(
                        (first, second)[i % 2].url + "/signals/google",
                        content=token,
                        headers={"Content-Type": "application/secevent+jwt"},
                    )
                    for i in range(20)
                )
            )
    assert Counter(r.status_code for r in responses) == {202: 20}, [
        (r.status_code, r.text) for r in responses if r.status_code != 202
    ][:3]
    (event,) = await _events(pg_database, "signal_received")
    assert event["detail"]["count"] == 2  # both sessions, ended by the one delivery that acted
    async with sql_for(pg_database) as sql:
        assert await sql.scalar("SELECT count(*) FROM sessions") == 0
        assert await sql.scalar("SELECT count(*) FROM received_signals") == 1
