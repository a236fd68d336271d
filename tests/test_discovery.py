"""GET /.well-known/jwks.json and /.well-known/openid-configuration."""

from __future__ import annotations

import base64
import hashlib
import json

import httpx
import pytest

from identity.tokens.signing_keys import KeyRing, KeyView

from .support import ISSUER

pytestmark = pytest.mark.anyio


async def test_jwks_publishes_public_keys_only(client: httpx.AsyncClient) -> None:
    response = await client.get("/.well-known/jwks.json")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "public, max-age=600"
    assert response.headers["content-type"] == "application/json"
    keys = response.json()["keys"]
    assert len(keys) == 1
    key = keys[0]
    assert set(key) == {"kty", "n", "e", "kid", "alg", "use"}
    assert (key["kty"], key["alg"], key["use"]) == ("RSA", "RS256", "sig")
    # kid is the RFC 7638 thumbprint of the public key.
    canonical = json.dumps({"e": key["e"], "kty": "RSA", "n": key["n"]}, separators=(",", ":"))
    thumbprint = base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).rstrip(b"=")
    assert key["kid"] == thumbprint.decode()
    modulus = base64.urlsafe_b64decode(key["n"] + "==")
    assert len(modulus) * 8 >= 2048


async def test_jwks_etag_and_304(client: httpx.AsyncClient) -> None:
    first = await client.get("/.well-known/jwks.json")
    etag = first.headers["etag"]
    again = await client.get("/.well-known/jwks.json", headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["etag"] == etag
    other = await client.get("/.well-known/jwks.json", headers={"If-None-Match": '"other"'})
    assert other.status_code == 200


async def test_discovery_document(client: httpx.AsyncClient) -> None:
    response = await client.get("/.well-known/openid-configuration")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "public, max-age=600"
    doc = response.json()
    assert doc["issuer"] == ISSUER
    assert doc["jwks_uri"] == f"{ISSUER}/.well-known/jwks.json"
    assert doc["token_endpoint"] == f"{ISSUER}/token"
    assert doc["userinfo_endpoint"] == f"{ISSUER}/userinfo"
    assert doc["revocation_endpoint"] == f"{ISSUER}/revoke"
    assert doc["introspection_endpoint"] == f"{ISSUER}/introspect"
    assert "refresh_token" in doc["grant_types_supported"]
    assert doc["id_token_signing_alg_values_supported"] == ["RS256"]
    assert "urn:ietf:params:oauth:grant-type:token-exchange" in doc["grant_types_supported"]
    assert "authorization_endpoint" not in doc
    assert "end_session_endpoint" not in doc  # no browser-redirect logout here
    assert doc["backchannel_logout_supported"] is True
    assert doc["backchannel_logout_session_supported"] is True
    for field in (
        "response_types_supported",
        "subject_types_supported",
        "token_endpoint_auth_methods_supported",
    ):
        assert doc[field]
    # The document's URLs resolve on this very service.
    jwks = await client.get(doc["jwks_uri"].removeprefix(ISSUER))
    assert jwks.status_code == 200


async def test_jwks_bytes_are_computed_once(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same precomputed bytes and ETag serve every request until the keys change."""
    first = await client.get("/.well-known/jwks.json")
    computed = 0
    original = KeyRing.view

    def counting(self: KeyRing, now: float) -> KeyView:
        nonlocal computed
        computed += 1
        return original(self, now)

    monkeypatch.setattr(KeyRing, "view", counting)
    for _ in range(5):
        assert (await client.get("/.well-known/jwks.json")).content == first.content
    assert computed == 0


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
async def test_jwks_other_methods_are_405(client: httpx.AsyncClient, method: str) -> None:
    response = await client.request(method, "/.well-known/jwks.json")
    assert response.status_code == 405
