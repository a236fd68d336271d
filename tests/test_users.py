"""GET /users/me and /userinfo: only our own at+jwt access tokens open them."""

from __future__ import annotations

import json

import httpx
import pytest
from joserfc import jws
from sqlalchemy import text
from starlette.applications import Starlette

from .conftest import exchange, services
from .fakes import FakeClock, FakeGoogle

pytestmark = pytest.mark.anyio


async def sign_in(client: httpx.AsyncClient, google: FakeGoogle) -> dict[str, str]:
    response = await exchange(client, google.mint())
    assert response.status_code == 200
    body: dict[str, str] = response.json()
    return body


async def test_users_me(client: httpx.AsyncClient, google: FakeGoogle) -> None:
    tokens = await sign_in(client, google)
    response = await client.get(
        "/users/me", headers={"Authorization": f"Bearer {tokens['access_token']}"}
    )
    assert response.status_code == 200
    me = response.json()
    assert set(me) == {
        "id",
        "name",
        "email",
        "email_verified",
        "image",
        "created_at",
        "updated_at",
        "accounts",
    }
    assert me["email"] == "ada@gmail.com"
    assert me["created_at"] == "2027-01-15T08:00:00Z"
    assert me["accounts"] == [
        {"provider": "google", "provider_account_id": "110000000000000000001"}
    ]


async def test_userinfo(client: httpx.AsyncClient, google: FakeGoogle) -> None:
    tokens = await sign_in(client, google)
    response = await client.get(
        "/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"}
    )
    info = response.json()
    assert info == {
        "sub": tokens["user"]["id"],  # type: ignore[index]
        "name": "Ada Lovelace",
        "email": "ada@gmail.com",
        "email_verified": True,
        "picture": "https://lh3.googleusercontent.com/a/ada",
    }


def _resign(app: Starlette, token: str, **header: object) -> str:
    """Re-sign our token's claims with our own key but a different header."""
    payload = token.split(".")[1]
    import base64

    claims = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    key = services(app).keys.view().active
    return jws.serialize_compact({"alg": "RS256", "kid": key.kid, **header}, claims, key.key)


@pytest.mark.parametrize(
    "case",
    [
        "missing",
        "not_bearer",
        "garbage",
        "google_id_token",
        "typ_jwt",
        "no_typ",
        "expired",
        "tampered",
        "refresh_token",
    ],
)
async def test_bad_access_tokens_get_401(
    app: Starlette, client: httpx.AsyncClient, google: FakeGoogle, clock: FakeClock, case: str
) -> None:
    tokens = await sign_in(client, google)
    access = tokens["access_token"]
    headers = {"Authorization": f"Bearer {access}"}
    if case == "missing":
        headers = {}
    elif case == "not_bearer":
        headers = {"Authorization": f"Basic {access}"}
    elif case == "garbage":
        headers = {"Authorization": "Bearer not-a-token"}
    elif case == "google_id_token":
        headers = {"Authorization": f"Bearer {google.mint(aud='http://127.0.0.1:8001')}"}
    elif case == "typ_jwt":
        headers = {"Authorization": f"Bearer {_resign(app, access, typ='JWT')}"}
    elif case == "no_typ":
        headers = {"Authorization": f"Bearer {_resign(app, access)}"}
    elif case == "expired":
        clock.advance(900 + 61)
    elif case == "tampered":
        header, payload, signature = access.split(".")
        headers = {"Authorization": f"Bearer {header}.{payload[:-2]}AA.{signature}"}
    elif case == "refresh_token":
        headers = {"Authorization": f"Bearer {tokens['refresh_token']}"}
    response = await client.get("/users/me", headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    assert response.json()["error"] == "invalid_token"


async def test_token_of_deleted_user_or_ended_session_stops_working(
    app: Starlette, client: httpx.AsyncClient, google: FakeGoogle
) -> None:
    tokens = await sign_in(client, google)
    headers = {"Authorization": f"Bearer {tokens['access_token']}"}
    assert (await client.get("/users/me", headers=headers)).status_code == 200
    async with services(app).database.transaction() as session:
        await session.execute(text("DELETE FROM sessions"))
    response = await client.get("/users/me", headers=headers)
    assert response.status_code == 401
    assert json.loads(response.text)["error"] == "invalid_token"
