"""PATCH and DELETE /users/me (SPEC §7.3), with mail through a real local SMTP server."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from identity.models import VerificationToken, utc

from .conftest import ISSUER, exchange, row_counts, services
from .fakes import FakeGoogle
from .smtp import Inbox

pytestmark = pytest.mark.anyio


async def sign_in(client: httpx.AsyncClient, google: FakeGoogle, **claims: Any) -> dict[str, str]:
    body = (await exchange(client, google.mint(**claims))).json()
    return {"Authorization": f"Bearer {body['access_token']}"}


def link_of(message: Any) -> tuple[str, str, str]:
    body = message.get_body(("plain",)).get_content()
    match = re.search(r"(http://\S+/auth/verify-email)\?email=([^&\s]+)&token=(\S+)", body)
    assert match, body
    return match.group(1), match.group(2), match.group(3)


async def test_patch_name_and_image(client: httpx.AsyncClient, google: FakeGoogle) -> None:
    auth = await sign_in(client, google)
    response = await client.patch(
        "/users/me",
        json={"name": "  Ada King  ", "image": "https://example.com/a.png"},
        headers=auth,
    )
    assert response.status_code == 200
    assert response.json()["name"] == "Ada King"
    assert response.json()["image"] == "https://example.com/a.png"
    # The user's own edits win over the next Google sign-in.
    again = (await exchange(client, google.mint(name="Google Name"))).json()["user"]
    assert again["name"] == "Ada King"
    assert again["image"] == "https://example.com/a.png"
    cleared = await client.patch("/users/me", json={"image": None}, headers=auth)
    assert cleared.json()["image"] is None


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "x" * 201}, "name"),
        ({"name": 42}, "name"),
        ({"name": "tab\tname"}, "name"),
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
        ({"role": "admin"}, "role"),
        ({"name": "ok", "is_admin": True}, "is_admin"),
    ],
)
async def test_patch_bad_input_names_the_field_and_changes_nothing(
    app: Starlette, client: httpx.AsyncClient, google: FakeGoogle, body: dict[str, Any], field: str
) -> None:
    auth = await sign_in(client, google)
    before = (await client.get("/users/me", headers=auth)).json()
    counts = await row_counts(app)
    response = await client.patch("/users/me", json=body, headers=auth)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    assert field in response.json()["error_description"]
    assert (await client.get("/users/me", headers=auth)).json() == before
    assert await row_counts(app) == counts


async def test_patch_needs_a_valid_token_and_json(
    client: httpx.AsyncClient, google: FakeGoogle
) -> None:
    assert (await client.patch("/users/me", json={"name": "x"})).status_code == 401
    auth = await sign_in(client, google)
    response = await client.patch(
        "/users/me",
        content=b"name=x",
        headers={**auth, "content-type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 400


async def test_email_change_sends_mail_and_clears_verification(
    mail_client: httpx.AsyncClient, google: FakeGoogle, smtp: tuple[Inbox, str]
) -> None:
    inbox, _ = smtp
    auth = await sign_in(mail_client, google)
    response = await mail_client.patch(
        "/users/me", json={"email": "  Ada.New@Example.COM "}, headers=auth
    )
    assert response.status_code == 200
    assert response.json()["email"] == "ada.new@example.com"
    assert response.json()["email_verified"] is None
    assert len(inbox.messages) == 1
    message = inbox.messages[0]
    assert message["To"] == "ada.new@example.com"
    assert message["From"] == "id@example.com"
    assert message["Subject"] == "Confirm your email address"
    base, email, token = link_of(message)
    assert base == f"{ISSUER}/auth/verify-email"
    assert email == "ada.new%40example.com"
    verified = await mail_client.post(
        "/auth/verify-email", json={"email": "ada.new@example.com", "token": token}
    )
    assert verified.status_code == 200
    assert verified.json()["email_verified"] is not None
    # A later Google sign-in does not take the address back: the user changed it.
    again = (await exchange(mail_client, google.mint())).json()["user"]
    assert again["email"] == "ada.new@example.com"


async def test_email_held_by_another_user_is_409(
    mail_app: Starlette, mail_client: httpx.AsyncClient, google: FakeGoogle, smtp: tuple[Inbox, str]
) -> None:
    await sign_in(mail_client, google, sub="grace", email="grace@gmail.com")
    auth = await sign_in(mail_client, google)
    counts = await row_counts(mail_app)
    response = await mail_client.patch(
        "/users/me", json={"email": "GRACE@gmail.com", "name": "Changed"}, headers=auth
    )
    assert response.status_code == 409
    assert (await mail_client.get("/users/me", headers=auth)).json()["name"] == "Ada Lovelace"
    assert await row_counts(mail_app) == counts
    assert smtp[0].messages == []


async def test_smtp_failure_is_503_and_changes_nothing(
    mail_app: Starlette, mail_client: httpx.AsyncClient, google: FakeGoogle, smtp: tuple[Inbox, str]
) -> None:
    smtp[0].refuse = True
    auth = await sign_in(mail_client, google)
    before = (await mail_client.get("/users/me", headers=auth)).json()
    counts = await row_counts(mail_app)
    response = await mail_client.patch("/users/me", json={"email": "new@example.com"}, headers=auth)
    assert response.status_code == 503
    assert response.json()["error"] == "temporarily_unavailable"
    assert (await mail_client.get("/users/me", headers=auth)).json() == before
    assert await row_counts(mail_app) == counts  # no orphan token


async def test_delete_me_removes_everything_at_once(
    app: Starlette, client: httpx.AsyncClient, google: FakeGoogle
) -> None:
    body = (await exchange(client, google.mint())).json()
    auth = {"Authorization": f"Bearer {body['access_token']}"}
    await exchange(client, google.mint())  # a second session
    async with services(app).database.transaction() as tx:
        tx.add(VerificationToken(identifier="ada@gmail.com", token="0" * 64, expires=utc(4e9)))
    response = await client.delete("/users/me", headers=auth)
    assert response.status_code == 204
    counts = await row_counts(app)
    assert (
        counts["users"],
        counts["accounts"],
        counts["sessions"],
        counts["verification_tokens"],
    ) == (0, 0, 0, 0)
    refreshed = await client.post(
        "/token", data={"grant_type": "refresh_token", "refresh_token": body["refresh_token"]}
    )
    assert refreshed.status_code == 400
    assert (await client.get("/users/me", headers=auth)).status_code == 401
    # Signing in again makes a new, different user.
    again = (await exchange(client, google.mint())).json()["user"]
    assert again["id"] != body["user"]["id"]
