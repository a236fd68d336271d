"""General HTTP rules: request ids, body cap, content types, tokens in query strings."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from alembic import command

from identity.settings import Settings
from identity.store.database import alembic_config

from .fakes import FakeClock, FakeIssuer, Issuers
from .support import EXCHANGE, ISSUER, Sql, exchange, running

pytestmark = pytest.mark.anyio


async def test_request_id_is_echoed_or_generated(client: httpx.AsyncClient) -> None:
    echoed = await client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert echoed.headers["x-request-id"] == "abc-123"
    generated = await client.get("/healthz")
    assert len(generated.headers["x-request-id"]) == 32
    hostile = await client.get("/healthz", headers={"X-Request-ID": "a\tb" + "x" * 300})
    assert hostile.headers["x-request-id"] != "a\tb" + "x" * 300


async def test_errors_carry_request_id_too(client: httpx.AsyncClient) -> None:
    response = await client.get("/nowhere", headers={"X-Request-ID": "trace-1"})
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"
    assert response.headers["x-request-id"] == "trace-1"


@pytest.mark.parametrize(
    ("content", "headers", "status"),
    [
        pytest.param(
            b"x" * (1024 * 1024),
            {"content-type": "application/x-www-form-urlencoded"},
            413,
            id="1MB_body",
        ),
        pytest.param(
            b"grant_type=\xff\xfe",
            {"content-type": "application/x-www-form-urlencoded"},
            400,
            id="non_utf8",
        ),
        pytest.param(
            b'{"grant_type": "x"}',
            {"content-type": "application/json"},
            400,
            id="json_to_form_endpoint",
        ),
        pytest.param(
            b"grant_type=a&grant_type=b",
            {"content-type": "application/x-www-form-urlencoded"},
            400,
            id="repeated_param",
        ),
        pytest.param(b"grant_type", {"content-type": "text/plain"}, 400, id="text_plain"),
        pytest.param(b"", {"content-type": "application/x-www-form-urlencoded"}, 400, id="empty"),
        pytest.param(
            b"grant_type=refresh_token&refresh_token=a%00b",
            {"content-type": "application/x-www-form-urlencoded"},
            400,
            id="nul_in_a_field",
        ),
    ],
)
async def test_malformed_token_requests(
    client: httpx.AsyncClient, sql: Sql, content: bytes, headers: dict[str, str], status: int
) -> None:
    before = await sql.counts()
    response = await client.post("/token", content=content, headers=headers)
    assert response.status_code == status
    assert set(response.json()) == {"error", "error_description"}
    assert await sql.counts() == before


async def test_streamed_body_over_limit_is_413(client: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(100):
            yield b"a" * 1024

    response = await client.post(
        "/auth/oauth/callback", content=chunks(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert response.json()["error"] == "request_too_large"


@pytest.mark.parametrize(
    "body", [b"\xff\xfe{}", b"{", b'{"provider": NaN}', b"[" * 100_00 + b"]" * 100_00]
)
async def test_malformed_json(client: httpx.AsyncClient, body: bytes) -> None:
    response = await client.post(
        "/auth/oauth/callback", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code in (400, 413)
    assert response.json()["error"] in ("invalid_request", "request_too_large")


@pytest.mark.parametrize("name", ["access_token", "subject_token", "refresh_token", "token"])
async def test_tokens_in_query_strings_are_refused(
    client: httpx.AsyncClient, google: FakeIssuer, name: str
) -> None:
    token = google.mint()
    response = await client.post(f"/token?{name}=abc", data={**EXCHANGE, "subject_token": token})
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    me = await client.get(f"/users/me?{name}=abc", headers={"Authorization": "Bearer x"})
    assert me.status_code == 400


async def test_no_token_in_error_bodies(client: httpx.AsyncClient, google: FakeIssuer) -> None:
    token = google.mint(aud="someone-else")
    response = await exchange(client, token)
    assert response.status_code == 400
    for part in token.split("."):
        assert part not in response.text


async def test_method_not_allowed_is_json(client: httpx.AsyncClient) -> None:
    response = await client.post("/.well-known/jwks.json")
    assert response.status_code == 405
    assert response.json()["error"] == "method_not_allowed"


async def test_health_and_readiness(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready"}


async def test_a_schema_behind_the_code_is_not_ready(
    keys_dir: Path, issuers: Issuers, clock: FakeClock, tmp_path: Path
) -> None:
    """A database migrated to 0004 (or not at all) is not ready, and says where it is."""
    url = f"sqlite+aiosqlite:///{tmp_path}/behind.db"
    behind = Settings(issuer=ISSUER, database_url=url, keys_dir=keys_dir, log_format="json")
    async with running(behind, issuers, clock) as (_, client):
        empty = await client.get("/readyz")
        assert empty.status_code == 503
        assert empty.json()["reasons"] == ["database not migrated (at none, head 0005)"]
        await asyncio.to_thread(command.upgrade, alembic_config(url), "0004")
        assert (await client.get("/readyz")).json()["reasons"] == [
            "database not migrated (at 0004, head 0005)"
        ]
        await asyncio.to_thread(command.upgrade, alembic_config(url), "head")
        assert (await client.get("/readyz")).json() == {"status": "ready"}


async def test_an_unexpected_error_is_a_bare_500_that_names_nothing(
    app: Any, google: FakeIssuer, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug must not leak: the body says internal error, the log has the type only."""
    from identity.accounts import grants

    original = grants.Grants.exchange

    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("secret detail of the failure")

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)  # as a server would
    grants.Grants.exchange = broken  # type: ignore[method-assign,assignment]
    try:
        async with httpx.AsyncClient(transport=transport, base_url=ISSUER) as client:
            response = await exchange(client, google.mint(), headers={"X-Request-ID": "boom-1"})
    finally:
        grants.Grants.exchange = original  # type: ignore[method-assign]
    assert response.status_code == 500
    assert response.json() == {"error": "server_error", "error_description": "internal error"}
    assert response.headers["x-request-id"] == "boom-1"
    assert "secret detail" not in response.text and "secret detail" not in caplog.text
