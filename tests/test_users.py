"""The signed-in user: /users/me, /userinfo, PATCH (pending email), DELETE, linking accounts."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from identity.settings import Settings

from .fakes import FakeClock, FakeIssuer, Issuers
from .smtp import Inbox
from .support import Sql, bearer, exchange, mail_link, refresh, resign, running, sign_in

pytestmark = pytest.mark.anyio


async def auth_of(client: httpx.AsyncClient, issuer: FakeIssuer, **claims: Any) -> dict[str, str]:
    return bearer((await sign_in(client, issuer, **claims))["access_token"])


async def test_users_me(client: httpx.AsyncClient, google: FakeIssuer) -> None:
    response = await client.get("/users/me", headers=await auth_of(client, google))
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    me = response.json()
    assert set(me) == {
        "id",
        "name",
        "email",
        "email_verified",
        "pending_email",
        "image",
        "created_at",
        "updated_at",
        "accounts",
    }
    assert me["email"] == "ada@gmail.com"
    assert me["created_at"] == "2027-01-15T08:00:00Z"
    assert me["accounts"] == [
        {"provider": "google", "provider_account_id": "110000000000000000001"}
    ]


async def test_userinfo(client: httpx.AsyncClient, google: FakeIssuer) -> None:
    tokens = await sign_in(client, google)
    info = (await client.get("/userinfo", headers=bearer(tokens["access_token"]))).json()
    assert info == {
        "sub": tokens["user"]["id"],
        "name": "Ada Lovelace",
        "email": "ada@gmail.com",
        "email_verified": True,
        "picture": "https://lh3.googleusercontent.com/a/ada",
    }


CASES = [
    "missing",
    "not_bearer",
    "garbage",
    "provider_id_token",
    "typ_jwt",
    "no_typ",
    "expired",
    "tampered",
    "refresh_token",
    "respelled",
    "other_issuer",
    "other_audience",
]


@pytest.mark.parametrize("case", CASES)
async def test_bad_access_tokens_get_401(
    client: httpx.AsyncClient, google: FakeIssuer, clock: FakeClock, keys_dir: Path, case: str
) -> None:
    tokens = await sign_in(client, google)
    access = tokens["access_token"]
    token: str | None = access
    if case == "missing":
        token = None
    elif case == "garbage":
        token = "not-a-token"
    elif case == "provider_id_token":
        token = google.mint(aud="http://127.0.0.1:8001")
    elif case == "typ_jwt":
        token = resign(keys_dir, access, {"typ": "JWT"})
    elif case == "no_typ":
        token = resign(keys_dir, access, {"typ": None})
    elif case == "expired":
        clock.advance(900 + 61)
    elif case == "tampered":
        header, payload, signature = access.split(".")
        token = f"{header}.{payload[:-2]}AA.{signature}"
    elif case == "refresh_token":
        token = tokens["refresh_token"]
    elif case == "respelled":
        token = access + "="
    elif case == "other_issuer":
        token = resign(keys_dir, access, iss="https://other.test")
    elif case == "other_audience":
        token = resign(keys_dir, access, aud="https://other-api.test")
    headers = {} if token is None else bearer(token)
    if case == "not_bearer":
        headers = {"Authorization": f"Basic {access}"}
    response = await client.get("/users/me", headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    assert response.json()["error"] == "invalid_token"


async def test_token_of_an_ended_session_stops_working(
    client: httpx.AsyncClient, google: FakeIssuer, sql: Sql
) -> None:
    auth = await auth_of(client, google)
    assert (await client.get("/users/me", headers=auth)).status_code == 200
    async with sql.engine.begin() as connection:
        from sqlalchemy import text

        await connection.execute(text("DELETE FROM sessions"))
    assert (await client.get("/users/me", headers=auth)).status_code == 401
    assert (await client.get("/userinfo", headers=auth)).status_code == 401


async def test_patch_name_and_image(
    client: httpx.AsyncClient, google: FakeIssuer, sql: Sql
) -> None:
    auth = await auth_of(client, google)
    response = await client.patch(
        "/users/me",
        json={"name": "  Ada King  ", "image": "https://example.com/a.png"},
        headers=auth,
    )
    assert response.status_code == 200
    assert response.json()["name"] == "Ada King"
    assert response.json()["image"] == "https://example.com/a.png"
    # The user's own edits win over the next sign-in.
    again = (await sign_in(client, google, name="Google Name"))["user"]
    assert (again["name"], again["image"]) == ("Ada King", "https://example.com/a.png")
    cleared = await client.patch("/users/me", json={"image": None}, headers=auth)
    assert cleared.json()["image"] is None
    fields = [e["detail"] for e in await sql.events("user_updated")]
    assert [json.loads(f) if isinstance(f, str) else f for f in fields] == [
        {"fields": ["image", "name"]},
        {"fields": ["image"]},
    ]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "x" * 201}, "name"),
        ({"name": 42}, "name"),
        ({"name": "tab\tname"}, "name"),
        ({"name": "nul\u0000name"}, "name"),
        ({"name": "\ud800"}, "name"),
        ({"image": "javascript:alert(1)"}, "image"),
        ({"image": "data:image/png;base64,AAAA"}, "image"),
        ({"image": "ftp://example.com/a.png"}, "image"),
        ({"image": "https://user:pass@evil.test/a.png"}, "image"),
        ({"image": "https://example.com/" + "a" * 2100}, "image"),
        ({"image": ["https://example.com"]}, "image"),
        ({"email": "not-an-email"}, "email"),
        ({"email": "a@b"}, "email"),
        ({"email": None}, "email"),
        ({"email": 7}, "email"),
        ({"email": "mallory,ceo@corp.example"}, "email"),
        ({"email": '"ceo"@corp.example'}, "email"),
        ({"email": "mallory <ceo@corp.example>"}, "email"),
        ({"email": "a b@corp.example"}, "email"),
        ({"email": "ceo%corp.example@relay.example"}, "email"),
        ({"email": "\u212aate@gmail.com"}, "email"),  # the Kelvin sign lower-cases to "k"
        ({"email": "ceo@corp.example\r\nBcc: x@y.z"}, "email"),
        ({"email": "x" * 250 + "@a.example"}, "email"),
        ({"email": "\ud800@corp.example"}, "email"),
        ({"role": "admin"}, "role"),
        ({"name": "ok", "is_admin": True}, "is_admin"),
    ],
)
async def test_patch_bad_input_names_the_field_and_changes_nothing(
    client: httpx.AsyncClient, google: FakeIssuer, sql: Sql, body: dict[str, Any], field: str
) -> None:
    auth = await auth_of(client, google)
    before = (await client.get("/users/me", headers=auth)).json()
    counts = await sql.counts()
    response = await client.patch(
        "/users/me", content=json.dumps(body), headers={**auth, "content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    assert field in response.json()["error_description"]
    assert (await client.get("/users/me", headers=auth)).json() == before
    assert await sql.counts() == counts


async def test_patch_needs_a_valid_token_and_json(
    client: httpx.AsyncClient, google: FakeIssuer
) -> None:
    assert (await client.patch("/users/me", json={"name": "x"})).status_code == 401
    auth = await auth_of(client, google)
    response = await client.patch(
        "/users/me",
        content=b"name=x",
        headers={**auth, "content-type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 400


async def test_a_new_address_is_pending_until_its_link_is_redeemed(
    mail_client: httpx.AsyncClient, google: FakeIssuer, inbox: Inbox, sql: Sql
) -> None:
    auth = await auth_of(mail_client, google)
    response = await mail_client.patch(
        "/users/me", json={"email": "  Ada.New@Example.COM "}, headers=auth
    )
    assert response.status_code == 200
    me = response.json()
    assert (me["email"], me["pending_email"]) == ("ada@gmail.com", "ada.new@example.com")
    assert me["email_verified"] is not None  # the current address is untouched
    (message,) = inbox.messages
    assert (message["To"], message["From"], message["Subject"]) == (
        "ada.new@example.com",
        "id@example.com",
        "Confirm your email address",
    )
    assert inbox.envelopes == [["ada.new@example.com"]]
    _, address, token = mail_link(message)
    verified = await mail_client.post("/auth/verify-email", json={"email": address, "token": token})
    assert verified.status_code == 200
    me = verified.json()
    assert (me["email"], me["pending_email"]) == ("ada.new@example.com", None)
    assert me["email_verified"] is not None
    # A later sign-in does not take the address back: the user chose it.
    assert (await sign_in(mail_client, google))["user"]["email"] == "ada.new@example.com"
    assert [e["type"] for e in await sql.events() if e["type"].startswith("email")] == [
        "email_verification_sent",
        "email_change_requested",
        "email_verified",
    ]


async def test_squatting_an_address_reserves_nothing(
    mail_client: httpx.AsyncClient, issuers: Issuers, inbox: Inbox, sql: Sql
) -> None:
    """Mallory asks for ceo@corp.example; the real owner's first sign-in is not refused, and
    the link that reached the owner cannot give Mallory the address any more."""
    mallory = await auth_of(mail_client, issuers.google, sub="mallory", email="mallory@gmail.com")
    assert (
        await mail_client.patch("/users/me", json={"email": "ceo@corp.example"}, headers=mallory)
    ).status_code == 200
    owner = (
        await sign_in(
            mail_client, issuers.google, sub="ceo", email="ceo@corp.example", hd="corp.example"
        )
    )["user"]
    assert (owner["email"], owner["email_verified"] is not None) == ("ceo@corp.example", True)
    _, address, token = mail_link(inbox.messages[0])
    # The owner clicks the mail meant for Mallory's request: refused, nothing changes.
    redeemed = await mail_client.post("/auth/verify-email", json={"email": address, "token": token})
    assert redeemed.status_code == 409
    assert (
        await sql.scalar("SELECT email FROM users WHERE id = :id", id=owner["id"])
        == "ceo@corp.example"
    )
    again = (
        await sign_in(
            mail_client, issuers.google, sub="ceo", email="ceo@corp.example", hd="corp.example"
        )
    )["user"]
    assert again["id"] == owner["id"]


async def test_an_address_held_verified_by_another_user_is_409_at_once(
    mail_client: httpx.AsyncClient, google: FakeIssuer, inbox: Inbox, sql: Sql
) -> None:
    await sign_in(mail_client, google, sub="grace", email="grace@gmail.com")
    auth = await auth_of(mail_client, google)
    counts = await sql.counts()
    response = await mail_client.patch(
        "/users/me", json={"email": "GRACE@gmail.com", "name": "Changed"}, headers=auth
    )
    assert response.status_code == 409
    assert (await mail_client.get("/users/me", headers=auth)).json()["name"] == "Ada Lovelace"
    # Nothing written but the mail budget's charge (taken first: the 409 is no free oracle).
    after = await sql.counts()
    assert after.pop("rate_limits") == 2
    counts.pop("rate_limits")
    assert after == counts
    assert inbox.messages == []


async def test_smtp_failure_is_503_and_changes_nothing(
    mail_client: httpx.AsyncClient, google: FakeIssuer, inbox: Inbox, sql: Sql
) -> None:
    inbox.refuse = True
    auth = await auth_of(mail_client, google)
    before = (await mail_client.get("/users/me", headers=auth)).json()
    counts = await sql.counts()
    response = await mail_client.patch("/users/me", json={"email": "new@example.com"}, headers=auth)
    assert response.status_code == 503
    assert response.json()["error"] == "temporarily_unavailable"
    assert (await mail_client.get("/users/me", headers=auth)).json() == before
    # No orphan token, no event: only the mail budget's charge, taken before anything else.
    after = await sql.counts()
    assert after.pop("rate_limits") == 2
    counts.pop("rate_limits")
    assert after == counts


async def test_with_mail_off_email_changes_are_403(
    settings: Settings, issuers: Issuers, clock: FakeClock, sql: Sql
) -> None:
    async with running(dataclasses.replace(settings, smtp_url="off"), issuers, clock) as (
        _,
        client,
    ):
        auth = await auth_of(client, issuers.google)
        counts = await sql.counts()
        response = await client.patch(
            "/users/me", json={"email": "new@example.com", "name": "X"}, headers=auth
        )
        assert response.status_code == 403
        assert response.json()["error"] == "mail_disabled"
        assert (await client.post("/auth/verify-email/request", headers=auth)).status_code == 403
        assert (
            await client.post("/auth/verify-email", json={"email": "a@b.example", "token": "t"})
        ).status_code == 403
        assert await sql.counts() == counts
        assert (
            await client.patch("/users/me", json={"name": "Fine"}, headers=auth)
        ).status_code == 200


async def test_delete_me_removes_everything_at_once(
    client: httpx.AsyncClient, google: FakeIssuer, sql: Sql
) -> None:
    body = await sign_in(client, google)
    auth = bearer(body["access_token"])
    await sign_in(client, google)  # a second session
    response = await client.delete("/users/me", headers=auth)
    assert response.status_code == 204
    counts = await sql.counts()
    assert (
        counts["users"],
        counts["accounts"],
        counts["sessions"],
        counts["verification_tokens"],
    ) == (0, 0, 0, 0)
    assert (await refresh(client, body["refresh_token"])).status_code == 400
    assert (await client.get("/users/me", headers=auth)).status_code == 401
    (event,) = await sql.events("user_deleted")
    assert event["user_id"] == body["user"]["id"]  # kept: the audit log outlives the user
    again = (await sign_in(client, google))["user"]
    assert again["id"] != body["user"]["id"]


# -- explicit linking -----------------------------------------------------------------------


async def test_link_another_providers_account_whatever_its_address(
    client: httpx.AsyncClient, issuers: Issuers, clock: FakeClock, sql: Sql
) -> None:
    tokens = await sign_in(client, issuers.google)
    auth = bearer(tokens["access_token"])
    clock.advance(1)
    # A Microsoft account with another (unverified) address: linking is explicit, so it links.
    response = await client.post(
        "/users/me/accounts", json={"id_token": issuers.microsoft.mint()}, headers=auth
    )
    assert response.status_code == 200
    assert [a["provider"] for a in response.json()["accounts"]] == ["google", "microsoft"]
    assert response.json()["email"] == "ada@gmail.com"  # the address is not touched
    assert await sql.scalar("SELECT count(*) FROM sessions") == 1  # no new session
    # Signing in with the linked account now finds this user.
    assert (await sign_in(client, issuers.microsoft))["user"]["id"] == tokens["user"]["id"]
    (event,) = await sql.events("account_linked")
    assert event["user_id"] == tokens["user"]["id"]


async def test_linking_refuses_what_it_must(
    client: httpx.AsyncClient, issuers: Issuers, sql: Sql, caplog: pytest.LogCaptureFixture
) -> None:
    other = await sign_in(client, issuers.apple)
    auth = await auth_of(client, issuers.google)
    counts = await sql.counts()
    # Apple's account belongs to another user: 409, nothing written.
    taken = await client.post(
        "/users/me/accounts", json={"id_token": issuers.apple.mint()}, headers=auth
    )
    assert taken.status_code == 409
    assert taken.json()["error"] == "account_conflict"
    assert await sql.counts() == counts
    bad = await client.post(
        "/users/me/accounts", json={"id_token": issuers.apple.mint(aud="x")}, headers=auth
    )
    assert bad.status_code == 400
    assert (
        await client.post("/users/me/accounts", json={"id_token": 5}, headers=auth)
    ).status_code == 400
    assert (
        await client.post("/users/me/accounts", json={"id_token": issuers.okta.mint()})
    ).status_code == 401
    # Single use, like any exchange; the same generic answer as any bad id_token (the rule
    # broken is in the log only).
    token = issuers.okta.mint()
    assert (
        await client.post("/users/me/accounts", json={"id_token": token}, headers=auth)
    ).status_code == 200
    caplog.clear()
    replayed = await client.post("/users/me/accounts", json={"id_token": token}, headers=auth)
    assert replayed.status_code == 400
    assert (
        replayed.json()
        == bad.json()
        == {
            "error": "invalid_request",
            "error_description": "the id_token is not valid",
        }
    )
    (line,) = [r for r in caplog.records if r.name == "identity.auth"]
    assert line.event["event"] == "link"  # type: ignore[attr-defined]
    assert line.event["reason"] == "replayed"  # type: ignore[attr-defined]
    assert token not in caplog.text
    # Already this user's: 200.
    again = await client.post(
        "/users/me/accounts", json={"id_token": issuers.okta.mint()}, headers=auth
    )
    assert again.status_code == 200
    assert other["user"]["id"] not in str(again.json())


async def test_unlink_but_never_the_last_account(
    client: httpx.AsyncClient, issuers: Issuers, sql: Sql
) -> None:
    auth = await auth_of(client, issuers.google)
    await client.post(
        "/users/me/accounts", json={"id_token": issuers.microsoft.mint()}, headers=auth
    )
    key = "72f988bf-86f1-41af-91ab-2d7cd011db47:00000000-0000-0000-66f3-3332eca7ea81"
    from urllib.parse import quote

    assert (
        await client.delete(f"/users/me/accounts/microsoft/{quote(key)}", headers=auth)
    ).status_code == 204
    assert (
        await client.delete(f"/users/me/accounts/microsoft/{quote(key)}", headers=auth)
    ).status_code == 404
    assert (
        await client.delete("/users/me/accounts/google/nobody", headers=auth)
    ).status_code == 404
    last = await client.delete("/users/me/accounts/google/110000000000000000001", headers=auth)
    assert last.status_code == 409
    assert await sql.scalar("SELECT count(*) FROM accounts") == 1
    assert len(await sql.events("account_unlinked")) == 1


async def test_concurrent_unlinks_never_leave_a_user_without_accounts(
    client: httpx.AsyncClient, issuers: Issuers, sql: Sql
) -> None:
    import asyncio

    auth = await auth_of(client, issuers.google)
    await client.post("/users/me/accounts", json={"id_token": issuers.apple.mint()}, headers=auth)
    key = "001234.abcdef0123456789abcdef0123456789.0123"
    results = await asyncio.gather(
        client.delete("/users/me/accounts/google/110000000000000000001", headers=auth),
        client.delete(f"/users/me/accounts/apple/{key}", headers=auth),
    )
    assert sorted(r.status_code for r in results) == [204, 409]
    assert await sql.scalar("SELECT count(*) FROM accounts") == 1
    assert (await exchange(client, issuers.google.mint())).status_code in (200, 409)
