"""Back-channel logout (OpenID Connect Back-Channel Logout 1.0) in the browser tests: identity
POSTs form `logout_token=<JWT>` to the app's logout route (IDENTITY_BACKCHANNEL_LOGOUT_URIS,
configured by tests/e2e/stack.py) whenever a session ends there.

The tests end the session at identity the way an operator does, `disable_user` through the admin
API, and look at identity's record of the delivery (`deliveries_of`). `logout_token` forges
tokens with identity's own key only for the negative cases: tokens the app must refuse.
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
from .stack import (
    ADMIN_CLIENT_ID,
    ADMIN_CLIENT_SECRET,
    IDENTITY_CLIENT_ID,
    REFRESH_MARGIN_MS,
    Stack,
)

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
    """A POST as identity's delivery makes it, with a token of the test's own."""
    return httpx.post(logout_uri, data={"logout_token": token}, timeout=10)


def disable_user(running: Stack, user_id: str) -> httpx.Response:
    """`PATCH /admin/users/{id}` `{"disabled": true}` as the back office's admin client: every
    session of the user ends at identity, each with its back-channel logout (docs/admin.md)."""
    return httpx.patch(
        f"{running.identity.url}/admin/users/{user_id}",
        json={"disabled": True},
        auth=(ADMIN_CLIENT_ID, ADMIN_CLIENT_SECRET),
        timeout=10,
    )


def deliveries_of(database: Path, sid: str) -> list[tuple[str, str, str, int | None]]:
    """identity's record of the `session.ended` notices of session `sid`: (destination, the
    notice's state, each attempt's outcome and the receiver's status code)."""
    with sqlite3.connect(database) as db:
        rows = db.execute(
            "SELECT o.destination, o.state, d.outcome, d.status_code FROM outbox o"
            " JOIN deliveries d ON d.outbox_id = o.id"
            " WHERE o.event = 'session.ended' AND json_extract(o.payload, '$.sid') = ?"
            " ORDER BY d.id",
            (sid,),
        ).fetchall()
    return [(r[0], r[1], r[2], r[3]) for r in rows]


def backchannel_step(running: Stack, message: dict[str, Any]) -> dict[str, Any]:
    """The browser scripts' back-channel steps (driver.mjs, `disabledAtIdentity`):
    `refused-logout-tokens` posts tokens the app must refuse to its logout route and answers
    their status codes; `disable-user` disables the signed-in user at identity."""
    sid, sub = live_session(running.database)
    if message["step"] == "refused-logout-tokens":
        good: dict[str, Any] = {
            "issuer": running.identity.url,
            "audience": IDENTITY_CLIENT_ID,
            "sid": sid,
            "sub": sub,
        }

        def token(**changes: Any) -> str:
            return logout_token(running.keys, **{**good, **changes})

        refused = {
            "access token type": token(typ="at+jwt"),
            "another audience": token(audience="other"),
            "another issuer": token(issuer="https://x"),
            "no events": token(events=None),
            "another event": token(events={"urn:x": {}}),
            "a nonce": token(nonce="n"),
            "no sid": token(sid=None),
            "expired": token(iat=1_000, exp=1_120),
            "bad signature": token()[:-8] + "AAAAAAAA",
            "not a JWT": "logout",
        }
        return {
            reason: post_logout_token(running.logout_uri, token).status_code
            for reason, token in refused.items()
        }
    assert message["step"] == "disable-user", message
    log_offset = len(running.identity.log_text())
    disabled_at = time.time() * 1000  # the browser's clock too: one machine
    response = disable_user(running, sub)
    return {
        "status": response.status_code,
        "disabled": response.json().get("disabled_at") is not None,
        "disabledAt": disabled_at,
        "sid": sid,
        "logOffset": log_offset,
    }


def assert_signed_out_by_identity(seen: dict[str, Any], running: Stack) -> str:
    """What the back-channel steps saw: refused tokens changed nothing, and identity's own logout
    token, not a refresh it refused, signed the browser out within seconds of the disable, well
    before the access token expired. Returns the session id that was logged out.

    The demos' access tokens last 8 s (so that they refresh within the test), so "well before" is
    measured against the freshly refreshed token the browser held when the user was disabled:
    the app's session was gone before that token was even due for a refresh (its expiry less the
    apps' refresh margin), and identity saw no refresh after the disable.
    """
    assert set(seen["refused"].values()) == {400}, seen["refused"]
    assert seen["afterRefused"]["name"]
    out = seen["backchannel"]
    assert (out["status"], out["disabled"]) == (200, True), out
    # Signed out within seconds...
    assert out["signedOutAt"] - out["disabledAt"] < 5000, out
    # ...while the token was good and not yet due for a refresh: no refresh did it...
    assert out["signedOutAt"] < out["expiresAt"] - REFRESH_MARGIN_MS, out
    after = running.identity.log_text()[out["logOffset"] :].splitlines()
    events = [json.loads(line) for line in after if '"identity.auth"' in line]
    assert not [e for e in events if e.get("event") == "refresh"], events
    # ...identity's logout token of that session did: delivered, and taken by the app's route.
    sid: str = out["sid"]
    delivered = ("backchannel:" + IDENTITY_CLIENT_ID, "delivered", "delivered", 200)
    assert delivered in deliveries_of(running.database, sid), deliveries_of(running.database, sid)
    assert seen["dashboardAfterBackchannel"] == "/signin"
    return sid
