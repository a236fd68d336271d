"""Strict compact JWS (RFC 7515 §7.1), for every token we check: a provider's or our own.

`parse` runs before any key is looked at: a size cap, exactly three segments, each in canonical
unpadded base64url (decoding and re-encoding gives back the same text, so one token has one
spelling), a JSON header without duplicate names, an allowed `alg`, a `kid`, and none of the
headers that would let a token choose its own key or processing rules. `verify` then checks the
signature with `cryptography` directly, holding the signature to its algorithm's exact length.

`replay_key` is what the single-use guard remembers: SHA-256 over the signing input and the
decoded signature (ECDSA's `s` folded to its low form), never over the raw text, so no re-spelling
of one token can pass twice (docs/security.md, "Single use").
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from identity import providers_file
from identity.errors import TokenRejected

MAX_TOKEN_BYTES = 8192
_SEGMENT = re.compile(r"[A-Za-z0-9_-]+")
# Headers that point at keys or change processing rules: a token never chooses its own key, and
# no extension we do not implement may be made critical.
FORBIDDEN_HEADERS = frozenset({"jku", "x5u", "jwk", "x5c", "crit", "b64", "zip"})
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "256": hashes.SHA256,
    "384": hashes.SHA384,
    "512": hashes.SHA512,
}
_CURVES = {"ES256": (ec.SECP256R1, 32), "ES384": (ec.SECP384R1, 48)}
_ORDERS = {
    "ES256": 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551,
    "ES384": int(
        "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF581A0DB248B0A77AECEC196ACCC52973",
        16,
    ),
}
# Every algorithm we can verify, which is what a provider may be configured with (the list lives
# with the configuration, the layer below); `none` and HMAC are absent on purpose (no shared
# secrets, and a public key must never become an HMAC secret).
ALGORITHMS = frozenset(providers_file.ALGORITHMS)

PublicKey = (
    rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | ed448.Ed448PublicKey
)


@dataclass(frozen=True, slots=True)
class Compact:
    """A token whose shape and header passed; its signature is not verified yet."""

    header: dict[str, Any]
    alg: str
    kid: str
    payload: bytes  # decoded, not yet trusted
    signing_input: bytes  # "header.payload", what the signature covers
    signature: bytes  # decoded

    def claims(self) -> dict[str, Any]:
        """The payload as a JSON object, strictly decoded (still unverified until `verify`)."""
        claims = strict_json(self.payload)
        if not isinstance(claims, dict):
            raise TokenRejected("malformed")
        return claims


def fingerprint(token: str) -> str:
    """A short, non-reversible handle for logs: the first 12 hex digits of SHA-256."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()[:12]


def decode_segment(segment: str) -> bytes:
    """Canonical unpadded base64url only: no padding, whitespace, newline or unused bits set."""
    # fullmatch, not match with `$`: `$` also matches before a trailing newline.
    if not _SEGMENT.fullmatch(segment) or len(segment) % 4 == 1:
        raise TokenRejected("malformed")
    raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != segment:
        raise TokenRejected("non_canonical")  # unused bits set in the last character
    return raw


def encode_segment(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def parse(token: object, *, typ: str | None = None) -> Compact:
    """Check size, shape and header of a compact JWS; raise TokenRejected(reason)."""
    if not isinstance(token, str) or not token:
        raise TokenRejected("malformed")
    # Cap before decoding anything, so a huge token costs nothing.
    if len(token) > MAX_TOKEN_BYTES:
        raise TokenRejected("too_large")
    segments = token.split(".")
    if len(segments) != 3:
        raise TokenRejected("malformed")
    header_segment, payload_segment, _ = segments
    # The shape first: three canonical segments, whatever they hold.
    header_bytes, payload, signature = (decode_segment(s) for s in segments)
    header = strict_json(header_bytes)
    if not isinstance(header, dict):
        raise TokenRejected("malformed")
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in ALGORITHMS:
        raise TokenRejected("bad_alg")
    if FORBIDDEN_HEADERS.intersection(header):
        raise TokenRejected("forbidden_header")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid or len(kid) > 256:
        raise TokenRejected("missing_kid")
    if typ is not None and header.get("typ") != typ:
        raise TokenRejected("bad_typ")
    return Compact(
        header=header,
        alg=alg,
        kid=kid,
        payload=payload,
        signing_input=f"{header_segment}.{payload_segment}".encode("ascii"),
        signature=signature,
    )


def compatible(alg: str, key: PublicKey) -> bool:
    """Whether `key` is of the type and curve that `alg` needs."""
    if alg[:2] in ("RS", "PS"):
        return isinstance(key, rsa.RSAPublicKey)
    if alg in _CURVES:
        curve, _ = _CURVES[alg]
        return isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, curve)
    return isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey)


def verify(compact: Compact, key: PublicKey) -> None:
    """Verify the signature over the signing input with `key`; TokenRejected when it fails."""
    alg, signature, data = compact.alg, compact.signature, compact.signing_input
    if not compatible(alg, key):
        raise TokenRejected("bad_key_type")
    try:
        if isinstance(key, rsa.RSAPublicKey):
            # A signature is exactly as long as the modulus: a shorter one is another spelling.
            if len(signature) != (key.key_size + 7) // 8:
                raise TokenRejected("bad_signature")
            digest = _HASHES[alg[2:]]()
            scheme: padding.AsymmetricPadding = (
                padding.PKCS1v15()
                if alg.startswith("RS")
                # RFC 7518 §3.5: MGF1 with the same hash, salt as long as the hash.
                else padding.PSS(mgf=padding.MGF1(digest), salt_length=digest.digest_size)
            )
            key.verify(signature, data, scheme, digest)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            size = _CURVES[alg][1]
            if len(signature) != 2 * size:
                raise TokenRejected("bad_signature")
            r = int.from_bytes(signature[:size], "big")
            s = int.from_bytes(signature[size:], "big")
            digest = _HASHES[alg[2:]]()
            key.verify(encode_dss_signature(r, s), data, ec.ECDSA(digest))
        else:
            key.verify(signature, data)
    except InvalidSignature:
        raise TokenRejected("bad_signature") from None


def replay_key(compact: Compact) -> str:
    """The single-use key: the same for every accepted spelling of one signed token."""
    signature = compact.signature
    if compact.alg in _ORDERS:
        # ECDSA signatures are malleable: (r, s) and (r, n - s) both verify. Fold to low s.
        size = _CURVES[compact.alg][1]
        order = _ORDERS[compact.alg]
        s = int.from_bytes(signature[size:], "big")
        signature = signature[:size] + min(s, order - s).to_bytes(size, "big")
    return hashlib.sha256(compact.signing_input + b"." + signature).hexdigest()


def strict_json(raw: bytes) -> Any:
    """JSON read as strictly as a token's header and payload: UTF-8, no duplicate member, no
    NaN or Infinity; anything else is `TokenRejected("malformed")`."""
    try:
        return json.loads(raw.decode("utf-8"), object_pairs_hook=_unique, parse_constant=_refuse)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise TokenRejected("malformed") from None


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Duplicate member names are read differently by different libraries: refuse them.
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("duplicate member")
    return result


def _refuse(name: str) -> Any:
    raise ValueError(f"non-finite number {name}")
