"""The verification keys of a JWKS document (RFC 7517), read entry by entry.

A key set is a remote document we do not control: every member of every entry is hostile. An
entry is used only when it is a public signing key we are willing to trust, and an entry that
is anything else — an unknown type, a member of the wrong JSON type, a private key, a weak or
oversized RSA key, something the importer chokes on — is skipped on its own, so one odd entry
never disables the rest of the set (docs/security.md, "Key sets and discovery documents").
"""

from __future__ import annotations

import base64
import binascii
import logging
from typing import Any

from joserfc.jwk import ECKey, OKPKey, RSAKey

from .jws import ALGORITHMS, PublicKey

logger = logging.getLogger("identity.jwks")
MIN_RSA_BITS = 2048
# Verifying with an RSA key costs in proportion to its size squared; nobody signs with more.
MAX_RSA_BITS = 8192
# Every real signing key uses F4; a small or odd exponent only opens doors (RFC 8017 attacks).
RSA_EXPONENT = 65537
_PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "k")
_CURVES = {"EC": ("P-256", "P-384"), "OKP": ("Ed25519", "Ed448")}

# kid -> the keys of that kid, each with the `alg` its entry names (None: any compatible alg).
KeysByKid = dict[str, list[tuple[PublicKey, str | None]]]


class NotAKeySet(ValueError):
    """The document is not a JWKS at all (not an object with a `keys` array)."""


def usable_keys(document: Any) -> KeysByKid:
    """The verification keys of a JWKS document by kid; unusable entries are skipped."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise NotAKeySet("not a key set")
    keys: KeysByKid = {}
    skipped = 0
    for entry in document["keys"]:
        try:
            parsed = _key(entry)
        except Exception:  # whatever one entry does (it is hostile input), the others count
            parsed = None
        if parsed is None:
            skipped += 1
            continue
        keys.setdefault(entry["kid"], []).append(parsed)
    if skipped:
        logger.info("key set entries skipped", extra={"event": {"skipped": skipped}})
    return keys


def _key(entry: Any) -> tuple[PublicKey, str | None] | None:
    if not isinstance(entry, dict):
        return None
    kty, kid, alg = entry.get("kty"), entry.get("kid"), entry.get("alg")
    use = entry.get("use", "sig")
    # Each member is checked for its JSON type first: a list or an object where a string
    # belongs is a skipped entry, not an exception (unhashable in a set lookup).
    if not isinstance(kty, str) or (kty != "RSA" and kty not in _CURVES):
        return None
    if not isinstance(kid, str) or not kid or use != "sig":
        return None
    if alg is not None and (not isinstance(alg, str) or alg not in ALGORITHMS):
        return None
    if any(name in entry for name in _PRIVATE_MEMBERS):
        return None  # a published private key is a provider mistake; never use it
    if kty == "RSA":
        n, e = entry.get("n"), entry.get("e")
        if not isinstance(n, str) or not isinstance(e, str):
            return None
        # Checked before import: a weak, huge or oddly-exponented key is never built at all.
        if not MIN_RSA_BITS <= _integer(n).bit_length() <= MAX_RSA_BITS:
            return None
        if _integer(e) != RSA_EXPONENT:
            return None
        return RSAKey.import_key({"kty": "RSA", "n": n, "e": e}).public_key, alg
    crv = entry.get("crv")
    if not isinstance(crv, str) or crv not in _CURVES[kty]:
        return None
    members = {k: entry[k] for k in ("kty", "crv", "x", "y") if k in entry}
    if not all(isinstance(value, str) for value in members.values()):
        return None
    importer: Any = ECKey if kty == "EC" else OKPKey
    return importer.import_key(members).public_key, alg


def _integer(value: str) -> int:
    """A base64url big-endian unsigned integer; 0 when it is not one."""
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        return 0
    return int.from_bytes(raw, "big")
