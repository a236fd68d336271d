"""The outbox: every change writes its notices in its own transaction, on both databases; a
sign-in writes none unless someone subscribes; every ended session gets its revocation row."""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from identity.accounts import housekeeping
from identity.accounts.audit import AuditLog
from identity.accounts.sessions import SessionPolicy, Sessions
from identity.destinations import EVENTS, WebhookEndpoint
from identity.settings import Settings
from identity.store.database import Database

from .fakes import FakeClock, Issuers
from .support import Sql, basic, bearer, exchange, refresh, running, sign_in

pytestmark = pytest.mark.anyio

SECRETS = {"backoffice": "backoffice-secret-0123456789"}
ADMIN = basic("backoffice", SECRETS["backoffice"])
HOOK = "https://hooks.example/identity"
KEY = b"k" * 32


def endpoint(*events: str, url: str = HOOK) -> WebhookEndpoint:
    return WebhookEndpoint(url, KEY, frozenset(events))


def configured(settings: Settings, **changes: Any) -> Settings:
    return dataclasses.replace(settings, **changes)


@pytest.fixture
async def everything(
    settings: Settings, issuers: Issuers, clock: FakeClock
) -> AsyncIterator[httpx.AsyncClient]:
    """A service telling one webhook every event, and the public client's logout URI."""
    changed = configured(
        settings,
        webhooks=(endpoint(*EVENTS),),
        backchannel_logout_uris={"public": "https://app.example/api/logout"},
    )
    async with running(changed, issuers, clock, delivery_interval=3600) as (_, http):
        yield http


async def notices(sql: Sql) -> list[tuple[str, str, dict[str, Any]]]:
    rows = await sql.rows("SELECT event, destination, payload FROM outbox ORDER BY id")
    return [(r["event"], r["destination"], _json(r["payload"])) for r in rows]


def _json(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else json.loads(value)


def sid_of(access_token: str) -> str:
    payload = access_token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return str(claims["sid"])


async def test_a_sign_in_writes_no_row_when_nobody_subscribes(
    client: httpx.AsyncClient, issuers: Issuers, sql: Sql
) -> None:
    await sign_in(client, issuers.google)
    await sign_in(client, issuers.google)
    assert await notices(sql) == []
    assert await sql.scalar("SELECT count(*) FROM revocations") == 0


async def test_user_created_is_told_once_to_its_subscriber(
    settings: Settings, issuers: Issuers, clock: FakeClock, sql: Sql
) -> None:
    changed = configured(
        settings,
        webhooks=(endpoint("user.created"), endpoint("user.deleted", url=HOOK + "/other")),
    )
    async with running(changed, issuers, clock) as (_, client):
        first = await sign_in(client, issuers.google)
        await sign_in(client, issuers.google)  # returning: nothing new
    user_id = first["user"]["id"]
    assert await notices(sql) == [
        ("user.created", f"webhook:{HOOK}", {"user_id": user_id, "provider": "google"})
    ]
    event = await sql.scalar("SELECT audit_event_id FROM outbox")
    sign_in_event = await sql.rows("SELECT id, type FROM audit_events WHERE id = :id", id=event)
    assert sign_in_event[0]["type"] == "sign_in"


async def test_an_account_linked_by_address_is_told(
    settings: Settings, issuers: Issuers, clock: FakeClock, sql: Sql
) -> None:
    changed = configured(settings, webhooks=(endpoint("account.linked"),))
    async with running(changed, issuers, clock) as (_, client):
        google = issuers.google
        first = await sign_in(client, google, sub="ws-1", email="ada@example.com", hd="example.com")
        okta = await sign_in(client, issuers.okta, email="ada@example.com")
    assert okta["user"]["id"] == first["user"]["id"]
    found = await notices(sql)
    assert [(e, p["user_id"], p["provider"]) for e, _, p in found] == [
        ("account.linked", first["user"]["id"], "okta")
    ]
    assert found[0][2]["account_id"]


async def test_a_logout_ends_the_session_with_its_notices_and_revocation(
    everything: httpx.AsyncClient, issuers: Issuers, sql: Sql
) -> None:
    tokens = await sign_in(everything, issuers.google)
    sid = sid_of(tokens["access_token"])
    before = await notices(sql)
    response = await everything.post("/auth/logout", headers=bearer(tokens["access_token"]))
    assert response.status_code == 204
    told = (await notices(sql))[len(before) :]
    payload = {
        "sid": sid,
        "user_id": tokens["user"]["id"],
        "client_id": "public",
        "reason": "logout",
    }
    assert told == [
        ("session.ended", "backchannel:public", payload),
        ("session.ended", f"webhook:{HOOK}", payload),
    ]
    revoked = await sql.rows("SELECT session_id, client_id FROM revocations")
    assert revoked == [{"session_id": sid, "client_id": "public"}]


async def test_reuse_detection_ends_the_session_like_every_path(
    everything: httpx.AsyncClient, issuers: Issuers, sql: Sql
) -> None:
    tokens = await sign_in(everything, issuers.google)
    first = tokens["refresh_token"]
    assert (await refresh(everything, first)).status_code == 200
    await sql.set_time("sessions", "rotated_at")  # the reuse interval is over
    assert (await refresh(everything, first)).status_code == 400
    ended = [n for n in await notices(sql) if n[0] == "session.ended"]
    assert {d for _, d, _ in ended} == {"backchannel:public", f"webhook:{HOOK}"}
    assert {p["reason"] for _, _, p in ended} == {"reuse_detected"}
    assert await sql.scalar("SELECT count(*) FROM revocations") == 1
    event = await sql.events("refresh_reuse")
    ids = await sql.rows("SELECT DISTINCT audit_event_id FROM outbox WHERE event = 'session.ended'")
    assert ids == [{"audit_event_id": event[0]["id"]}]


async def test_user_changes_are_told(
    settings: Settings, issuers: Issuers, clock: FakeClock, sql: Sql
) -> None:
    changed = configured(
        settings,
        clients=SECRETS,
        admin_clients=("backoffice",),
        webhooks=(endpoint(*EVENTS),),
    )
    async with running(changed, issuers, clock) as (_, client):
        body = (await exchange(client, issuers.google.mint(), headers=ADMIN)).json()
        uid, auth = body["user"]["id"], bearer(body["access_token"])
        assert (await client.patch("/users/me", json={"name": "Ada"}, headers=auth)).is_success
        for disabled in (True, False):
            patched = await client.patch(
                f"/admin/users/{uid}", json={"disabled": disabled}, headers=ADMIN
            )
            assert patched.status_code == 200
        assert (await client.delete(f"/admin/users/{uid}", headers=ADMIN)).status_code == 204
    told = [(e, p) for e, _, p in await notices(sql)]
    assert told == [
        ("user.created", {"user_id": uid, "provider": "google"}),
        ("user.updated", {"user_id": uid, "fields": ["name"]}),
        (
            "session.ended",
            {
                "sid": sid_of(body["access_token"]),
                "user_id": uid,
                "client_id": "backoffice",
                "reason": "user_disabled",
            },
        ),
        ("user.disabled", {"user_id": uid}),
        ("user.enabled", {"user_id": uid}),
        ("user.deleted", {"user_id": uid}),
    ]


async def test_a_refused_change_writes_no_notice(
    everything: httpx.AsyncClient, issuers: Issuers, sql: Sql
) -> None:
    tokens = await sign_in(everything, issuers.google)
    before = await notices(sql)
    # Another user's session id: 404, nothing ended, nothing told.
    response = await everything.delete(
        "/users/me/sessions/not-a-session", headers=bearer(tokens["access_token"])
    )
    assert response.status_code == 404
    assert await notices(sql) == before
    assert await sql.scalar("SELECT count(*) FROM revocations") == 0


async def test_the_janitor_prunes_what_the_feed_and_the_outbox_no_longer_need(
    everything: httpx.AsyncClient, issuers: Issuers, sql: Sql, database_url: str
) -> None:
    tokens = await sign_in(everything, issuers.google)
    assert (
        await everything.post("/auth/logout", headers=bearer(tokens["access_token"]))
    ).is_success
    assert await sql.scalar("SELECT count(*) FROM revocations") == 1
    await sql.set_time("revocations", "expires_at")  # every access token has expired
    await sql.set_time("outbox", "finished_at", where="destination = 'backchannel:public'")
    database = Database(database_url)
    try:
        policy = SessionPolicy(absolute_ttl=60, idle_ttl=60, reuse_interval=10)
        janitor = housekeeping.Janitor(
            database, Sessions(database, policy), AuditLog(database, retention=3600)
        )
        # Finished a week ago: gone; still pending (even with an old time): kept.
        async with sql.engine.begin() as connection:
            await connection.execute(
                text("UPDATE outbox SET state = 'delivered' WHERE destination = :d"),
                {"d": "backchannel:public"},
            )
        done = await janitor.prune()
    finally:
        await database.close()
    assert done["revocations"] == 1 and done["outbox"] == 1
    assert [(e, d) for e, d, _ in await notices(sql)] == [
        ("user.created", f"webhook:{HOOK}"),
        ("session.ended", f"webhook:{HOOK}"),
    ]


async def test_a_new_notice_never_reuses_an_earlier_webhook_id(
    settings: Settings, issuers: Issuers, clock: FakeClock, sql: Sql
) -> None:
    """webhook-id is msg_<outbox id> and receivers deduplicate by it: once the pruner has
    deleted every finished notice (a quiet week), a new notice still gets a new id (SQLite's
    AUTOINCREMENT; PostgreSQL's sequence never goes back)."""
    from .receivers import receiver

    key = b"0123456789abcdef0123456789abcdef"
    with receiver(200) as hook:
        endpoint = WebhookEndpoint(hook.url + "/hook", key, frozenset(EVENTS))
        changed = dataclasses.replace(settings, webhooks=(endpoint,))
        async with running(changed, issuers, clock, delivery_interval=3600) as (app, client):
            worker = app.state.deliveries
            await sign_in(client, issuers.google)
            assert await worker.round() == 1
            # What the pruner's "outbox" job does to notices finished more than a week ago.
            async with sql.engine.begin() as connection:
                await connection.execute(text("DELETE FROM deliveries"))
                await connection.execute(text("DELETE FROM outbox"))
            await sign_in(client, issuers.apple)  # another user: a new user.created notice
            assert await worker.round() == 1
    ids = [r.headers["webhook-id"] for r in hook.received]
    assert len(set(ids)) == len(ids) == 2, ids
