"""Logs: JSON lines, one auth event per exchange, never a raw token."""

from __future__ import annotations

import json
import logging

import httpx
import pytest

from identity.logs import JsonFormatter, TextFormatter

from .conftest import exchange
from .fakes import FakeGoogle

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
