"""identity.verifier.TokenVerifier: what other Python services use, and its two exceptions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette

from identity.verifier import InvalidAccessToken, TokenVerifier, VerifierUnavailable

from .fakes import FakeClock, FakeIssuer
from .support import ISSUER, exchange, resign

pytestmark = pytest.mark.anyio


@pytest.fixture
async def verifier(app: Starlette, clock: FakeClock) -> TokenVerifier:
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ISSUER)
    return TokenVerifier(ISSUER, ISSUER, http_client=http, clock=clock)


async def access_token(client: httpx.AsyncClient, google: FakeIssuer) -> str:
    token: str = (await exchange(client, google.mint())).json()["access_token"]
    return token


async def test_verifies_our_token(
    verifier: TokenVerifier, client: httpx.AsyncClient, google: FakeIssuer
) -> None:
    claims = await verifier.verify(await access_token(client, google))
    assert claims.client_id == "public"
    assert claims.raw["email"] == "ada@gmail.com"


@pytest.mark.parametrize(
    ("header", "claims", "reason"),
    [
        ({"typ": "JWT"}, {}, "bad_typ"),
        ({"kid": "nope"}, {}, "unknown_kid"),
        ({"alg": "RS512"}, {}, "bad_alg"),
        ({}, {"iss": "https://other.test"}, "bad_issuer"),
        ({}, {"aud": "https://other-api.test"}, "bad_audience"),
        ({}, {"exp": 1_800_000_000 - 61}, "expired"),
        ({}, {"exp": "never"}, "bad_exp"),
        ({}, {"exp": 10**15}, "lifetime_too_long"),
        ({}, {"exp": 2**53 + 1}, "bad_exp"),
        ({}, {"nbf": 2**53 + 1}, "bad_nbf"),
        ({}, {"iat": 1_800_000_000, "exp": 1_800_000_000 + 86_401}, "lifetime_too_long"),
        ({}, {"sub": ""}, "bad_subject"),
        ({}, {"sid": None}, "malformed"),
    ],
)
async def test_rejects(
    verifier: TokenVerifier,
    client: httpx.AsyncClient,
    google: FakeIssuer,
    keys_dir: Path,
    header: dict[str, Any],
    claims: dict[str, Any],
    reason: str,
) -> None:
    token = resign(keys_dir, await access_token(client, google), header, **claims)
    with pytest.raises(InvalidAccessToken) as caught:
        await verifier.verify(token)
    assert caught.value.reason == reason


async def test_rejects_provider_tokens_respellings_and_garbage(
    verifier: TokenVerifier, client: httpx.AsyncClient, google: FakeIssuer
) -> None:
    good = await access_token(client, google)
    for token in (google.mint(aud=ISSUER), "garbage", "", good + "\n", good + "="):
        with pytest.raises(InvalidAccessToken):
            await verifier.verify(token)


async def test_discovery_for_another_issuer_is_refused(
    app: Starlette, client: httpx.AsyncClient, google: FakeIssuer
) -> None:
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ISSUER)
    # Discovery is fetched from the URL given, but says it is ISSUER: not the issuer we asked for.
    impostor = TokenVerifier("http://127.0.0.1:8001/other", ISSUER, http_client=http)
    with pytest.raises(VerifierUnavailable):
        await impostor.verify(await access_token(client, google))


async def test_while_the_issuer_is_down_discovery_is_fetched_once_per_30s(
    client: httpx.AsyncClient, google: FakeIssuer, clock: FakeClock
) -> None:
    calls = 0

    def down(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        raise httpx.ConnectError("down")

    verifier = TokenVerifier(
        ISSUER,
        ISSUER,
        http_client=httpx.AsyncClient(transport=httpx.MockTransport(down)),
        clock=clock,
    )
    token = await access_token(client, google)
    for _ in range(20):
        with pytest.raises(VerifierUnavailable):
            await verifier.verify(token)
    assert calls == 1
    clock.advance(31)
    with pytest.raises(VerifierUnavailable):
        await verifier.verify(token)
    assert calls == 2


BAD_DOCUMENTS = [
    b"[1, 2, 3]",  # a JSON array: once an AttributeError in the caller's service
    b'"a string"',
    b"null",
    b"{}",
    b'{"issuer": "http://127.0.0.1:8001", "jwks_uri": 7}',
    b'{"issuer": ["http://127.0.0.1:8001"], "jwks_uri": "http://127.0.0.1:8001/k"}',
    b"<html>",
    b"",
]


@pytest.mark.parametrize("document", BAD_DOCUMENTS)
async def test_whatever_discovery_serves_surfaces_as_verifier_unavailable(
    client: httpx.AsyncClient, google: FakeIssuer, document: bytes
) -> None:
    verifier = TokenVerifier(ISSUER, ISSUER, http_client=_serving(document, b"{}"))
    with pytest.raises(VerifierUnavailable):
        await verifier.verify(await access_token(client, google))


@pytest.mark.parametrize(
    "document",
    [b"[1]", b'{"keys": "no"}', b'{"keys": [1, "x", null, {"kty": 5}]}', b"{", b'{"keys": []}'],
)
async def test_whatever_the_key_set_is_surfaces_as_verifier_unavailable(
    client: httpx.AsyncClient, google: FakeIssuer, document: bytes
) -> None:
    discovery = json.dumps({"issuer": ISSUER, "jwks_uri": f"{ISSUER}/keys"}).encode()
    verifier = TokenVerifier(ISSUER, ISSUER, http_client=_serving(discovery, document))
    with pytest.raises(VerifierUnavailable):
        await verifier.verify(await access_token(client, google))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["issuer", "jwks_uri", "keys", "kty", "kid", "n", "e"]),
            children,
            max_size=5,
        )
    ),
    max_leaves=12,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(discovery=json_values, jwks=json_values)
async def test_only_the_two_documented_exceptions_ever_surface(
    client: httpx.AsyncClient, google: FakeIssuer, discovery: Any, jwks: Any
) -> None:
    token = await access_token(client, google)
    verifier = TokenVerifier(
        ISSUER,
        ISSUER,
        http_client=_serving(json.dumps(discovery).encode(), json.dumps(jwks).encode()),
    )
    with pytest.raises((VerifierUnavailable, InvalidAccessToken)):
        await verifier.verify(token)


def _serving(discovery: bytes, jwks: bytes) -> httpx.AsyncClient:
    def handler(request: httpx.Request) -> httpx.Response:
        body = discovery if request.url.path.endswith("openid-configuration") else jwks
        return httpx.Response(200, content=body)

    return httpx.AsyncClient(transport=httpx.MockTransport(handler))
