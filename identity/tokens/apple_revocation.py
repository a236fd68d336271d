"""Revoking a user's Apple refresh token at Apple when they are deleted or unlink Apple
(docs/signals.md, "Apple token revocation").

Apple authenticates the call with a client secret: an ES256 JWT signed with the team's "Sign in
with Apple" key (IDENTITY_APPLE_TEAM_ID, IDENTITY_APPLE_KEY_ID, IDENTITY_APPLE_PRIVATE_KEY_FILE),
`iss` the team, `sub` the client id the token was issued to, `aud` Apple. The call is never made
inside the user's request: the delete or unlink writes an outbox notice in its own transaction
(`AppleClients` names its client; the token stays sealed in the row) and the delivery worker
makes the call (`AppleRevoker`), retried like every notice (docs/notifications.md).
"""

from __future__ import annotations

import base64
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from identity.clock import Clock
from identity.environment import ConfigError
from identity.settings import Settings

from .provider_tokens import Sealer

logger = logging.getLogger("identity.apple")
APPLE_AUDIENCE = "https://appleid.apple.com"
SECRET_LIFETIME = 300  # seconds: one call's worth (Apple allows up to six months)


@dataclass(frozen=True, slots=True)
class StoredAppleToken:
    """An Apple account's stored tokens, sealed as they are in `accounts`."""

    refresh_token: str
    id_token: str | None = None  # its `aud` names the client the token was issued to


def load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """The team's .p8 key (PKCS#8 PEM, P-256); ConfigError naming the variable otherwise."""
    where = f"IDENTITY_APPLE_PRIVATE_KEY_FILE: {path}"
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as error:
        raise ConfigError(f"{where}: cannot be read ({type(error).__name__})") from None
    except (ValueError, TypeError):
        raise ConfigError(f"{where}: not a PKCS#8 PEM private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise ConfigError(f"{where}: must be a P-256 (ES256) key")
    return key


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def client_secret(
    *, team_id: str, key_id: str, key: ec.EllipticCurvePrivateKey, client_id: str, now: float
) -> str:
    """The ES256 client secret Apple's /auth/revoke authenticates a client with."""
    header = {"alg": "ES256", "kid": key_id}
    issued = int(now)
    claims = {
        "iss": team_id,
        "iat": issued,
        "exp": issued + SECRET_LIFETIME,
        "aud": APPLE_AUDIENCE,
        "sub": client_id,
    }
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    r, s = decode_dss_signature(key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    return f"{signing_input}.{_b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


@dataclass(frozen=True, slots=True)
class Answer:
    """How one call went: `done` True when Apple revoked the token, False when it refused it for
    good (a 400: retrying cannot help), None when it may work later (a 5xx, 429, no answer)."""

    done: bool | None
    status: int | None = None
    error: str | None = None  # a class of error, never a response body


@dataclass(frozen=True, slots=True)
class AppleClients:
    """What writing a revocation needs: the client a stored token was issued to."""

    sealer: Sealer
    client_ids: tuple[str, ...]

    def client_of(self, item: StoredAppleToken) -> str:
        """Its id_token's `aud` when stored and one of ours, else the first configured Apple
        client id. Only the id_token is opened here; the refresh token stays sealed."""
        if item.id_token is not None:
            try:
                payload = self.sealer.open(item.id_token).split(".")[1]
                aud = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
                aud = aud.get("aud") if isinstance(aud, dict) else None
            except Exception:  # our own stored data, unreadable: fall back to the default
                aud = None
            if isinstance(aud, str) and aud in self.client_ids:
                return aud
        return self.client_ids[0]


class AppleRevoker:
    """One revocation call at Apple, for the delivery worker (accounts/senders.py)."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        team_id: str,
        key_id: str,
        key: ec.EllipticCurvePrivateKey,
        url: str,
        sealer: Sealer,
        clock: Clock = time.time,
    ) -> None:
        self._http = http
        self._team_id = team_id
        self._key_id = key_id
        self._key = key
        self._url = url
        self._sealer = sealer
        self._clock = clock

    async def revoke(self, sealed: str, client_id: str) -> Answer:
        """Open the sealed refresh token (only now, at send time) and revoke it at Apple."""
        try:
            token = self._sealer.open(sealed)
        except Exception:  # sealed under a key no longer configured: nothing can be sent
            logger.warning("apple revocation skipped: the stored token cannot be opened")
            return Answer(False, error="unreadable")
        secret = client_secret(
            team_id=self._team_id,
            key_id=self._key_id,
            key=self._key,
            client_id=client_id,
            now=self._clock(),
        )
        form = {
            "client_id": client_id,
            "client_secret": secret,
            "token": token,
            "token_type_hint": "refresh_token",
        }
        try:
            response = await self._http.post(self._url, data=form)
        except httpx.HTTPError as error:
            name = type(error).__name__
            logger.warning("apple revocation failed", extra={"event": {"error": name}})
            return Answer(None, error=name)
        status = response.status_code
        if status == 200:
            logger.info("apple revocation", extra={"event": {"revoked": True}})
            return Answer(True, status)
        if status == 429 or status >= 500:
            return Answer(None, status, error="status")
        logger.warning("apple refused the revocation", extra={"event": {"status": status}})
        return Answer(False, status, error="refused")


def clients(settings: Settings, sealer: Sealer) -> AppleClients | None:
    """What writing revocations needs, when Apple revocation is configured and provider tokens
    are stored (without both, there is nothing to revoke)."""
    if not (settings.apple_revocation and sealer.enabled):
        return None
    return AppleClients(sealer, settings.apple_client_ids or ("",))


def from_settings(
    settings: Settings, http: httpx.AsyncClient, sealer: Sealer, *, clock: Clock = time.time
) -> AppleRevoker | None:
    """The sender, when the team's key is configured (and tokens are stored)."""
    if not (settings.apple_revocation and settings.apple_private_key_file and sealer.enabled):
        return None
    return AppleRevoker(
        http,
        team_id=settings.apple_team_id or "",
        key_id=settings.apple_key_id or "",
        key=load_key(settings.apple_private_key_file),
        url=settings.apple_revoke_url,
        sealer=sealer,
        clock=clock,
    )
