"""Sessions: refresh rotation with a reuse interval, expiry, revoke, introspect, logout."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from collections import Counter
from typing import Any, ClassVar

import httpx
import jwt
import pytest

from identity.settings import Settings
from identity.tokens import refresh_tokens

from .fakes import FakeClock, FakeIssuer, Issuers
from .support import ISSUER, Sql, basic, bearer, exchange, refresh, running, sign_in

pytestmark = pytest.mark.anyio


INVALID_GRANT = {
    "error": "invalid_grant",
    "error_description": "the refresh token is invalid, expired or revoked",
}


def sid_of(access_token: str) -> str:
    return str(jwt.decode(access_token, options={"verify_signature": False})["sid"])


def claims_of(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    claims: dict[str, Any] = jwt.decode(
        response.json()["access_token"], options={"verify_signature": False}
    )
    return claims


async def test_refresh_rotates_and_keeps_the_session(
    client: httpx.AsyncClient, google: FakeIssuer, sql: Sql
) -> None:
    first = await sign_in(client, google)
    response = await refresh(client, first["refresh_token"])
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    second = response.json()
    assert set(second) == {"access_token", "token_type", "expires_in", "refresh_token"}
    assert second["refresh_token"] != first["refresh_token"]
    me = await client.get("/users/me", headers=bearer(second["access_token"]))
    assert me.json()["id"] == first["user"]["id"]
    assert sid_of(second["access_token"]) == sid_of(first["access_token"])
    # Only hashes (and, for the interval, the successor sealed) are stored, anywhere.
    dump = str(await sql.rows("SELECT * FROM sessions")) + str(
        await sql.rows("SELECT * FROM rotated_refresh_tokens")
    )
    for token in (first["refresh_token"], second["refresh_token"]):
        assert token not in dump
        assert hashlib.sha256(token.encode()).hexdigest() in dump


async def test_within_the_interval_the_parent_yields_the_same_successor(
    client: httpx.AsyncClient, google: FakeIssuer, clock: FakeClock, sql: Sql
) -> None:
    first = await sign_in(client, google)
    second = (await refresh(client, first["refresh_token"])).json()
    clock.advance(9)
    again = await refresh(client, first["refresh_token"])  # a second tab, a retry
    assert again.status_code == 200
    assert again.json()["refresh_token"] == second["refresh_token"]
    assert again.json()["access_token"] != second["access_token"]  # a fresh access token
    assert sid_of(again.json()["access_token"]) == sid_of(first["access_token"])
    assert await sql.scalar("SELECT count(*) FROM sessions") == 1
    # And the session goes on from the one live token.
    assert (await refresh(client, second["refresh_token"])).status_code == 200


async def test_the_database_alone_opens_no_successor(
    client: httpx.AsyncClient, google: FakeIssuer, sql: Sql
) -> None:
    first = await sign_in(client, google)
    second = (await refresh(client, first["refresh_token"])).json()
    (row,) = await sql.rows("SELECT previous_hash, previous_sealed FROM sessions")
    sealed = bytes(row["previous_sealed"])
    assert second["refresh_token"].encode() not in sealed
    assert row["previous_hash"] == refresh_tokens.digest(first["refresh_token"])
    # Everything in the row together is no key: only the parent token itself opens the seal.
    assert refresh_tokens.unseal(sealed, parent=row["previous_hash"]) is None
    assert refresh_tokens.unseal(sealed, parent=first["refresh_token"]) == second["refresh_token"]


async def test_after_the_interval_the_parent_is_reuse(
    client: httpx.AsyncClient, google: FakeIssuer, sql: Sql, caplog: pytest.LogCaptureFixture
) -> None:
    first = await sign_in(client, google)
    second = (await refresh(client, first["refresh_token"])).json()
    await sql.set_time("sessions", "rotated_at")  # the 10 s interval has ended
    reused = await refresh(client, first["refresh_token"])
    assert reused.status_code == 400
    assert reused.json()["error"] == "invalid_grant"
    # The thief and the owner both lose the session: the current token is dead too.
    assert (await refresh(client, second["refresh_token"])).status_code == 400
    assert (
        await client.get("/users/me", headers=bearer(second["access_token"]))
    ).status_code == 401
    (event,) = await sql.events("refresh_reuse")
    assert event["user_id"] == first["user"]["id"]
    reasons = [getattr(record, "event", {}).get("reason") for record in caplog.records]
    assert "reuse_detected" in reasons  # the auth event line


async def test_once_the_successor_rotated_the_parent_is_reuse(
    client: httpx.AsyncClient, google: FakeIssuer, sql: Sql
) -> None:
    first = await sign_in(client, google)
    second = (await refresh(client, first["refresh_token"])).json()
    third = (await refresh(client, second["refresh_token"])).json()
    assert (await refresh(client, first["refresh_token"])).status_code == 400
    assert (await refresh(client, third["refresh_token"])).status_code == 400
    assert await sql.scalar("SELECT count(*) FROM sessions") == 0


async def test_the_sealed_successor_is_forgotten_when_the_interval_ends(
    app: Any,
    client: httpx.AsyncClient,
    google: FakeIssuer,
    clock: FakeClock,
    sql: Sql,
    database_url: str,
) -> None:
    from identity.accounts.services import data_services
    from identity.store.database import Database

    first = await sign_in(client, google)
    await refresh(client, first["refresh_token"])
    database = Database(database_url)
    sessions = data_services(Settings(database_url=database_url), database, clock=clock).sessions
    try:
        assert await sessions.forget_sealed() == 0  # still within the interval
        await sql.set_time("sessions", "rotated_at")  # by either database's clock
        assert await sessions.forget_sealed() == 1
    finally:
        await database.close()
    assert await sql.scalar("SELECT previous_sealed FROM sessions") is None


async def test_twenty_concurrent_refreshes_share_one_successor(
    client: httpx.AsyncClient, google: FakeIssuer, sql: Sql
) -> None:
    tokens = await sign_in(client, google)
    responses = await asyncio.gather(*(refresh(client, tokens["refresh_token"]) for _ in range(20)))
    assert Counter(r.status_code for r in responses) == {200: 20}
    successors = {r.json()["refresh_token"] for r in responses}
    assert len(successors) == 1
    assert await sql.scalar("SELECT count(*) FROM sessions") == 1
    (current,) = successors
    assert await sql.scalar("SELECT session_token FROM sessions") == refresh_tokens.digest(current)


class TestStrict:
    """IDENTITY_REFRESH_REUSE_INTERVAL=0: any reuse revokes; of two racing refreshes one wins."""

    @pytest.fixture
    async def client(self, settings: Settings, issuers: Issuers, clock: FakeClock) -> Any:
        async with running(
            dataclasses.replace(settings, refresh_reuse_interval=0), issuers, clock
        ) as (_, client):
            yield client

    async def test_any_reuse_revokes(
        self, client: httpx.AsyncClient, google: FakeIssuer, sql: Sql
    ) -> None:
        first = await sign_in(client, google)
        second = (await refresh(client, first["refresh_token"])).json()
        assert await sql.scalar("SELECT previous_sealed FROM sessions") is None  # nothing sealed
        assert (await refresh(client, first["refresh_token"])).status_code == 400
        assert (await refresh(client, second["refresh_token"])).status_code == 400

    async def test_twenty_concurrent_refreshes_one_winner(
        self, client: httpx.AsyncClient, google: FakeIssuer, sql: Sql
    ) -> None:
        tokens = await sign_in(client, google)
        responses = await asyncio.gather(
            *(refresh(client, tokens["refresh_token"]) for _ in range(20))
        )
        assert Counter(r.status_code for r in responses) == {200: 1, 400: 19}
        winner = next(r.json()["refresh_token"] for r in responses if r.status_code == 200)
        current = [r["session_token"] for r in await sql.rows("SELECT session_token FROM sessions")]
        assert current in ([], [refresh_tokens.digest(winner)])  # never two live successors


async def test_absolute_expiry(
    client: httpx.AsyncClient, google: FakeIssuer, clock: FakeClock
) -> None:
    tokens = await sign_in(client, google)
    for _ in range(3):  # used every 800,000 s: idle expiry (1,209,600 s) never triggers
        clock.advance(800_000)
        response = await refresh(client, tokens["refresh_token"])
        assert response.status_code == 200
        tokens = response.json()
    clock.advance(200_000)  # 2,600,000 s after sign-in: past the 2,592,000 s absolute lifetime
    assert (await refresh(client, tokens["refresh_token"])).status_code == 400


async def test_idle_expiry(client: httpx.AsyncClient, google: FakeIssuer, clock: FakeClock) -> None:
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
    ["garbage", "", "a" * 10_000, "tökén-ünïcödé-✓", "'; DROP TABLE sessions; --"],
    ids=["garbage", "empty", "10kB", "non_ascii", "sql"],
)
async def test_bad_refresh_tokens(
    client: httpx.AsyncClient, google: FakeIssuer, sql: Sql, token: str
) -> None:
    tokens = await sign_in(client, google)
    before = await sql.counts()
    response = await refresh(client, token)
    assert response.status_code == 400
    if token:
        assert response.json() == {
            "error": "invalid_grant",
            "error_description": "the refresh token is invalid, expired or revoked",
        }
    assert await sql.counts() == before
    assert (await refresh(client, tokens["refresh_token"][:-5])).status_code == 400
    assert await sql.counts() == before
    assert (await refresh(client, tokens["refresh_token"])).status_code == 200


async def test_scope_cannot_widen(client: httpx.AsyncClient, google: FakeIssuer, sql: Sql) -> None:
    tokens = await sign_in(client, google)
    before = await sql.counts()
    wider = await refresh(client, tokens["refresh_token"], scope="openid email admin")
    assert wider.status_code == 400
    assert wider.json()["error"] == "invalid_scope"
    assert await sql.counts() == before  # the token was not rotated
    narrower = await refresh(client, tokens["refresh_token"], scope="openid email")
    assert narrower.status_code == 200
    claims = jwt.decode(narrower.json()["access_token"], options={"verify_signature": False})
    assert claims["scope"] == "openid email"
    # RFC 6749 §6: the bound is what was originally granted, not the last request.
    again = await refresh(client, narrower.json()["refresh_token"], scope="openid email profile")
    assert again.status_code == 200


async def test_deleted_user_sessions_are_dead(
    client: httpx.AsyncClient, google: FakeIssuer, sql: Sql
) -> None:
    tokens = await sign_in(client, google)
    async with sql.engine.begin() as connection:
        from sqlalchemy import text

        await connection.execute(text("DELETE FROM users"))
    assert (await refresh(client, tokens["refresh_token"])).status_code == 400
    assert (
        await client.get("/users/me", headers=bearer(tokens["access_token"]))
    ).status_code == 401


async def test_revoke(client: httpx.AsyncClient, google: FakeIssuer, sql: Sql) -> None:
    tokens = await sign_in(client, google)
    response = await client.post("/revoke", data={"token": tokens["refresh_token"]})
    assert response.status_code == 200
    assert (await refresh(client, tokens["refresh_token"])).status_code == 400
    # Our own endpoints refuse the session's access token at once (the sid check) ...
    assert (
        await client.get("/users/me", headers=bearer(tokens["access_token"]))
    ).status_code == 401
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
    (event,) = await sql.events("session_revoked")
    assert event["session_id"] == sid_of(tokens["access_token"])


async def test_revoke_with_access_token(client: httpx.AsyncClient, google: FakeIssuer) -> None:
    tokens = await sign_in(client, google)
    assert (await client.post("/revoke", data={"token": tokens["access_token"]})).status_code == 200
    assert (await refresh(client, tokens["refresh_token"])).status_code == 400


async def test_logout_current_and_global(
    client: httpx.AsyncClient, google: FakeIssuer, sql: Sql
) -> None:
    laptop = await sign_in(client, google)
    phone = await sign_in(client, google)
    tablet = await sign_in(client, google)
    assert (
        await client.post("/auth/logout", headers=bearer(laptop["access_token"]))
    ).status_code == 204
    assert (
        await client.get("/users/me", headers=bearer(laptop["access_token"]))
    ).status_code == 401
    assert (await client.get("/users/me", headers=bearer(phone["access_token"]))).status_code == 200
    assert (
        await client.post("/auth/logout", headers=bearer(laptop["access_token"]))
    ).status_code == 401
    everywhere = await client.post(
        "/auth/logout?scope=global", headers=bearer(phone["access_token"])
    )
    assert everywhere.status_code == 204
    assert (await refresh(client, tablet["refresh_token"])).status_code == 400
    assert (
        await client.get("/users/me", headers=bearer(tablet["access_token"]))
    ).status_code == 401
    assert len(await sql.events("logout")) == 2


async def test_logout_global_as_form(client: httpx.AsyncClient, google: FakeIssuer) -> None:
    one, two = await sign_in(client, google), await sign_in(client, google)
    response = await client.post(
        "/auth/logout", data={"scope": "global"}, headers=bearer(one["access_token"])
    )
    assert response.status_code == 204
    assert (await refresh(client, two["refresh_token"])).status_code == 400
    bad = await client.post(
        "/auth/logout", data={"scope": "galaxy"}, headers=bearer(two["access_token"])
    )
    assert bad.status_code == 401  # the session is gone already: the token speaks for nobody


async def test_introspect(client: httpx.AsyncClient, google: FakeIssuer, clock: FakeClock) -> None:
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
    await client.post("/auth/logout", headers=bearer(tokens["access_token"]))
    # The access token still verifies offline, but its session is gone: inactive.
    assert (await client.post("/introspect", data={"token": tokens["access_token"]})).json() == {
        "active": False
    }
    assert (await client.post("/introspect", data={"token": tokens["refresh_token"]})).json() == {
        "active": False
    }


async def test_list_and_end_sessions(client: httpx.AsyncClient, google: FakeIssuer) -> None:
    first = await sign_in(client, google)
    second = await exchange(client, google.mint(), headers={"User-Agent": "Phone/1.0"})
    listing = (
        await client.get("/users/me/sessions", headers=bearer(first["access_token"]))
    ).json()["sessions"]
    assert len(listing) == 2
    assert {s["current"] for s in listing} == {True, False}
    other = next(s for s in listing if not s["current"])
    assert other["user_agent"] == "Phone/1.0"
    assert set(other) >= {
        "id",
        "created_at",
        "last_used_at",
        "expires_at",
        "user_agent",
        "client_id",
    }
    response = await client.delete(
        f"/users/me/sessions/{other['id']}", headers=bearer(first["access_token"])
    )
    assert response.status_code == 204
    assert (await refresh(client, second.json()["refresh_token"])).status_code == 400
    again = await client.delete(
        f"/users/me/sessions/{other['id']}", headers=bearer(first["access_token"])
    )
    assert again.status_code == 404
    # Somebody else's session cannot be ended by id.
    stranger = await sign_in(client, google, sub="stranger", email="grace@gmail.com")
    gone = await client.delete(
        f"/users/me/sessions/{sid_of(stranger['access_token'])}",
        headers=bearer(first["access_token"]),
    )
    assert gone.status_code == 404
    assert (
        await client.get("/users/me", headers=bearer(stranger["access_token"]))
    ).status_code == 200


class TestClients:
    SECRETS: ClassVar[dict[str, str]] = {
        "web": "web-secret-0123456789",
        "mobile": "mobile-secret-0123456789",
    }

    @pytest.fixture
    async def client(self, settings: Settings, issuers: Issuers, clock: FakeClock) -> Any:
        async with running(dataclasses.replace(settings, clients=self.SECRETS), issuers, clock) as (
            _,
            client,
        ):
            yield client

    async def _sign_in(self, client: httpx.AsyncClient, google: FakeIssuer) -> dict[str, Any]:
        response = await exchange(client, google.mint(), headers=basic("web", self.SECRETS["web"]))
        body: dict[str, Any] = response.json()
        return body

    async def test_refresh_token_is_bound_to_its_client(
        self, client: httpx.AsyncClient, google: FakeIssuer
    ) -> None:
        tokens = await self._sign_in(client, google)
        assert (await refresh(client, tokens["refresh_token"])).status_code == 401
        other = await refresh(
            client, tokens["refresh_token"], headers=basic("mobile", self.SECRETS["mobile"])
        )
        assert other.status_code == 400
        assert other.json()["error"] == "invalid_grant"
        own = await refresh(
            client, tokens["refresh_token"], headers=basic("web", self.SECRETS["web"])
        )
        assert own.status_code == 200
        claims = jwt.decode(own.json()["access_token"], options={"verify_signature": False})
        assert claims["client_id"] == "web"

    async def test_another_clients_earlier_token_revokes_nothing(
        self, client: httpx.AsyncClient, google: FakeIssuer, sql: Sql
    ) -> None:
        """Reuse detection applies within one client: another client holding a rotated token
        of web's (the parent, or an earlier one) is refused, and web's session goes on."""
        web, mobile = basic("web", self.SECRETS["web"]), basic("mobile", self.SECRETS["mobile"])
        first = await self._sign_in(client, google)
        second = (await refresh(client, first["refresh_token"], headers=web)).json()
        before = await sql.counts()
        parent = await refresh(client, first["refresh_token"], headers=mobile)  # in the interval
        assert (parent.status_code, parent.json()) == (400, INVALID_GRANT)
        await sql.set_time("sessions", "rotated_at")  # the interval has ended
        earlier = await refresh(client, first["refresh_token"], headers=mobile)
        assert (earlier.status_code, earlier.json()) == (400, INVALID_GRANT)
        assert await sql.counts() == before  # nothing revoked, nothing written
        third = await refresh(client, second["refresh_token"], headers=web)
        assert third.status_code == 200
        # The session's own client presenting it is reuse, as ever: the session ends.
        reused = await refresh(client, first["refresh_token"], headers=web)
        assert (reused.status_code, reused.json()) == (400, INVALID_GRANT)
        assert len(await sql.events("refresh_reuse")) == 1
        assert (
            await refresh(client, third.json()["refresh_token"], headers=web)
        ).status_code == 400

    async def test_revoke_and_introspect_stay_within_the_client(
        self, client: httpx.AsyncClient, google: FakeIssuer
    ) -> None:
        tokens = await self._sign_in(client, google)
        mobile, web = basic("mobile", self.SECRETS["mobile"]), basic("web", self.SECRETS["web"])
        for path in ("/revoke", "/introspect"):
            response = await client.post(path, data={"token": tokens["refresh_token"]})
            assert response.status_code == 401
            assert response.json()["error"] == "invalid_client"
        # Another client can neither revoke web's session nor learn anything about its token.
        await client.post("/revoke", data={"token": tokens["refresh_token"]}, headers=mobile)
        info = await client.post(
            "/introspect", data={"token": tokens["refresh_token"]}, headers=mobile
        )
        assert info.json() == {"active": False}
        info = await client.post(
            "/introspect", data={"token": tokens["refresh_token"]}, headers=web
        )
        assert info.json()["active"] is True
        await client.post("/revoke", data={"token": tokens["refresh_token"]}, headers=web)
        info = await client.post(
            "/introspect", data={"token": tokens["refresh_token"]}, headers=web
        )
        assert info.json() == {"active": False}


class TestAudience:
    """An exchange may narrow the audience; every refresh keeps what it granted."""

    @pytest.fixture
    async def client(self, settings: Settings, issuers: Issuers, clock: FakeClock) -> Any:
        served = dataclasses.replace(settings, audience=("api1", "api2"))
        async with running(served, issuers, clock) as (_, client):
            yield client

    async def test_every_refresh_keeps_the_audience_of_its_exchange(
        self, client: httpx.AsyncClient, google: FakeIssuer, sql: Sql
    ) -> None:
        narrowed = await exchange(client, google.mint(), audience="api1")
        assert claims_of(narrowed)["aud"] == "api1"
        assert await sql.scalar("SELECT audience FROM sessions") == "api1"
        parent = narrowed.json()["refresh_token"]
        rotated = await refresh(client, parent)
        assert claims_of(rotated)["aud"] == "api1"
        twin = await refresh(client, parent)  # the reuse interval's answer
        assert twin.json()["refresh_token"] == rotated.json()["refresh_token"]
        assert claims_of(twin)["aud"] == "api1"
        narrower = await refresh(client, rotated.json()["refresh_token"], scope="openid email")
        assert (claims_of(narrower)["aud"], claims_of(narrower)["scope"]) == (
            "api1",
            "openid email",
        )
        # Without an audience asked for, the session has the configured ones, and keeps them.
        default = await exchange(client, google.mint())
        assert claims_of(default)["aud"] == ["api1", "api2"]
        again = await refresh(client, default.json()["refresh_token"])
        assert claims_of(again)["aud"] == ["api1", "api2"]
        assert await sql.scalar("SELECT count(*) FROM sessions WHERE audience IS NULL") == 1


async def test_an_audience_no_longer_served_is_refused_not_widened(
    settings: Settings, issuers: Issuers, clock: FakeClock, sql: Sql
) -> None:
    before = dataclasses.replace(settings, audience=("api1", "api2"))
    async with running(before, issuers, clock) as (_, client):
        tokens = (await exchange(client, issuers.google.mint(), audience="api1")).json()
    after = dataclasses.replace(settings, audience=("api2",))
    async with running(after, issuers, clock) as (_, client):
        response = await refresh(client, tokens["refresh_token"])
    assert (response.status_code, response.json()) == (400, INVALID_GRANT)


async def test_a_session_records_its_account_and_the_providers_session(
    client: httpx.AsyncClient, issuers: Issuers, sql: Sql
) -> None:
    """What the providers' signals will end sessions by: the account whose sign-in started
    the session (kept while the account exists) and the id_token's `sid`."""
    google = await sign_in(client, issuers.google, sid="g-session-1")
    auth = bearer(google["access_token"])
    linked = await client.post(
        "/users/me/accounts", json={"id_token": issuers.microsoft.mint()}, headers=auth
    )
    assert linked.status_code == 200
    microsoft = await sign_in(client, issuers.microsoft)
    rows = await sql.rows(
        "SELECT s.id, s.upstream_sid, a.provider FROM sessions s"
        " JOIN accounts a ON a.id = s.account_id"
    )
    assert {(r["id"], r["provider"], r["upstream_sid"]) for r in rows} == {
        (sid_of(google["access_token"]), "google", "g-session-1"),
        (sid_of(microsoft["access_token"]), "microsoft", None),
    }
    key = next(a for a in linked.json()["accounts"] if a["provider"] == "microsoft")
    unlinked = await client.delete(
        f"/users/me/accounts/microsoft/{key['provider_account_id']}", headers=auth
    )
    assert unlinked.status_code == 204
    # The session stays (ending it is the signals' business); it no longer names the account.
    left = await sql.rows(
        "SELECT account_id FROM sessions WHERE id = :id", id=sid_of(microsoft["access_token"])
    )
    assert left == [{"account_id": None}]


@pytest.mark.parametrize(
    "sid",
    ["s" * 256, "line\nbreak", "\u202eevil", "", 42, ["g-session-1"], {"id": 1}],
    ids=["too_long", "newline", "bidi_override", "empty", "number", "list", "object"],
)
async def test_a_hostile_sid_is_ignored(
    client: httpx.AsyncClient, google: FakeIssuer, sql: Sql, sid: object
) -> None:
    assert (await exchange(client, google.mint(sid=sid))).status_code == 200
    assert await sql.scalar("SELECT upstream_sid FROM sessions") is None
    longest = "s" * 255
    assert (await exchange(client, google.mint(sid=longest))).status_code == 200
    assert await sql.scalar("SELECT count(*) FROM sessions WHERE upstream_sid = :s", s=longest) == 1
