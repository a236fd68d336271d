"""The strict compact parser: one spelling per token, one replay key per signed token."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from joserfc.jwk import ECKey, RSAKey

from identity.errors import TokenRejected
from identity.tokens import jws

from .fakes import b64, sign

RSA = RSAKey.generate_key(2048, private=True)
RSA_3072 = RSAKey.generate_key(3072, private=True)
EC = ECKey.generate_key("P-256", private=True)
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def token(
    header: dict[str, Any], claims: dict[str, Any], key: Any = RSA, alg: str = "RS256"
) -> str:
    signing_input = (
        b64(json.dumps(header).encode()) + "." + b64(json.dumps(claims).encode())
    ).encode()
    return signing_input.decode() + "." + b64(sign(alg, key, signing_input))


def accepted(text: str, key: Any) -> jws.Compact | None:
    """The parsed token when it parses and verifies with `key`, else None."""
    try:
        compact = jws.parse(text)
        jws.verify(compact, key.public_key)
    except TokenRejected:
        return None
    return compact


def canonical(text: str) -> bool:
    return (
        all(
            segment
            and base64.urlsafe_b64encode(
                base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
            )
            .rstrip(b"=")
            .decode()
            == segment
            for segment in text.split(".")
        )
        and text.count(".") == 2
    )


# Re-spellings an attacker can make without the key: every one must be refused, or give the
# same replay key as the original.
def _pad(t: str, i: int) -> str:
    parts = t.split(".")
    parts[i % 3] += "=" * (1 + i % 2)
    return ".".join(parts)


def _flip_unused_bits(t: str, i: int) -> str:
    head, sig = t.rsplit(".", 1)
    value = ALPHABET.index(sig[-1])
    return f"{head}.{sig[:-1]}{ALPHABET[value ^ (1 + i % 15)]}"


def _whitespace(t: str, i: int) -> str:
    where = i % len(t)
    return t[:where] + " \n\t\r"[i % 4] + t[where:]


def _std_alphabet(t: str, i: int) -> str:
    return t.replace("-", "+").replace("_", "/")


def _strip_leading_zero(t: str, i: int) -> str:
    head, sig = t.rsplit(".", 1)
    raw = base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4))
    stripped = raw.lstrip(bytes(1)) or raw
    return f"{head}.{b64(stripped)}"


def _trailing(t: str, i: int) -> str:
    return t + ["\n", "\r\n", ".", "=", " "][i % 5]


RESPELLINGS = [_pad, _flip_unused_bits, _whitespace, _std_alphabet, _strip_leading_zero, _trailing]

claims_strategy = st.dictionaries(
    st.text(min_size=1, max_size=8),
    st.one_of(st.integers(), st.text(max_size=20), st.booleans(), st.none()),
    max_size=6,
)
headers_strategy = st.fixed_dictionaries(
    {"alg": st.just("RS256"), "kid": st.text(min_size=1, max_size=10)},
    optional={"typ": st.sampled_from(["JWT", "at+jwt"]), "cty": st.text(max_size=5)},
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    header=headers_strategy,
    claims=claims_strategy,
    how=st.sampled_from(RESPELLINGS),
    i=st.integers(0, 10_000),
)
def test_respelled_tokens_are_refused_or_the_same_token(
    header: dict[str, Any], claims: dict[str, Any], how: Any, i: int
) -> None:
    original = token(header, claims)
    first = accepted(original, RSA)
    assert first is not None
    variant = how(original, i)
    second = accepted(variant, RSA)
    if second is not None:
        assert canonical(variant)
        assert jws.replay_key(second) == jws.replay_key(first)


@settings(max_examples=200, deadline=None)
@given(garbage=st.text(alphabet=ALPHABET + ".=+/ \n", max_size=600))
def test_every_accepted_text_is_canonical(garbage: str) -> None:
    try:
        jws.parse(garbage)
    except TokenRejected:
        return
    assert canonical(garbage)


@settings(max_examples=40, deadline=None)
@given(claims=claims_strategy)
def test_ecdsa_high_s_twin_has_the_same_replay_key(claims: dict[str, Any]) -> None:
    """(r, s) and (r, n - s) both verify: the replay key must not tell them apart."""
    original = token({"alg": "ES256", "kid": "k"}, claims, key=EC, alg="ES256")
    head, sig = original.rsplit(".", 1)
    raw = base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4))
    r, s = int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")
    twin = f"{head}.{b64(r.to_bytes(32, 'big') + (P256_ORDER - s).to_bytes(32, 'big'))}"
    first, second = accepted(original, EC), accepted(twin, EC)
    assert first is not None and second is not None
    assert jws.replay_key(first) == jws.replay_key(second)
    assert decode_dss_signature(encode_dss_signature(r, s))  # the twin is a real signature


def test_a_3072_bit_signature_has_no_second_spelling_with_a_newline() -> None:
    # 384 bytes of signature are exactly 512 characters: no unused bits, and a trailing newline
    # was the second spelling once.
    original = token({"alg": "RS256", "kid": "k"}, {"sub": "x"}, key=RSA_3072)
    assert accepted(original, RSA_3072) is not None
    assert accepted(original + "\n", RSA_3072) is None


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (None, "malformed"),
        (7, "malformed"),
        ("", "malformed"),
        ("a.b", "malformed"),
        ("a" * 9000, "too_large"),
        (b64(b'{"alg":"RS256","kid":"k"}') + ".e30.a", "malformed"),  # one character: 6 bits
        (b64(b'{"alg":"RS256"}') + ".e30.AAAA", "missing_kid"),
        (b64(b'{"alg":"HS256","kid":"k"}') + ".e30.AAAA", "bad_alg"),
        (b64(b'{"alg":"RS256","kid":"k","zip":"DEF"}') + ".e30.AAAA", "forbidden_header"),
        (b64(b'{"alg":"RS256","kid":"k","typ":"JWT"}') + ".e30.AAAA", "bad_typ"),
    ],
)
def test_parse_refusals(text: object, reason: str) -> None:
    with pytest.raises(TokenRejected) as caught:
        jws.parse(text, typ="at+jwt")
    assert caught.value.reason == reason


def test_key_type_must_fit_the_algorithm() -> None:
    rsa_token = jws.parse(token({"alg": "RS256", "kid": "k"}, {}))
    with pytest.raises(TokenRejected) as caught:
        jws.verify(rsa_token, EC.public_key)
    assert caught.value.reason == "bad_key_type"


def test_fingerprint_is_short_and_stable() -> None:
    assert jws.fingerprint("abc") == jws.fingerprint("abc") != jws.fingerprint("abd")
    assert len(jws.fingerprint("abc")) == 12
    assert jws.fingerprint("\ud800")  # never raises, whatever the text


@pytest.mark.parametrize("text", ["...", "..x", "x..", "=.=.=", "\x00.\x00.\x00", "é.é.é"])
def test_garbage_is_refused_and_nothing_else_is_raised(text: str) -> None:
    with pytest.raises(TokenRejected):
        jws.parse(text)
