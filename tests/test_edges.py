"""Smaller confirmed items: no trailing-slash redirect, another client's token inactive to the
asking client, control characters out of user agents, https-only pictures, control characters
in a path or a Content-Length that only looks like digits."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import httpx
import pytest

from identity.settings import Settings

from .fakes import FakeClock, FakeIssuer, Issuers
from .support import Sql, basic, bearer, exchange, running, sign_in

pytestmark = pytest.mark.anyio
SECRETS = {
    "nextjs": "nextjs-secret-0123456789",
    "mobile": "mobile-secret-0123456789",
    "backoffice": "backoffice-secret-0123456789",
}
NEXTJS, MOBILE = basic("nextjs", SECRETS["nextjs"]), basic("mobile", SECRETS["mobile"])
ADMIN = basic("backoffice", SECRETS["backoffice"])


@pytest.fixture
async def clients(
    settings: Settings, issuers: Issuers, clock: FakeClock
) -> AsyncIterator[httpx.AsyncClient]:
    configured = dataclasses.replace(settings, clients=SECRETS, admin_clients=("backoffice",))
    async with running(configured, issuers, clock) as (_, http):
        yield http


@pytest.mark.parametrize("path", ["/users/me/", "/admin/users/", "/userinfo/", "/token/"])
async def test_a_trailing_slash_is_404_never_a_redirect(
    clients: httpx.AsyncClient, path: str
) -> None:
    answer = await clients.get(path, headers={"Host": "evil.example", **ADMIN})
    assert answer.status_code in (404, 405)
    assert "location" not in answer.headers
    assert answer.json()["error"] in ("not_found", "method_not_allowed")


async def test_another_clients_access_token_is_inactive(
    clients: httpx.AsyncClient, google: FakeIssuer
) -> None:
    issued = (await exchange(clients, google.mint(), headers=NEXTJS)).json()
    token = issued["access_token"]
    mine = await clients.post("/introspect", data={"token": token}, headers=NEXTJS)
    assert mine.json()["active"] is True
    theirs = await clients.post("/introspect", data={"token": token}, headers=MOBILE)
    assert theirs.status_code == 200
    assert theirs.json() == {"active": False}


async def test_control_characters_leave_the_user_agent(
    client: httpx.AsyncClient, google: FakeIssuer, sql: Sql
) -> None:
    # Header values are bytes; 0x85 and 0x9b are C1 controls (NEL, CSI) once read as Latin-1.
    agent = b"Tab/1 \x9b31m\x85red\x7f\x1b[0m".decode("latin-1")
    answer = await exchange(client, google.mint(), headers={"User-Agent": agent.encode("latin-1")})
    assert answer.status_code == 200
    issued = answer.json()
    sessions = (
        await client.get("/users/me/sessions", headers=bearer(issued["access_token"]))
    ).json()["sessions"]
    assert sessions[0]["user_agent"] == "Tab/1 31mred[0m"
    stored = await sql.rows("SELECT user_agent FROM sessions")
    assert [r["user_agent"] for r in stored] == ["Tab/1 31mred[0m"]
    (event,) = await sql.events("sign_in")
    assert event["user_agent"] == "Tab/1 31mred[0m"


@pytest.mark.parametrize(
    ("image", "status"),
    [
        ("http://cdn.example/a.png", 400),
        ("HTTP://cdn.example/a.png", 400),
        ("//cdn.example/a.png", 400),
        ("https://cdn.example/a.png", 200),
    ],
)
async def test_a_picture_must_be_https(
    client: httpx.AsyncClient, google: FakeIssuer, image: str, status: int
) -> None:
    auth = bearer((await sign_in(client, google))["access_token"])
    answer = await client.patch("/users/me", json={"image": image}, headers=auth)
    assert answer.status_code == status, answer.text


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/admin/users/%00"),
        ("DELETE", "/admin/users/a%00b/sessions"),
        ("DELETE", "/users/me/sessions/%00"),
        ("GET", "/users/me%00"),
        ("DELETE", "/users/me/accounts/google/%0a"),
    ],
)
async def test_a_control_character_in_the_path_is_400(
    clients: httpx.AsyncClient, google: FakeIssuer, method: str, path: str
) -> None:
    auth = bearer((await exchange(clients, google.mint(), headers=NEXTJS)).json()["access_token"])
    headers = ADMIN if path.startswith("/admin") else auth
    answer = await clients.request(method, path, headers=headers)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == "invalid_request"


async def test_a_content_length_of_unicode_digits_is_400(client: httpx.AsyncClient) -> None:
    answer = await client.post(
        "/token",
        content=b"",
        headers={
            b"content-length": "²".encode("latin-1"),  # str.isdigit() passes it
            b"content-type": b"application/x-www-form-urlencoded",
        },
    )
    assert answer.status_code == 400
