"""POST /token (RFC 8693) and POST /auth/oauth/callback: tokens out, users and accounts in."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import httpx
import jwt
import pytest
from sqlalchemy import text
from starlette.applications import Starlette

from identity.app import create_app
from identity.settings import Settings

from .conftest import EXCHANGE, ISSUER, exchange, row_counts, services
from .fakes import FakeClock, FakeGoogle

pytestmark = pytest.mark.anyio


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


async def scalar(app: Starlette, sql: str, **params: Any) -> Any:
    async with services(app).database.reader() as session:
        return (await session.execute(text(sql), params)).scalar()


async def test_exchange_returns_tokens_and_creates_user(
    app: Starlette, client: httpx.AsyncClient, google: FakeGoogle, clock: FakeClock
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
    assert (
        await scalar(app, "SELECT session_token FROM sessions WHERE id = :sid", sid=claims["sid"])
        == digest
    )
    assert await row_counts(app) == {
        "users": 1,
        "accounts": 1,
        "sessions": 1,
        "rotated_refresh_tokens": 0,
        "verification_tokens": 0,
        "used_id_tokens": 1,
        "rate_limits": 0,
    }


async def test_replayed_id_token_is_refused_and_writes_nothing(
    app: Starlette, client: httpx.AsyncClient, google: FakeGoogle
) -> None:
    token = google.mint()
    assert (await exchange(client, token)).status_code == 200
    before = await row_counts(app)
    replay = await exchange(client, token)
    assert replay.status_code == 400
    assert replay.json()["error"] == "invalid_request"
    assert await row_counts(app) == before


async def test_returning_user_keeps_id_and_gets_fresh_profile(
    app: Starlette, client: httpx.AsyncClient, google: FakeGoogle
) -> None:
    first = (await exchange(client, google.mint())).json()["user"]
    second = (
        await exchange(
            client, google.mint(name="Ada King", picture="https://lh3.googleusercontent.com/a/new")
        )
    ).json()["user"]
    assert second["id"] == first["id"]
    assert second["name"] == "Ada King"
    assert second["image"] == "https://lh3.googleusercontent.com/a/new"
    counts = await row_counts(app)
    assert (counts["users"], counts["accounts"], counts["sessions"]) == (1, 1, 2)


async def test_verified_email_change_follows_google_unless_taken(
    app: Starlette, client: httpx.AsyncClient, google: FakeGoogle
) -> None:
    await exchange(client, google.mint(sub="other", email="grace@gmail.com"))
    await exchange(client, google.mint())
    moved = (await exchange(client, google.mint(email="ada.new@gmail.com"))).json()["user"]
    assert moved["email"] == "ada.new@gmail.com"
    taken = (await exchange(client, google.mint(email="grace@gmail.com"))).json()["user"]
    assert taken["email"] == "ada.new@gmail.com"
    unverified = (
        await exchange(client, google.mint(email="x@gmail.com", email_verified=False))
    ).json()["user"]
    assert unverified["email"] == "ada.new@gmail.com"


async def test_links_second_google_account_with_proven_email(
    app: Starlette, client: httpx.AsyncClient, google: FakeGoogle
) -> None:
    first = (
        await exchange(
            client, google.mint(sub="workspace-sub", email="ada@example.com", hd="example.com")
        )
    ).json()["user"]
    linked = (
        await exchange(
            client, google.mint(sub="second-sub", email="ada@example.com", hd="example.com")
        )
    ).json()["user"]
    assert linked["id"] == first["id"]
    assert {a["provider_account_id"] for a in linked["accounts"]} == {"workspace-sub", "second-sub"}


@pytest.mark.parametrize(
    ("existing", "incoming"),
    [
        pytest.param({"email_verified": True}, {"email_verified": False}, id="google_not_verified"),
        pytest.param({"email_verified": True}, {"email_verified": "true"}, id="verified_as_string"),
        pytest.param(
            {"email": "ada@example.com", "hd": "example.com"},
            {"email": "ada@example.com"},
            id="google_not_authoritative",
        ),
        pytest.param({"email_verified": False}, {}, id="existing_user_unverified"),
    ],
)
async def test_unprovable_link_is_a_conflict_and_writes_nothing(
    app: Starlette,
    client: httpx.AsyncClient,
    google: FakeGoogle,
    existing: dict[str, Any],
    incoming: dict[str, Any],
) -> None:
    assert (await exchange(client, google.mint(sub="first", **existing))).status_code == 200
    before = await row_counts(app)
    token = google.mint(
        sub="second", **{"email": existing.get("email", "ada@gmail.com"), **incoming}
    )
    response = await exchange(client, token)
    assert response.status_code == 409
    assert response.json()["error"] == "account_conflict"
    assert await row_counts(app) == before


async def test_no_google_keys_fails_closed_with_503(
    app: Starlette, client: httpx.AsyncClient, google: FakeGoogle
) -> None:
    google.status = 500
    before = await row_counts(app)
    response = await exchange(client, google.mint())
    assert response.status_code == 503
    assert response.json()["error"] == "temporarily_unavailable"
    assert "retry-after" in response.headers
    assert await row_counts(app) == before


async def test_exchange_refused_when_no_client_ids(
    settings: Settings, google: FakeGoogle, clock: FakeClock
) -> None:
    bare = Settings(**{**settings.__dict__, "google_client_ids": ()})
    app = create_app(bare, http_client=google.client(), clock=clock)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ISSUER) as client,
    ):
        response = await exchange(client, google.mint())
    assert response.status_code == 400
    assert "IDENTITY_GOOGLE_CLIENT_IDS" in response.json()["error_description"]


async def test_audience_parameter(client: httpx.AsyncClient, google: FakeGoogle) -> None:
    wrong = await exchange(client, google.mint(), audience="https://elsewhere.test")
    assert wrong.status_code == 400
    assert wrong.json()["error"] == "invalid_target"
    ok = await exchange(client, google.mint(), audience=ISSUER)
    assert ok.status_code == 200


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
    ],
)
async def test_bad_token_requests(
    app: Starlette, client: httpx.AsyncClient, data: dict[str, str], error: str
) -> None:
    before = await row_counts(app)
    response = await client.post("/token", data=data)
    assert response.status_code == 400
    assert response.json()["error"] == error
    assert await row_counts(app) == before


async def test_callback_shape(
    app: Starlette, client: httpx.AsyncClient, google: FakeGoogle
) -> None:
    token = google.mint()
    body = {
        "provider": "google",
        "id_token": token,
        "access_token": "ya29.secret",
        "expires_at": 1_900_000_000,
        "scope": "openid email",
        "token_type": "Bearer",
    }
    response = await client.post("/auth/oauth/callback", json=body)
    assert response.status_code == 200
    assert response.json()["token_type"] == "Bearer"
    assert response.json()["user"]["email"] == "ada@gmail.com"
    # The provider access token is not stored in plaintext (nor at all without an encryption key).
    assert await scalar(app, "SELECT access_token FROM accounts") is None
    assert await scalar(app, "SELECT scope FROM accounts") == "openid email"

    bad = await client.post("/auth/oauth/callback", json={**body, "id_token": google.mint(aud="x")})
    assert bad.status_code == 401
    assert bad.json()["error"] == "invalid_token"
    assert bad.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "body",
    [
        {"provider": "github", "id_token": "a.b.c"},
        {"provider": "google"},
        {"provider": "google", "id_token": 42},
        {"provider": "google", "id_token": "a.b.c", "expires_at": "soon"},
        {"provider": "google", "id_token": "a.b.c", "expires_at": 1.5},
        {"provider": "google", "id_token": "a.b.c", "scope": ["openid"]},
        ["not", "an", "object"],
    ],
)
async def test_callback_bad_body(app: Starlette, client: httpx.AsyncClient, body: Any) -> None:
    before = await row_counts(app)
    response = await client.post(
        "/auth/oauth/callback",
        content=json.dumps(body),
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    assert await row_counts(app) == before


async def test_callback_conflict(client: httpx.AsyncClient, google: FakeGoogle) -> None:
    await client.post(
        "/auth/oauth/callback", json={"provider": "google", "id_token": google.mint(sub="a")}
    )
    response = await client.post(
        "/auth/oauth/callback",
        json={"provider": "google", "id_token": google.mint(sub="b", email_verified=False)},
    )
    assert response.status_code == 409
    assert response.json()["error"] == "account_conflict"


class TestClientAuthentication:
    SECRET = "s3cret-s3cret-s3cret"

    @pytest.fixture
    async def client(self, settings: Settings, google: FakeGoogle, clock: FakeClock) -> Any:
        configured = Settings(**{**settings.__dict__, "clients": {"nextjs": self.SECRET}})
        app = create_app(configured, http_client=google.client(), clock=clock)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ISSUER) as client,
        ):
            yield client

    async def test_missing_credentials(self, client: httpx.AsyncClient, google: FakeGoogle) -> None:
        response = await exchange(client, google.mint())
        assert response.status_code == 401
        assert response.json()["error"] == "invalid_client"

    @pytest.mark.parametrize("secret", ["wrong", "", "s3cret-s3cret-s3cre"])
    async def test_wrong_secret(
        self, client: httpx.AsyncClient, google: FakeGoogle, secret: str
    ) -> None:
        response = await client.post(
            "/token", data={**EXCHANGE, "subject_token": google.mint()}, auth=("nextjs", secret)
        )
        assert response.status_code == 401

    async def test_basic_and_post(self, client: httpx.AsyncClient, google: FakeGoogle) -> None:
        basic = await client.post(
            "/token",
            data={**EXCHANGE, "subject_token": google.mint()},
            auth=("nextjs", self.SECRET),
        )
        assert basic.status_code == 200
        _, claims = await decode_access_token(client, basic.json()["access_token"])
        assert claims["client_id"] == "nextjs"
        posted = await exchange(
            client, google.mint(), client_id="nextjs", client_secret=self.SECRET
        )
        assert posted.status_code == 200

    async def test_two_methods_at_once(self, client: httpx.AsyncClient, google: FakeGoogle) -> None:
        response = await client.post(
            "/token",
            data={
                **EXCHANGE,
                "subject_token": google.mint(),
                "client_id": "nextjs",
                "client_secret": self.SECRET,
            },
            auth=("nextjs", self.SECRET),
        )
        assert response.status_code == 400
