"""Logout tokens of OpenID Connect Back-Channel Logout 1.0, with identity as the provider
(docs/notifications.md).

Header `{"alg": "RS256", "typ": "logout+jwt", "kid"}`, signed with the active key like our
access tokens (so the web app verifies it with our JWKS); claims `iss`, `aud` (the client id),
`iat`, `exp` (2 minutes), `jti`, `sub`, `sid` (the `sid` our access tokens carry) and the
back-channel logout event. Never a `nonce` (the specification forbids it).
"""

from __future__ import annotations

import secrets

import orjson
from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15
from cryptography.hazmat.primitives.hashes import SHA256

from identity.clock import Clock

from . import jws
from .signing_keys import KeyManager

TYPE = "logout+jwt"
EVENT = "http://schemas.openid.net/event/backchannel-logout"
LIFETIME = 120


def mint(
    keys: KeyManager, *, issuer: str, client_id: str, subject: str, session_id: str, clock: Clock
) -> str:
    key = keys.view().active
    header = jws.encode_segment(orjson.dumps({"alg": "RS256", "typ": TYPE, "kid": key.kid}))
    issued = int(clock())
    claims = {
        "iss": issuer,
        "aud": client_id,
        "iat": issued,
        "exp": issued + LIFETIME,
        "jti": secrets.token_urlsafe(16),
        "sub": subject,
        "sid": session_id,
        "events": {EVENT: {}},
    }
    signing_input = f"{header}.{jws.encode_segment(orjson.dumps(claims))}"
    signature = key.private.sign(signing_input.encode("ascii"), PKCS1v15(), SHA256())
    return f"{signing_input}.{jws.encode_segment(signature)}"
