"""Rate limits (SPEC §4, §7): per-IP failures and per-user successes; 429 with Retry-After."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.applications import Starlette

from identity.app import create_app
from identity.settings import RateLimit, Settings

from .conftest import EXCHANGE, ISSUER, exchange, row_counts
from .fakes import FakeClock, FakeGoogle

pytestmark = pytest.mark.anyio


@pytest.fixture
async def limited(
    settings: Settings, google: FakeGoogle, clock: FakeClock
) -> AsyncIterator[Starlette]:
    configured = Settings(
        **{
            **settings.__dict__,
            "rate_limit_failures": RateLimit(5, 60),
            "rate_limit_subject": RateLimit(3, 60),
        }
    )
    async with google.client() as http:
        app = create_app(configured, http_client=http, clock=clock)
        async with app.router.lifespan_context(app):
            yield app


def client_from(app: Starlette, ip: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(ip, 40000))
    return httpx.AsyncClient(transport=transport, base_url=ISSUER)


async def test_failures_per_ip(limited: Starlette, google: FakeGoogle, clock: FakeClock) -> None:
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
        # Other clients and other endpoints are unaffected.
        assert (
            await exchange(other, google.mint(sub="someone-else", email="b@gmail.com"))
        ).status_code == 200
        assert (await attacker.get("/.well-known/jwks.json")).status_code == 200
        clock.advance(60)
        assert (await exchange(attacker, google.mint())).status_code == 200


async def test_successes_per_user(limited: Starlette, google: FakeGoogle, clock: FakeClock) -> None:
    async with client_from(limited, "192.0.2.1") as client:
        tokens = [(await exchange(client, google.mint())).json() for _ in range(2)]
        refreshed = await client.post(
            "/token",
            data={"grant_type": "refresh_token", "refresh_token": tokens[0]["refresh_token"]},
        )
        assert refreshed.status_code == 200  # the third success this minute
        before = await row_counts(limited)
        fourth = await exchange(client, google.mint())
        assert fourth.status_code == 429
        assert "retry-after" in fourth.headers
        assert await row_counts(limited) == before  # nothing written, id_token not consumed
        again = await client.post(
            "/token",
            data={"grant_type": "refresh_token", "refresh_token": tokens[1]["refresh_token"]},
        )
        assert again.status_code == 429
        # The refresh token was not rotated by the refused attempt: it works after the window.
        clock.advance(60)
        later = await client.post(
            "/token",
            data={"grant_type": "refresh_token", "refresh_token": tokens[1]["refresh_token"]},
        )
        assert later.status_code == 200


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
        assert (
            await client.post(
                "/token",
                content=b"x" * 70_000,
                headers={"content-type": "application/x-www-form-urlencoded"},
            )
        ).status_code == 413
