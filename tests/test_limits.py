"""Rate limits: failures keyed so one user cannot lock out the others; successes per user."""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter
from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.applications import Starlette

from identity.accounts.limits import ip_key, subject_key
from identity.settings import RateLimit, Settings

from .fakes import FakeClock, FakeIssuer, Issuers
from .support import EXCHANGE, ISSUER, Sql, basic, exchange, refresh, running

pytestmark = pytest.mark.anyio
SECRETS = {"nextjs": "nextjs-secret-0123456789", "mobile": "mobile-secret-0123456789"}


@pytest.fixture
async def limited(
    settings: Settings, issuers: Issuers, clock: FakeClock
) -> AsyncIterator[Starlette]:
    configured = dataclasses.replace(
        settings, rate_limit_failures=RateLimit(5, 60), rate_limit_subject=RateLimit(3, 60)
    )
    async with running(configured, issuers, clock) as (app, _):
        yield app


@pytest.fixture
async def with_clients(
    settings: Settings, issuers: Issuers, clock: FakeClock
) -> AsyncIterator[Starlette]:
    configured = dataclasses.replace(
        settings, clients=SECRETS, rate_limit_failures=RateLimit(5, 60)
    )
    async with running(configured, issuers, clock) as (app, _):
        yield app


def client_from(app: Starlette, ip: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=(ip, 40000)), base_url=ISSUER
    )


def test_keys() -> None:
    assert ip_key("203.0.113.7") == "fail:ip:203.0.113.7"
    # One IPv6 host holds a whole /64: its addresses count together.
    assert (
        ip_key("2001:db8:1:2:aaaa::1")
        == ip_key("2001:db8:1:2:ffff:ffff:ffff:ffff")
        == "fail:ip:2001:db8:1:2::/64"
    )
    assert ip_key("2001:db8:1:3::1") != ip_key("2001:db8:1:2::1")
    assert ip_key("::ffff:203.0.113.7") == ip_key("203.0.113.7")
    assert ip_key("not an ip") == ip_key(None) == "fail:ip:unknown"
    # Subjects are hashed (no account key or address in the table), users are not (short, opaque).
    assert subject_key("nextjs", "user:abc") == "fail:nextjs:user:abc"
    assert "110000" not in subject_key("nextjs", "account:google:110000000000000000001")


async def test_without_client_authentication_failures_count_per_ip(
    limited: Starlette, google: FakeIssuer, clock: FakeClock
) -> None:
    async with (
        client_from(limited, "203.0.113.7") as attacker,
        client_from(limited, "198.51.100.2") as other,
    ):
        for _ in range(5):
            assert (await exchange(attacker, "garbage")).status_code == 400
        # Past the limit, every request from that IP is refused, even a good one.
        blocked = await exchange(attacker, google.mint())
        assert blocked.status_code == 429
        assert blocked.json()["error"] == "rate_limited"
        assert 0 < int(blocked.headers["retry-after"]) <= 60
        assert (await attacker.post("/revoke", data={"token": "x"})).status_code == 429
        # Other IPs and other endpoints are unaffected.
        assert (
            await exchange(other, google.mint(sub="someone-else", email="b@gmail.com"))
        ).status_code == 200
        assert (await attacker.get("/.well-known/jwks.json")).status_code == 200
        clock.advance(60)
        assert (await exchange(attacker, google.mint())).status_code == 200


async def test_a_page_the_handler_renders_counts_like_an_error(limited: Starlette) -> None:
    """The verification link's page answers 400 as HTML, not as a raised error: it counts too."""
    async with client_from(limited, "203.0.113.77") as browser:
        statuses = [
            (await browser.get("/auth/verify-email?email=a%40example.com")).status_code
            for _ in range(7)
        ]
        refused = await browser.get("/auth/verify-email?email=a%40example.com&token=t")
    assert statuses == [400] * 5 + [429] * 2
    assert refused.status_code == 429
    assert refused.json()["error"] == "rate_limited"


async def test_ipv6_clients_are_counted_by_their_64(limited: Starlette, google: FakeIssuer) -> None:
    for i in range(5):
        async with client_from(limited, f"2001:db8:1:2::{i + 1:x}") as rotating:
            assert (await exchange(rotating, "garbage")).status_code == 400
    async with (
        client_from(limited, "2001:db8:1:2:ffff::9") as neighbour,
        client_from(limited, "2001:db8:1:3::1") as elsewhere,
    ):
        assert (await exchange(neighbour, google.mint())).status_code == 429
        assert (await exchange(elsewhere, google.mint())).status_code == 200


async def test_a_concurrent_burst_gets_at_most_the_limit_through(limited: Starlette) -> None:
    """The count is incremented before it is compared: 50 failures at once, limit 5."""
    async with client_from(limited, "203.0.113.50") as attacker:
        responses = await asyncio.gather(*(exchange(attacker, "garbage") for _ in range(50)))
    assert Counter(r.status_code for r in responses) == {400: 5, 429: 45}


async def test_one_users_broken_session_never_locks_out_the_others(
    with_clients: Starlette, issuers: Issuers, sql: Sql
) -> None:
    """Everyone comes from the one Next.js server: its IP must not be the key."""
    nextjs = basic("nextjs", SECRETS["nextjs"])
    async with client_from(with_clients, "10.0.0.5") as server:
        ada = (await exchange(server, issuers.google.mint(), headers=nextjs)).json()
        grace = (await exchange(server, issuers.microsoft.mint(), headers=nextjs)).json()
        first = await refresh(server, ada["refresh_token"], headers=nextjs)
        assert first.status_code == 200
        # Ada's tab keeps presenting an old, revoked token: her failures pile up...
        stale = "stale-refresh-token-of-ada"
        statuses = [(await refresh(server, stale, headers=nextjs)).status_code for _ in range(7)]
        assert statuses == [400] * 5 + [429] * 2
        # ... but Grace, behind the same server, refreshes and signs in as always.
        assert (await refresh(server, grace["refresh_token"], headers=nextjs)).status_code == 200
        assert (await exchange(server, issuers.apple.mint(), headers=nextjs)).status_code == 200
        # And so does Ada with her good token: the stale token's key is its own.
        assert (
            await refresh(server, first.json()["refresh_token"], headers=nextjs)
        ).status_code == 200
    keys = [r["key"] for r in await sql.rows("SELECT key FROM rate_limits")]
    assert not any(k.startswith("fail:ip:") for k in keys)


async def test_an_accounts_own_failures_lock_that_account_for_that_client(
    with_clients: Starlette, issuers: Issuers
) -> None:
    nextjs, mobile = basic("nextjs", SECRETS["nextjs"]), basic("mobile", SECRETS["mobile"])
    google = issuers.google
    async with client_from(with_clients, "10.0.0.5") as server:
        assert (await exchange(server, google.mint(), headers=nextjs)).status_code == 200
        # Another Google account claims Ada's verified address without proving it: 409s,
        # counted against that account (for this client), not against the server's IP.
        for _ in range(5):
            conflict = google.mint(sub="other", email="ada@gmail.com", email_verified=False)
            assert (await exchange(server, conflict, headers=nextjs)).status_code == 409
        # Past the limit even a good token of that account is refused, until the window ends.
        good = await exchange(server, google.mint(sub="other", email="o@gmail.com"), headers=nextjs)
        assert good.status_code == 429
        # Other accounts behind the same server are untouched; so is another client's count.
        assert (
            await exchange(server, google.mint(sub="third", email="t@gmail.com"), headers=nextjs)
        ).status_code == 200
        elsewhere = await exchange(
            server, google.mint(sub="other", email="o@gmail.com"), headers=mobile
        )
        assert elsewhere.status_code == 200


async def test_failed_client_authentication_counts_per_ip(
    with_clients: Starlette, google: FakeIssuer
) -> None:
    async with (
        client_from(with_clients, "203.0.113.9") as guesser,
        client_from(with_clients, "10.0.0.5") as server,
    ):
        for _ in range(5):
            assert (
                await exchange(
                    guesser, google.mint(), headers=basic("nextjs", "wrong-guess-0000000000")
                )
            ).status_code == 401
        assert (
            await exchange(
                guesser, google.mint(), headers=basic("nextjs", "wrong-guess-1111111111")
            )
        ).status_code == 429
        ok = await exchange(server, google.mint(), headers=basic("nextjs", SECRETS["nextjs"]))
        assert ok.status_code == 200


async def test_successes_per_user(
    limited: Starlette, google: FakeIssuer, clock: FakeClock, sql: Sql
) -> None:
    async with client_from(limited, "192.0.2.1") as client:
        tokens = [(await exchange(client, google.mint())).json() for _ in range(2)]
        assert (
            await refresh(client, tokens[0]["refresh_token"])
        ).status_code == 200  # the third success
        before = await sql.counts()
        fourth = await exchange(client, google.mint())
        assert fourth.status_code == 429
        assert "retry-after" in fourth.headers
        after = await sql.counts()
        assert (after["sessions"], after["used_id_tokens"]) == (
            before["sessions"],
            before["used_id_tokens"],
        )
        again = await refresh(client, tokens[1]["refresh_token"])
        assert again.status_code == 429
        # The refresh token was not rotated by the refused attempt: it works after the window.
        clock.advance(60)
        assert (await refresh(client, tokens[1]["refresh_token"])).status_code == 200


def test_limits_from_the_environment() -> None:
    defaults = Settings.from_env({})
    assert defaults.rate_limit_failures == RateLimit(60, 60)
    assert defaults.rate_limit_subject == RateLimit(30, 60)
    assert defaults.rate_limit_mail == RateLimit(5, 3600)
    off = Settings.from_env(
        {"IDENTITY_RATE_LIMIT_FAILURES": "0", "IDENTITY_RATE_LIMIT_SUBJECT": "10/second"}
    )
    assert off.rate_limit_failures is None
    assert off.rate_limit_subject == RateLimit(10, 1)


async def test_query_tokens_and_big_bodies_do_not_reach_the_database(limited: Starlette) -> None:
    async with client_from(limited, "192.0.2.9") as client:
        assert (await client.post("/token?subject_token=x", data=EXCHANGE)).status_code == 400
        big = await client.post(
            "/token",
            content=b"x" * 70_000,
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        assert big.status_code == 413
