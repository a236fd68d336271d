"""What a provider's signal guarantees afterwards and against what runs beside it, on each
database (docs/signals.md, "Guarantees"): an id_token issued before a signal ended its account's
sessions starts no new session; a sign-in racing a suspension leaves no live session; suspend and
enable events apply in the order of their `iat`, not of their arrival."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

import httpx
import jwt
import pytest

from identity.clock import as_utc, utc
from identity.settings import Settings

from .fakes import FakeClock, Issuers
from .security_events import OKTA_SUB, apple_notification, google_set, logout_token
from .support import Sql, bearer, exchange, refresh, sign_in

pytestmark = pytest.mark.anyio
SECEVENT = {"Content-Type": "application/secevent+jwt"}


async def send_google(client: httpx.AsyncClient, token: str) -> httpx.Response:
    response = await client.post("/signals/google", content=token, headers=SECEVENT)
    assert response.status_code == 202, response.text
    return response


async def send_logout(client: httpx.AsyncClient, token: str) -> None:
    response = await client.post("/signals/backchannel-logout/okta", data={"logout_token": token})
    assert response.status_code == 200, response.text


async def refusals(sql: Sql) -> list[str]:
    events = await sql.events("sign_in_refused")
    return [
        (json.loads(e["detail"]) if isinstance(e["detail"], str) else e["detail"])["reason"]
        for e in events
    ]


async def signals(sql: Sql) -> list[dict[str, Any]]:
    events = await sql.events("signal_received")
    for event in events:
        if isinstance(event["detail"], str):
            event["detail"] = json.loads(event["detail"])
    return events


def sid_of(body: dict[str, Any]) -> str:
    return str(jwt.decode(body["access_token"], options={"verify_signature": False})["sid"])


def assert_refused_as_invalid(response: httpx.Response) -> None:
    # Refused as any invalid id_token is (docs/api.md): the reason goes to the logs only.
    assert response.status_code == 400, response.text
    assert response.json() == {
        "error": "invalid_request",
        "error_description": "the id_token is not valid",
    }


# -- An id_token from before a signal that ended its account's sessions ---------------------


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        ("sessions-revoked", None),
        ("account-disabled", "hijacking"),
        ("tokens-revoked", None),
    ],
)
async def test_an_id_token_minted_before_a_hijacking_signal_is_not_exchanged_after_it(
    client: httpx.AsyncClient,
    issuers: Issuers,
    clock: FakeClock,
    sql: Sql,
    event: str,
    reason: str | None,
) -> None:
    """A hijacker who took a fresh, unused id_token along with the account keeps it for up to
    an hour: after Google reports the hijacking it must start no session. One issued after the
    event (the owner signing in again) still does."""
    google = issuers.google
    await sign_in(client, google)
    stashed = google.mint()  # the hijacker's, minted before the event
    clock.advance(5)
    await send_google(client, google_set(google, event, reason=reason))
    clock.advance(1)
    assert_refused_as_invalid(await exchange(client, stashed))
    assert await sql.scalar("SELECT count(*) FROM sessions") == 0
    assert await refusals(sql) == ["revoked"]
    # Not spent: refused before the single-use record (it stays refused, whatever comes next).
    assert await sql.scalar("SELECT count(*) FROM used_id_tokens") == 1
    fresh = await sign_in(client, google)  # issued after the event
    assert fresh["user"]["id"]


async def test_the_callback_refuses_it_too(
    client: httpx.AsyncClient, issuers: Issuers, clock: FakeClock
) -> None:
    google = issuers.google
    await sign_in(client, google)
    stashed = google.mint()
    clock.advance(5)
    await send_google(client, google_set(google, "sessions-revoked"))
    response = await client.post("/auth/oauth/callback", json={"id_token": stashed})
    assert response.status_code == 401, response.text
    assert response.json()["error"] == "invalid_token"


async def test_the_cutoff_is_the_later_of_the_events_iat_and_its_arrival(
    client: httpx.AsyncClient, issuers: Issuers, clock: FakeClock, sql: Sql
) -> None:
    """Clock skew either way: a provider whose clock runs ahead stamps the event (and its
    id_tokens) later than our arrival time; one whose clock runs behind, earlier."""
    google = issuers.google
    await sign_in(client, google)
    now = int(clock())
    ahead = now + 30  # the provider's clock is 30 s ahead of ours
    stashed = google.mint(iat=ahead - 10)  # minted before the event, by the provider's clock
    await send_google(client, google_set(google, "sessions-revoked", iat=ahead))
    revoked = as_utc(await sql.scalar("SELECT sessions_revoked_at FROM accounts"))
    assert revoked == utc(ahead)
    assert_refused_as_invalid(await exchange(client, stashed))
    # An older event arriving late (a retried delivery) never moves the cutoff back.
    await send_google(client, google_set(google, "sessions-revoked", iat=now - 600))
    assert as_utc(await sql.scalar("SELECT sessions_revoked_at FROM accounts")) == utc(ahead)
    # Behind: the arrival time rules, and a token the provider stamped 20 s "before" it is
    # refused although the event's own iat is earlier still.
    clock.advance(100)
    behind = int(clock()) - 60
    await send_google(client, google_set(google, "sessions-revoked", iat=behind))
    revoked = as_utc(await sql.scalar("SELECT sessions_revoked_at FROM accounts"))
    assert revoked == utc(clock())
    assert_refused_as_invalid(await exchange(client, google.mint(iat=int(clock()) - 20)))


async def test_apple_consent_revoked_refuses_the_apple_id_tokens_issued_before_it(
    client: httpx.AsyncClient, issuers: Issuers, clock: FakeClock, sql: Sql
) -> None:
    google, apple = issuers.google, issuers.apple
    user = await sign_in(client, google)
    linked = await client.post(
        "/users/me/accounts", json={"id_token": apple.mint()}, headers=bearer(user["access_token"])
    )
    assert linked.status_code == 200, linked.text
    stashed_apple, stashed_google = apple.mint(), google.mint()
    clock.advance(5)
    response = await client.post(
        "/signals/apple", json={"payload": apple_notification(apple, "consent-revoked")}
    )
    assert response.status_code == 200, response.text
    assert_refused_as_invalid(await exchange(client, stashed_apple))
    # Only that account's: the user's Google id_tokens were not revoked.
    assert (await exchange(client, stashed_google)).status_code == 200
    clock.advance(1)
    assert (await sign_in(client, apple))["user"]["id"] == user["user"]["id"]


async def test_a_backchannel_logout_by_sub_refuses_that_accounts_earlier_id_tokens(
    client: httpx.AsyncClient, issuers: Issuers, clock: FakeClock
) -> None:
    okta = issuers.okta
    await sign_in(client, okta)
    stashed = okta.mint(sid="upstream-b")
    clock.advance(5)
    await send_logout(client, logout_token(okta, sub=OKTA_SUB))
    assert_refused_as_invalid(await exchange(client, stashed))
    clock.advance(1)
    await sign_in(client, okta, sid="upstream-c")


async def test_a_backchannel_logout_by_sid_refuses_every_id_token_of_that_upstream_session(
    client: httpx.AsyncClient,
    issuers: Issuers,
    clock: FakeClock,
    sql: Sql,
    settings: Settings,
) -> None:
    """The upstream session is over: an id_token carrying its `sid` starts nothing, whenever
    it was issued, while it could be accepted at all; other upstream sessions go on."""
    okta, google = issuers.okta, issuers.google
    await sign_in(client, okta, sid="upstream-a")
    stashed = okta.mint(sid="upstream-a")
    other = okta.mint(sid="upstream-b")
    same_sid_elsewhere = google.mint(sid="upstream-a")  # another provider's equal sid
    clock.advance(5)
    await send_logout(client, logout_token(okta, sub=None, sid="upstream-a"))
    clock.advance(1)
    assert_refused_as_invalid(await exchange(client, stashed))
    assert_refused_as_invalid(await exchange(client, okta.mint(sid="upstream-a")))
    assert (await exchange(client, other)).status_code == 200
    assert (await exchange(client, same_sid_elsewhere)).status_code == 200
    assert await refusals(sql) == ["revoked", "revoked"]
    # Remembered while an id_token issued in it could be accepted, then pruned by the janitor.
    (row,) = await sql.rows("SELECT provider, sid, expires_at FROM ended_upstream_sessions")
    assert (row["provider"], row["sid"]) == ("okta", "upstream-a")
    kept = as_utc(row["expires_at"]) - utc(clock())
    assert kept >= timedelta(seconds=settings.id_token_max_age + settings.clock_skew)


# -- A sign-in racing a suspension ----------------------------------------------------------


async def test_a_sign_in_racing_account_disabled_gets_no_session(
    client: httpx.AsyncClient, issuers: Issuers, sql: Sql, database_url: str
) -> None:
    """The signal's transaction (lock the account, suspend it, end its sessions) runs while a
    sign-in of that account is under way: the sign-in waits for it and is refused, never left
    with a session on the suspended account. Replayed with the signal's very statements on a
    second connection, paused before its commit."""
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite's BEGIN IMMEDIATE serialises the two")
    import asyncpg
    from sqlalchemy.engine import make_url

    from .conftest import direct

    google = issuers.google
    await sign_in(client, google)
    pending_token = google.mint()  # the hijacker's id_token, from before the event
    plain = make_url(direct(database_url)).set(drivername="postgresql")
    signal = await asyncpg.connect(plain.render_as_string(hide_password=False))
    try:
        transaction = signal.transaction()
        await transaction.start()
        account = await signal.fetchval(
            "SELECT id FROM accounts WHERE provider = 'google' FOR UPDATE"
        )
        await signal.execute(
            "UPDATE accounts SET suspended_at = now(), updated_at = now() WHERE id = $1", account
        )
        await signal.execute("DELETE FROM sessions WHERE account_id = $1", account)
        racing = asyncio.create_task(exchange(client, pending_token))
        await asyncio.sleep(1.0)  # the sign-in is under way, waiting on the account's lock
        assert not racing.done()
        await transaction.commit()
        response = await racing
    finally:
        await signal.close()
    live = await sql.scalar(
        "SELECT count(*) FROM sessions s JOIN accounts a ON a.id = s.account_id"
        " WHERE a.suspended_at IS NOT NULL"
    )
    assert (response.status_code, live) == (403, 0), response.text


async def test_a_session_of_a_suspended_account_is_not_refreshed(
    client: httpx.AsyncClient, issuers: Issuers, sql: Sql
) -> None:
    """Should a session begin beside a suspension all the same, its refresh token ends there:
    400 invalid_grant, and the session is gone."""
    google = issuers.google
    kept = await sign_in(client, issuers.apple)  # another user's account is not concerned
    slipped = await sign_in(client, google)
    async with sql.engine.begin() as connection:
        from sqlalchemy import text

        await connection.execute(
            text("UPDATE accounts SET suspended_at = created_at WHERE provider = 'google'")
        )
    response = await refresh(client, slipped["refresh_token"])
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_grant"
    assert await sql.scalar("SELECT count(*) FROM sessions") == 1
    # Ended as every session ends: the revocation feed's row and the audit event.
    (revoked,) = await sql.rows("SELECT session_id FROM revocations")
    assert revoked["session_id"] == sid_of(slipped)
    (event,) = await sql.events("session_revoked")
    detail = json.loads(event["detail"]) if isinstance(event["detail"], str) else event["detail"]
    assert (event["session_id"], detail["reason"]) == (sid_of(slipped), "account_suspended")
    assert (await refresh(client, kept["refresh_token"])).status_code == 200


# -- Suspend and enable in the order of their iat ------------------------------------------


async def test_an_older_account_enabled_arriving_late_does_not_lift_a_newer_suspension(
    client: httpx.AsyncClient, issuers: Issuers, clock: FakeClock, sql: Sql
) -> None:
    """Google says "enabled" (iat T-600), that delivery fails and is retried; meanwhile it says
    "disabled" again (iat T) and that one lands first. The retried, older "enabled" is audited
    as stale and changes nothing."""
    google = issuers.google
    await sign_in(client, google)
    now = int(clock())
    enabled_earlier = google_set(google, "account-enabled", iat=now - 600)
    disabled_now = google_set(google, "account-disabled", iat=now)
    for token in (disabled_now, enabled_earlier):  # arrival order
        await send_google(client, token)
    clock.advance(1)
    refused = await exchange(client, google.mint())
    assert refused.status_code == 403, "the newest event says disabled"
    actions = [e["detail"]["action"] for e in await signals(sql)]
    assert actions == ["suspend_account", "stale"]


async def test_an_older_account_disabled_arriving_late_does_not_suspend_again(
    client: httpx.AsyncClient, issuers: Issuers, clock: FakeClock, sql: Sql
) -> None:
    google = issuers.google
    await sign_in(client, google)
    now = int(clock())
    disabled = google_set(google, "account-disabled", iat=now - 600)
    enabled = google_set(google, "account-enabled", iat=now - 300)
    await send_google(client, disabled)
    await send_google(client, enabled)
    # The same "disabled" retried is a duplicate; an older one still, delivered late, is stale.
    await send_google(client, google_set(google, "account-disabled", iat=now - 900))
    assert await sql.scalar("SELECT count(*) FROM accounts WHERE suspended_at IS NULL") == 1
    await sign_in(client, google)
    actions = [e["detail"]["action"] for e in await signals(sql)]
    assert actions == ["suspend_account", "lift_suspension", "stale"]
