"""Stored provider tokens: their encryption (IDENTITY_TOKEN_ENCRYPTION_KEY), and the sealed
set a sign-in stores.

Fernet is authenticated encryption (AES-128-CBC with HMAC-SHA256) from `cryptography`;
MultiFernet takes several keys, newest first: it encrypts with the first and decrypts with any,
so keys rotate by prepending a new one. Without keys, provider tokens are not stored at all.
"""

from __future__ import annotations

from dataclasses import astuple, dataclass

from cryptography.fernet import Fernet, MultiFernet


class Sealer:
    def __init__(self, keys: tuple[str, ...]) -> None:
        self._fernet = MultiFernet([Fernet(k) for k in keys]) if keys else None

    @property
    def enabled(self) -> bool:
        return self._fernet is not None

    def seal(self, value: str | None) -> str | None:
        """The encrypted value, or None when there is nothing to store (or no key)."""
        if value is None or self._fernet is None:
            return None
        return self._fernet.encrypt(value.encode()).decode()

    def open(self, value: str) -> str:
        if self._fernet is None:
            raise ValueError("no encryption key configured")
        return self._fernet.decrypt(value.encode()).decode()


@dataclass(frozen=True, slots=True)
class ProviderTokens:
    """Provider tokens from the callback, already sealed; None leaves the stored value."""

    access_token: str | None = None
    refresh_token: str | None = None
    id_token: str | None = None
    expires_at: int | None = None
    token_type: str | None = None
    scope: str | None = None
    session_state: str | None = None

    def given(self) -> bool:
        return any(value is not None for value in astuple(self))
