"""Tokens that must be refused, one per rule, with the reason code each must give.

Shared data (not a test module): the verifier and HTTP tests of test_id_tokens.py run every
case, and test_logs.py sends every one through the service before scanning its logs.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable
from typing import Any

from .fakes import DROP, GOOGLE_ISSUER, WEB_CLIENT, FakeIssuer, b64

Build = Callable[[FakeIssuer, dict[str, Any]], str]


def _hs256_with_public_key(g: FakeIssuer, keys: dict[str, Any]) -> str:
    # The classic confusion attack: HMAC keyed with the RSA public key.
    header = b64(json.dumps({"alg": "HS256", "kid": g.kid}).encode())
    payload = b64(json.dumps(g.claims()).encode())
    secret = json.dumps(g.jwks()["keys"][0]).encode()
    mac = hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{b64(mac)}"


def _tampered(g: FakeIssuer, keys: dict[str, Any]) -> str:
    header, _, signature = g.mint().split(".")
    return f"{header}.{b64(json.dumps(g.claims(sub='someone-else')).encode())}.{signature}"


def _respelled(change: Callable[[str], str]) -> Build:
    """The same signed token written another way: every one must be refused."""
    return lambda g, keys: change(g.mint())


def unused_bits(token: str) -> str:
    # RS256/2048: 256 bytes of signature in 342 characters, the last one carrying 4 unused bits.
    head, signature = token.rsplit(".", 1)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(signature[-1])
    return (
        f"{head}.{signature[:-1]}{alphabet[last | 1]}"
        if last % 2 == 0
        else f"{head}.{signature[:-1]}{alphabet[last - 1]}"
    )


def _other_alg_key(g: FakeIssuer, keys: dict[str, Any]) -> str:
    # PS256 is a fine algorithm, but not one Google signs with.
    return g.mint_raw({"alg": "PS256", "kid": g.kid}, json.dumps(g.claims()).encode())


REJECTED: list[tuple[str, str, Build]] = [
    ("two_segments", "malformed", lambda g, k: ".".join(g.mint().split(".")[:2])),
    ("four_segments", "malformed", lambda g, k: g.mint() + ".abc"),
    ("not_base64", "malformed", lambda g, k: g.mint().replace(".", ".%", 1)),
    ("empty_signature", "malformed", lambda g, k: g.mint().rsplit(".", 1)[0] + "."),
    ("too_large", "too_large", lambda g, k: g.mint(padding="x" * 9000)),
    ("header_not_object", "malformed", lambda g, k: b64(b"[1]") + "." + g.mint().split(".", 1)[1]),
    (
        "payload_not_object",
        "malformed",
        lambda g, k: g.mint_raw({"alg": "RS256", "kid": g.kid}, b"[1]"),
    ),
    (
        "payload_not_json",
        "malformed",
        lambda g, k: g.mint_raw({"alg": "RS256", "kid": g.kid}, b"{oops"),
    ),
    (
        "duplicate_claim",
        "malformed",
        lambda g, k: g.mint_raw(
            {"alg": "RS256", "kid": g.kid},
            json.dumps(g.claims()).encode()[:-1] + b', "sub": "other"}',
        ),
    ),
    (
        "nan_claim",
        "malformed",
        lambda g, k: g.mint_raw(
            {"alg": "RS256", "kid": g.kid}, json.dumps(g.claims()).encode()[:-1] + b', "x": NaN}'
        ),
    ),
    ("padded_segment", "malformed", _respelled(lambda t: t + "==")),
    ("trailing_newline", "malformed", _respelled(lambda t: t + "\n")),
    ("inner_whitespace", "malformed", _respelled(lambda t: t.replace(".", ". ", 1))),
    ("standard_alphabet", "malformed", _respelled(lambda t: t[:-1] + "+")),
    ("unused_bits_set", "non_canonical", _respelled(unused_bits)),
    (
        "short_signature",
        "bad_signature",
        _respelled(lambda t: t.rsplit(".", 1)[0] + "." + b64(b"\x00" * 10)),
    ),
    (
        "alg_none",
        "bad_alg",
        lambda g, k: g.mint_raw({"alg": "none", "kid": g.kid}, json.dumps(g.claims()).encode()),
    ),
    ("alg_hs256", "bad_alg", _hs256_with_public_key),
    ("alg_not_the_providers", "bad_alg", _other_alg_key),
    (
        "alg_missing",
        "bad_alg",
        lambda g, k: g.mint_raw({"kid": g.kid}, json.dumps(g.claims()).encode()),
    ),
    (
        "kid_missing",
        "missing_kid",
        lambda g, k: g.mint_raw({"alg": "RS256"}, json.dumps(g.claims()).encode()),
    ),
    ("kid_not_string", "missing_kid", lambda g, k: g.mint_raw({"alg": "RS256", "kid": 7}, b"{}")),
    ("kid_unknown", "unknown_kid", lambda g, k: g.mint(header={"kid": "not-a-google-key"})),
    ("header_jku", "forbidden_header", lambda g, k: g.mint(header={"jku": "https://evil.test/k"})),
    ("header_x5u", "forbidden_header", lambda g, k: g.mint(header={"x5u": "https://evil.test/c"})),
    ("header_jwk", "forbidden_header", lambda g, k: g.mint(header={"jwk": g.jwks()["keys"][0]})),
    ("header_x5c", "forbidden_header", lambda g, k: g.mint(header={"x5c": ["MIIB"]})),
    ("header_crit", "forbidden_header", lambda g, k: g.mint(header={"crit": ["exp"]})),
    (
        "signature_other_key",
        "bad_signature",
        lambda g, k: g.mint_raw(
            {"alg": "RS256", "kid": g.kid}, json.dumps(g.claims()).encode(), k["other_rsa"]
        ),
    ),
    ("payload_tampered", "bad_signature", _tampered),
    ("iss_unknown", "unknown_issuer", lambda g, k: g.mint(iss="https://accounts.evil.test")),
    ("iss_trailing_slash", "unknown_issuer", lambda g, k: g.mint(iss=GOOGLE_ISSUER + "/")),
    ("iss_other_case", "unknown_issuer", lambda g, k: g.mint(iss="https://Accounts.Google.com")),
    ("iss_missing", "bad_issuer", lambda g, k: g.mint(iss=DROP)),
    ("iss_number", "bad_issuer", lambda g, k: g.mint(iss=7)),
    ("aud_wrong", "bad_audience", lambda g, k: g.mint(aud="someone-else")),
    (
        "aud_list_with_foreign",
        "bad_audience",
        lambda g, k: g.mint(aud=[WEB_CLIENT, "someone-else"]),
    ),
    ("aud_empty_list", "bad_audience", lambda g, k: g.mint(aud=[])),
    ("aud_missing", "bad_audience", lambda g, k: g.mint(aud=DROP)),
    ("aud_number", "bad_audience", lambda g, k: g.mint(aud=5)),
    ("azp_foreign", "bad_azp", lambda g, k: g.mint(azp="someone-else")),
    ("exp_missing", "missing_exp", lambda g, k: g.mint(exp=DROP)),
    ("exp_fraction", "bad_exp", lambda g, k: g.mint(exp=int(g.clock()) + 3600.5)),
    ("exp_string", "bad_exp", lambda g, k: g.mint(exp=str(int(g.clock()) + 3600))),
    ("exp_boolean", "bad_exp", lambda g, k: g.mint(exp=True)),
    # A huge time once overflowed the date arithmetic of the replay record: a 500, no event.
    ("exp_huge", "lifetime_too_long", lambda g, k: g.mint(exp=10**15)),
    ("exp_past_2_53", "bad_exp", lambda g, k: g.mint(exp=2**53 + 1)),
    ("exp_negative", "bad_exp", lambda g, k: g.mint(exp=-1)),
    ("iat_past_2_53", "bad_iat", lambda g, k: g.mint(iat=2**53 + 1)),
    ("nbf_huge", "bad_nbf", lambda g, k: g.mint(nbf=2**53 + 1)),
    (
        "lifetime_over_a_day",
        "lifetime_too_long",
        lambda g, k: g.mint(iat=int(g.clock()), exp=int(g.clock()) + 86_401),
    ),
    ("iat_missing", "missing_iat", lambda g, k: g.mint(iat=DROP)),
    ("iat_fraction", "bad_iat", lambda g, k: g.mint(iat=g.clock() - 0.5)),
    (
        "expired_beyond_skew",
        "expired",
        lambda g, k: g.mint(exp=int(g.clock()) - 61, iat=int(g.clock()) - 600),
    ),
    ("iat_in_future", "issued_in_future", lambda g, k: g.mint(iat=int(g.clock()) + 120)),
    (
        "iat_too_old",
        "too_old",
        lambda g, k: g.mint(iat=int(g.clock()) - 3600 - 61, exp=int(g.clock()) + 600),
    ),
    ("nbf_in_future", "not_yet_valid", lambda g, k: g.mint(nbf=int(g.clock()) + 120)),
    ("nbf_string", "bad_nbf", lambda g, k: g.mint(nbf="0")),
    ("sub_missing", "bad_subject", lambda g, k: g.mint(sub=DROP)),
    ("sub_empty", "bad_subject", lambda g, k: g.mint(sub="")),
    ("sub_too_long", "bad_subject", lambda g, k: g.mint(sub="1" * 256)),
    ("sub_number", "bad_subject", lambda g, k: g.mint(sub=1234)),
    ("sub_nul", "bad_subject", lambda g, k: g.mint(sub="1\u00002")),
    ("sub_lone_surrogate", "bad_subject", lambda g, k: g.mint(sub="\ud800")),
    ("hd_not_string", "bad_hosted_domain", lambda g, k: g.mint(hd=["example.com"])),
]
IDS = [c[0] for c in REJECTED]
