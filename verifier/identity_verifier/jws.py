"""Strict compact JWS (RFC 7515 §7.1) for identity's access tokens: RS256, `typ: at+jwt`, only.

The same rules the service holds every token to (its `identity/tokens/jws.py` and `claims.py`;
docs/verifying.md), written again with `cryptography` alone so that this distribution needs no
JOSE library: a size cap before anything is decoded, exactly three segments, each in canonical
unpadded base64url (one token, one spelling), a JSON header without duplicate names or
non-finite numbers, `alg` exactly `RS256` (the allow-list: never `none`, never HMAC), `typ`
exactly `at+jwt`, a `kid`, and none of the headers that would let a token choose its own key or
processing rules. The signature must be exactly as long as the key's modulus.

Then the claims: `iss` by exact match, `aud` holding one of ours, `exp` and `iat` JSON integers
within 0..2^53, a lifetime of at most a day, the leeway around now, `nbf` when present, a
printable `sub`, and the strings `sid`, `client_id` and `jti`.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

ALGORITHM = "RS256"
TYPE = "at+jwt"
MAX_TOKEN_BYTES = 8192
MAX_KID_LENGTH = 256
MAX_SUBJECT_LENGTH = 255
# Times are JSON integers; past 2^53 (a double's exact integers) or below 0 a time is nonsense.
MAX_TIME = 2**53
# No access token lives longer than a day: a longer one is a mistake or a forgery meant to
# outlive every key rotation.
MAX_LIFETIME = 86_400
_SEGMENT = re.compile(r"[A-Za-z0-9_-]+")
# Headers that point at keys or change processing rules: a token never chooses its own key, and
# no extension we do not implement may be made critical.
FORBIDDEN_HEADERS = frozenset({"jku", "x5u", "jwk", "x5c", "crit", "b64", "zip"})
_STRINGS = ("sid", "client_id", "jti")


class Rejected(Exception):
    """The token broke a rule; `reason` names it (the service's reasons, docs/api.md)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class AccessClaims:
    """Claims of one of identity's access tokens that passed every check."""

    subject: str
    session_id: str
    client_id: str
    expires_at: int
    issued_at: int
    token_id: str
    raw: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Compact:
    """A token whose shape and header passed; its signature is not verified yet."""

    kid: str
    payload: bytes  # decoded, not yet trusted
    signing_input: bytes  # "header.payload", what the signature covers
    signature: bytes  # decoded


def parse(token: object) -> Compact:
    """Check size, shape and header; Rejected(reason) otherwise."""
    if not isinstance(token, str) or not token:
        raise Rejected("malformed")
    # Cap before decoding anything, so a huge token costs nothing.
    if len(token) > MAX_TOKEN_BYTES:
        raise Rejected("too_large")
    segments = token.split(".")
    if len(segments) != 3:
        raise Rejected("malformed")
    header_bytes, payload, signature = (_decode(segment) for segment in segments)
    header = _json(header_bytes)
    if not isinstance(header, dict):
        raise Rejected("malformed")
    if header.get("alg") != ALGORITHM:
        raise Rejected("bad_alg")
    if FORBIDDEN_HEADERS.intersection(header):
        raise Rejected("forbidden_header")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid or len(kid) > MAX_KID_LENGTH:
        raise Rejected("missing_kid")
    if header.get("typ") != TYPE:
        raise Rejected("bad_typ")
    return Compact(
        kid=kid,
        payload=payload,
        signing_input=f"{segments[0]}.{segments[1]}".encode("ascii"),
        signature=signature,
    )


def verify(compact: Compact, key: rsa.RSAPublicKey) -> dict[str, Any]:
    """The payload as a JSON object once the RS256 signature over it holds; Rejected if not."""
    # A signature is exactly as long as the modulus: a shorter one is another spelling.
    if len(compact.signature) != (key.key_size + 7) // 8:
        raise Rejected("bad_signature")
    try:
        key.verify(compact.signature, compact.signing_input, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        raise Rejected("bad_signature") from None
    claims = _json(compact.payload)
    if not isinstance(claims, dict):
        raise Rejected("malformed")
    return claims


@dataclass(frozen=True, slots=True)
class Rules:
    issuer: str
    audiences: frozenset[str]
    leeway: int

    def accept(self, claims: dict[str, Any], now: float) -> AccessClaims:
        """The claims of a signature-checked access token, held to these rules."""
        # Exact string match: no normalisation of case, trailing slashes or scheme.
        if claims.get("iss") != self.issuer:
            raise Rejected("bad_issuer")
        aud = claims.get("aud")
        members = [aud] if isinstance(aud, str) else aud
        if not (
            isinstance(members, list)
            and members
            and all(isinstance(member, str) for member in members)
            and any(member in self.audiences for member in members)
        ):
            raise Rejected("bad_audience")
        exp, iat = _time(claims, "exp"), _time(claims, "iat")
        if exp - iat > MAX_LIFETIME:
            raise Rejected("lifetime_too_long")
        if exp + self.leeway <= now:
            raise Rejected("expired")
        if iat - self.leeway > now:
            raise Rejected("issued_in_future")
        if "nbf" in claims and _time(claims, "nbf") - self.leeway > now:
            raise Rejected("not_yet_valid")
        sub = claims.get("sub")
        # Printable text only: a NUL or a lone surrogate is nobody's subject.
        if not isinstance(sub, str) or not 0 < len(sub) <= MAX_SUBJECT_LENGTH:
            raise Rejected("bad_subject")
        if not sub.isprintable():
            raise Rejected("bad_subject")
        values = [claims.get(name) for name in _STRINGS]
        if not all(isinstance(value, str) and value for value in values):
            raise Rejected("malformed")
        sid, client_id, jti = (str(value) for value in values)
        return AccessClaims(sub, sid, client_id, exp, iat, jti, claims)


def _decode(segment: str) -> bytes:
    """Canonical unpadded base64url only: no padding, whitespace, newline or unused bits set."""
    # fullmatch, not match with `$`: `$` also matches before a trailing newline.
    if not _SEGMENT.fullmatch(segment) or len(segment) % 4 == 1:
        raise Rejected("malformed")
    raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != segment:
        raise Rejected("non_canonical")  # unused bits set in the last character
    return raw


def _time(claims: dict[str, Any], name: str) -> int:
    if name not in claims:
        raise Rejected(f"missing_{name}")
    value = claims[name]
    # A JSON integer only: bool is an int in Python, and a fraction or a string is not a time.
    if type(value) is not int or not 0 <= value <= MAX_TIME:
        raise Rejected(f"bad_{name}")
    return value


def loads(raw: bytes) -> Any:
    """Strict JSON: UTF-8, no duplicate member names, no NaN or Infinity; ValueError if not."""
    try:
        return json.loads(raw.decode("utf-8"), object_pairs_hook=_unique, parse_constant=_refuse)
    except (UnicodeDecodeError, RecursionError) as error:
        raise ValueError(type(error).__name__) from None


def _json(raw: bytes) -> Any:
    try:
        return loads(raw)
    except ValueError:
        raise Rejected("malformed") from None


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Duplicate member names are read differently by different libraries: refuse them.
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("duplicate member")
    return result


def _refuse(name: str) -> Any:
    raise ValueError(f"non-finite number {name}")
