"""Back-channel logout (OpenID Connect Back-Channel Logout 1.0) as identity will send it to a web
app: a POST of form `logout_token=<JWT>` to the app's logout route.

identity does not send these yet, so the browser tests stand in for it with
`simulate_backchannel_logout`: the token identity would send, signed with identity's own key from
its key directory. When identity delivers them itself (IDENTITY_BACKCHANNEL_LOGOUT_URIS), the
tests end the session at identity instead and wait for its delivery; this module then only
serves the negative cases (tokens the app must refuse).
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15
from cryptography.hazmat.primitives.hashes import SHA256

from identity.tokens.signing_keys import KeyStore

from ..fakes import b64

LOGOUT_EVENT = "http://schemas.openid.net/event/backchannel-logout"


def logout_token(
    keys: Path,
    *,
    issuer: str,
    audience: str,
    sid: str,
    sub: str,
    typ: str = "logout+jwt",
    **claims: Any,
) -> str:
    """A logout token with identity's claims, RS256 with identity's newest key; `claims`
    override or (with None) remove members."""
    key = KeyStore(keys).load()[-1]
    now = int(time.time())
    payload: dict[str, Any] = {
        "iss": issuer,
        "aud": audience,
        "iat": now,
        "exp": now + 120,
        "jti": secrets.token_urlsafe(16),
        "sub": sub,
        "sid": sid,
        "events": {LOGOUT_EVENT: {}},
    }
    payload.update(claims)
    payload = {k: v for k, v in payload.items() if v is not None}
    header = {"alg": "RS256", "typ": typ, "kid": key.kid}
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    signature = key.private.sign(signing_input.encode(), PKCS1v15(), SHA256())
    return f"{signing_input}.{b64(signature)}"


def live_session(database: Path) -> tuple[str, str]:
    """The (session id, user id) of the one session identity holds."""
    with sqlite3.connect(database) as db:
        rows = db.execute("SELECT id, user_id FROM sessions").fetchall()
    assert len(rows) == 1, rows
    return rows[0][0], rows[0][1]


def post_logout_token(logout_uri: str, token: str) -> httpx.Response:
    """What identity's delivery does: POST the form to the client's logout URI."""
    return httpx.post(logout_uri, data={"logout_token": token}, timeout=10)


def simulate_backchannel_logout(
    logout_uri: str, keys: Path, *, issuer: str, client_id: str, sid: str, sub: str
) -> httpx.Response:
    """The stand-in for identity's back-channel logout of session `sid` (see the module)."""
    token = logout_token(keys, issuer=issuer, audience=client_id, sid=sid, sub=sub)
    return post_logout_token(logout_uri, token)
