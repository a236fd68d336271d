"""POST /token (RFC 8693) and POST /auth/oauth/callback: tokens out, users and accounts in."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
from typing import Any

import httpx
import jwt
import pytest

from identity.settings import Settings

from .fakes import FakeClock, FakeIssuer, Issuers
from .support import EXCHANGE, ISSUER, Sql, basic, exchange, refresh, running, sign_in

pytestmark = pytest.mark.anyio
SECRET = "s3cret-s3cret-s3cret"
OTHER_SECRET = "0ther-0ther-0ther-0ther"


async def decode_access_token(
    client: httpx.AsyncClient, token: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Verify with PyJWT against our published JWKS, as a downstream service would."""
    keys = (await client.get("/.well-known/jwks.json")).json()["keys"]
    header = jwt.get_unverified_header(token)
    key = next(k for k in keys if k["kid"] == header["kid"])
    claims = jwt.decode(
        token,
        jwt.PyJWK(key).key,
        algorithms=["RS256"],
        audience=ISSUER,
        issuer=ISSUER,
        options={"verify_exp": False, "verify_iat": False},
    )
    return header, claims


async def test_exchange_returns_tokens_and_creates_user(
    client: httpx.AsyncClient, google: FakeIssuer, clock: FakeClock, sql: Sql
) -> None:
    response = await exchange(client, google.mint())
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert set(body) == {
        "access_token",
        "issued_token_type",
        "token_type",
        "expires_in",
        "refresh_token",
        "user",
    }
    assert body["issued_token_type"] == "urn:ietf:params:oauth:token-type:access_token"
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 900
    assert len(base64.urlsafe_b64decode(body["refresh_token"] + "=")) >= 32  # 256 bits
    user = body["user"]
    assert user["email"] == "ada@gmail.com"
    assert user["name"] == "Ada Lovelace"
    assert user["email_verified"].endswith("Z")
    assert user["pending_email"] is None
    assert user["accounts"] == [
        {"provider": "google", "provider_account_id": "110000000000000000001"}
    ]

    header, claims = await decode_access_token(client, body["access_token"])
    assert header["typ"] == "at+jwt"
    assert header["alg"] == "RS256"
    assert claims["sub"] == user["id"]
    assert claims["exp"] - claims["iat"] == 900
    assert claims["iat"] == int(clock())
    assert claims["email"] == "ada@gmail.com"
    assert claims["email_verified"] is True
    assert claims["name"] == "Ada Lovelace"
    assert claims["picture"] == "https://lh3.googleusercontent.com/a/ada"
    assert claims["client_id"] == "public"
    assert claims["sid"] and claims["jti"]

    # Only the hash of the refresh token is stored, in the session row.
    digest = hashlib.sha256(body["refresh_token"].encode()).hexdigest()
    stored = await sql.scalar(
        "SELECT session_token FROM sessions WHERE id = :sid", sid=claims["sid"]
    )
    assert stored == digest
    counts = await sql.counts()
    assert counts == {
        "users": 1,
        "accounts": 1,
        "sessions": 1,
        "rotated_refresh_tokens": 0,
        "verification_tokens": 0,
        "used_id_tokens": 1,
        "rate_limits": 0,
        "audit_events": 1,
        # Nobody subscribes: the sign-in writes no notice (docs/notifications.md).
        "outbox": 0,
        "deliveries": 0,
        "revocations": 0,
        "received_signals": 0,
        "undeliverable_addresses": 0,
        "ended_upstream_sessions": 0,
    }
    (event,) = await sql.events("sign_in")
    assert event["user_id"] == user["id"] and event["session_id"] == claims["sid"]


async def test_replayed_id_token_is_refused_and_writes_nothing(
    client: httpx.AsyncClient, google: FakeIssuer, sql: Sql
) -> None:
    token = google.mint()
    assert (await exchange(client, token)).status_code == 200
    before = await sql.counts()
    replay = await exchange(client, token)
    assert replay.status_code == 400
    assert replay.json() == {
        "error": "invalid_request",
        "error_description": "the id_token is not valid",
    }
    assert await sql.counts() == before


async def test_returning_user_keeps_id_and_gets_fresh_profile(
    client: httpx.AsyncClient, google: FakeIssuer, sql: Sql
) -> None:
    first = (await sign_in(client, google))["user"]
    second = (
        await sign_in(
            client, google, name="Ada King", picture="https://lh3.googleusercontent.com/a/new"
        )
    )["user"]
    assert second["id"] == first["id"]
    assert second["name"] == "Ada King"
    assert second["image"] == "https://lh3.googleusercontent.com/a/new"
    counts = await sql.counts()
    assert (counts["users"], counts["accounts"], counts["sessions"]) == (1, 1, 2)
    assert await sql.scalar("SELECT last_sign_in_at IS NOT NULL FROM users")


async def test_address_follows_the_provider_when_it_proves_it(
    client: httpx.AsyncClient, google: FakeIssuer
) -> None:
    await sign_in(client, google, sub="grace", email="grace@gmail.com")
    await sign_in(client, google)
    moved = (await sign_in(client, google, email="ada.new@gmail.com"))["user"]
    assert moved["email"] == "ada.new@gmail.com"
    # Held verified by another user: not taken.
    taken = (await sign_in(client, google, email="grace@gmail.com"))["user"]
    assert taken["email"] == "ada.new@gmail.com"
    # Not verified by the provider: not taken either.
    unverified = (await sign_in(client, google, email="x@gmail.com", email_verified=False))["user"]
    assert unverified["email"] == "ada.new@gmail.com"
    # A consumer Google account cannot move its user to a Workspace domain's address.
    foreign = (await sign_in(client, google, email="ada@corp.example"))["user"]
    assert foreign["email"] == "ada.new@gmail.com"


async def test_links_an_account_whose_provider_proves_the_address(
    client: httpx.AsyncClient, issuers: Issuers, sql: Sql
) -> None:
    google = issuers.google
    first = (await sign_in(client, google, sub="ws-1", email="ada@example.com", hd="example.com"))[
        "user"
    ]
    # The generic issuer is authoritative for example.com (its email_domains): linked.
    # (Another Google account for the address is not: tests/test_linking.py.)
    okta = (await sign_in(client, issuers.okta, email="ada@example.com"))["user"]
    assert okta["id"] == first["id"]
    assert {(a["provider"], a["provider_account_id"]) for a in okta["accounts"]} == {
        ("google", "ws-1"),
        ("okta", "00u1example"),
    }
    reasons = [e["detail"] for e in await sql.events("sign_in")]
    assert [json.loads(d)["reason"] if isinstance(d, str) else d["reason"] for d in reasons] == [
        "created",
        "linked",
    ]


@pytest.mark.parametrize(
    ("existing", "incoming"),
    [
        pytest.param({}, {"email_verified": False}, id="provider_did_not_verify"),
        pytest.param({}, {"email_verified": "true"}, id="verified_as_string"),
        pytest.param(
            {"email": "ada@example.com", "hd": "example.com"},
            {"email": "ada@example.com"},
            id="consumer_account_for_workspace_address",
        ),
    ],
)
async def test_unprovable_link_is_a_conflict_and_writes_only_its_event(
    client: httpx.AsyncClient,
    google: FakeIssuer,
    sql: Sql,
    existing: dict[str, Any],
    incoming: dict[str, Any],
) -> None:
    first = (await sign_in(client, google, sub="first", **existing))["user"]
    before = await sql.counts()
    token = google.mint(
        sub="second", **{"email": existing.get("email", "ada@gmail.com"), **incoming}
    )
    response = await exchange(client, token)
    assert response.status_code == 409
    assert response.json()["error"] == "account_conflict"
    after = await sql.counts()
    assert after == {**before, "audit_events": before["audit_events"] + 1}
    (refused,) = await sql.events("sign_in_refused")
    assert refused["user_id"] == first["id"]
    # Not consumed: the same token may be retried once the user has linked the account.
    assert (await exchange(client, token)).status_code == 409


async def test_a_suspended_account_cannot_sign_in_and_the_users_others_can(
    client: httpx.AsyncClient, issuers: Issuers, sql: Sql
) -> None:
    """A provider that says an account is disabled suspends that account only (nothing sets it
    yet but this test: the providers' signals will)."""
    first = await sign_in(client, issuers.google)
    user = first["user"]["id"]
    linked = await client.post(
        "/users/me/accounts",
        json={"id_token": issuers.microsoft.mint()},
        headers={"Authorization": f"Bearer {first['access_token']}"},
    )
    assert linked.status_code == 200
    await sql.set_time("accounts", "suspended_at", where="provider = 'google'")
    before = await sql.counts()
    token = issuers.google.mint()
    denied = {"error": "access_denied", "error_description": "this provider account is suspended"}
    response = await exchange(client, token)
    assert (response.status_code, response.json()) == (403, denied)
    callback = await client.post(
        "/auth/oauth/callback", json={"provider": "google", "id_token": token}
    )
    assert (callback.status_code, callback.json()) == (403, denied)
    assert await sql.counts() == {**before, "audit_events": before["audit_events"] + 2}
    refusals = [
        (e["user_id"], json.loads(d) if isinstance(d := e["detail"], str) else d)
        for e in await sql.events("sign_in_refused")
    ]
    assert refusals == [(user, {"provider": "google", "reason": "suspended"})] * 2
    # The user's other account is not suspended.
    assert (await sign_in(client, issuers.microsoft))["user"]["id"] == user
    # Lifted, the very token (never spent) signs in.
    async with sql.engine.begin() as connection:
        from sqlalchemy import text

        await connection.execute(text("UPDATE accounts SET suspended_at = NULL"))
    assert (await exchange(client, token)).status_code == 200


async def test_an_unverified_address_reserves_nothing(
    client: httpx.AsyncClient, issuers: Issuers, sql: Sql
) -> None:
    # Microsoft's email claim is unverified: its user holds the address without having proven it.
    squatter = (await sign_in(client, issuers.microsoft, email="ada@gmail.com"))["user"]
    assert squatter["email"] == "ada@gmail.com" and squatter["email_verified"] is None
    # The real owner signs in with Google, which proves it: a new user, who takes the address.
    owner = (await sign_in(client, issuers.google))["user"]
    assert owner["id"] != squatter["id"]
    assert owner["email"] == "ada@gmail.com" and owner["email_verified"]
    assert await sql.scalar("SELECT email FROM users WHERE id = :id", id=squatter["id"]) is None
    (released,) = await sql.events("email_released")
    assert released["user_id"] == squatter["id"]


async def test_a_second_unproven_claim_creates_a_user_without_the_address(
    client: httpx.AsyncClient, issuers: Issuers
) -> None:
    first = (await sign_in(client, issuers.microsoft, email="shared@contoso.example"))["user"]
    other = (
        await sign_in(
            client,
            issuers.microsoft,
            oid="11111111-2222-3333-4444-555555555555",
            email="shared@contoso.example",
        )
    )["user"]
    assert other["id"] != first["id"]
    assert other["email"] is None


async def test_no_provider_keys_fails_closed_with_503(
    client: httpx.AsyncClient, google: FakeIssuer, sql: Sql
) -> None:
    google.status = 500
    before = await sql.counts()
    response = await exchange(client, google.mint())
    assert response.status_code == 503
    assert response.json()["error"] == "temporarily_unavailable"
    assert response.headers["retry-after"] == "30"
    assert await sql.counts() == before


async def test_exchange_refused_when_no_provider_is_configured(
    settings: Settings, issuers: Issuers, clock: FakeClock
) -> None:
    bare = dataclasses.replace(
        settings,
        google_client_ids=(),
        microsoft_client_ids=(),
        apple_client_ids=(),
        oidc_providers=(),
    )
    async with running(bare, issuers, clock) as (_, client):
        response = await exchange(client, issuers.google.mint())
    assert response.status_code == 400
    assert "IDENTITY_GOOGLE_CLIENT_IDS" in response.json()["error_description"]


async def test_audience_parameter(client: httpx.AsyncClient, google: FakeIssuer) -> None:
    wrong = await exchange(client, google.mint(), audience="https://elsewhere.test")
    assert wrong.status_code == 400
    assert wrong.json()["error"] == "invalid_target"
    assert (await exchange(client, google.mint(), audience=ISSUER)).status_code == 200


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ({"grant_type": "password", "username": "a", "password": "b"}, "unsupported_grant_type"),
        ({"grant_type": "authorization_code", "code": "x"}, "unsupported_grant_type"),
        ({**EXCHANGE}, "invalid_request"),
        (
            {
                **EXCHANGE,
                "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
                "subject_token": "a.b.c",
            },
            "invalid_request",
        ),
        ({"subject_token": "a.b.c"}, "invalid_request"),
        ({**EXCHANGE, "subject_token": "a.b.c", "nonce": "line\nbreak"}, "invalid_request"),
        ({**EXCHANGE, "subject_token": "a\x00b.c.d"}, "invalid_request"),
    ],
)
async def test_bad_token_requests(
    client: httpx.AsyncClient, sql: Sql, data: dict[str, str], error: str
) -> None:
    before = await sql.counts()
    response = await client.post("/token", data=data)
    assert response.status_code == 400
    assert response.json()["error"] == error
    assert await sql.counts() == before


async def test_callback_shape(client: httpx.AsyncClient, google: FakeIssuer, sql: Sql) -> None:
    body = {
        "provider": "google",
        "id_token": google.mint(),
        "access_token": "ya29.secret",
        "expires_at": 1_900_000_000,
        "scope": "openid email",
        "token_type": "Bearer",
        "providerAccountId": "ignored: NextAuth's account object carries more",
    }
    response = await client.post("/auth/oauth/callback", json=body)
    assert response.status_code == 200
    assert response.json()["token_type"] == "Bearer"
    assert response.json()["user"]["email"] == "ada@gmail.com"
    # Without an encryption key provider tokens are not stored at all.
    assert await sql.rows("SELECT access_token, refresh_token, scope FROM accounts") == [
        {"access_token": None, "refresh_token": None, "scope": None}
    ]
    bad = await client.post("/auth/oauth/callback", json={**body, "id_token": google.mint(aud="x")})
    assert bad.status_code == 401
    assert bad.json()["error"] == "invalid_token"
    assert bad.headers["www-authenticate"].startswith("Bearer")
    # A provider named that is not the token's issuer is refused like a bad token.
    other = await client.post(
        "/auth/oauth/callback", json={**body, "provider": "apple", "id_token": google.mint()}
    )
    assert other.status_code == 401


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"provider": "github", "id_token": "a.b.c"}, "provider"),
        ({"provider": "google"}, "id_token"),
        ({"provider": "google", "id_token": 42}, "id_token"),
        ({"provider": "google", "id_token": "a.b.c", "expires_at": "soon"}, "expires_at"),
        ({"provider": "google", "id_token": "a.b.c", "expires_at": 1.5}, "expires_at"),
        ({"provider": "google", "id_token": "a.b.c", "expires_at": 10**30}, "expires_at"),
        ({"provider": "google", "id_token": "a.b.c", "expires_at": -1}, "expires_at"),
        ({"provider": "google", "id_token": "a.b.c", "expires_at": True}, "expires_at"),
        ({"provider": "google", "id_token": "a.b.c", "scope": ["openid"]}, "scope"),
        ({"provider": "google", "id_token": "a.b.c", "access_token": "\ud800"}, "access_token"),
        ({"provider": "google", "id_token": "a.b.c", "refresh_token": "x\u0000y"}, "refresh_token"),
        ({"provider": "google", "id_token": "a.b.c", "nonce": "\ud800"}, "nonce"),
        ({"provider": "google", "id_token": "\udfff.b.c"}, "id_token"),
        ({"provider": "google", "id_token": "a.b.c", "session_state": "s" * 3000}, "session_state"),
    ],
)
async def test_callback_bad_body_is_a_400_naming_the_field(
    client: httpx.AsyncClient, sql: Sql, body: Any, field: str
) -> None:
    before = await sql.counts()
    raw = json.dumps(body)  # \ud800 travels as its escape, as a hostile client would send it
    response = await client.post(
        "/auth/oauth/callback", content=raw, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_request"
    assert field in response.json()["error_description"]
    assert await sql.counts() == before


async def test_callback_body_not_an_object(client: httpx.AsyncClient) -> None:
    response = await client.post("/auth/oauth/callback", json=["not", "an", "object"])
    assert response.status_code == 400


class TestClientAuthentication:
    @pytest.fixture
    async def client(self, settings: Settings, issuers: Issuers, clock: FakeClock) -> Any:
        configured = dataclasses.replace(
            settings, clients={"nextjs": SECRET, "other": OTHER_SECRET}
        )
        async with running(configured, issuers, clock) as (_, client):
            yield client

    async def test_missing_credentials(self, client: httpx.AsyncClient, google: FakeIssuer) -> None:
        response = await exchange(client, google.mint())
        assert response.status_code == 401
        assert response.json()["error"] == "invalid_client"
        assert response.headers["www-authenticate"].startswith("Basic")

    @pytest.mark.parametrize("secret", ["wrong", "", SECRET[:-1], SECRET + "x"])
    async def test_wrong_secret(
        self, client: httpx.AsyncClient, google: FakeIssuer, secret: str
    ) -> None:
        response = await exchange(client, google.mint(), headers=basic("nextjs", secret))
        assert response.status_code == 401

    async def test_basic_and_post(self, client: httpx.AsyncClient, google: FakeIssuer) -> None:
        with_basic = await exchange(client, google.mint(), headers=basic("nextjs", SECRET))
        assert with_basic.status_code == 200
        _, claims = await decode_access_token(client, with_basic.json()["access_token"])
        assert claims["client_id"] == "nextjs"
        posted = await exchange(client, google.mint(), client_id="nextjs", client_secret=SECRET)
        assert posted.status_code == 200

    async def test_two_methods_at_once(self, client: httpx.AsyncClient, google: FakeIssuer) -> None:
        response = await exchange(
            client,
            google.mint(),
            client_id="nextjs",
            client_secret=SECRET,
            headers=basic("nextjs", SECRET),
        )
        assert response.status_code == 400

    async def test_the_callback_authenticates_clients_too(
        self, client: httpx.AsyncClient, google: FakeIssuer, sql: Sql
    ) -> None:
        token = google.mint()
        anonymous = await client.post(
            "/auth/oauth/callback", json={"provider": "google", "id_token": token}
        )
        assert anonymous.status_code == 401
        assert anonymous.json()["error"] == "invalid_client"
        assert await sql.scalar("SELECT count(*) FROM used_id_tokens") == 0
        # Authenticated, its session is bound to that client, so that client can refresh it.
        ok = await client.post(
            "/auth/oauth/callback",
            json={"provider": "google", "id_token": token},
            headers=basic("nextjs", SECRET),
        )
        assert ok.status_code == 200
        _, claims = await decode_access_token(client, ok.json()["access_token"])
        assert claims["client_id"] == "nextjs"
        assert await sql.scalar("SELECT client_id FROM sessions") == "nextjs"
        refreshed = await refresh(
            client, ok.json()["refresh_token"], headers=basic("nextjs", SECRET)
        )
        assert refreshed.status_code == 200
        # Another client cannot refresh it.
        stolen = await refresh(
            client, refreshed.json()["refresh_token"], headers=basic("other", OTHER_SECRET)
        )
        assert stolen.status_code == 400


class TestProviderTokens:
    KEY = base64.urlsafe_b64encode(b"k" * 32).decode()

    @pytest.fixture
    async def client(self, settings: Settings, issuers: Issuers, clock: FakeClock) -> Any:
        configured = dataclasses.replace(settings, token_encryption_keys=(self.KEY,))
        async with running(configured, issuers, clock) as (_, client):
            yield client

    async def test_stored_encrypted_and_updated_field_by_field(
        self, client: httpx.AsyncClient, google: FakeIssuer, sql: Sql
    ) -> None:
        from cryptography.fernet import Fernet

        first = {
            "provider": "google",
            "id_token": google.mint(),
            "access_token": "ya29.first",
            "refresh_token": "1//refresh-at-first-consent",
            "expires_at": 1_900_000_000,
            "scope": "openid email",
        }
        assert (await client.post("/auth/oauth/callback", json=first)).status_code == 200
        (row,) = await sql.rows("SELECT access_token, refresh_token, id_token, scope FROM accounts")
        assert "1//refresh" not in str(row) and "ya29" not in str(row)
        fernet = Fernet(self.KEY)
        assert fernet.decrypt(row["refresh_token"].encode()) == b"1//refresh-at-first-consent"
        # Google sends its refresh token at first consent only: a later callback keeps it.
        later = {"provider": "google", "id_token": google.mint(), "access_token": "ya29.second"}
        assert (await client.post("/auth/oauth/callback", json=later)).status_code == 200
        (row,) = await sql.rows(
            "SELECT access_token, refresh_token, expires_at, scope FROM accounts"
        )
        assert fernet.decrypt(row["access_token"].encode()) == b"ya29.second"
        assert fernet.decrypt(row["refresh_token"].encode()) == b"1//refresh-at-first-consent"
        assert (row["expires_at"], row["scope"]) == (1_900_000_000, "openid email")


@pytest.mark.parametrize("label", ["web\n", "web\n\n", "a" * 129, "web app"])
async def test_an_open_mode_client_label_is_plain_text_or_public(
    client: httpx.AsyncClient, google: FakeIssuer, label: str
) -> None:
    """Without IDENTITY_CLIENTS the client id is only a label: one that is not plain (a trailing
    newline once passed a `re.match(…$)`) becomes `public`, never stored or logged as sent."""
    body = (await exchange(client, google.mint(), client_id=label)).json()
    _, claims = await decode_access_token(client, body["access_token"])
    assert claims["client_id"] == "public"
    plain = (await exchange(client, google.mint(), client_id="web")).json()
    assert (await decode_access_token(client, plain["access_token"]))[1]["client_id"] == "web"
