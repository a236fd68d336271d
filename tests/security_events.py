"""Security events signed by the fake providers' keys: Google's SETs (Cross-Account Protection),
Apple's server-to-server notifications, and OpenID back-channel logout tokens.

Each builder takes the provider's `FakeIssuer` (tests/fakes.py), so the event is signed with
the very key that provider's key set publishes, and returns the compact token; `header` and
keyword claims override or (with `DROP`) remove what it would send.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any
from urllib.parse import parse_qsl

import httpx
import jwt as pyjwt

from .fakes import APPLE_ISSUER, APPLE_WEB, DROP, OKTA_CLIENT, OKTA_ISSUER, WEB_CLIENT, FakeIssuer

GOOGLE_RISC_ISSUER = "https://accounts.google.com/"
RISC = "https://schemas.openid.net/secevent/risc/event-type/"
OAUTH = "https://schemas.openid.net/secevent/oauth/event-type/"
BACKCHANNEL_LOGOUT = "http://schemas.openid.net/event/backchannel-logout"
GOOGLE_SUB = "110000000000000000001"  # the fake Google's id_token subject
APPLE_SUB = "001234.abcdef0123456789abcdef0123456789.0123"
APPLE_RELAY = "q7ab1c@privaterelay.appleid.com"
OKTA_SUB = "00u1example"
# Google's event URIs by the name docs/signals.md gives them.
GOOGLE_EVENTS = {
    "sessions-revoked": RISC + "sessions-revoked",
    "tokens-revoked": OAUTH + "tokens-revoked",
    "token-revoked": OAUTH + "token-revoked",
    "account-disabled": RISC + "account-disabled",
    "account-enabled": RISC + "account-enabled",
    "account-purged": RISC + "account-purged",
    "account-credential-change-required": RISC + "account-credential-change-required",
    "verification": RISC + "verification",
}


def _sign(issuer: FakeIssuer, header: dict[str, Any] | None, claims: dict[str, Any]) -> str:
    protected = {"alg": issuer.alg, "kid": issuer.kid, **(header or {})}
    protected = {k: v for k, v in protected.items() if v is not DROP}
    payload = {k: v for k, v in claims.items() if v is not DROP}
    return issuer.mint_raw(protected, json.dumps(payload).encode())


def google_set(
    google: FakeIssuer,
    event: str,
    *,
    sub: str = GOOGLE_SUB,
    reason: str | None = None,
    header: dict[str, Any] | None = None,
    body: dict[str, Any] | None = None,
    **claims: Any,
) -> str:
    """A SET as Google's RISC sends it: one event about an `iss-sub` subject."""
    if event == "verification":
        content: dict[str, Any] = {"state": "a-test-of-the-endpoint"}
    else:
        content = {"subject": {"subject_type": "iss-sub", "iss": GOOGLE_RISC_ISSUER, "sub": sub}}
    if reason is not None:
        content["reason"] = reason
    standard = {
        "iss": GOOGLE_RISC_ISSUER,
        "aud": WEB_CLIENT,
        "iat": int(google.clock()),
        "jti": uuid.uuid4().hex,
        "events": {GOOGLE_EVENTS.get(event, event): body if body is not None else content},
    }
    return _sign(google, {"typ": "secevent+jwt", **(header or {})}, {**standard, **claims})


def apple_notification(
    apple: FakeIssuer,
    type_: str,
    *,
    sub: str = APPLE_SUB,
    email: str = APPLE_RELAY,
    as_string: bool = True,
    header: dict[str, Any] | None = None,
    **claims: Any,
) -> str:
    """Apple's notification payload; `events` a JSON string as Apple sends it (or the object)."""
    event: dict[str, Any] = {"type": type_, "sub": sub, "event_time": int(apple.clock()) * 1000}
    if type_.startswith("email-"):
        event.update(email=email, is_private_email="true")
    standard = {
        "iss": APPLE_ISSUER,
        "aud": APPLE_WEB,
        "iat": int(apple.clock()),
        "jti": uuid.uuid4().hex,
        "events": json.dumps(event) if as_string else event,
    }
    return _sign(apple, header, {**standard, **claims})


def logout_token(
    issuer: FakeIssuer,
    *,
    sub: str | None = OKTA_SUB,
    sid: str | None = None,
    header: dict[str, Any] | None = None,
    **claims: Any,
) -> str:
    """An OpenID Connect back-channel logout token of the fake generic provider."""
    now = int(issuer.clock())
    standard: dict[str, Any] = {
        "iss": OKTA_ISSUER,
        "aud": OKTA_CLIENT,
        "iat": now,
        "exp": now + 120,
        "jti": uuid.uuid4().hex,
        "events": {BACKCHANNEL_LOGOUT: {}},
    }
    if sub is not None:
        standard["sub"] = sub
    if sid is not None:
        standard["sid"] = sid
    return _sign(issuer, {"typ": "logout+jwt", **(header or {})}, {**standard, **claims})


APPLE_REVOKE = "https://appleid.apple.com/auth/revoke"
APPLE_TEAM = "TEAM123456"
APPLE_KEY_ID = "KEY1234567"


class FakeAppleRevoke:
    """Apple's POST /auth/revoke: checks the client secret (ES256 with the team's public key,
    iss the team, sub the client id, aud Apple, kid the key's) and records what it revoked.
    `failures` answers that many calls with a 503 first."""

    def __init__(self, public_key: Any, failures: int = 0, clock: Any = time.time) -> None:
        self.public_key = public_key
        self.clock = clock
        self.failures = failures
        self.calls = 0
        self.revoked: list[tuple[str, str]] = []  # (client_id, token)
        self.refused: list[str] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        if self.failures:
            self.failures -= 1
            return httpx.Response(503)
        form = dict(parse_qsl(request.content.decode()))
        client_id = form.get("client_id", "")
        try:
            claims = pyjwt.decode(
                form.get("client_secret", ""),
                self.public_key,
                algorithms=["ES256"],
                audience="https://appleid.apple.com",
                issuer=APPLE_TEAM,
                options={"verify_exp": False, "verify_iat": False, "require": ["exp", "iat"]},
            )
            # Times on the test's clock: valid now, and short-lived (Apple allows six months).
            if not claims["iat"] - 60 <= self.clock() < claims["exp"] <= claims["iat"] + 15_777_000:
                raise pyjwt.ExpiredSignatureError("outside its lifetime")
            header = pyjwt.get_unverified_header(form["client_secret"])
        except pyjwt.PyJWTError as error:
            self.refused.append(type(error).__name__)
            return httpx.Response(400, json={"error": "invalid_client"})
        if claims.get("sub") != client_id or header.get("kid") != APPLE_KEY_ID:
            self.refused.append("sub or kid")
            return httpx.Response(400, json={"error": "invalid_client"})
        if form.get("token_type_hint") != "refresh_token" or not form.get("token"):
            return httpx.Response(400, json={"error": "invalid_request"})
        self.revoked.append((client_id, form["token"]))
        return httpx.Response(200)
