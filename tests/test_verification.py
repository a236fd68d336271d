"""Email verification (SPEC §7.4), mail, and encrypted provider tokens (SPEC §6)."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from urllib.parse import unquote

import httpx
import pytest
from cryptography.fernet import Fernet
from sqlalchemy import text
from starlette.applications import Starlette

from identity.app import create_app
from identity.sealing import Sealer
from identity.settings import Settings

from .conftest import ISSUER, row_counts, services
from .fakes import FakeClock, FakeGoogle
from .smtp import Inbox
from .test_profile import link_of, sign_in

pytestmark = pytest.mark.anyio


async def unverified_user(client: httpx.AsyncClient, google: FakeGoogle) -> dict[str, str]:
    return await sign_in(client, google, email_verified=False)


async def request_mail(
    client: httpx.AsyncClient, auth: dict[str, str], inbox: Inbox
) -> tuple[str, str]:
    response = await client.post("/auth/verify-email/request", headers=auth)
    assert response.status_code == 202
    _, email, token = link_of(inbox.messages[-1])
    return unquote(email), token


async def test_request_and_redeem(
    mail_app: Starlette, mail_client: httpx.AsyncClient, google: FakeGoogle, smtp: tuple[Inbox, str]
) -> None:
    auth = await unverified_user(mail_client, google)
    email, token = await request_mail(mail_client, auth, smtp[0])
    assert email == "ada@gmail.com"
    assert len(token) >= 43  # ≥ 256 bits, base64url
    # Only the hash is stored.
    async with services(mail_app).database.reader() as tx:
        stored = (await tx.execute(text("SELECT token FROM verification_tokens"))).scalar_one()
    assert stored != token
    assert len(stored) == 64
    response = await mail_client.post("/auth/verify-email", json={"email": email, "token": token})
    assert response.status_code == 200
    assert response.json()["email_verified"].endswith("Z")
    assert (await mail_client.get("/userinfo", headers=auth)).json()["email_verified"] is True
    used = await mail_client.post("/auth/verify-email", json={"email": email, "token": token})
    assert used.status_code == 400
    assert used.json()["error"] == "invalid_token"


async def test_one_message_for_every_bad_token(
    mail_client: httpx.AsyncClient, google: FakeGoogle, smtp: tuple[Inbox, str], clock: FakeClock
) -> None:
    auth = await unverified_user(mail_client, google)
    email, token = await request_mail(mail_client, auth, smtp[0])
    answers = []
    for body in (
        {"email": email, "token": "unknown-token"},
        {"email": "someone@else.com", "token": token},
        {"email": email, "token": token[:-3]},
        {"email": email, "token": 42},
        {"email": email},
    ):
        response = await mail_client.post("/auth/verify-email", json=body)
        assert response.status_code == 400
        answers.append(response.json())
    clock.advance(24 * 3600 + 1)
    expired = await mail_client.post("/auth/verify-email", json={"email": email, "token": token})
    answers.append(expired.json())
    assert all(a == answers[0] for a in answers)
    assert answers[0]["error"] == "invalid_token"


async def test_two_concurrent_redemptions_one_success(
    mail_client: httpx.AsyncClient, google: FakeGoogle, smtp: tuple[Inbox, str]
) -> None:
    auth = await unverified_user(mail_client, google)
    email, token = await request_mail(mail_client, auth, smtp[0])
    responses = await asyncio.gather(
        *(
            mail_client.post("/auth/verify-email", json={"email": email, "token": token})
            for _ in range(2)
        )
    )
    assert Counter(r.status_code for r in responses) == {200: 1, 400: 1}


async def test_mail_rate_limit(
    mail_client: httpx.AsyncClient, google: FakeGoogle, smtp: tuple[Inbox, str], clock: FakeClock
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
    assert len(smtp[0].messages) == 5
    clock.advance(3600)
    auth = await unverified_user(mail_client, google)  # the old access token expired meanwhile
    assert (await mail_client.post("/auth/verify-email/request", headers=auth)).status_code == 202


async def test_already_verified_or_no_token(
    mail_client: httpx.AsyncClient, google: FakeGoogle
) -> None:
    auth = await sign_in(mail_client, google)  # Google verified the address
    response = await mail_client.post("/auth/verify-email/request", headers=auth)
    assert response.status_code == 400
    assert (await mail_client.post("/auth/verify-email/request")).status_code == 401


async def test_link_page_confirms_with_a_post(
    mail_client: httpx.AsyncClient, google: FakeGoogle, smtp: tuple[Inbox, str]
) -> None:
    auth = await unverified_user(mail_client, google)
    email, token = await request_mail(mail_client, auth, smtp[0])
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
    client: httpx.AsyncClient, google: FakeGoogle, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="identity.mail")
    auth = await unverified_user(client, google)
    assert (await client.post("/auth/verify-email/request", headers=auth)).status_code == 202
    record = next(r for r in caplog.records if r.name == "identity.mail")
    assert "development mailer" in record.getMessage()
    assert "/auth/verify-email?email=ada%40gmail.com&token=" in record.event["body"]  # type: ignore[attr-defined]


async def test_provider_tokens_are_stored_encrypted(
    settings: Settings, google: FakeGoogle, clock: FakeClock
) -> None:
    key = Fernet.generate_key().decode()
    configured = Settings(**{**settings.__dict__, "token_encryption_keys": (key,)})
    app = create_app(configured, http_client=google.client(), clock=clock)
    id_token = google.mint()
    body = {
        "provider": "google",
        "id_token": id_token,
        "access_token": "ya29.plain-access",
        "refresh_token": "1//plain-refresh",
        "expires_at": 1_900_000_000,
    }
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ISSUER) as client,
    ):
        assert (await client.post("/auth/oauth/callback", json=body)).status_code == 200
        async with services(app).database.reader() as tx:
            row = (
                await tx.execute(text("SELECT access_token, refresh_token, id_token FROM accounts"))
            ).one()
    raw = " ".join(row)
    for secret in ("ya29.plain-access", "1//plain-refresh", id_token, id_token.split(".")[1]):
        assert secret not in raw
    sealer = Sealer((key,))
    assert sealer.open(row[0]) == "ya29.plain-access"
    assert sealer.open(row[2]) == id_token
    # Rotation: a new key in front still opens what the old one sealed.
    rotated = Sealer((Fernet.generate_key().decode(), key))
    assert rotated.open(row[1]) == "1//plain-refresh"


async def test_without_a_key_provider_tokens_are_not_stored(
    app: Starlette, client: httpx.AsyncClient, google: FakeGoogle
) -> None:
    body = {"provider": "google", "id_token": google.mint(), "access_token": "ya29.plain"}
    assert (await client.post("/auth/oauth/callback", json=body)).status_code == 200
    async with services(app).database.reader() as tx:
        row = (
            await tx.execute(text("SELECT access_token, refresh_token, id_token FROM accounts"))
        ).one()
    assert tuple(row) == (None, None, None)
    assert (await row_counts(app))["accounts"] == 1
