"""Every refused security event is a 400 (RFC 8935's codes for Google) with nothing changed,
never a 5xx; garbage floods meet the failure limit (docs/signals.md)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from identity.settings import RateLimit, Settings

from .fakes import DROP, FakeClock, FakeIssuer, Issuers, b64
from .security_events import apple_notification, google_set, logout_token
from .support import Sql, running, sign_in

pytestmark = pytest.mark.anyio
SECEVENT = {"Content-Type": "application/secevent+jwt"}
WEEK = 7 * 86_400


def unsigned(token: str, alg: str = "none") -> str:
    """The token's payload under an `alg` of our choosing, without a usable signature."""
    header = b64(json.dumps({"alg": alg, "kid": "google-key-1"}).encode())
    return f"{header}.{token.split('.')[1]}."


def other_key(issuer: FakeIssuer, keys: dict[str, Any]) -> FakeIssuer:
    """The same provider's name and kid, but another key: a forgery."""
    return dataclasses.replace(issuer, key=keys["other_rsa"])


def google_cases(issuers: Issuers, keys: dict[str, Any], clock: FakeClock) -> list[Any]:
    g = issuers.google
    now = int(clock())
    return [
        (
            "bad signature",
            google_set(other_key(g, keys), "sessions-revoked"),
            "authentication_failed",
        ),
        ("wrong aud", google_set(g, "sessions-revoked", aud="someone-else"), "invalid_audience"),
        ("no aud", google_set(g, "sessions-revoked", aud=DROP), "invalid_audience"),
        # The id_token issuer, without the slash RISC's has: not the SET issuer.
        (
            "wrong iss",
            google_set(g, "sessions-revoked", iss="https://accounts.google.com"),
            "invalid_issuer",
        ),
        ("stale iat", google_set(g, "sessions-revoked", iat=now - WEEK - 120), "invalid_request"),
        ("future iat", google_set(g, "sessions-revoked", iat=now + 3600), "invalid_request"),
        ("no iat", google_set(g, "sessions-revoked", iat=DROP), "invalid_request"),
        ("no jti", google_set(g, "sessions-revoked", jti=DROP), "invalid_request"),
        ("no events", google_set(g, "sessions-revoked", events=DROP), "invalid_request"),
        ("events a list", google_set(g, "sessions-revoked", events=[]), "invalid_request"),
        ("alg none", unsigned(google_set(g, "sessions-revoked")), "invalid_request"),
        ("alg HS256", unsigned(google_set(g, "sessions-revoked"), "HS256"), "invalid_request"),
        ("unknown kid", google_set(g, "sessions-revoked", header={"kid": "nope"}), "invalid_key"),
        (
            "logout typ",
            google_set(g, "sessions-revoked", header={"typ": "logout+jwt"}),
            "invalid_request",
        ),
        ("an id_token", g.mint(), "invalid_issuer"),
        ("garbage", "not a token", "invalid_request"),
        ("empty", "", "invalid_request"),
        ("too large", "a" * 9000, "invalid_request"),
    ]


async def test_every_refused_set_is_a_400_with_rfc_8935_codes_and_changes_nothing(
    client: httpx.AsyncClient, issuers: Issuers, keys: dict[str, Any], clock: FakeClock, sql: Sql
) -> None:
    await sign_in(client, issuers.google)
    before = await sql.counts()
    for name, token, code in google_cases(issuers, keys, clock):
        response = await client.post("/signals/google", content=token, headers=SECEVENT)
        assert response.status_code == 400, (name, response.text)
        assert response.json() == {
            "err": code,
            "description": "the security event token is not valid",
        }, name
        assert await sql.counts() == before, name
    binary = await client.post("/signals/google", content=b"\xff\xfe\x00", headers=SECEVENT)
    assert binary.status_code == 400
    huge = await client.post("/signals/google", content=b"a" * 70_000, headers=SECEVENT)
    assert huge.status_code == 413
    assert await sql.counts() == before


async def test_every_refused_apple_notification_is_a_400_and_changes_nothing(
    client: httpx.AsyncClient, issuers: Issuers, keys: dict[str, Any], clock: FakeClock, sql: Sql
) -> None:
    a = issuers.apple
    await sign_in(client, a)
    before = await sql.counts()
    now = int(clock())
    payloads: list[Any] = [
        apple_notification(other_key(a, keys), "account-delete"),
        apple_notification(a, "account-delete", aud="com.other.app"),
        apple_notification(a, "account-delete", iss="https://appleid.apple.com/"),
        apple_notification(a, "account-delete", iat=now - WEEK - 120),
        apple_notification(a, "account-delete", iat=now + 3600),
        apple_notification(a, "account-delete", jti=DROP),
        apple_notification(a, "account-delete", events="{not json"),
        apple_notification(
            a,
            "account-delete",
            events='{"type": "email-enabled", "type": "account-delete", "sub": "x"}',
        ),
        apple_notification(a, "account-delete", events=json.dumps({"type": "account-delete"})),
        apple_notification(a, "account-delete", events=json.dumps(["account-delete"])),
        unsigned(apple_notification(a, "account-delete")),
        a.mint(),  # an id_token has no events
        "garbage",
        42,
    ]
    for index, payload in enumerate(payloads):
        response = await client.post("/signals/apple", json={"payload": payload})
        assert response.status_code == 400, (index, response.text)
        assert response.json()["error"] == "invalid_request"
        assert await sql.counts() == before, index
    for body in (b"[]", b"{}", b"not json", b'{"payload": "\\u0000"}'):
        response = await client.post(
            "/signals/apple", content=body, headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 400, body
    assert await sql.counts() == before


async def test_every_refused_logout_token_is_a_400_and_changes_nothing(
    client: httpx.AsyncClient, issuers: Issuers, keys: dict[str, Any], clock: FakeClock, sql: Sql
) -> None:
    o = issuers.okta
    await sign_in(client, o, sid="upstream-a")
    before = await sql.counts()
    now = int(clock())
    tokens = {
        "nonce": logout_token(o, nonce="n-0S6_WzA2Mj"),
        "no event": logout_token(o, events={"http://example.com/other": {}}),
        "event not an object": logout_token(
            o, events={"http://schemas.openid.net/event/backchannel-logout": "yes"}
        ),
        "neither sub nor sid": logout_token(o, sub=None),
        "expired": logout_token(o, exp=now - 3600),
        "stale": logout_token(o, iat=now - WEEK - 120, exp=DROP),
        "wrong typ": logout_token(o, header={"typ": "secevent+jwt"}),
        "wrong aud": logout_token(o, aud="another-client"),
        "wrong iss": logout_token(o, iss="https://evil.example/"),
        "no jti": logout_token(o, jti=DROP),
        "bad sid": logout_token(o, sid="a\nb"),
        "an id_token": o.mint(),
        "garbage": "garbage",
    }
    for name, token in tokens.items():
        response = await client.post(
            "/signals/backchannel-logout/okta", data={"logout_token": token}
        )
        assert response.status_code == 400, (name, response.text)
        assert response.json()["error"] == "invalid_request"
        assert await sql.counts() == before, name
    missing = await client.post("/signals/backchannel-logout/okta", data={})
    assert missing.status_code == 400
    assert await sql.counts() == before


PROPERTY = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
bodies = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=300).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.lists(st.text(alphabet="AZaz09-_=+/", max_size=60), min_size=1, max_size=5).map(
        lambda parts: ".".join(parts).encode()
    ),
)


@PROPERTY
@given(body=bodies, kind=st.sampled_from(["google", "apple-json", "apple-raw", "logout"]))
async def test_whatever_is_posted_the_answer_is_a_refusal_never_a_5xx(
    client: httpx.AsyncClient, body: bytes, kind: str
) -> None:
    if kind == "google":
        response = await client.post("/signals/google", content=body, headers=SECEVENT)
    elif kind == "apple-json":
        text = body.decode("utf-8", "replace")
        response = await client.post("/signals/apple", json={"payload": text})
    elif kind == "apple-raw":
        response = await client.post(
            "/signals/apple", content=body, headers={"Content-Type": "application/json"}
        )
    else:
        response = await client.post(
            "/signals/backchannel-logout/okta",
            content=b"logout_token=" + body,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
    assert response.status_code == 400, response.text


async def test_a_flood_of_garbage_meets_the_failure_limit(
    settings: Settings, issuers: Issuers, clock: FakeClock
) -> None:
    limited = dataclasses.replace(settings, rate_limit_failures=RateLimit(5, 60))
    async with running(limited, issuers, clock) as (_, client):
        statuses = [
            (await client.post("/signals/google", content="garbage", headers=SECEVENT)).status_code
            for _ in range(7)
        ]
        assert statuses == [400] * 5 + [429] * 2
        # The same address's good events wait for the window too: the limit is per IP.
        good = google_set(issuers.google, "verification")
        assert (
            await client.post("/signals/google", content=good, headers=SECEVENT)
        ).status_code == 429
        clock.advance(61)
        assert (
            await client.post("/signals/google", content=good, headers=SECEVENT)
        ).status_code == 202
