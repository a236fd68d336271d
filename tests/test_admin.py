"""The admin API: HTTP Basic as an admin client; users, sessions, disabling, the audit log."""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from identity.settings import Settings

from .fakes import FakeClock, Issuers
from .support import Sql, basic, bearer, exchange, refresh, running

pytestmark = pytest.mark.anyio
SECRETS = {"nextjs": "nextjs-secret-0123456789", "backoffice": "backoffice-secret-0123456789"}
ADMIN = basic("backoffice", SECRETS["backoffice"])
NEXTJS = basic("nextjs", SECRETS["nextjs"])


@pytest.fixture
async def client(
    settings: Settings, issuers: Issuers, clock: FakeClock
) -> AsyncIterator[httpx.AsyncClient]:
    configured = dataclasses.replace(settings, clients=SECRETS, admin_clients=("backoffice",))
    async with running(configured, issuers, clock) as (_, http):
        yield http


async def people(
    client: httpx.AsyncClient, issuers: Issuers, clock: FakeClock, n: int
) -> list[dict[str, Any]]:
    users = []
    for i in range(n):
        clock.advance(1)
        token = issuers.google.mint(sub=f"person-{i}", email=f"p{i}@gmail.com", name=f"Person {i}")
        response = await exchange(client, token, headers=NEXTJS)
        assert response.status_code == 200, response.text
        users.append(response.json())
    return users


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        (basic("backoffice", "wrong-secret-000000000000"), 401),
        ({"Authorization": "Basic !!!"}, 401),
        (NEXTJS, 403),  # a client, but not an admin
    ],
)
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/admin/users"),
        ("GET", "/admin/users/x"),
        ("PATCH", "/admin/users/x"),
        ("DELETE", "/admin/users/x"),
        ("DELETE", "/admin/users/x/sessions"),
        ("GET", "/admin/events"),
    ],
)
async def test_authentication(
    client: httpx.AsyncClient, headers: dict[str, str], status: int, method: str, path: str
) -> None:
    response = await client.request(
        method, path, headers=headers, json={"disabled": True} if method == "PATCH" else None
    )
    assert response.status_code == status
    if status == 401:
        assert response.headers["www-authenticate"].startswith("Basic")
        assert response.json()["error"] == "invalid_client"
    else:
        assert response.json()["error"] == "access_denied"


async def test_not_enabled_is_403(settings: Settings, issuers: Issuers, clock: FakeClock) -> None:
    async with running(dataclasses.replace(settings, clients=SECRETS), issuers, clock) as (
        _,
        client,
    ):
        for headers in ({}, ADMIN):
            response = await client.get("/admin/users", headers=headers)
            assert response.status_code == 403


async def test_listing_newest_first_with_filters_and_keyset_pages(
    client: httpx.AsyncClient, issuers: Issuers, clock: FakeClock
) -> None:
    created = await people(client, issuers, clock, 5)
    first = (await client.get("/admin/users?limit=2", headers=ADMIN)).json()
    assert [u["email"] for u in first["users"]] == ["p4@gmail.com", "p3@gmail.com"]
    assert set(first["users"][0]) >= {
        "id",
        "email",
        "accounts",
        "disabled_at",
        "last_sign_in_at",
        "created_at",
    }
    second = (
        await client.get(f"/admin/users?limit=2&cursor={first['next_cursor']}", headers=ADMIN)
    ).json()
    third = (
        await client.get(f"/admin/users?limit=2&cursor={second['next_cursor']}", headers=ADMIN)
    ).json()
    assert [u["email"] for u in second["users"] + third["users"]] == [
        "p2@gmail.com",
        "p1@gmail.com",
        "p0@gmail.com",
    ]
    assert third["next_cursor"] is None
    by_email = (await client.get("/admin/users?email=P2@gmail.com", headers=ADMIN)).json()["users"]
    assert [u["id"] for u in by_email] == [created[2]["user"]["id"]]
    by_account = (
        await client.get("/admin/users?provider=google&provider_account_id=person-1", headers=ADMIN)
    ).json()
    assert [u["email"] for u in by_account["users"]] == ["p1@gmail.com"]
    assert (await client.get("/admin/users?provider=apple", headers=ADMIN)).json()["users"] == []


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=201",
        "limit=ten",
        "cursor=garbage",
        "cursor=" + base64.urlsafe_b64encode(b"1:x; DROP TABLE users").decode(),
        "cursor=" + base64.urlsafe_b64encode(b"-5:abc").decode(),
    ],
)
async def test_bad_listing_parameters_are_400(client: httpx.AsyncClient, query: str) -> None:
    response = await client.get(f"/admin/users?{query}", headers=ADMIN)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


async def test_user_detail(client: httpx.AsyncClient, issuers: Issuers, clock: FakeClock) -> None:
    (ada,) = await people(client, issuers, clock, 1)
    detail = (await client.get(f"/admin/users/{ada['user']['id']}", headers=ADMIN)).json()
    assert detail["accounts"][0]["provider"] == "google" and detail["accounts"][0]["created_at"]
    assert len(detail["sessions"]) == 1 and detail["sessions"][0]["client_id"] == "nextjs"
    assert (await client.get("/admin/users/nobody", headers=ADMIN)).status_code == 404


async def test_disable_ends_everything_at_once_and_enable_restores_sign_in(
    client: httpx.AsyncClient, issuers: Issuers, clock: FakeClock, sql: Sql
) -> None:
    (ada,) = await people(client, issuers, clock, 1)
    uid = ada["user"]["id"]
    disabled = await client.patch(f"/admin/users/{uid}", json={"disabled": True}, headers=ADMIN)
    assert disabled.status_code == 200
    assert disabled.json()["disabled_at"] and disabled.json()["sessions"] == []
    # Refresh tokens refused, access tokens refused by our endpoints, sign-ins 403.
    assert (await refresh(client, ada["refresh_token"], headers=NEXTJS)).json()[
        "error"
    ] == "invalid_grant"
    assert (await client.get("/users/me", headers=bearer(ada["access_token"]))).status_code == 401
    counts = await sql.counts()
    denied = await exchange(
        client, issuers.google.mint(sub="person-0", email="p0@gmail.com"), headers=NEXTJS
    )
    assert denied.status_code == 403
    assert denied.json()["error"] == "access_denied"
    after = await sql.counts()
    assert after == {**counts, "audit_events": counts["audit_events"] + 1}  # only its event
    (refused,) = await sql.events("sign_in_refused")
    assert refused["user_id"] == uid
    enabled = await client.patch(f"/admin/users/{uid}", json={"disabled": False}, headers=ADMIN)
    assert enabled.json()["disabled_at"] is None
    assert (
        await exchange(
            client, issuers.google.mint(sub="person-0", email="p0@gmail.com"), headers=NEXTJS
        )
    ).status_code == 200
    types = [e["type"] for e in await sql.events() if e["type"].startswith("user_")]
    assert types == ["user_disabled", "user_enabled"]
    disabled_event = (await sql.events("user_disabled"))[0]
    assert disabled_event["client_id"] == "backoffice"  # names the admin client


@pytest.mark.parametrize(
    "body", [{"disabled": "yes"}, {}, {"disabled": True, "role": "x"}, {"disabled": 1}]
)
async def test_patch_body_is_strict(
    client: httpx.AsyncClient, issuers: Issuers, clock: FakeClock, body: dict[str, Any]
) -> None:
    (ada,) = await people(client, issuers, clock, 1)
    response = await client.patch(f"/admin/users/{ada['user']['id']}", json=body, headers=ADMIN)
    assert response.status_code == 400
    assert (
        await client.patch("/admin/users/nobody", json={"disabled": True}, headers=ADMIN)
    ).status_code == 404


async def test_revoke_sessions_and_delete(
    client: httpx.AsyncClient, issuers: Issuers, clock: FakeClock, sql: Sql
) -> None:
    ada, grace = await people(client, issuers, clock, 2)
    await exchange(
        client, issuers.google.mint(sub="person-0", email="p0@gmail.com"), headers=NEXTJS
    )
    assert (
        await client.delete(f"/admin/users/{ada['user']['id']}/sessions", headers=ADMIN)
    ).status_code == 204
    assert (await refresh(client, ada["refresh_token"], headers=NEXTJS)).status_code == 400
    assert (
        await sql.scalar("SELECT count(*) FROM sessions WHERE user_id = :u", u=ada["user"]["id"])
        == 0
    )
    assert (
        await client.delete(f"/admin/users/{grace['user']['id']}", headers=ADMIN)
    ).status_code == 204
    assert (
        await client.get(f"/admin/users/{grace['user']['id']}", headers=ADMIN)
    ).status_code == 404
    assert (
        await client.delete(f"/admin/users/{grace['user']['id']}", headers=ADMIN)
    ).status_code == 404
    assert (await client.delete("/admin/users/nobody/sessions", headers=ADMIN)).status_code == 404
    revoked = (await sql.events("sessions_revoked"))[0]
    assert (revoked["client_id"], revoked["user_id"]) == ("backoffice", ada["user"]["id"])
    assert (await sql.events("user_deleted"))[0]["user_id"] == grace["user"]["id"]


async def test_events_with_filters_and_pages(
    client: httpx.AsyncClient, issuers: Issuers, clock: FakeClock
) -> None:
    ada, grace = await people(client, issuers, clock, 2)
    await client.patch(f"/admin/users/{ada['user']['id']}", json={"disabled": True}, headers=ADMIN)
    listing = (await client.get("/admin/events", headers=ADMIN)).json()
    assert [e["type"] for e in listing["events"]] == ["user_disabled", "sign_in", "sign_in"]
    mine = (await client.get(f"/admin/events?user_id={ada['user']['id']}", headers=ADMIN)).json()[
        "events"
    ]
    assert {e["user_id"] for e in mine} == {ada["user"]["id"]}
    sign_ins = (await client.get("/admin/events?type=sign_in&limit=1", headers=ADMIN)).json()
    assert sign_ins["events"][0]["user_id"] == grace["user"]["id"]
    rest = (
        await client.get(
            f"/admin/events?type=sign_in&limit=1&cursor={sign_ins['next_cursor']}", headers=ADMIN
        )
    ).json()
    assert rest["events"][0]["user_id"] == ada["user"]["id"]
    since = (await client.get("/admin/events?since=2100-01-01T00:00:00Z", headers=ADMIN)).json()
    assert since["events"] == []
    for query in ("type=nonsense", "since=yesterday", "cursor=0", "limit=-1"):
        assert (await client.get(f"/admin/events?{query}", headers=ADMIN)).status_code == 400
    event = listing["events"][0]
    assert set(event) == {
        "id",
        "created_at",
        "type",
        "user_id",
        "session_id",
        "client_id",
        "ip",
        "user_agent",
        "request_id",
        "detail",
    }
    assert event["detail"]["by"] == "admin"


async def test_the_mount_keeps_each_routes_full_template_in_the_metrics(
    client: httpx.AsyncClient,
) -> None:
    """The admin routes live in one mount: their label is still the whole template."""
    assert (await client.get("/admin/users/no-such-user", headers=ADMIN)).status_code == 404
    assert (await client.post("/admin/users", headers=ADMIN)).status_code == 405
    assert (await client.get("/admin/nowhere", headers=ADMIN)).status_code == 404
    exposition = (await client.get("/metrics")).text
    requests = [line for line in exposition.splitlines() if "identity_http_requests_total{" in line]
    assert any('route="/admin/users/{id}"' in line and 'status="404"' in line for line in requests)
    assert any('route="/admin/users"' in line and 'status="405"' in line for line in requests)
    assert any('route="(unmatched)"' in line and 'status="404"' in line for line in requests)
    assert not any('route="/users/{id}"' in line for line in requests)
