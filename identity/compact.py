"""Strict parsing of compact JWS tokens (RFC 7515 §7.1) before any key is looked at.

Every token we check, Google's or our own, goes through `parse` first: size cap, shape, header
rules. Only then is a key chosen by `kid` and the signature verified with joserfc. Claims are
decoded with duplicate names and non-finite numbers refused.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15
from cryptography.hazmat.primitives.hashes import SHA256
from joserfc.jwk import RSAKey

from .errors import UpstreamTokenError

MAX_TOKEN_BYTES = 8192
_SEGMENT = re.compile(r"^[A-Za-z0-9_-]+$")
# Headers that point at keys or change processing rules: a token never chooses its own key, and
# no extension we do not implement may be made critical.
FORBIDDEN_HEADERS = frozenset({"jku", "x5u", "jwk", "x5c", "crit", "b64", "zip"})


@dataclass(frozen=True)
class Compact:
    """A token whose shape and header passed; its signature is not verified yet."""

    raw: str
    header: dict[str, Any]
    payload_segment: str
    signing_input: bytes  # "header.payload", what the signature covers
    signature_segment: str

    @property
    def kid(self) -> str:
        kid: str = self.header["kid"]
        return kid


def fingerprint(token: str) -> str:
    """A short, non-reversible handle for logs: the first 12 hex digits of SHA-256."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()[:12]


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def parse(token: object, *, typ: str | None = None) -> Compact:
    """Check size, shape and header of a compact JWS; raise UpstreamTokenError(reason)."""
    if not isinstance(token, str) or not token:
        raise UpstreamTokenError("malformed")
    # Cap before decoding anything, so a huge token costs nothing.
    if len(token) > MAX_TOKEN_BYTES:
        raise UpstreamTokenError("too_large")
    segments = token.split(".")
    if len(segments) != 3 or not all(_SEGMENT.match(s) for s in segments):
        raise UpstreamTokenError("malformed")
    header = _decode_json(segments[0])
    if not isinstance(header, dict):
        raise UpstreamTokenError("malformed")
    # Exactly RS256: no "none", no HMAC with a public key as secret, no algorithm negotiation.
    if header.get("alg") != "RS256":
        raise UpstreamTokenError("bad_alg")
    if FORBIDDEN_HEADERS.intersection(header):
        raise UpstreamTokenError("forbidden_header")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid or len(kid) > 256:
        raise UpstreamTokenError("missing_kid")
    if typ is not None and header.get("typ") != typ:
        raise UpstreamTokenError("bad_typ")
    return Compact(
        raw=token,
        header=header,
        payload_segment=segments[1],
        signing_input=f"{segments[0]}.{segments[1]}".encode("ascii"),
        signature_segment=segments[2],
    )


def verify(compact: Compact, key: RSAKey) -> dict[str, Any]:
    """Verify the RS256 signature with `key` and return the decoded claims object."""
    signature = compact.signature_segment
    try:
        raw_signature = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
        # RS256 is RSASSA-PKCS1-v1_5 with SHA-256 over "header.payload" (RFC 7518 §3.3). The
        # header was already held to exactly this algorithm by parse(); verifying with the
        # cryptography primitive directly avoids joserfc parsing the token a second time.
        key.public_key.verify(raw_signature, compact.signing_input, PKCS1v15(), SHA256())
    except (InvalidSignature, binascii.Error, ValueError):
        raise UpstreamTokenError("bad_signature") from None
    claims = _decode_json(compact.payload_segment)
    if not isinstance(claims, dict):
        raise UpstreamTokenError("malformed")
    return claims


def _decode_json(segment: str) -> Any:
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
        return json.loads(raw.decode("utf-8"), object_pairs_hook=_unique, parse_constant=_refuse)
    except (binascii.Error, UnicodeDecodeError, ValueError, RecursionError):
        raise UpstreamTokenError("malformed") from None


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Duplicate member names are parsed differently by different libraries: refuse them.
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("duplicate member")
    return result


def _refuse(name: str) -> Any:
    raise ValueError(f"non-finite number {name}")
