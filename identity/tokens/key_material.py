"""What both key stores hand the signer: the keys, their schedule, and the seam between them.

A key's state is derived from its creation (or stored activation) time, the publish lead and
the longest lifetime of a token it signs (docs/operations.md, "Keys"):

    next      published, not signing: its activation is still ahead
    active    signing: the newest key whose activation has passed (the very first key signs at once)
    retiring  published, not signing: superseded, until every token it signed has expired
    expired   not published; pruned

Two stores feed it through `KeySource`: the key directory (`key_directory.KeyStore`) and the
database (`key_database.DatabaseKeys`). `signing_keys.KeyManager` reads either the same way.
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import orjson
from cryptography.hazmat.primitives.asymmetric import rsa
from joserfc.jwk import RSAKey

MIN_BITS = 2048


class KeyFileError(Exception):
    """A key or its store is unusable; the message names the file, row or variable."""


@dataclass(frozen=True)
class SigningKey:
    kid: str  # RFC 7638 thumbprint
    created: float
    private: rsa.RSAPrivateKey  # parsed once: a PEM parse costs milliseconds
    public_jwk: dict[str, str]
    # Stored by the database store; None: created + the publish lead (the first key: created).
    activates: float | None = None

    @property
    def public(self) -> rsa.RSAPublicKey:
        return self.private.public_key()

    def __repr__(self) -> str:
        # Never the private key, whatever prints or logs a key object.
        return f"{type(self).__name__}(kid={self.kid!r}, created={self.created!r})"


@dataclass(frozen=True, repr=False)
class FileKey(SigningKey):
    """A key of the key directory: its file."""

    path: Path = field(kw_only=True)


def new_private_key(bits: int = MIN_BITS) -> rsa.RSAPrivateKey:
    if bits < MIN_BITS:
        raise KeyFileError(f"RSA keys must have at least {MIN_BITS} bits")
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def signing_key(
    private: object,
    *,
    created: float,
    where: str,
    activates: float | None = None,
) -> SigningKey:
    """The key object of a parsed private key, checked; `where` names it in errors."""
    if not isinstance(private, rsa.RSAPrivateKey):
        raise KeyFileError(f"{where}: not an RSA key")
    if private.key_size < MIN_BITS:
        raise KeyFileError(f"{where}: RSA key of {private.key_size} bits (minimum {MIN_BITS})")
    jwk = RSAKey.import_key(private)
    public = {"kty": "RSA", "n": str(jwk["n"]), "e": str(jwk["e"])}
    kid = jwk.thumbprint()
    return SigningKey(
        kid=kid,
        created=created,
        private=private,
        public_jwk={**public, "kid": kid, "alg": "RS256", "use": "sig"},
        activates=activates,
    )


class KeySource(Protocol):
    """Where keys come from. `signature` and `load_usable` answer from what the source holds
    at hand (the directory itself; the rows the last `fetch` brought); `fetch` brings a
    database's rows into reach and is a no-op for a directory."""

    def describe(self) -> str: ...

    def signature(self) -> Hashable: ...

    def load_usable(self) -> tuple[Sequence[SigningKey], Sequence[KeyFileError]]: ...

    async def fetch(self) -> None: ...


@dataclass(frozen=True)
class KeyView:
    """What is true of the keys from now until `valid_until`: computed once, not per request."""

    active: SigningKey
    published: dict[str, rsa.RSAPublicKey]
    jwks: bytes
    etag: str
    valid_until: float


@dataclass(frozen=True)
class KeyState:
    key: SigningKey
    state: str
    activates: float
    retires: float | None


class KeyRing:
    """Keys with their schedule; immutable, rebuilt on reload."""

    def __init__(self, keys: Sequence[SigningKey], *, lead: float, token_lifetime: float) -> None:
        self.keys = sorted(keys, key=lambda k: (k.created, k.kid))
        self._lead = lead
        self._lifetime = token_lifetime

    def schedule(self, now: float) -> list[KeyState]:
        # Activation times rise with creation order, so key i is superseded by key i + 1.
        activations = self._activations()
        active = self._active_index(activations, now)
        states: list[KeyState] = []
        for i, key in enumerate(self.keys):
            retires = activations[i + 1] + self._lifetime if i + 1 < len(self.keys) else None
            if i == active:
                state = "active"
            elif i > active:
                state = "next"
            elif retires is not None and now < retires:
                state = "retiring"
            else:
                state = "expired"
            states.append(KeyState(key, state, activations[i], retires))
        return states

    def view(self, now: float) -> KeyView:
        if not self.keys:
            raise KeyFileError("no signing key")
        schedule = self.schedule(now)
        live = [s.key for s in schedule if s.state != "expired"]
        jwks = orjson.dumps({"keys": [k.public_jwk for k in live]})
        boundaries = [t for s in schedule for t in (s.activates, s.retires) if t and t > now]
        return KeyView(
            active=next(s.key for s in schedule if s.state == "active"),
            published={k.kid: k.public for k in live},
            jwks=jwks,
            etag='"' + hashlib.sha256(jwks).hexdigest()[:32] + '"',
            valid_until=min(boundaries, default=float("inf")),
        )

    def _activations(self) -> list[float]:
        # The very first key signs at once: no cache anywhere can hold an older set.
        return [
            k.activates
            if k.activates is not None
            else (k.created if i == 0 else k.created + self._lead)
            for i, k in enumerate(self.keys)
        ]

    @staticmethod
    def _active_index(activations: list[float], now: float) -> int:
        ready = [i for i, a in enumerate(activations) if a <= now]
        # Before any key is ready (a clock set back), the oldest key keeps signing.
        return ready[-1] if ready else 0
