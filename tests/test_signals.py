"""Security events from providers, end to end on each database (docs/signals.md): every row of
the policy table, its audit event, and idempotency on the `jti`."""

from __future__ import annotations

import base64
import dataclasses
import json
import time
from typing import Any

import httpx
import jwt
import pytest
from standardwebhooks.webhooks import Webhook

from identity.destinations import WebhookEndpoint
from identity.settings import Settings

from .fakes import FakeClock, FakeIssuer, Issuers
from .receivers import receiver
from .security_events import (
    APPLE_RELAY,
    APPLE_SUB,
    GOOGLE_SUB,
    OKTA_SUB,
    apple_notification,
    google_set,
    logout_token,
)
from .support import Sql, bearer, exchange, refresh, running, sign_in

pytestmark = pytest.mark.anyio
SECEVENT = {"Content-Type": "application/secevent+jwt"}


async def send_google(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.post("/signals/google", content=token, headers=SECEVENT)


async def send_apple(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.post("/signals/apple", json={"payload": token})


async def send_logout(
    client: httpx.AsyncClient, token: str, provider: str = "okta"
) -> httpx.Response:
    return await client.post(
        f"/signals/backchannel-logout/{provider}", data={"logout_token": token}
    )


async def signals(sql: Sql) -> list[dict[str, Any]]:
    events = await sql.events("signal_received")
    for event in events:
        if isinstance(event["detail"], str):
            event["detail"] = json.loads(event["detail"])
    return events


async def session_count(sql: Sql, where: str = "true") -> int:
    return int(await sql.scalar(f"SELECT count(*) FROM sessions WHERE {where}"))


def sid_of(body: dict[str, Any]) -> str:
    return str(jwt.decode(body["access_token"], options={"verify_signature": False})["sid"])


async def test_sessions_revoked_ends_every_session_of_the_user_once(
    client: httpx.AsyncClient, google: FakeIssuer, sql: Sql, clock: FakeClock
) -> None:
    first = await sign_in(client, google)
    await sign_in(client, google)
    assert await session_count(sql) == 2
    token = google_set(google, "sessions-revoked")
    response = await send_google(client, token)
    assert response.status_code == 202, response.text
    assert await session_count(sql) == 0
    assert (await refresh(client, first["refresh_token"])).status_code == 400
    me = await client.get("/users/me", headers=bearer(first["access_token"]))
    assert me.status_code == 401
    (event,) = await signals(sql)
    assert event["user_id"] == first["user"]["id"]
    assert event["detail"]["provider"] == "google"
    assert event["detail"]["event"] == "sessions-revoked"
    assert event["detail"]["action"] == "end_user_sessions"
    assert event["detail"]["count"] == 2
    # The same SET again: the same answer, no second effect (a new session survives it). The
    # new id_token is issued after the event: one of the same second counts as before it.
    clock.advance(1)
    await sign_in(client, google)
    again = await send_google(client, token)
    assert again.status_code == 202
    assert await session_count(sql) == 1
    assert len(await signals(sql)) == 1


async def test_tokens_revoked_ends_sessions_and_forgets_the_stored_tokens(
    client: httpx.AsyncClient, google: FakeIssuer, sql: Sql
) -> None:
    await sign_in(client, google)
    async with sql.engine.begin() as connection:
        from sqlalchemy import text

        await connection.execute(
            text("UPDATE accounts SET access_token = 'sealed', refresh_token = 'sealed'")
        )
    assert (await send_google(client, google_set(google, "tokens-revoked"))).status_code == 202
    assert await session_count(sql) == 0
    (account,) = await sql.rows("SELECT access_token, refresh_token FROM accounts")
    assert account == {"access_token": None, "refresh_token": None}
    assert (await signals(sql))[0]["detail"]["action"] == "end_user_sessions_and_forget_tokens"


async def test_hijacking_ends_every_session_of_the_user_without_suspending(
    client: httpx.AsyncClient, issuers: Issuers, sql: Sql, clock: FakeClock
) -> None:
    google, apple = issuers.google, issuers.apple
    user = await sign_in(client, google)
    linked = await client.post(
        "/users/me/accounts",
        json={"id_token": apple.mint()},
        headers=bearer(user["access_token"]),
    )
    assert linked.status_code == 200, linked.text
    await sign_in(client, apple)  # a session started through the user's other account
    assert await session_count(sql) == 2
    token = google_set(google, "account-disabled", reason="hijacking")
    assert (await send_google(client, token)).status_code == 202
    assert await session_count(sql) == 0  # every session of the user, whichever account
    assert await sql.scalar("SELECT count(*) FROM accounts WHERE suspended_at IS NOT NULL") == 0
    assert (await signals(sql))[0]["detail"]["event"] == "account-disabled/hijacking"
    clock.advance(1)  # an id_token issued after the event
    await sign_in(client, google)  # not suspended


async def test_account_disabled_suspends_that_account_until_enabled(
    client: httpx.AsyncClient, issuers: Issuers, sql: Sql
) -> None:
    google, apple = issuers.google, issuers.apple
    user = await sign_in(client, google)
    await client.post(
        "/users/me/accounts", json={"id_token": apple.mint()}, headers=bearer(user["access_token"])
    )
    through_apple = await sign_in(client, apple)
    assert (await send_google(client, google_set(google, "account-disabled"))).status_code == 202
    # The sessions Google's account started end; the Apple one goes on.
    assert await session_count(sql) == 1
    assert (await refresh(client, through_apple["refresh_token"])).status_code == 200
    refused = await exchange(client, google.mint())
    assert refused.status_code == 403, refused.text
    assert (await sign_in(client, apple))["user"]["id"] == user["user"]["id"]
    event = (await signals(sql))[0]
    assert event["detail"]["action"] == "suspend_account"
    assert (await send_google(client, google_set(google, "account-enabled"))).status_code == 202
    assert (await sign_in(client, google))["user"]["id"] == user["user"]["id"]
    assert (await signals(sql))[1]["detail"]["action"] == "lift_suspension"


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        ("account-disabled", "bulk-account"),
        ("account-credential-change-required", None),
        ("verification", None),
        ("token-revoked", None),  # one token, not all: not in the table, audited only
    ],
)
async def test_advisory_events_are_audited_only(
    client: httpx.AsyncClient, google: FakeIssuer, sql: Sql, event: str, reason: str | None
) -> None:
    await sign_in(client, google)
    before = await sql.counts()
    response = await send_google(client, google_set(google, event, reason=reason))
    assert response.status_code == 202
    after = await sql.counts()
    assert after["sessions"] == before["sessions"] == 1
    assert after["accounts"] == before["accounts"]
    (audited,) = await signals(sql)
    assert audited["detail"]["action"] == "audited"


async def test_account_purged_unlinks_and_deletes_a_user_left_without_accounts(
    client: httpx.AsyncClient, google: FakeIssuer, sql: Sql
) -> None:
    user = await sign_in(client, google)
    assert (await send_google(client, google_set(google, "account-purged"))).status_code == 202
    assert await sql.scalar("SELECT count(*) FROM users") == 0
    assert await sql.scalar("SELECT count(*) FROM accounts") == 0
    assert await session_count(sql) == 0
    types = [e["type"] for e in await sql.events() if e["user_id"] == user["user"]["id"]]
    assert {"account_unlinked", "user_deleted", "signal_received"} <= set(types)


async def test_account_purged_keeps_a_user_with_another_account(
    client: httpx.AsyncClient, issuers: Issuers, sql: Sql
) -> None:
    google, apple = issuers.google, issuers.apple
    user = await sign_in(client, google)
    await client.post(
        "/users/me/accounts", json={"id_token": apple.mint()}, headers=bearer(user["access_token"])
    )
    kept = await sign_in(client, apple)
    assert (await send_google(client, google_set(google, "account-purged"))).status_code == 202
    assert [r["provider"] for r in await sql.rows("SELECT provider FROM accounts")] == ["apple"]
    assert (await refresh(client, kept["refresh_token"])).status_code == 200
    assert (await refresh(client, user["refresh_token"])).status_code == 400


async def test_a_signals_unlink_and_delete_tell_webhooks_as_the_users_own_do(
    settings: Settings, issuers: Issuers, clock: FakeClock, sql: Sql
) -> None:
    """`account-purged` and `account-delete` unlink through the same code as DELETE
    /users/me/accounts/… and DELETE /users/me: the same notices, verified as any receiver would."""
    clock.now = time.time()  # the library checks the timestamp against the real clock
    key = b"0123456789abcdef0123456789abcdef"
    events = frozenset({"account.unlinked", "user.deleted", "session.ended"})
    google, apple = issuers.google, issuers.apple
    with receiver(200) as hook:
        changed = dataclasses.replace(settings, webhooks=(WebhookEndpoint(hook.url, key, events),))
        async with running(changed, issuers, clock, delivery_interval=3600) as (app, client):
            user = await sign_in(client, google)
            user_id = user["user"]["id"]
            linked = await client.post(
                "/users/me/accounts",
                json={"id_token": apple.mint()},
                headers=bearer(user["access_token"]),
            )
            assert linked.status_code == 200, linked.text
            through_apple = await sign_in(client, apple)
            # Google's account goes; the user keeps Apple's.
            purged = await send_google(client, google_set(google, "account-purged"))
            assert purged.status_code == 202
            while await app.state.deliveries.round():
                pass
            first = [Webhook(_whsec(key)).verify(r.body, r.headers) for r in hook.received]
            # Apple's goes too: the user, left with no account, is deleted.
            deleted = await send_apple(client, apple_notification(apple, "account-delete"))
            assert deleted.status_code == 200
            while await app.state.deliveries.round():
                pass
            second = [Webhook(_whsec(key)).verify(r.body, r.headers) for r in hook.received]

    def ended(body: dict[str, Any], event: str) -> tuple[str, dict[str, Any]]:
        reason = f"signal:{event}"
        data = {"sid": sid_of(body), "user_id": user_id, "client_id": "public", "reason": reason}
        return ("session.ended", data)

    # A round sends its notices concurrently: they arrive in any order.
    assert sorted(((m["type"], m["data"]) for m in first), key=str) == sorted(
        [
            ended(user, "account-purged"),
            ("account.unlinked", {"user_id": user_id, "provider": "google"}),
        ],
        key=str,
    )
    assert sorted(((m["type"], m["data"]) for m in second[len(first) :]), key=str) == sorted(
        [
            ended(through_apple, "account-delete"),
            ("account.unlinked", {"user_id": user_id, "provider": "apple"}),
            ("user.deleted", {"user_id": user_id}),
        ],
        key=str,
    )
    # Each notice belongs to its audit event, which says a signal did it.
    rows = await sql.rows(
        "SELECT o.event, a.type, a.detail FROM outbox o JOIN audit_events a "
        "ON a.id = o.audit_event_id WHERE o.event <> 'session.ended' ORDER BY o.id"
    )
    assert [(r["event"], r["type"]) for r in rows] == [
        ("account.unlinked", "account_unlinked"),
        ("account.unlinked", "account_unlinked"),
        ("user.deleted", "user_deleted"),
    ]
    assert all(_detail(r["detail"])["by"] == "signal" for r in rows)


def _whsec(key: bytes) -> str:
    return "whsec_" + base64.b64encode(key).decode()


def _detail(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else json.loads(value)


async def test_an_event_about_an_unknown_account_is_acknowledged_and_audited(
    client: httpx.AsyncClient, google: FakeIssuer, sql: Sql
) -> None:
    await sign_in(client, google)
    token = google_set(google, "sessions-revoked", sub="110000000000000000999")
    assert (await send_google(client, token)).status_code == 202
    assert await session_count(sql) == 1
    (event,) = await signals(sql)
    assert event["user_id"] is None and event["detail"]["action"] == "unknown_account"


@pytest.mark.parametrize("as_string", [True, False])
async def test_apple_account_delete_unlinks(
    client: httpx.AsyncClient, issuers: Issuers, sql: Sql, as_string: bool
) -> None:
    await sign_in(client, issuers.apple)
    token = apple_notification(issuers.apple, "account-delete", as_string=as_string)
    response = await send_apple(client, token)
    assert response.status_code == 200, response.text
    assert await sql.scalar("SELECT count(*) FROM users") == 0
    (event,) = await signals(sql)
    assert event["detail"]["event"] == "account-delete"
    assert event["detail"]["action"] == "unlink_account"
    assert (await send_apple(client, token)).status_code == 200  # again: acknowledged


async def test_apple_consent_revoked_ends_its_sessions_and_forgets_tokens_keeping_the_link(
    client: httpx.AsyncClient, issuers: Issuers, sql: Sql, clock: FakeClock
) -> None:
    user = await sign_in(client, issuers.google)
    await client.post(
        "/users/me/accounts",
        json={"id_token": issuers.apple.mint()},
        headers=bearer(user["access_token"]),
    )
    await sign_in(client, issuers.apple)
    async with sql.engine.begin() as connection:
        from sqlalchemy import text

        await connection.execute(text("UPDATE accounts SET refresh_token = 'sealed'"))
    response = await send_apple(client, apple_notification(issuers.apple, "consent-revoked"))
    assert response.status_code == 200
    assert await session_count(sql) == 1  # Google's session goes on
    accounts = await sql.rows("SELECT provider, refresh_token FROM accounts ORDER BY provider")
    assert accounts == [
        {"provider": "apple", "refresh_token": None},
        {"provider": "google", "refresh_token": "sealed"},
    ]
    # The link stays: signing in with Apple again (a new id_token) finds the same user.
    clock.advance(1)
    assert (await sign_in(client, issuers.apple))["user"]["id"] == user["user"]["id"]


async def test_apple_email_disabled_stops_mail_to_the_relay_until_enabled(
    client: httpx.AsyncClient, issuers: Issuers, sql: Sql
) -> None:
    user = await sign_in(client, issuers.apple, email_verified="false")
    headers = bearer(user["access_token"])
    disabled = apple_notification(issuers.apple, "email-disabled")
    assert (await send_apple(client, disabled)).status_code == 200
    assert await sql.scalar("SELECT address FROM undeliverable_addresses") == APPLE_RELAY
    refused = await client.post("/auth/verify-email/request", headers=headers)
    assert refused.status_code == 409
    assert refused.json()["error"] == "mail_undeliverable"
    assert await sql.scalar("SELECT count(*) FROM verification_tokens") == 0
    enabled = apple_notification(issuers.apple, "email-enabled", as_string=False)
    assert (await send_apple(client, enabled)).status_code == 200
    assert (await client.post("/auth/verify-email/request", headers=headers)).status_code == 202
    actions = [e["detail"]["action"] for e in await signals(sql)]
    assert actions == ["stop_mail", "resume_mail"]


async def test_backchannel_logout_with_sid_ends_exactly_that_upstream_session(
    client: httpx.AsyncClient, issuers: Issuers, sql: Sql
) -> None:
    okta, google = issuers.okta, issuers.google
    a1 = await sign_in(client, okta, sid="upstream-a")
    a2 = await sign_in(client, okta, sid="upstream-a")
    b = await sign_in(client, okta, sid="upstream-b")
    other = await sign_in(client, google, sid="upstream-a")  # another provider's equal sid
    response = await send_logout(client, logout_token(okta, sub=None, sid="upstream-a"))
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    left = {r["id"] for r in await sql.rows("SELECT id FROM sessions")}
    assert left == {sid_of(b), sid_of(other)}
    assert sid_of(a1) not in left and sid_of(a2) not in left
    event = (await signals(sql))[0]
    assert event["detail"]["event"] == "backchannel-logout/sid"
    assert event["detail"]["count"] == 2


async def test_backchannel_logout_with_only_sub_ends_every_session_of_that_account(
    client: httpx.AsyncClient, issuers: Issuers, sql: Sql
) -> None:
    okta = issuers.okta
    await sign_in(client, okta, sid="upstream-a")
    await sign_in(client, okta)
    kept = await sign_in(client, issuers.google)
    response = await send_logout(client, logout_token(okta, sub=OKTA_SUB))
    assert response.status_code == 200
    assert {r["id"] for r in await sql.rows("SELECT id FROM sessions")} == {sid_of(kept)}
    assert (await signals(sql))[0]["detail"]["action"] == "end_account_sessions"


async def test_a_receiver_of_a_provider_not_configured_is_not_found(
    client: httpx.AsyncClient, issuers: Issuers
) -> None:
    response = await send_logout(client, logout_token(issuers.okta), provider="nobody")
    assert response.status_code == 404
    # A built-in provider has no back-channel logout receiver.
    response = await send_logout(client, logout_token(issuers.okta), provider="google")
    assert response.status_code == 404


async def test_the_subjects_are_the_fakes_own(issuers: Issuers, clock: FakeClock) -> None:
    assert issuers.google.claims()["sub"] == GOOGLE_SUB
    assert issuers.apple.claims()["sub"] == APPLE_SUB
    assert issuers.okta.claims()["sub"] == OKTA_SUB
