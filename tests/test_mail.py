"""The SMTP mailer against a real server on loopback: STARTTLS required means TLS or no mail."""

from __future__ import annotations

import dataclasses
from email.message import EmailMessage
from pathlib import Path

import pytest

from identity.accounts.mail import Asker, MailError, SmtpMailer, verification_message
from identity.settings import Settings

from .fakes import FakeClock, Issuers
from .smtp import smtp_server, tls_contexts
from .support import Sql, bearer, running, sign_in

pytestmark = pytest.mark.anyio


def message() -> EmailMessage:
    return verification_message(
        sender="id@example.com",
        to="ada@example.com",
        link="https://x/",
        asker=Asker(providers=("google",), name="Ada", email=None),
    )


async def test_required_starttls_never_sends_in_clear() -> None:
    """A server (or whoever stands between) that offers no STARTTLS gets no mail."""
    with smtp_server() as (inbox, url):
        with pytest.raises(MailError):
            await SmtpMailer(url + "?starttls=required").send(message())
        assert inbox.messages == []
        # The same server takes the mail from a plain smtp:// URL: only the requirement differs.
        await SmtpMailer(url).send(message())
        assert inbox.encrypted == [False]


async def test_required_starttls_sends_over_tls(tmp_path: Path) -> None:
    server_context, client_context = tls_contexts(tmp_path)
    with smtp_server(server_context) as (inbox, url):
        mailer = SmtpMailer(url + "?starttls=required", tls_context=client_context)
        await mailer.send(message())
    assert inbox.encrypted == [True]
    assert inbox.envelopes == [["ada@example.com"]]


async def test_through_http_a_refused_upgrade_is_503_and_stores_nothing(
    settings: Settings, issuers: Issuers, clock: FakeClock, sql: Sql, tmp_path: Path
) -> None:
    with smtp_server() as (inbox, url):
        configured = dataclasses.replace(settings, smtp_url=url + "?starttls=required")
        async with running(configured, issuers, clock) as (_, client):
            auth = bearer((await sign_in(client, issuers.google))["access_token"])
            before = await sql.counts()
            response = await client.patch(
                "/users/me", json={"email": "new@example.com"}, headers=auth
            )
            assert response.status_code == 503
            assert response.json()["error"] == "temporarily_unavailable"
            assert "could not be sent" in response.json()["error_description"]
            # Only the mail budget's charge stands: it is taken before anything else.
            after = await sql.counts()
            assert after.pop("rate_limits") == 2
            before.pop("rate_limits")
            assert after == before
            assert (await client.get("/users/me", headers=auth)).json()["email"] != (
                "new@example.com"
            )
        assert inbox.messages == []


async def test_through_http_the_mail_goes_over_tls_when_offered(
    settings: Settings, issuers: Issuers, clock: FakeClock, tmp_path: Path
) -> None:
    server_context, client_context = tls_contexts(tmp_path)
    with smtp_server(server_context) as (inbox, url):
        mailer = SmtpMailer(url + "?starttls=required", tls_context=client_context)
        configured = dataclasses.replace(settings, smtp_url=url + "?starttls=required")
        async with running(configured, issuers, clock, mailer=mailer) as (_, client):
            auth = bearer((await sign_in(client, issuers.google))["access_token"])
            response = await client.patch(
                "/users/me", json={"email": "new@example.com"}, headers=auth
            )
            assert response.status_code == 200, response.text
    assert inbox.encrypted == [True]
