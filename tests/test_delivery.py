"""The delivery worker against a real local receiver: Standard Webhooks signatures that the
`standardwebhooks` package verifies, retries after a 503 with backoff, dropping after 24 hours,
no redirects, the production address checks, and the metrics."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from identity.accounts.delivery import Deliveries
from identity.accounts.senders import TIMEOUT, Attempt, Notice, Senders
from identity.destinations import EVENTS, RefusedTarget, WebhookEndpoint, public_addresses
from identity.settings import ConfigError, Settings

from .fakes import FakeClock, Issuers
from .receivers import receiver
from .support import Sql, bearer, running, sign_in

pytestmark = pytest.mark.anyio

KEY = b"0123456789abcdef0123456789abcdef"
SECRET = "whsec_" + base64.b64encode(KEY).decode()


@asynccontextmanager
async def service(
    settings: Settings, issuers: Issuers, clock: FakeClock, url: str, *events: str
) -> AsyncIterator[tuple[httpx.AsyncClient, Deliveries]]:
    """A service whose worker waits (rounds are driven here), one webhook endpoint at `url`."""
    endpoint = WebhookEndpoint(url, KEY, frozenset(events or EVENTS))
    changed = dataclasses.replace(settings, webhooks=(endpoint,))
    async with running(changed, issuers, clock, delivery_interval=3600) as (app, client):
        yield client, app.state.deliveries


async def attempts(sql: Sql) -> list[tuple[str, int | None]]:
    rows = await sql.rows("SELECT outcome, status_code FROM deliveries ORDER BY id")
    return [(r["outcome"], r["status_code"]) for r in rows]


async def test_a_webhook_is_signed_the_standard_way(
    settings: Settings, issuers: Issuers, clock: FakeClock, sql: Sql
) -> None:
    clock.now = time.time()  # the library checks the timestamp against the real clock
    with receiver(200) as hook:
        async with service(settings, issuers, clock, hook.url + "/hook") as (client, worker):
            body = await sign_in(client, issuers.google)
            assert await worker.round() == 1
    (request,) = hook.received
    assert request.path == "/hook"
    # Verified by a third party's implementation of the specification.
    message = Webhook(SECRET).verify(request.body, request.headers)
    assert message["type"] == "user.created"
    assert message["data"] == {"user_id": body["user"]["id"], "provider": "google"}
    assert body["access_token"] not in request.body.decode()
    assert body["refresh_token"] not in request.body.decode()
    with pytest.raises(WebhookVerificationError):  # and it is the secret that makes it pass
        Webhook("whsec_" + base64.b64encode(b"x" * 32).decode()).verify(
            request.body, request.headers
        )
    assert await attempts(sql) == [("delivered", 200)]


async def test_a_503_is_retried_after_a_backoff_and_then_delivered(
    settings: Settings, issuers: Issuers, clock: FakeClock, sql: Sql
) -> None:
    with receiver(503, 200) as hook:
        async with service(settings, issuers, clock, hook.url) as (client, worker):
            await sign_in(client, issuers.google)
            assert await worker.round() == 1
            assert await worker.round() == 0  # not due yet: backing off
            assert await sql.scalar("SELECT state FROM outbox") == "pending"
            await sql.set_time("outbox", "next_attempt_at")  # the backoff is over
            assert await worker.round() == 1
    assert await attempts(sql) == [("failed", 503), ("delivered", 200)]
    # One message id for both attempts: a receiver deduplicates by it.
    assert len({r.headers["webhook-id"] for r in hook.received}) == 1
    row = (await sql.rows("SELECT state, attempts FROM outbox"))[0]
    assert row == {"state": "delivered", "attempts": 2}


async def test_a_redirect_is_not_followed(
    settings: Settings, issuers: Issuers, clock: FakeClock, sql: Sql
) -> None:
    with receiver(302) as hook:
        async with service(settings, issuers, clock, hook.url) as (client, worker):
            await sign_in(client, issuers.google)
            await worker.round()
    assert len(hook.received) == 1
    assert await attempts(sql) == [("failed", 302)]


async def test_a_notice_older_than_a_day_is_dropped_with_an_audit_event(
    settings: Settings, issuers: Issuers, clock: FakeClock, sql: Sql
) -> None:
    with receiver(503) as hook:
        async with service(settings, issuers, clock, hook.url) as (client, worker):
            await sign_in(client, issuers.google)
            await sql.set_time("outbox", "created_at")
            await sql.set_time("outbox", "next_attempt_at")
            await worker.round()
    assert await attempts(sql) == [("dropped", 503)]
    assert await sql.scalar("SELECT state FROM outbox") == "dropped"
    (event,) = await sql.events("notice_dropped")
    detail = event["detail"] if isinstance(event["detail"], dict) else json.loads(event["detail"])
    assert detail["notice"] == "user.created"
    assert detail["destination"] == f"webhook:{hook.url}"


async def test_a_destination_no_longer_configured_is_dropped(
    settings: Settings, issuers: Issuers, clock: FakeClock, sql: Sql
) -> None:
    with receiver(200) as hook:
        async with service(settings, issuers, clock, hook.url) as (client, _):
            await sign_in(client, issuers.google)
        async with service(settings, issuers, clock, hook.url + "/new") as (_, worker):
            await worker.round()
    assert hook.received == []
    assert await attempts(sql) == [("dropped", None)]


async def test_the_worker_delivers_by_itself_and_counts(
    settings: Settings, issuers: Issuers, clock: FakeClock, sql: Sql
) -> None:
    endpoint = WebhookEndpoint("", KEY, frozenset({"session.ended"}))
    with receiver(200) as hook:
        changed = dataclasses.replace(
            settings, webhooks=(dataclasses.replace(endpoint, url=hook.url),)
        )
        async with running(changed, issuers, clock, delivery_interval=0.05) as (_, client):
            tokens = await sign_in(client, issuers.google)
            await client.post("/auth/logout", headers=bearer(tokens["access_token"]))
            for _ in range(100):
                if await sql.scalar("SELECT count(*) FROM deliveries"):
                    break
                await asyncio.sleep(0.05)
            metrics = (await client.get("/metrics")).text
    assert [json.loads(r.body)["type"] for r in hook.received] == ["session.ended"]
    assert 'identity_deliveries_total{kind="webhook",outcome="delivered"} 1.0' in metrics
    assert "identity_outbox_pending 0.0" in metrics
    assert "identity_revocation_feed_lag_seconds 0.0" in metrics  # nothing waits
    assert "identity_delivery_lag_seconds_count 1.0" in metrics


# -- production: https only, public addresses only, connecting to the checked address ------


def test_production_refuses_plain_http_delivery_urls(tmp_path: Any) -> None:
    hooks = tmp_path / "hooks.toml"
    hooks.write_text(
        f'[[endpoints]]\nurl = "http://hooks.example/x"\nsecret = "{SECRET}"\n'
        'events = ["user.created"]\n'
    )
    environ = {
        "IDENTITY_ENV": "production",
        "IDENTITY_WEBHOOKS_FILE": str(hooks),
        "IDENTITY_BACKCHANNEL_LOGOUT_URIS": "web=http://app.example/logout",
    }
    with pytest.raises(ConfigError) as error:
        Settings.from_env(environ)
    problems = "\n".join(error.value.problems)
    assert "IDENTITY_WEBHOOKS_FILE: endpoints[0].url must be https://" in problems
    assert "IDENTITY_BACKCHANNEL_LOGOUT_URIS: 'web' must use an https:// URL" in problems


@pytest.mark.parametrize(
    "host", ["localhost", "127.0.0.1", "10.1.2.3", "169.254.169.254", "[::1]", "192.168.0.1"]
)
async def test_production_refuses_internal_targets_when_it_resolves(host: str) -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200)

    url = f"https://{host}:8443/hook"
    http = httpx.AsyncClient(transport=httpx.MockTransport(answer))
    attempt = await production_senders(http, public_addresses, url).send(notice(url))
    assert (attempt.outcome, attempt.error) == ("failed", "refused_address")
    assert seen == []  # never connected
    with pytest.raises(RefusedTarget):
        await public_addresses(host.strip("[]"), 443)


async def test_production_connects_to_the_address_it_checked() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(204)

    async def resolve(host: str, port: int) -> list[str]:
        assert (host, port) == ("hooks.example", 443)
        return ["93.184.215.14"]  # checked once; a second lookup could answer otherwise

    http = httpx.AsyncClient(transport=httpx.MockTransport(answer))
    url = "https://hooks.example/hook"
    attempt = await production_senders(http, resolve, url).send(notice(url))
    assert attempt.outcome == "delivered"
    (request,) = seen
    assert request.url.host == "93.184.215.14"
    assert request.url.path == "/hook"
    assert request.headers["host"] == "hooks.example"
    assert request.extensions["sni_hostname"] == "hooks.example"


def production_senders(http: httpx.AsyncClient, resolve: Any, url: str) -> Senders:
    return Senders(
        http,
        keys=None,  # type: ignore[arg-type]  # webhooks only: nothing to sign
        issuer="https://id.example",
        webhooks=(WebhookEndpoint(url, KEY, frozenset(EVENTS)),),
        backchannel={},
        production=True,
        resolve=resolve,
    )


def notice(url: str) -> Notice:
    return Notice(1, "user.created", f"webhook:{url}", {"user_id": "u"}, 0, datetime.now(UTC))


def test_the_webhooks_file_is_read_and_its_mistakes_named(tmp_path: Any) -> None:
    hooks = tmp_path / "hooks.toml"
    hooks.write_text(
        f'[[endpoints]]\nurl = "https://hooks.example/x"\nsecret = "{SECRET}"\n'
        'events = ["user.created", "session.ended"]\n'
    )
    (endpoint,) = Settings.from_env({"IDENTITY_WEBHOOKS_FILE": str(hooks)}).webhooks
    assert endpoint.url == "https://hooks.example/x"
    assert endpoint.secret == KEY
    assert endpoint.events == {"user.created", "session.ended"}
    for text, problem in [
        ('url = "https://h.example"\nsecret = "whsec_short"\nevents = ["user.created"]', "secret"),
        (f'url = "https://h.example"\nsecret = "{SECRET}"\nevents = ["user.signed"]', "events"),
        (f'url = "ftp://h.example"\nsecret = "{SECRET}"\nevents = ["user.created"]', "url"),
        (f'url = "https://h.example"\nsecret = "{SECRET}"\nevents = []\nx = 1', "x"),
    ]:
        hooks.write_text("[[endpoints]]\n" + text + "\n")
        with pytest.raises(ConfigError) as error:
            Settings.from_env({"IDENTITY_WEBHOOKS_FILE": str(hooks)})
        assert f"endpoints[0].{problem}" in str(error.value)
        assert SECRET[6:] not in str(error.value)  # a secret is never quoted


def test_a_logout_uri_must_belong_to_a_configured_client() -> None:
    with pytest.raises(ConfigError, match="IDENTITY_BACKCHANNEL_LOGOUT_URIS: 'web' is not in"):
        Settings.from_env({"IDENTITY_BACKCHANNEL_LOGOUT_URIS": "web=https://app.example/logout"})
    with pytest.raises(ConfigError, match="client_id=URL"):
        Settings.from_env({"IDENTITY_BACKCHANNEL_LOGOUT_URIS": "https://app.example/logout"})


async def _drip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A receiver that answers 200 and then sends its body a byte every 2 s for 8 s."""
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    for _ in range(4):
        writer.write(b"1\r\nx\r\n")
        await writer.drain()
        await asyncio.sleep(2)
    writer.write(b"0\r\n\r\n")
    await writer.drain()
    writer.close()


async def _endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A receiver that answers 500 with a body that never ends."""
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.1 500 Oops\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b"%x\r\n%s\r\n" % (65536, b"x" * 65536)
    with contextlib.suppress(OSError):
        while True:
            writer.write(chunk)
            await writer.drain()


async def _send_to(handler: Any) -> tuple[Attempt, float]:
    tasks: list[asyncio.Task[None]] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        tasks.append(asyncio.current_task())  # type: ignore[arg-type]
        try:
            await handler(reader, writer)
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    url = f"http://127.0.0.1:{port}/hook"
    endpoint = WebhookEndpoint(url, b"k" * 32, frozenset(EVENTS))
    async with server, httpx.AsyncClient() as http:
        senders = Senders(
            http,
            keys=None,  # type: ignore[arg-type]  # webhooks only
            issuer="https://id.example",
            webhooks=(endpoint,),
            backchannel={},
            production=False,
        )
        notice = Notice(1, "user.created", f"webhook:{url}", {"user_id": "u"}, 0, datetime.now(UTC))
        loop = asyncio.get_running_loop()
        start = loop.time()
        attempt = await senders.send(notice)
        took = loop.time() - start
        for task in tasks:  # the receiver would go on: it is stopped here
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return attempt, took


async def test_a_delivery_ends_within_its_timeout_even_against_a_dripping_receiver() -> None:
    """httpx's timeout is per read: a receiver sending its answer a byte every 2 s would keep
    the attempt alive past the 30 s lease (another replica then sends the notice again) and
    hold the whole round. The attempt ends at 5 s; the 200 it got still counts."""
    attempt, took = await _send_to(_drip)
    assert took <= TIMEOUT + 1, f"one attempt took {took:.1f} s"
    assert (attempt.outcome, attempt.status) == ("delivered", 200)


async def test_an_endless_answer_is_not_read_whole() -> None:
    attempt, took = await _send_to(_endless)
    assert (attempt.outcome, attempt.status, attempt.error) == ("failed", 500, "status")
    assert took < 2, f"the attempt took {took:.1f} s reading the body"
