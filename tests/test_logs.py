"""Logs: JSON lines, one auth event per exchange, never a raw token."""

from __future__ import annotations

import json
import logging

import httpx
import pytest

from identity.app import create_app
from identity.logs import JsonFormatter, TextFormatter
from identity.settings import Settings

from .conftest import EXCHANGE, ISSUER, exchange
from .fakes import FakeClock, FakeGoogle
from .test_upstream import REJECTED

pytestmark = pytest.mark.anyio


def render(records: list[logging.LogRecord]) -> list[str]:
    formatter = JsonFormatter()
    return [formatter.format(r) for r in records]


async def test_auth_events_and_no_raw_tokens(
    client: httpx.AsyncClient, google: FakeGoogle, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="identity")
    good = google.mint()
    bad = google.mint(aud="elsewhere")
    ok = await exchange(client, good)
    await exchange(client, bad)
    await exchange(client, good)  # replay
    await client.get("/users/me", headers={"Authorization": f"Bearer {ok.json()['access_token']}"})
    lines = render(caplog.records)
    secrets = [good, bad, ok.json()["access_token"], ok.json()["refresh_token"]]
    for line in lines:
        for secret in secrets:
            for part in secret.split("."):
                assert part not in line
    events = [json.loads(line) for line in lines if '"logger": "identity.auth"' in line]
    assert [(e["outcome"], e["reason"]) for e in events] == [
        ("success", "created"),
        ("failure", "bad_audience"),
        ("failure", "replayed"),
    ]
    for event in events:
        assert {"event", "client", "request_id", "token_fingerprint"} <= set(event)
        assert len(event["token_fingerprint"]) == 12
    assert events[0]["user_id"] == ok.json()["user"]["id"]
    access = [json.loads(line) for line in lines if '"logger": "identity.access"' in line]
    assert [a["route"] for a in access] == ["/token", "/token", "/token", "/users/me"]


def test_control_characters_are_escaped() -> None:
    record = logging.LogRecord(
        "identity.auth", logging.INFO, "", 0, "name=%s", ('evil\n{"forged": 1}\x1b[31m',), None
    )
    record.event = {"claim": "a\r\nb"}
    for formatter in (JsonFormatter(), TextFormatter()):
        line = formatter.format(record)
        assert "\n" not in line and "\r" not in line and "\x1b" not in line
    assert json.loads(JsonFormatter().format(record))["claim"] == "a\r\nb"


async def test_hostile_inputs_leave_no_secret_in_any_log_line(
    settings: Settings, google: FakeGoogle, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Every rejected id_token of test_upstream, bad refresh tokens, client secrets and
    Authorization headers go through the service; then every log line is scanned."""
    caplog.set_level(logging.DEBUG)
    secret = "client-secret-never-logged-0123"
    configured = Settings(**{**settings.__dict__, "clients": {"web": secret}})
    app = create_app(configured, http_client=google.client(), clock=clock)
    secrets: list[str] = [secret]
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ISSUER) as client,
    ):
        auth = ("web", secret)
        good = await client.post(
            "/token", data={**EXCHANGE, "subject_token": google.mint()}, auth=auth
        )
        tokens = good.json()
        secrets += [tokens["access_token"], tokens["refresh_token"]]
        for _, _, build in REJECTED:
            token = build(google)
            secrets.append(token)
            await client.post("/token", data={**EXCHANGE, "subject_token": token}, auth=auth)
            await client.post(
                "/auth/oauth/callback", json={"provider": "google", "id_token": token}
            )
            await client.get("/users/me", headers={"Authorization": f"Bearer {token}"})
        for bad in ("garbage-refresh-token-value", tokens["refresh_token"] + "x"):
            secrets.append(bad)
            await client.post(
                "/token", data={"grant_type": "refresh_token", "refresh_token": bad}, auth=auth
            )
        await client.post(
            "/token",
            data={"grant_type": "refresh_token", "refresh_token": "x"},
            auth=("web", "wrong-secret-value-0000"),
        )
        secrets.append("wrong-secret-value-0000")
        await client.get(f"/users/me?access_token={tokens['access_token']}")
        await client.post("/introspect", data={"token": tokens["access_token"]}, auth=auth)
        await client.post("/revoke", data={"token": tokens["refresh_token"]}, auth=auth)
    # Every logger, the database drivers' debug lines included, except the test's own HTTP
    # client (which logs the URLs it requests, one of them a token in a query string on purpose).
    records = [r for r in caplog.records if r.name != "httpx"]
    lines = [JsonFormatter().format(r) for r in records] + [
        TextFormatter().format(r) for r in records
    ]
    assert len(lines) > 200
    for line in lines:
        for value in secrets:
            # The signature segment is the part of a JWT that cannot appear by accident.
            needle = value.rsplit(".", 1)[-1] if value.count(".") == 2 else value
            if len(needle) >= 12:
                assert needle not in line, line[:200]
        assert "Bearer " not in line and "Basic " not in line
