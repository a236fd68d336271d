"""Scope is enforced: the access token's claims and /userinfo carry only what it grants, and a
refresh keeps the scope its exchange granted."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import pytest

from .fakes import FakeIssuer
from .support import bearer, exchange, refresh

pytestmark = pytest.mark.anyio
PROFILE = {"email", "email_verified", "name", "picture"}


def claims_of(access_token: str) -> dict[str, Any]:
    payload = access_token.split(".")[1]
    decoded: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return decoded


@pytest.mark.parametrize(
    ("scope", "shown"),
    [
        ("openid", set()),
        ("openid email", {"email", "email_verified"}),
        ("openid profile", {"name", "picture"}),
        (None, PROFILE),  # the default: openid email profile
    ],
)
async def test_claims_and_userinfo_follow_the_scope(
    client: httpx.AsyncClient, google: FakeIssuer, scope: str | None, shown: set[str]
) -> None:
    extra = {"scope": scope} if scope is not None else {}
    issued = await exchange(client, google.mint(picture="https://x.example/a.png"), **extra)
    assert issued.status_code == 200, issued.text
    body = issued.json()
    assert set(claims_of(body["access_token"])) & PROFILE == shown
    info = (await client.get("/userinfo", headers=bearer(body["access_token"]))).json()
    assert set(info) == {"sub", *shown}
    # The refresh keeps the granted scope: never wider than the exchange's.
    again = await refresh(client, body["refresh_token"])
    assert again.status_code == 200
    assert set(claims_of(again.json()["access_token"])) & PROFILE == shown
    assert claims_of(again.json()["access_token"])["scope"] == (scope or "openid email profile")
    refreshed = (await client.get("/userinfo", headers=bearer(again.json()["access_token"]))).json()
    assert set(refreshed) == {"sub", *shown}
    # Introspection shows the token's own claims, so no more either.
    seen = (await client.post("/introspect", data={"token": again.json()["access_token"]})).json()
    assert seen["active"] is True
    assert set(seen) & PROFILE <= shown
