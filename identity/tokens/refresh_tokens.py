"""Refresh token values: random, stored only as hashes; a successor sealed under its parent.

A refresh token is 256 bits from `secrets`; the database holds its SHA-256 only. Within the
reuse interval the parent must yield the same successor again, so the successor is kept sealed:
AES-256-GCM under a key derived from the parent with HKDF-SHA256. The
parent exists only in the client's hands, so a copy of the database opens nothing
(docs/security.md, "Refresh tokens").
"""

from __future__ import annotations

import hashlib
import os
import secrets

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_INFO = b"identity refresh-token successor v1"


def new() -> tuple[str, str]:
    """A fresh refresh token and the hash that is stored instead."""
    token = secrets.token_urlsafe(32)
    return token, digest(token)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def _key(parent: str) -> AESGCM:
    hkdf = HKDF(algorithm=SHA256(), length=32, salt=None, info=_INFO)
    return AESGCM(hkdf.derive(parent.encode("utf-8", "surrogatepass")))


def seal(successor: str, *, parent: str) -> bytes:
    nonce = os.urandom(12)
    return nonce + _key(parent).encrypt(nonce, successor.encode(), None)


def unseal(sealed: bytes, *, parent: str) -> str | None:
    """The successor, or None when `parent` is not the token it was sealed under."""
    try:
        return _key(parent).decrypt(sealed[:12], sealed[12:], None).decode()
    except (InvalidTag, ValueError, UnicodeDecodeError):
        return None
