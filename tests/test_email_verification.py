"""Email verification: mailed single-use tokens, the confirm page, the mail limit."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections import Counter

import httpx
import pytest

from identity.settings import Settings

from .fakes import FakeClock, FakeIssuer, Issuers
from .smtp import Inbox
from .support import Sql, bearer, mail_link, running, sign_in

pytestmark = pytest.mark.anyio


async def unverified_user(client: httpx.AsyncClient, google: FakeIssuer) -> dict[str, str]:
    return bearer((await sign_in(client, google, email_verified=False))["access_token"])


async def request_mail(
    client: httpx.AsyncClient, auth: dict[str, str], inbox: Inbox
) -> tuple[str, str]:
    response = await client.post("/auth/verify-email/request", headers=auth)
    assert response.status_code == 202
    _, email, token = mail_link(inbox.messages[-1])
    return email, token


async def test_request_and_redeem(
    mail_client: httpx.AsyncClient, google: FakeIssuer, inbox: Inbox, sql: Sql
) -> None:
    auth = await unverified_user(mail_client, google)
    email, token = await request_mail(mail_client, auth, inbox)
    assert email == "ada@gmail.com"
    assert len(token) >= 43  # 256 bits, base64url
    stored = await sql.scalar("SELECT token FROM verification_tokens")
    assert stored != token and len(stored) == 64  # only the hash
    response = await mail_client.post("/auth/verify-email", json={"email": email, "token": token})
    assert response.status_code == 200
    assert response.json()["email_verified"].endswith("Z")
    assert response.json()["accounts"]
    assert (await mail_client.get("/userinfo", headers=auth)).json()["email_verified"] is True
    used = await mail_client.post("/auth/verify-email", json={"email": email, "token": token})
    assert used.status_code == 400
    assert used.json()["error"] == "invalid_token"
    (event,) = await sql.events("email_verified")
    assert json.loads(event["detail"]) if isinstance(event["detail"], str) else event["detail"]


async def test_one_message_for_every_bad_token(
    mail_client: httpx.AsyncClient, google: FakeIssuer, inbox: Inbox, clock: FakeClock
) -> None:
    auth = await unverified_user(mail_client, google)
    email, token = await request_mail(mail_client, auth, inbox)
    answers = []
    for body in (
        {"email": email, "token": "unknown-token"},
        {"email": "someone@else.example", "token": token},
        {"email": email, "token": token[:-3]},
        {"email": email, "token": 42},
        {"email": email},
        {"email": "\ud800@x.example", "token": token},
        {"email": ["ada@gmail.com"], "token": token},
    ):
        response = await mail_client.post(
            "/auth/verify-email",
            content=json.dumps(body),
            headers={"content-type": "application/json"},
        )
        assert response.status_code == 400
        answers.append(response.json())
    clock.advance(24 * 3600 + 1)
    expired = await mail_client.post("/auth/verify-email", json={"email": email, "token": token})
    answers.append(expired.json())
    # The body with a lone surrogate is refused as text before anything; all others say the same.
    text_refusal = answers.pop(5)
    assert text_refusal["error"] == "invalid_request"
    assert all(a == answers[0] for a in answers)
    assert answers[0]["error"] == "invalid_token"


async def test_two_concurrent_redemptions_one_success(
    mail_client: httpx.AsyncClient, google: FakeIssuer, inbox: Inbox
) -> None:
    auth = await unverified_user(mail_client, google)
    email, token = await request_mail(mail_client, auth, inbox)
    responses = await asyncio.gather(
        *(
            mail_client.post("/auth/verify-email", json={"email": email, "token": token})
            for _ in range(2)
        )
    )
    assert Counter(r.status_code for r in responses) == {200: 1, 400: 1}


async def test_mail_rate_limit(
    mail_client: httpx.AsyncClient, google: FakeIssuer, inbox: Inbox, clock: FakeClock
) -> None:
    auth = await unverified_user(mail_client, google)
    for _ in range(5):
        assert (
            await mail_client.post("/auth/verify-email/request", headers=auth)
        ).status_code == 202
    limited = await mail_client.post("/auth/verify-email/request", headers=auth)
    assert limited.status_code == 429
    assert 0 < int(limited.headers["retry-after"]) <= 3600
    # The email change mail counts too.
    changed = await mail_client.patch(
        "/users/me", json={"email": "other@example.com"}, headers=auth
    )
    assert changed.status_code == 429
    assert len(inbox.messages) == 5
    clock.advance(3600)
    auth = await unverified_user(mail_client, google)  # the old access token expired meanwhile
    assert (await mail_client.post("/auth/verify-email/request", headers=auth)).status_code == 202


async def test_already_verified_or_no_token(
    mail_client: httpx.AsyncClient, google: FakeIssuer
) -> None:
    auth = bearer((await sign_in(mail_client, google))["access_token"])  # Google verified it
    assert (await mail_client.post("/auth/verify-email/request", headers=auth)).status_code == 400
    assert (await mail_client.post("/auth/verify-email/request")).status_code == 401


async def test_a_provider_driven_address_change_voids_the_old_addresss_tokens(
    mail_client: httpx.AsyncClient, google: FakeIssuer, inbox: Inbox, sql: Sql
) -> None:
    auth = await unverified_user(mail_client, google)
    email, token = await request_mail(mail_client, auth, inbox)
    # Google now proves another address for this account: the user's address follows it.
    moved = (await sign_in(mail_client, google, email="ada.moved@gmail.com"))["user"]
    assert moved["email"] == "ada.moved@gmail.com"
    stale = await mail_client.post("/auth/verify-email", json={"email": email, "token": token})
    assert stale.status_code == 400
    assert await sql.scalar("SELECT email FROM users") == "ada.moved@gmail.com"


async def test_redeeming_moves_an_unproven_address_from_its_holder(
    mail_client: httpx.AsyncClient, issuers: Issuers, inbox: Inbox, sql: Sql
) -> None:
    # A Microsoft user holds grace@contoso.example without having proven it.
    holder = (await sign_in(mail_client, issuers.microsoft))["user"]
    auth = bearer((await sign_in(mail_client, issuers.google))["access_token"])
    assert (
        await mail_client.patch("/users/me", json={"email": "grace@contoso.example"}, headers=auth)
    ).status_code == 200
    _, email, token = mail_link(inbox.messages[-1])
    redeemed = await mail_client.post("/auth/verify-email", json={"email": email, "token": token})
    assert redeemed.status_code == 200
    assert redeemed.json()["email"] == "grace@contoso.example"
    assert await sql.scalar("SELECT email FROM users WHERE id = :id", id=holder["id"]) is None
    (released,) = await sql.events("email_released")
    assert released["user_id"] == holder["id"]


async def test_link_page_confirms_with_a_post(
    mail_client: httpx.AsyncClient, google: FakeIssuer, inbox: Inbox
) -> None:
    auth = await unverified_user(mail_client, google)
    email, token = await request_mail(mail_client, auth, inbox)
    page = await mail_client.get("/auth/verify-email", params={"email": email, "token": token})
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["referrer-policy"] == "no-referrer"
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert 'method="post"' in page.text
    # Following the link (as a mail scanner would) spends nothing.
    assert (await mail_client.get("/users/me", headers=auth)).json()["email_verified"] is None
    confirmed = await mail_client.post("/auth/verify-email", data={"email": email, "token": token})
    assert confirmed.status_code == 200
    assert confirmed.headers["content-type"].startswith("text/html")
    assert "confirmed" in confirmed.text
    again = await mail_client.post("/auth/verify-email", data={"email": email, "token": token})
    assert again.status_code == 400
    assert "not valid" in again.text.lower()


async def test_link_page_escapes_its_input(client: httpx.AsyncClient) -> None:
    page = await client.get(
        "/auth/verify-email", params={"email": '"><script>x()</script>', "token": "t"}
    )
    assert "<script>x()" not in page.text
    assert "&lt;script&gt;" in page.text
    assert (await client.get("/auth/verify-email")).status_code == 400


async def test_development_mailer_writes_the_link_to_the_log(
    client: httpx.AsyncClient, google: FakeIssuer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="identity.mail")
    auth = await unverified_user(client, google)
    assert (await client.post("/auth/verify-email/request", headers=auth)).status_code == 202
    record = next(r for r in caplog.records if r.name == "identity.mail")
    assert "development mailer" in record.getMessage()
    assert "/auth/verify-email?email=ada%40gmail.com&token=" in record.event["body"]  # type: ignore[attr-defined]


async def test_a_mail_goes_to_one_mailbox_only(
    settings: Settings, issuers: Issuers, clock: FakeClock, smtp: tuple[Inbox, str]
) -> None:
    """The envelope has exactly the one recipient, whatever was asked for."""
    configured = dataclasses.replace(settings, smtp_url=smtp[1])
    async with running(configured, issuers, clock) as (_, client):
        auth = bearer((await sign_in(client, issuers.google))["access_token"])
        for address in (
            "mallory,ceo@corp.example",
            "mallory@x.example, ceo@corp.example",
            "a@x.example\nBcc: ceo@corp.example",
        ):
            assert (
                await client.patch("/users/me", json={"email": address}, headers=auth)
            ).status_code == 400
        assert (
            await client.patch("/users/me", json={"email": "ok@x.example"}, headers=auth)
        ).status_code == 200
    assert smtp[0].envelopes == [["ok@x.example"]]
