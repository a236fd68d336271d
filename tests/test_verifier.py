"""identity.verifier.TokenVerifier against an in-process service (through httpx transports)."""

from __future__ import annotations

import json

import httpx
import pytest
from joserfc import jws
from starlette.applications import Starlette

from identity.verifier import InvalidAccessToken, TokenVerifier, VerifierUnavailable

from .conftest import ISSUER, exchange, services
from .fakes import FakeClock, FakeGoogle

pytestmark = pytest.mark.anyio


@pytest.fixture
async def verifier(app: Starlette, clock: FakeClock) -> TokenVerifier:
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ISSUER)
    return TokenVerifier(ISSUER, ISSUER, http_client=http, clock=clock)


async def access_token(client: httpx.AsyncClient, google: FakeGoogle) -> str:
    token: str = (await exchange(client, google.mint())).json()["access_token"]
    return token


async def test_verifies_our_token(
    verifier: TokenVerifier, client: httpx.AsyncClient, google: FakeGoogle
) -> None:
    claims = await verifier.verify(await access_token(client, google))
    assert claims.client_id == "public"
    assert claims.raw["email"] == "ada@gmail.com"


def _resign(
    app: Starlette, token: str, header: dict[str, object] | None = None, **claims: object
) -> str:
    import base64

    payload = token.split(".")[1]
    data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    data.update(claims)
    key = services(app).keys.view().active
    protected = {"alg": "RS256", "typ": "at+jwt", "kid": key.kid, **(header or {})}
    return jws.serialize_compact(protected, json.dumps(data).encode(), key.key)


@pytest.mark.parametrize(
    ("header", "claims", "reason"),
    [
        ({"typ": "JWT"}, {}, "bad_typ"),
        ({"kid": "nope"}, {}, "unknown_kid"),
        ({}, {"iss": "https://other.test"}, "bad_issuer"),
        ({}, {"aud": "https://other-api.test"}, "bad_audience"),
        ({}, {"exp": 1_800_000_000 - 61}, "expired"),
        ({}, {"exp": "never"}, "malformed"),
        ({}, {"sub": ""}, "malformed"),
    ],
)
async def test_rejects(
    app: Starlette,
    verifier: TokenVerifier,
    client: httpx.AsyncClient,
    google: FakeGoogle,
    header: dict[str, object],
    claims: dict[str, object],
    reason: str,
) -> None:
    token = _resign(app, await access_token(client, google), header, **claims)
    with pytest.raises(InvalidAccessToken) as caught:
        await verifier.verify(token)
    assert caught.value.reason == reason


async def test_rejects_google_tokens_and_garbage(
    verifier: TokenVerifier, google: FakeGoogle
) -> None:
    for token in (google.mint(aud=ISSUER), "garbage", ""):
        with pytest.raises(InvalidAccessToken):
            await verifier.verify(token)


async def test_discovery_for_another_issuer_is_refused(
    app: Starlette, client: httpx.AsyncClient, google: FakeGoogle
) -> None:
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ISSUER)
    # Discovery is fetched from the URL given, but says it is ISSUER: not the issuer we asked for.
    impostor = TokenVerifier("http://127.0.0.1:8001/other", ISSUER, http_client=http)
    with pytest.raises(VerifierUnavailable):
        await impostor.verify(await access_token(client, google))


async def test_unreachable_issuer_is_unavailable_not_invalid(
    client: httpx.AsyncClient, google: FakeGoogle
) -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("down")

    verifier = TokenVerifier(
        ISSUER, ISSUER, http_client=httpx.AsyncClient(transport=httpx.MockTransport(down))
    )
    with pytest.raises(VerifierUnavailable):
        await verifier.verify(await access_token(client, google))
