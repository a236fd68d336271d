"""Logs: JSON lines (short text on a terminal), one auth event per grant, never a raw token."""

from __future__ import annotations

import dataclasses
import io
import json
import logging
from pathlib import Path
from typing import Any

import httpx
import pytest

from identity.logs import AccessLog, JsonFormatter, TextFormatter, resolve
from identity.settings import Settings

from .fakes import FakeClock, FakeIssuer, Issuers
from .rejections import REJECTED
from .servers import base_env, serve
from .support import EXCHANGE, basic, bearer, exchange, refresh, running

pytestmark = pytest.mark.anyio


def render(records: list[logging.LogRecord]) -> list[str]:
    formatter = JsonFormatter()
    return [formatter.format(r) for r in records]


async def test_auth_events_and_no_raw_tokens(
    client: httpx.AsyncClient, google: FakeIssuer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="identity")
    good = google.mint()
    bad = google.mint(aud="elsewhere")
    ok = await exchange(client, good)
    await exchange(client, bad)
    await exchange(client, good)  # replay
    await refresh(client, ok.json()["refresh_token"])
    await client.get("/users/me", headers=bearer(ok.json()["access_token"]))
    lines = render(caplog.records)
    secrets = [good, bad, ok.json()["access_token"], ok.json()["refresh_token"]]
    for line in lines:
        for secret in secrets:
            for part in secret.split("."):
                assert part not in line
    events = [json.loads(line) for line in lines if '"logger":"identity.auth"' in line]
    assert [(e["event"], e["outcome"], e["reason"]) for e in events] == [
        ("exchange", "success", "created"),
        ("exchange", "failure", "bad_audience"),
        ("exchange", "failure", "replayed"),
        ("refresh", "success", "rotated"),
    ]
    for event in events:
        assert {"event", "client", "request_id", "token_fingerprint"} <= set(event)
        assert len(event["token_fingerprint"]) == 12
    assert events[0]["user_id"] == ok.json()["user"]["id"]
    assert events[0]["provider"] == "google"
    access = [json.loads(line) for line in lines if '"logger":"identity.access"' in line]
    assert [a["route"] for a in access] == ["/token", "/token", "/token", "/token", "/users/me"]


def test_control_characters_are_escaped() -> None:
    record = logging.LogRecord(
        "identity.auth", logging.INFO, "", 0, "name=%s", ('evil\n{"forged": 1}\x1b[31m',), None
    )
    record.event = {"claim": "a\r\nb"}
    for formatter in (JsonFormatter(), TextFormatter()):
        line = formatter.format(record)
        assert "\n" not in line and "\r" not in line and "\x1b" not in line
    assert json.loads(JsonFormatter().format(record))["claim"] == "a\r\nb"


def test_text_lines_are_short_and_readable() -> None:
    record = logging.LogRecord(
        "identity.auth", logging.WARNING, "", 0, "auth %s %s", ("exchange", "failure"), None
    )
    record.event = {"reason": "bad_audience", "client": "nextjs", "user_id": None}
    line = TextFormatter().format(record)
    assert "WARNING" in line and "identity.auth" in line and "auth exchange failure" in line
    assert "reason=bad_audience client=nextjs" in line
    assert "user_id" not in line  # empty fields are left out


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_format_is_text_on_a_terminal_and_json_elsewhere() -> None:
    assert resolve(None, production=False, stream=_Tty()) == "text"
    assert resolve(None, production=False, stream=io.StringIO()) == "json"
    assert resolve("json", production=False, stream=_Tty()) == "json"
    assert resolve("text", production=False, stream=io.StringIO()) == "text"
    assert resolve(None, production=True, stream=_Tty()) == "json"  # always JSON in production


async def test_hostile_inputs_leave_no_secret_in_any_log_line(
    settings: Settings,
    issuers: Issuers,
    keys: dict[str, Any],
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every rejected id_token, bad refresh tokens, client secrets and Authorization headers go
    through the service; then every log line of every logger is scanned."""
    caplog.set_level(logging.DEBUG)
    secret = "client-secret-never-logged-0123"
    configured = dataclasses.replace(settings, clients={"web": secret})
    secrets: list[str] = [secret]
    google = issuers.google
    async with running(configured, issuers, clock) as (_, client):
        auth = basic("web", secret)
        tokens = (await exchange(client, google.mint(), headers=auth)).json()
        secrets += [tokens["access_token"], tokens["refresh_token"]]
        for _, _, build in REJECTED:
            token = build(google, keys)
            secrets.append(token)
            await exchange(client, token, headers=auth)
            await client.post(
                "/auth/oauth/callback", json={"provider": "google", "id_token": token}, headers=auth
            )
            await client.get("/users/me", headers=bearer(token))
        for bad in ("garbage-refresh-token-value", tokens["refresh_token"] + "x"):
            secrets.append(bad)
            await refresh(client, bad, headers=auth)
        await refresh(client, "x", headers=basic("web", "wrong-secret-value-0000"))
        secrets.append("wrong-secret-value-0000")
        await client.get(f"/users/me?access_token={tokens['access_token']}")
        await client.post("/introspect", data={"token": tokens["access_token"]}, headers=auth)
        await client.post("/revoke", data={"token": tokens["refresh_token"]}, headers=auth)
        await client.post(
            "/token",
            data={**EXCHANGE, "subject_token": "x"},
            headers={"Authorization": "Bearer sekrit-bearer-0123456"},
        )
        secrets.append("sekrit-bearer-0123456")
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
            needle = value.strip().rsplit(".", 1)[-1] if value.count(".") == 2 else value
            if len(needle) >= 12:
                assert needle not in line, line[:200]
        assert "Bearer " not in line and "Basic " not in line


def test_the_direct_access_line_is_the_formatters_line(caplog: pytest.LogCaptureFixture) -> None:
    """`identity serve` writes the access line itself; it must read as the formatter's would."""
    caplog.set_level(logging.INFO, logger="identity.access")
    event = {"method": "GET", "route": "/users/me", "status": 200, "request_id": "r-1\n"}
    record = logging.LogRecord("identity.access", logging.INFO, "", 0, "request", (), None)
    record.event = event
    for kind, formatter in (("json", JsonFormatter()), ("text", TextFormatter())):
        stream = io.StringIO()
        AccessLog(direct=kind, stream=stream)(event)
        written = stream.getvalue()
        assert written.endswith("\n") and written.count("\n") == 1  # one line, newline escaped
        expected = formatter.format(record)
        if kind == "json":
            mine, theirs = json.loads(written), json.loads(expected)
            assert mine.pop("ts")[:10] == theirs.pop("ts")[:10]
            assert mine == theirs
        else:
            assert written.rstrip("\n")[8:] == expected[8:]  # all but the time of day


def test_the_access_logger_level_still_decides() -> None:
    stream = io.StringIO()
    access = logging.getLogger("identity.access")
    previous = access.level
    access.setLevel(logging.WARNING)
    try:
        AccessLog(direct="json", stream=stream)({"route": "/token"})
    finally:
        access.setLevel(previous)
    assert stream.getvalue() == ""


def test_identity_serve_writes_one_access_line_per_request(tmp_path: Path) -> None:
    with serve(base_env(IDENTITY_LOG_FORMAT="json"), tmp_path) as server:
        answers = [
            httpx.get(server.url + "/.well-known/jwks.json"),  # answered by the middleware
            httpx.get(server.url + "/users/me"),  # through the routes: 401
            httpx.post(server.url + "/.well-known/jwks.json"),  # 405
        ]
        text = server.log_text()
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    access = {line["request_id"]: line for line in lines if line["logger"] == "identity.access"}
    expected = [
        ("/.well-known/jwks.json", "GET", 200),
        ("/users/me", "GET", 401),
        ("/.well-known/jwks.json", "POST", 405),
    ]
    for answer, (route, method, status) in zip(answers, expected, strict=True):
        line = access[answer.headers["x-request-id"]]
        assert (line["route"], line["method"], line["status"]) == (route, method, status)
        assert answer.status_code == status
        assert line["level"] == "info" and line["msg"] == "request"
        assert {"ts", "duration_ms", "client_ip"} <= set(line)
