"""Sessions: rotation, reuse detection, expiry, client binding, revoke, logout, introspect."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import Counter
from typing import Any, ClassVar

import httpx
import jwt
import pytest
from sqlalchemy import text
from starlette.applications import Starlette

from identity.app import create_app
from identity.settings import Settings

from .conftest import ISSUER, exchange, row_counts, services
from .fakes import FakeClock, FakeGoogle

pytestmark = pytest.mark.anyio


async def sign_in(client: httpx.AsyncClient, google: FakeGoogle, **claims: Any) -> dict[str, Any]:
    response = await exchange(client, google.mint(**claims))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def refresh(client: httpx.AsyncClient, token: str, **extra: str) -> httpx.Response:
    return await client.post(
        "/token", data={"grant_type": "refresh_token", "refresh_token": token, **extra}
    )


def bearer(tokens: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens['access_token']}"}


async def test_refresh_rotates_and_kills_the_old_token(
    app: Starlette, client: httpx.AsyncClient, google: FakeGoogle
) -> None:
    first = await sign_in(client, google)
    response = await refresh(client, first["refresh_token"])
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    second = response.json()
    assert set(second) >= {"access_token", "token_type", "expires_in", "refresh_token"}
    assert second["refresh_token"] != first["refresh_token"]
    assert (await client.get("/users/me", headers=bearer(second))).json()["id"] == first["user"][
        "id"
    ]
    # Only hashes are stored, anywhere.
    async with services(app).database.reader() as session:
        dump = str((await session.execute(text("SELECT * FROM sessions"))).all())
        dump += str((await session.execute(text("SELECT * FROM rotated_refresh_tokens"))).all())
    for token in (first["refresh_token"], second["refresh_token"]):
        assert token not in dump
        assert hashlib.sha256(token.encode()).hexdigest() in dump
    # The same session continues; its sid is kept.
    sid = jwt.decode(second["access_token"], options={"verify_signature": False})["sid"]
    assert sid == jwt.decode(first["access_token"], options={"verify_signature": False})["sid"]


async def test_reuse_revokes_the_whole_session(
    client: httpx.AsyncClient, google: FakeGoogle, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="identity.auth")
    first = await sign_in(client, google)
    second = (await refresh(client, first["refresh_token"])).json()
    third = (await refresh(client, second["refresh_token"])).json()
    reused = await refresh(client, first["refresh_token"])  # an earlier token, not just the last
    assert reused.status_code == 400
    assert reused.json()["error"] == "invalid_grant"
    # The thief and the owner both lose the session: the current token is dead too.
    assert (await refresh(client, third["refresh_token"])).status_code == 400
    assert (await client.get("/users/me", headers=bearer(third))).status_code == 401
    reasons = [getattr(r, "event", {}).get("reason") for r in caplog.records]
    assert "reuse_detected" in reasons


async def test_twenty_concurrent_refreshes_one_winner(
    app: Starlette, client: httpx.AsyncClient, google: FakeGoogle
) -> None:
    tokens = await sign_in(client, google)
    responses = await asyncio.gather(*(refresh(client, tokens["refresh_token"]) for _ in range(20)))
    statuses = Counter(r.status_code for r in responses)
    assert statuses == {200: 1, 400: 19}
    winner = next(r.json()["refresh_token"] for r in responses if r.status_code == 200)
    # No two live successors: at most the winner's token is current anywhere.
    async with services(app).database.reader() as session:
        current = [
            row[0]
            for row in (await session.execute(text("SELECT session_token FROM sessions"))).all()
        ]
    assert current in ([], [hashlib.sha256(winner.encode()).hexdigest()])


async def test_absolute_expiry(
    client: httpx.AsyncClient, google: FakeGoogle, clock: FakeClock
) -> None:
    tokens = await sign_in(client, google)
    for _ in range(3):  # used every 800,000 s: idle expiry (1,209,600 s) never triggers
        clock.advance(800_000)
        response = await refresh(client, tokens["refresh_token"])
        assert response.status_code == 200
        tokens = response.json()
    clock.advance(200_000)  # 2,600,000 s after sign-in: past the 2,592,000 s absolute lifetime
    assert (await refresh(client, tokens["refresh_token"])).status_code == 400


async def test_idle_expiry(client: httpx.AsyncClient, google: FakeGoogle, clock: FakeClock) -> None:
    tokens = await sign_in(client, google)
    clock.advance(1_209_600 - 1)
    tokens = (await refresh(client, tokens["refresh_token"])).json()
    assert "refresh_token" in tokens
    clock.advance(1_209_600)
    expired = await refresh(client, tokens["refresh_token"])
    assert expired.status_code == 400
    assert expired.json()["error"] == "invalid_grant"


@pytest.mark.parametrize(
    "token",
    [
        "garbage",
        "",
        "a" * 10_000,
        "tökén-ünïcödé-✓",
        "'; DROP TABLE sessions; --",
    ],
    ids=["garbage", "empty", "10kB", "non_ascii", "sql"],
)
async def test_bad_refresh_tokens(
    app: Starlette, client: httpx.AsyncClient, google: FakeGoogle, token: str
) -> None:
    tokens = await sign_in(client, google)
    before = await row_counts(app)
    response = await refresh(client, token)
    assert response.status_code == 400
    assert response.json()["error"] in ("invalid_grant", "invalid_request")
    if token:
        assert response.json()["error"] == "invalid_grant"
        assert (
            response.json()["error_description"]
            == "the refresh token is invalid, expired or revoked"
        )
    assert await row_counts(app) == before
    truncated = await refresh(client, tokens["refresh_token"][:-5])
    assert truncated.status_code == 400
    assert await row_counts(app) == before
    assert (await refresh(client, tokens["refresh_token"])).status_code == 200


async def test_scope_cannot_widen(client: httpx.AsyncClient, google: FakeGoogle) -> None:
    tokens = await sign_in(client, google)
    wider = await refresh(client, tokens["refresh_token"], scope="openid email admin")
    assert wider.status_code == 400
    assert wider.json()["error"] == "invalid_scope"
    narrower = await refresh(client, tokens["refresh_token"], scope="openid email")
    assert narrower.status_code == 200
    claims = jwt.decode(narrower.json()["access_token"], options={"verify_signature": False})
    assert claims["scope"] == "openid email"
    # RFC 6749 §6: the bound is what was originally granted, not the last request.
    again = await refresh(client, narrower.json()["refresh_token"], scope="openid email profile")
    assert again.status_code == 200


async def test_deleted_user_sessions_are_dead(
    app: Starlette, client: httpx.AsyncClient, google: FakeGoogle
) -> None:
    tokens = await sign_in(client, google)
    async with services(app).database.transaction() as session:
        await session.execute(text("DELETE FROM users"))
    assert (await refresh(client, tokens["refresh_token"])).status_code == 400
    assert (await client.get("/users/me", headers=bearer(tokens))).status_code == 401


async def test_revoke(client: httpx.AsyncClient, google: FakeGoogle) -> None:
    tokens = await sign_in(client, google)
    response = await client.post("/revoke", data={"token": tokens["refresh_token"]})
    assert response.status_code == 200
    assert (await refresh(client, tokens["refresh_token"])).status_code == 400
    # Our own endpoints refuse the session's access token at once (sid check) ...
    assert (await client.get("/users/me", headers=bearer(tokens))).status_code == 401
    # ... while an offline verifier accepts it until its short expiry.
    keys = (await client.get("/.well-known/jwks.json")).json()["keys"]
    claims = jwt.decode(
        tokens["access_token"],
        jwt.PyJWK(keys[0]).key,
        algorithms=["RS256"],
        audience=ISSUER,
        options={"verify_exp": False, "verify_iat": False},
    )
    assert claims["sub"] == tokens["user"]["id"]
    for token in ("garbage", tokens["refresh_token"], "a.b.c"):
        assert (await client.post("/revoke", data={"token": token})).status_code == 200
    assert (await client.post("/revoke", data={})).status_code == 400


async def test_revoke_with_access_token(client: httpx.AsyncClient, google: FakeGoogle) -> None:
    tokens = await sign_in(client, google)
    assert (await client.post("/revoke", data={"token": tokens["access_token"]})).status_code == 200
    assert (await refresh(client, tokens["refresh_token"])).status_code == 400


async def test_logout_current_and_global(client: httpx.AsyncClient, google: FakeGoogle) -> None:
    laptop = await sign_in(client, google)
    phone = await sign_in(client, google)
    tablet = await sign_in(client, google)
    response = await client.post("/auth/logout", headers=bearer(laptop))
    assert response.status_code == 204
    assert (await client.get("/users/me", headers=bearer(laptop))).status_code == 401
    assert (await client.get("/users/me", headers=bearer(phone))).status_code == 200
    assert (await client.post("/auth/logout", headers=bearer(laptop))).status_code == 401
    everywhere = await client.post("/auth/logout?scope=global", headers=bearer(phone))
    assert everywhere.status_code == 204
    assert (await refresh(client, tablet["refresh_token"])).status_code == 400
    assert (await client.get("/users/me", headers=bearer(tablet))).status_code == 401


async def test_logout_global_as_form(client: httpx.AsyncClient, google: FakeGoogle) -> None:
    one, two = await sign_in(client, google), await sign_in(client, google)
    response = await client.post("/auth/logout", data={"scope": "global"}, headers=bearer(one))
    assert response.status_code == 204
    assert (await refresh(client, two["refresh_token"])).status_code == 400


async def test_introspect(client: httpx.AsyncClient, google: FakeGoogle, clock: FakeClock) -> None:
    tokens = await sign_in(client, google)
    access = (await client.post("/introspect", data={"token": tokens["access_token"]})).json()
    assert access["active"] is True
    assert access["sub"] == tokens["user"]["id"]
    assert access["exp"] == int(clock()) + 900
    assert access["sid"] and access["client_id"] == "public"
    refresh_info = (
        await client.post("/introspect", data={"token": tokens["refresh_token"]})
    ).json()
    assert refresh_info["active"] is True
    assert refresh_info["sid"] == access["sid"]
    for token in ("garbage", "a.b.c", "x" * 5000):
        assert (await client.post("/introspect", data={"token": token})).json() == {"active": False}
    await client.post("/auth/logout", headers=bearer(tokens))
    # The access token still verifies offline, but its session is gone: inactive.
    assert (await client.post("/introspect", data={"token": tokens["access_token"]})).json() == {
        "active": False
    }
    assert (await client.post("/introspect", data={"token": tokens["refresh_token"]})).json() == {
        "active": False
    }


async def test_list_and_end_sessions(client: httpx.AsyncClient, google: FakeGoogle) -> None:
    first = await sign_in(client, google)
    second = await client.post(
        "/token",
        data={
            "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
            "subject_token_type": "urn:ietf:params:oauth:token-type:id_token",
            "subject_token": google.mint(),
        },
        headers={"User-Agent": "Phone/1.0"},
    )
    listing = (await client.get("/users/me/sessions", headers=bearer(first))).json()["sessions"]
    assert len(listing) == 2
    assert {s["current"] for s in listing} == {True, False}
    other = next(s for s in listing if not s["current"])
    assert other["user_agent"] == "Phone/1.0"
    assert set(other) >= {"id", "created_at", "last_used_at", "user_agent"}
    response = await client.delete(f"/users/me/sessions/{other['id']}", headers=bearer(first))
    assert response.status_code == 204
    assert (await refresh(client, second.json()["refresh_token"])).status_code == 400
    assert (
        await client.delete(f"/users/me/sessions/{other['id']}", headers=bearer(first))
    ).status_code == 404
    # Somebody else's session cannot be ended by id.
    stranger = await sign_in(client, google, sub="stranger", email="grace@gmail.com")
    stranger_sid = jwt.decode(stranger["access_token"], options={"verify_signature": False})["sid"]
    assert (
        await client.delete(f"/users/me/sessions/{stranger_sid}", headers=bearer(first))
    ).status_code == 404
    assert (await client.get("/users/me", headers=bearer(stranger))).status_code == 200


class TestClients:
    SECRETS: ClassVar[dict[str, str]] = {
        "web": "web-secret-0123456789",
        "mobile": "mobile-secret-0123456789",
    }

    @pytest.fixture
    async def client(self, settings: Settings, google: FakeGoogle, clock: FakeClock) -> Any:
        configured = Settings(**{**settings.__dict__, "clients": self.SECRETS})
        app = create_app(configured, http_client=google.client(), clock=clock)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ISSUER) as client,
        ):
            yield client

    async def _sign_in(self, client: httpx.AsyncClient, google: FakeGoogle) -> dict[str, Any]:
        response = await exchange(
            client, google.mint(), client_id="web", client_secret=self.SECRETS["web"]
        )
        body: dict[str, Any] = response.json()
        return body

    async def test_refresh_token_is_bound_to_its_client(
        self, client: httpx.AsyncClient, google: FakeGoogle
    ) -> None:
        tokens = await self._sign_in(client, google)
        data = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
        assert (await client.post("/token", data=data)).status_code == 401
        other = await client.post("/token", data=data, auth=("mobile", self.SECRETS["mobile"]))
        assert other.status_code == 400
        assert other.json()["error"] == "invalid_grant"
        own = await client.post("/token", data=data, auth=("web", self.SECRETS["web"]))
        assert own.status_code == 200
        claims = jwt.decode(own.json()["access_token"], options={"verify_signature": False})
        assert claims["client_id"] == "web"

    async def test_revoke_and_introspect_need_client_auth(
        self, client: httpx.AsyncClient, google: FakeGoogle
    ) -> None:
        tokens = await self._sign_in(client, google)
        for path in ("/revoke", "/introspect"):
            response = await client.post(path, data={"token": tokens["refresh_token"]})
            assert response.status_code == 401
            assert response.json()["error"] == "invalid_client"
        # Another client cannot revoke web's session.
        await client.post(
            "/revoke",
            data={"token": tokens["refresh_token"]},
            auth=("mobile", self.SECRETS["mobile"]),
        )
        info = await client.post(
            "/introspect",
            data={"token": tokens["refresh_token"]},
            auth=("mobile", self.SECRETS["mobile"]),
        )
        assert info.json()["active"] is True
        await client.post(
            "/revoke", data={"token": tokens["refresh_token"]}, auth=("web", self.SECRETS["web"])
        )
        info = await client.post(
            "/introspect",
            data={"token": tokens["refresh_token"]},
            auth=("web", self.SECRETS["web"]),
        )
        assert info.json() == {"active": False}
