"""Helpers every test module may use: the requests a client makes, and a look into the database.

Test modules import from here and from `fakes`, never from each other.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import asyncpg
import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15
from cryptography.hazmat.primitives.hashes import SHA256
from sqlalchemy import bindparam, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from starlette.applications import Starlette

from identity.app import create_app
from identity.settings import Settings
from identity.store.models import UTCDateTime
from identity.tokens.signing_keys import KeyStore

from .fakes import FakeClock, FakeIssuer, Issuers, b64

ISSUER = "http://127.0.0.1:8001"
LONG_AGO = datetime(2000, 1, 1, tzinfo=UTC)
TABLES = (
    "users",
    "accounts",
    "sessions",
    "rotated_refresh_tokens",
    "verification_tokens",
    "used_id_tokens",
    "rate_limits",
    "audit_events",
    "outbox",
    "deliveries",
    "revocations",
    "received_signals",
    "undeliverable_addresses",
    "ended_upstream_sessions",
)
EXCHANGE = {
    "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
    "subject_token_type": "urn:ietf:params:oauth:token-type:id_token",
}


def basic(client_id: str, secret: str) -> dict[str, str]:
    raw = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


def bearer(access_token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {access_token}"}


async def exchange(client: httpx.AsyncClient, token: str, **extra: Any) -> httpx.Response:
    headers = extra.pop("headers", None)
    return await client.post(
        "/token", data={**EXCHANGE, "subject_token": token, **extra}, headers=headers
    )


async def sign_in(client: httpx.AsyncClient, issuer: FakeIssuer, **claims: Any) -> dict[str, Any]:
    """Exchange a fresh token of `issuer`; the 200 body."""
    response = await exchange(client, issuer.mint(**claims))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def refresh(client: httpx.AsyncClient, token: str, **extra: Any) -> httpx.Response:
    headers = extra.pop("headers", None)
    data = {"grant_type": "refresh_token", "refresh_token": token, **extra}
    return await client.post("/token", data=data, headers=headers)


@dataclass
class Live:
    """A real `identity serve` process with a fake Google over loopback HTTP."""

    url: str
    google: FakeIssuer

    def access_token(self, **claims: Any) -> str:
        response = httpx.post(
            self.url + "/token", data={**EXCHANGE, "subject_token": self.google.mint(**claims)}
        )
        assert response.status_code == 200, response.text
        token: str = response.json()["access_token"]
        return token


class Sql:
    """A look into the test's database, beside the service."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def rows(self, statement: str, **params: Any) -> list[dict[str, Any]]:
        async with self.engine.connect() as connection:
            result = await connection.execute(text(statement), params)
            return [dict(row) for row in result.mappings()]

    async def scalar(self, statement: str, **params: Any) -> Any:
        async with self.engine.connect() as connection:
            return (await connection.execute(text(statement), params)).scalar()

    async def counts(self) -> dict[str, int]:
        return {table: int(await self.scalar(f"SELECT count(*) FROM {table}")) for table in TABLES}

    async def set_time(
        self, table: str, column: str, when: datetime = LONG_AGO, where: str = "true"
    ) -> None:
        """Set a time of the rows of `table` to `when`, stored as the service stores times.
        Setting one long ago is how a test moves past an interval measured by the database's
        clock (PostgreSQL's `now()`, which no fake clock moves) and by the fake one (SQLite)
        alike."""
        statement = text(f"UPDATE {table} SET {column} = :when WHERE {where}").bindparams(
            bindparam("when", type_=UTCDateTime())
        )
        async with self.engine.begin() as connection:
            await connection.execute(statement, {"when": when})

    async def events(self, type_: str | None = None) -> list[dict[str, Any]]:
        where = " WHERE type = :type" if type_ else ""
        return await self.rows(f"SELECT * FROM audit_events{where} ORDER BY id", type=type_)


@asynccontextmanager
async def sql_for(url: str) -> AsyncIterator[Sql]:
    engine = create_async_engine(url)
    try:
        yield Sql(engine)
    finally:
        await engine.dispose()


async def truncate(url: str) -> None:
    plain = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    connection = await asyncpg.connect(plain)
    try:
        # signing_keys too: the database key store's tests make keys (not a counted table).
        tables = ", ".join((*TABLES, "signing_keys"))
        await connection.execute(f"TRUNCATE {tables} RESTART IDENTITY CASCADE")
    finally:
        await connection.close()


@asynccontextmanager
async def running(
    settings: Settings, issuers: Issuers, clock: FakeClock, **options: Any
) -> AsyncIterator[tuple[Starlette, httpx.AsyncClient]]:
    """A service built from `settings` (a variant of the fixture's), and a client for it."""
    async with issuers.client() as http:
        app = create_app(settings, http_client=http, clock=clock, **options)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url=ISSUER) as client:
                yield app, client


def resign(keys_dir: Path, token: str, header: dict[str, Any] | None = None, **claims: Any) -> str:
    """One of our access tokens, its claims changed and signed again with our own key."""
    key = KeyStore(keys_dir).load()[-1]
    payload = token.split(".")[1]
    data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    data.update(claims)
    protected = {"alg": "RS256", "typ": "at+jwt", "kid": key.kid, **(header or {})}
    signing_input = f"{b64(json.dumps(protected).encode())}.{b64(json.dumps(data).encode())}"
    signature = key.private.sign(signing_input.encode(), PKCS1v15(), SHA256())
    return f"{signing_input}.{b64(signature)}"


def mail_link(message: EmailMessage) -> tuple[str, str, str]:
    """The base URL, address and token of the link in a verification mail."""
    part = message.get_body(("plain",))
    assert part is not None
    body = part.get_content()
    match = re.search(r"(https?://\S+/auth/verify-email)\?email=([^&\s]+)&token=(\S+)", body)
    assert match, body
    return match.group(1), unquote(match.group(2)), match.group(3)


NODE_CACHE = (
    Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "identity-tests" / "node-jose"
)


def node_jose() -> Path:
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("Node.js or npm is not installed: cannot run the Node `jose` check")
    if not (NODE_CACHE / "node_modules" / "jose").is_dir():
        NODE_CACHE.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--prefix", str(NODE_CACHE), "jose@6"],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if result.returncode != 0:
            pytest.skip(f"npm could not install jose: {result.stderr.strip()[-300:]}")
    return NODE_CACHE
