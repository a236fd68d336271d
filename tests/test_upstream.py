"""SPEC §5: every rule for upstream id_tokens, one case each."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from joserfc.jwk import RSAKey
from starlette.applications import Starlette

from identity.errors import UpstreamTokenError
from identity.keyset import KeySetCache
from identity.upstream import IdTokenVerifier, Provider, VerifiedIdentity

from .conftest import exchange, row_counts
from .fakes import DROP, GOOGLE_ISSUER, IOS_CLIENT, WEB_CLIENT, FakeClock, FakeGoogle, b64

pytestmark = pytest.mark.anyio
Build = Callable[[FakeGoogle], str]


def _hs256_with_public_key(g: FakeGoogle) -> str:
    # The classic confusion attack: HMAC keyed with the RSA public key.
    header = b64(json.dumps({"alg": "HS256", "kid": g.kid}).encode())
    payload = b64(json.dumps(g.claims()).encode())
    secret = json.dumps(g.jwks()["keys"][0]).encode()
    mac = hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{b64(mac)}"


def _other_key_same_kid(g: FakeGoogle) -> str:
    other = RSAKey.generate_key(2048, private=True)
    return g.mint_raw({"alg": "RS256", "kid": g.kid}, json.dumps(g.claims()).encode(), other)


def _tampered(g: FakeGoogle) -> str:
    header, _, signature = g.mint().split(".")
    forged = b64(json.dumps(g.claims(sub="someone-else")).encode())
    return f"{header}.{forged}.{signature}"


REJECTED: list[tuple[str, str, Build]] = [
    ("two_segments", "malformed", lambda g: ".".join(g.mint().split(".")[:2])),
    ("four_segments", "malformed", lambda g: g.mint() + ".abc"),
    ("not_base64", "malformed", lambda g: g.mint().replace(".", ".%", 1)),
    ("empty_signature", "malformed", lambda g: g.mint().rsplit(".", 1)[0] + "."),
    ("too_large", "too_large", lambda g: g.mint(padding="x" * 9000)),
    ("header_not_object", "malformed", lambda g: b64(b"[1]") + "." + g.mint().split(".", 1)[1]),
    (
        "payload_not_object",
        "malformed",
        lambda g: g.mint_raw({"alg": "RS256", "kid": g.kid}, b"[1]"),
    ),
    (
        "payload_not_json",
        "malformed",
        lambda g: g.mint_raw({"alg": "RS256", "kid": g.kid}, b"{oops"),
    ),
    (
        "duplicate_claim",
        "malformed",
        lambda g: g.mint_raw(
            {"alg": "RS256", "kid": g.kid},
            json.dumps(g.claims()).encode()[:-1] + b', "sub": "other"}',
        ),
    ),
    (
        "nan_claim",
        "malformed",
        lambda g: g.mint_raw(
            {"alg": "RS256", "kid": g.kid}, json.dumps(g.claims()).encode()[:-1] + b', "x": NaN}'
        ),
    ),
    ("alg_none", "bad_alg", lambda g: g.mint_raw({"alg": "none", "kid": g.kid}, b"{}")),
    ("alg_hs256", "bad_alg", _hs256_with_public_key),
    ("alg_rs512", "bad_alg", lambda g: g.mint_raw({"alg": "RS512", "kid": g.kid}, b"{}")),
    ("alg_missing", "bad_alg", lambda g: g.mint_raw({"kid": g.kid}, b"{}")),
    (
        "kid_missing",
        "missing_kid",
        lambda g: g.mint_raw({"alg": "RS256"}, json.dumps(g.claims()).encode()),
    ),
    ("kid_not_string", "missing_kid", lambda g: g.mint_raw({"alg": "RS256", "kid": 7}, b"{}")),
    ("kid_unknown", "unknown_kid", lambda g: g.mint(header={"kid": "not-a-google-key"})),
    ("header_jku", "forbidden_header", lambda g: g.mint(header={"jku": "https://evil.test/k"})),
    ("header_x5u", "forbidden_header", lambda g: g.mint(header={"x5u": "https://evil.test/c"})),
    ("header_jwk", "forbidden_header", lambda g: g.mint(header={"jwk": g.jwks()["keys"][0]})),
    (
        "header_crit",
        "forbidden_header",
        lambda g: g.mint_raw(
            {"alg": "RS256", "kid": g.kid, "crit": ["exp"]}, json.dumps(g.claims()).encode()
        ),
    ),
    ("signature_other_key", "bad_signature", _other_key_same_kid),
    ("payload_tampered", "bad_signature", _tampered),
    ("iss_wrong", "bad_issuer", lambda g: g.mint(iss="https://accounts.evil.test")),
    ("iss_trailing_slash", "bad_issuer", lambda g: g.mint(iss=GOOGLE_ISSUER + "/")),
    ("iss_missing", "bad_issuer", lambda g: g.mint(iss=DROP)),
    ("aud_wrong", "bad_audience", lambda g: g.mint(aud="someone-else")),
    ("aud_list_with_foreign", "bad_audience", lambda g: g.mint(aud=[WEB_CLIENT, "someone-else"])),
    ("aud_empty_list", "bad_audience", lambda g: g.mint(aud=[])),
    ("aud_missing", "bad_audience", lambda g: g.mint(aud=DROP)),
    ("aud_number", "bad_audience", lambda g: g.mint(aud=5)),
    ("azp_foreign", "bad_azp", lambda g: g.mint(azp="someone-else")),
    ("exp_missing", "missing_exp", lambda g: g.mint(exp=DROP)),
    ("exp_fraction", "bad_exp", lambda g: g.mint(exp=int(g.clock()) + 3600.5)),
    ("exp_string", "bad_exp", lambda g: g.mint(exp=str(int(g.clock()) + 3600))),
    ("exp_boolean", "bad_exp", lambda g: g.mint(exp=True)),
    ("iat_missing", "missing_iat", lambda g: g.mint(iat=DROP)),
    ("iat_fraction", "bad_iat", lambda g: g.mint(iat=g.clock() - 0.5)),
    (
        "expired_beyond_skew",
        "expired",
        lambda g: g.mint(exp=int(g.clock()) - 61, iat=int(g.clock()) - 600),
    ),
    ("iat_in_future", "issued_in_future", lambda g: g.mint(iat=int(g.clock()) + 120)),
    (
        "iat_too_old",
        "too_old",
        lambda g: g.mint(iat=int(g.clock()) - 3600 - 61, exp=int(g.clock()) + 600),
    ),
    ("nbf_in_future", "not_yet_valid", lambda g: g.mint(nbf=int(g.clock()) + 120)),
    ("nbf_string", "bad_nbf", lambda g: g.mint(nbf="0")),
    ("sub_missing", "bad_subject", lambda g: g.mint(sub=DROP)),
    ("sub_empty", "bad_subject", lambda g: g.mint(sub="")),
    ("sub_too_long", "bad_subject", lambda g: g.mint(sub="1" * 256)),
    ("sub_number", "bad_subject", lambda g: g.mint(sub=1234)),
    ("hd_not_string", "bad_hosted_domain", lambda g: g.mint(hd=["example.com"])),
]


@pytest.fixture
async def verifier(google: FakeGoogle, clock: FakeClock) -> IdTokenVerifier:
    provider = Provider(
        name="google",
        issuers=(GOOGLE_ISSUER, "accounts.google.com"),
        jwks_url="https://www.googleapis.com/oauth2/v3/certs",
        audiences=(WEB_CLIENT, IOS_CLIENT),
        authoritative_email_suffixes=("@gmail.com",),
    )
    cache = KeySetCache(provider.jwks_url, google.client(), clock=clock)
    return IdTokenVerifier(provider, cache, clock=clock, leeway=60, max_age=3600)


@pytest.mark.parametrize(("case", "reason", "build"), REJECTED, ids=[c[0] for c in REJECTED])
async def test_verifier_rejects(
    verifier: IdTokenVerifier, google: FakeGoogle, case: str, reason: str, build: Build
) -> None:
    with pytest.raises(UpstreamTokenError) as caught:
        await verifier.verify(build(google))
    assert caught.value.reason == reason


@pytest.mark.parametrize(("case", "reason", "build"), REJECTED, ids=[c[0] for c in REJECTED])
async def test_exchange_rejects_without_writing(
    app: Starlette,
    client: httpx.AsyncClient,
    google: FakeGoogle,
    case: str,
    reason: str,
    build: Build,
) -> None:
    token = build(google)
    before = await row_counts(app)
    response = await exchange(client, token)
    assert response.status_code == 400
    assert response.json() == {
        "error": "invalid_request",
        "error_description": "the id_token is not valid",
    }
    assert token not in response.text
    assert await row_counts(app) == before


async def test_accepts_a_good_token(verifier: IdTokenVerifier, google: FakeGoogle) -> None:
    identity = await verifier.verify(google.mint())
    assert isinstance(identity, VerifiedIdentity)
    assert identity.subject == "110000000000000000001"
    assert identity.email == "ada@gmail.com"
    assert identity.email_verified is True
    assert identity.email_authoritative is True


@pytest.mark.parametrize(
    "claims",
    [
        pytest.param(
            {"exp": (1_800_000_000 - 59), "iat": 1_800_000_000 - 600}, id="expired_within_skew"
        ),
        pytest.param({"iat": 1_800_000_000 + 59}, id="iat_future_within_skew"),
        pytest.param({"nbf": 1_800_000_000 + 59}, id="nbf_within_skew"),
        pytest.param({"aud": [WEB_CLIENT, IOS_CLIENT]}, id="aud_list_all_ours"),
        pytest.param({"iss": "accounts.google.com"}, id="iss_without_scheme"),
        pytest.param({"azp": DROP}, id="azp_absent"),
    ],
)
async def test_accepts_within_rules(
    verifier: IdTokenVerifier, google: FakeGoogle, claims: dict[str, Any]
) -> None:
    assert (await verifier.verify(google.mint(**claims))).subject


@pytest.mark.parametrize("value", ["true", 1, "True", None])
async def test_email_verified_only_as_json_true(
    verifier: IdTokenVerifier, google: FakeGoogle, value: object
) -> None:
    identity = await verifier.verify(google.mint(email_verified=value))
    assert identity.email_verified is False


async def test_nonce_raw_or_hashed_must_match(
    verifier: IdTokenVerifier, google: FakeGoogle
) -> None:
    assert await verifier.verify(google.mint(nonce="n-123"), nonce="n-123")
    hashed = hashlib.sha256(b"n-456").hexdigest()
    assert await verifier.verify(google.mint(nonce=hashed), nonce="n-456")
    for token in (google.mint(nonce="other"), google.mint()):
        with pytest.raises(UpstreamTokenError) as caught:
            await verifier.verify(token, nonce="n-123")
        assert caught.value.reason == "nonce_mismatch"


async def test_hosted_domain_must_be_listed(google: FakeGoogle, clock: FakeClock) -> None:
    provider = Provider(
        name="google",
        issuers=(GOOGLE_ISSUER,),
        jwks_url="https://keys.test/certs",
        audiences=(WEB_CLIENT,),
        hosted_domains=("example.com",),
    )
    verifier = IdTokenVerifier(
        provider, KeySetCache(provider.jwks_url, google.client(), clock=clock), clock=clock
    )
    assert (await verifier.verify(google.mint(hd="example.com"))).hosted_domain == "example.com"
    for token in (google.mint(hd="evil.com"), google.mint(), google.mint(hd="EXAMPLE.COM")):
        with pytest.raises(UpstreamTokenError) as caught:
            await verifier.verify(token)
        assert caught.value.reason == "bad_hosted_domain"
