"""The verification mail's limits and words: no address oracle, a budget per recipient, an audit
event per mail, and a mail that names the account that asked."""

from __future__ import annotations

import httpx
import pytest

from .fakes import Issuers
from .smtp import Inbox
from .support import Sql, bearer, mail_link, sign_in

pytestmark = pytest.mark.anyio


async def test_probing_addresses_is_charged_like_mailing_them(
    mail_client: httpx.AsyncClient, issuers: Issuers, inbox: Inbox
) -> None:
    """A held address's 409 is answered only after the mail budget (5 an hour) is charged."""
    await sign_in(mail_client, issuers.google)  # holds ada@gmail.com, verified
    prober = bearer(
        (await sign_in(mail_client, issuers.google, sub="p", email="p@gmail.com"))["access_token"]
    )
    held = [
        (
            await mail_client.patch("/users/me", json={"email": "ada@gmail.com"}, headers=prober)
        ).status_code
        for _ in range(6)
    ]
    assert held == [409] * 5 + [429]
    # Past the limit a free address gets the same 429: nothing tells the two apart.
    free = await mail_client.patch("/users/me", json={"email": "free@example.com"}, headers=prober)
    assert free.status_code == 429
    assert inbox.messages == []


async def test_one_address_is_mailed_at_most_the_limit_whoever_asks(
    mail_client: httpx.AsyncClient, issuers: Issuers, inbox: Inbox, sql: Sql
) -> None:
    statuses = []
    for i in range(7):
        auth = bearer(
            (await sign_in(mail_client, issuers.google, sub=f"u{i}", email=f"u{i}@gmail.com"))[
                "access_token"
            ]
        )
        answer = await mail_client.patch(
            "/users/me", json={"email": "target@example.com"}, headers=auth
        )
        statuses.append(answer.status_code)
    assert statuses == [200] * 5 + [429] * 2
    assert [m["To"] for m in inbox.messages] == ["target@example.com"] * 5
    # One audit event per mail sent, none for the refused ones.
    assert len(await sql.events("email_verification_sent")) == 5


async def test_the_mail_names_the_account_that_asked(
    mail_client: httpx.AsyncClient, issuers: Issuers, inbox: Inbox, sql: Sql
) -> None:
    """An attacker's tenant signs in with the victim's address (stored unverified) and asks for
    a link: the mail says a Microsoft account asked, so the victim can tell it is not theirs."""
    attacker = await sign_in(
        mail_client,
        issuers.microsoft,
        email="victim@gmail.com",
        name="Support\nTeam\u0085",
        preferred_username="victim@gmail.com",
    )
    auth = bearer(attacker["access_token"])
    assert (await mail_client.post("/auth/verify-email/request", headers=auth)).status_code == 202
    (message,) = inbox.messages
    body = message.get_body(("plain",))
    assert body is not None
    text = body.get_content()
    (line,) = [line for line in text.splitlines() if line.startswith("The account that asked")]
    assert "signed in with microsoft" in line
    assert "'SupportTeam'" in line  # the name, its controls removed
    _, _, token = mail_link(message)
    assert token not in line
    (event,) = await sql.events("email_verification_sent")
    assert event["user_id"] == attacker["user"]["id"]
