"""Revoking a user's Apple refresh token at Apple when they are deleted or unlink Apple
(docs/signals.md, "Apple token revocation").

Apple authenticates the call with a client secret: an ES256 JWT signed with the team's "Sign in
with Apple" key (IDENTITY_APPLE_TEAM_ID, IDENTITY_APPLE_KEY_ID, IDENTITY_APPLE_PRIVATE_KEY_FILE),
`iss` the team, `sub` the client id the token was issued to, `aud` Apple. The call is never made
inside the user's request: `submit` hands the sealed tokens to a background task that retries
on failure. Not yet an outbox delivery kind: a revocation still pending when the process stops
is not made (docs/signals.md).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import Sequence
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
# Seconds before each further attempt: a minute of quick retries, then slower ones.
RETRY_DELAYS = (1.0, 5.0, 30.0, 120.0, 600.0)


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


class AppleRevoker:
    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        team_id: str,
        key_id: str,
        key: ec.EllipticCurvePrivateKey,
        client_ids: Sequence[str],
        url: str,
        sealer: Sealer,
        clock: Clock = time.time,
        delays: Sequence[float] = RETRY_DELAYS,
    ) -> None:
        self._http = http
        self._team_id = team_id
        self._key_id = key_id
        self._key = key
        self._client_ids = tuple(client_ids)
        self._url = url
        self._sealer = sealer
        self._clock = clock
        self._delays = tuple(delays)
        self._tasks: set[asyncio.Task[bool]] = set()

    async def revoke(self, token: str, client_id: str) -> bool | None:
        """One call: True when Apple revoked it, False when Apple refused it for good (a 400:
        retrying cannot help), None when it may work later (a 5xx, 429 or no answer)."""
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
            logger.warning(
                "apple revocation failed", extra={"event": {"error": type(error).__name__}}
            )
            return None
        if response.status_code == 200:
            return True
        if response.status_code == 429 or response.status_code >= 500:
            return None
        logger.warning(
            "apple refused the revocation", extra={"event": {"status": response.status_code}}
        )
        return False

    def submit(self, stored: Sequence[StoredAppleToken]) -> None:
        """Revoke these in the background, retried; never awaited by the request."""
        for item in stored:
            task = asyncio.get_running_loop().create_task(self._with_retries(item))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Wait for the revocations under way (the CLI, before it exits)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _with_retries(self, item: StoredAppleToken) -> bool:
        try:
            token = self._sealer.open(item.refresh_token)
        except Exception:  # a token sealed under a key no longer configured: nothing to send
            logger.warning("apple revocation skipped: the stored token cannot be opened")
            return False
        client_id = self._client_of(item)
        for delay in (0.0, *self._delays):
            await asyncio.sleep(delay)
            done = await self.revoke(token, client_id)
            if done is not None:
                logger.info("apple revocation", extra={"event": {"revoked": done}})
                return done
        logger.error("apple revocation gave up after retries")
        return False

    def _client_of(self, item: StoredAppleToken) -> str:
        """The client the token was issued to: its id_token's `aud` when stored and one of
        ours, else the first configured Apple client id."""
        if item.id_token is not None:
            try:
                payload = self._sealer.open(item.id_token).split(".")[1]
                aud = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
                aud = aud.get("aud") if isinstance(aud, dict) else None
            except Exception:  # our own stored data, unreadable: fall back to the default
                aud = None
            if isinstance(aud, str) and aud in self._client_ids:
                return aud
        return self._client_ids[0]


def from_settings(
    settings: Settings,
    http: httpx.AsyncClient,
    sealer: Sealer,
    *,
    clock: Clock = time.time,
    delays: Sequence[float] = RETRY_DELAYS,
) -> AppleRevoker | None:
    """Apple token revocation when the team's key is configured (and tokens are stored)."""
    if not (settings.apple_revocation and settings.apple_private_key_file and sealer.enabled):
        return None
    return AppleRevoker(
        http,
        team_id=settings.apple_team_id or "",
        key_id=settings.apple_key_id or "",
        key=load_key(settings.apple_private_key_file),
        client_ids=settings.apple_client_ids or ("",),
        url=settings.apple_revoke_url,
        sealer=sealer,
        clock=clock,
        delays=delays,
    )
