"""identity_verifier on its own: tokens signed here with `cryptography`, an issuer served by
httpx's MockTransport; no server, no JOSE library. The rules are the service's (docs/verifying.md);
tests/test_verifier.py runs the same class against the real service."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from identity_verifier import InvalidAccessToken, TokenVerifier, VerifierUnavailable

ISSUER = "https://id.test"
NOW = 1_800_000_000
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def number(value: int) -> str:
    return b64(value.to_bytes((value.bit_length() + 7) // 8, "big"))


def jwk(key: rsa.RSAPrivateKey = KEY, kid: str = "k1", **extra: Any) -> dict[str, Any]:
    public = key.public_key().public_numbers()
    entry = {"kty": "RSA", "kid": kid, "use": "sig", "n": number(public.n), "e": number(public.e)}
    return entry | extra


def token(header: dict[str, Any] | None = None, key: rsa.RSAPrivateKey = KEY, **claims: Any) -> str:
    head = {"alg": "RS256", "typ": "at+jwt", "kid": "k1"} | (header or {})
    body = {
        "iss": ISSUER,
        "sub": "user-1",
        "aud": ISSUER,
        "exp": NOW + 900,
        "iat": NOW,
        "jti": "j",
        "sid": "s",
        "client_id": "web",
    } | claims
    signing_input = f"{b64(json.dumps(head).encode())}.{b64(json.dumps(body).encode())}"
    signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{b64(signature)}"


def verify(value: str, keys: list[Any] | None = None) -> Any:
    def serve(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/.well-known/openid-configuration":
            return httpx.Response(200, json={"issuer": ISSUER, "jwks_uri": f"{ISSUER}/jwks"})
        return httpx.Response(200, json={"keys": [jwk()] if keys is None else keys})

    async def run() -> Any:
        http = httpx.AsyncClient(transport=httpx.MockTransport(serve))
        verifier = TokenVerifier(ISSUER, ISSUER, http_client=http, clock=lambda: NOW)
        try:
            return await verifier.verify(value)
        finally:
            await http.aclose()

    return asyncio.run(run())


def reason(value: str, keys: list[Any] | None = None) -> str:
    with pytest.raises(InvalidAccessToken) as caught:
        verify(value, keys)
    return caught.value.reason


def test_a_good_token() -> None:
    claims = verify(token())
    assert (claims.subject, claims.session_id, claims.client_id) == ("user-1", "s", "web")


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ({"alg": "none"}, "bad_alg"),
        ({"alg": "HS256"}, "bad_alg"),
        ({"alg": "RS512"}, "bad_alg"),
        ({"alg": "PS256"}, "bad_alg"),
        ({"crit": ["exp"]}, "forbidden_header"),
        ({"jku": "https://evil.test/jwks"}, "forbidden_header"),
        ({"jwk": jwk()}, "forbidden_header"),
        ({"kid": ""}, "missing_kid"),
        ({"kid": 7}, "missing_kid"),
        ({"kid": "k" * 257}, "missing_kid"),
        ({"typ": "JWT"}, "bad_typ"),
        ({"kid": "unknown"}, "unknown_kid"),
    ],
)
def test_the_header_rules(header: dict[str, Any], expected: str) -> None:
    assert reason(token(header)) == expected


@pytest.mark.parametrize(
    ("claims", "expected"),
    [
        ({"iss": ISSUER + "/"}, "bad_issuer"),
        ({"aud": "https://other.test"}, "bad_audience"),
        ({"aud": []}, "bad_audience"),
        ({"exp": NOW - 61}, "expired"),
        ({"exp": True}, "bad_exp"),
        ({"exp": 2**53 + 1}, "bad_exp"),
        ({"iat": NOW - 100_000, "exp": NOW + 900}, "lifetime_too_long"),
        ({"iat": NOW + 120, "exp": NOW + 900}, "issued_in_future"),
        ({"nbf": NOW + 120}, "not_yet_valid"),
        ({"sub": "a\x00b"}, "bad_subject"),
        ({"sid": ""}, "malformed"),
    ],
)
def test_the_claim_rules(claims: dict[str, Any], expected: str) -> None:
    assert reason(token(**claims)) == expected


def test_one_spelling_per_token() -> None:
    good = token()
    head, body, signature = good.split(".")
    assert reason(good + "=") == "malformed"
    assert reason(good + "\n") == "malformed"
    assert reason(f"{head}.{body}.{signature[:-10]}") == "bad_signature"  # shorter than n
    assert reason("x" * 8193) == "too_large"
    duplicate = b64(b'{"alg":"RS256","alg":"none","typ":"at+jwt","kid":"k1"}')
    assert reason(f"{duplicate}.{body}.{signature}") == "malformed"
    assert reason(token(key=rsa.generate_private_key(public_exponent=65537, key_size=2048))) == (
        "bad_signature"
    )


def test_unusable_entries_are_skipped_and_the_good_key_still_works() -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    odd = [
        jwk(weak, kid="k1"),  # too small
        jwk(kid="k1", alg="HS256"),
        jwk(kid="k1", use="enc"),
        jwk(kid="k1", d="AQAB"),  # a published private key
        jwk(kid="k1", e="Aw"),  # exponent 3
        {"kty": "RSA", "kid": "k1", "n": 7, "e": "AQAB"},
        "a string",
        None,
    ]
    assert verify(token(), keys=[*odd, jwk()]).subject == "user-1"
    with pytest.raises(VerifierUnavailable):
        verify(token(), keys=odd)  # nothing usable at all: fail closed, 503


def test_an_unknown_kid_refetches_once_per_cooldown() -> None:
    fetches: list[str] = []

    def serve(request: httpx.Request) -> httpx.Response:
        fetches.append(request.url.path)
        if request.url.path.endswith("configuration"):
            return httpx.Response(200, json={"issuer": ISSUER, "jwks_uri": f"{ISSUER}/jwks"})
        return httpx.Response(200, json={"keys": [jwk()]})

    async def run() -> None:
        http = httpx.AsyncClient(transport=httpx.MockTransport(serve))
        verifier = TokenVerifier(ISSUER, ISSUER, http_client=http, clock=lambda: NOW)
        for _ in range(5):
            with pytest.raises(InvalidAccessToken):
                await verifier.verify(token({"kid": "forged"}))
        await http.aclose()

    asyncio.run(run())
    assert fetches.count("/jwks") == 1
