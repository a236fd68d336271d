"""Back-channel logout to the web app (OpenID Connect Back-Channel Logout 1.0, identity as the
provider): a real local receiver gets a logout token for each ended session of its client and
verifies it with our JWKS."""

from __future__ import annotations

import dataclasses
import time
from typing import Any
from urllib.parse import parse_qs

import jwt
import pytest

from identity.settings import Settings

from .fakes import FakeClock, Issuers
from .receivers import Received, receiver
from .support import ISSUER, basic, bearer, exchange, refresh, running

pytestmark = pytest.mark.anyio

SECRETS = {
    "web": "web-secret-0123456789abcdef",
    "mobile": "mobile-secret-0123456789abcdef",
    "backoffice": "backoffice-secret-0123456789",
}
EVENT = "http://schemas.openid.net/event/backchannel-logout"


def verified(request: Received, jwks: dict[str, Any], client_id: str) -> dict[str, Any]:
    """What a relying party does (§2.6): the form's token, verified with the provider's JWKS."""
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    (token,) = parse_qs(request.body.decode())["logout_token"]
    header = jwt.get_unverified_header(token)
    assert header["typ"] == "logout+jwt"
    key = jwt.PyJWKSet.from_dict(jwks)[header["kid"]]
    claims: dict[str, Any] = jwt.decode(
        token,
        key.key,
        algorithms=["RS256"],
        audience=client_id,
        issuer=ISSUER,
        options={"require": ["iss", "aud", "iat", "exp", "jti", "sub", "sid", "events"]},
    )
    assert claims["events"] == {EVENT: {}}
    assert "nonce" not in claims
    assert 0 < claims["exp"] - claims["iat"] <= 120
    return claims


def sid_of(access_token: str) -> str:
    return str(jwt.decode(access_token, options={"verify_signature": False})["sid"])


async def test_each_ended_session_is_logged_out_at_its_own_client(
    settings: Settings, issuers: Issuers, clock: FakeClock
) -> None:
    clock.now = time.time()  # the receiver checks exp with the real clock
    with receiver(200) as web:
        changed = dataclasses.replace(
            settings,
            clients=SECRETS,
            admin_clients=("backoffice",),
            backchannel_logout_uris={"web": web.url + "/api/auth/backchannel-logout"},
        )
        async with running(changed, issuers, clock, delivery_interval=3600) as (app, client):
            worker = app.state.deliveries
            jwks = (await client.get("/.well-known/jwks.json")).json()
            ours = (
                await exchange(client, issuers.google.mint(), headers=basic("web", SECRETS["web"]))
            ).json()
            theirs = (
                await exchange(
                    client, issuers.google.mint(), headers=basic("mobile", SECRETS["mobile"])
                )
            ).json()
            uid = ours["user"]["id"]
            # An admin disables the user: both sessions end, only the web app's is told.
            admin = basic("backoffice", SECRETS["backoffice"])
            response = await client.patch(
                f"/admin/users/{uid}", json={"disabled": True}, headers=admin
            )
            assert response.status_code == 200
            assert await worker.round() == 1
            # The session's refresh token is refused from now on, too.
            refused = await refresh(
                client, ours["refresh_token"], headers=basic("web", SECRETS["web"])
            )
            assert refused.status_code == 400
    (request,) = web.received
    assert request.path == "/api/auth/backchannel-logout"
    claims = verified(request, jwks, "web")
    assert claims["sid"] == sid_of(ours["access_token"])  # the sid our access tokens carry
    assert claims["sub"] == uid
    assert claims["sid"] != sid_of(theirs["access_token"])


async def test_a_logout_is_told_to_the_client_and_no_other(
    settings: Settings, issuers: Issuers, clock: FakeClock
) -> None:
    clock.now = time.time()
    with receiver(200) as web:
        changed = dataclasses.replace(settings, backchannel_logout_uris={"public": web.url})
        async with running(changed, issuers, clock, delivery_interval=3600) as (app, client):
            tokens = (await exchange(client, issuers.google.mint())).json()
            await client.post("/auth/logout", headers=bearer(tokens["access_token"]))
            await app.state.deliveries.round()
            jwks = (await client.get("/.well-known/jwks.json")).json()
    (request,) = web.received
    verified(request, jwks, "public")
    token = parse_qs(request.body.decode())["logout_token"][0]
    key = jwt.PyJWKSet.from_dict(jwks)[jwt.get_unverified_header(token)["kid"]]
    with pytest.raises(jwt.InvalidAudienceError):  # for this client only
        jwt.decode(token, key.key, algorithms=["RS256"], audience="another-client")
