"""The admin API's query inputs: every bad `limit`, cursor or time is a 400, never a 500.

Each is read by one validated parser (`identity.accounts.listing`); a property test sends
whatever text to every listing parameter and sees no 5xx.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
from collections.abc import AsyncIterator

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from identity.accounts import listing
from identity.errors import InvalidRequest
from identity.settings import Settings

from .fakes import FakeClock, Issuers
from .support import basic, exchange, running

pytestmark = pytest.mark.anyio
SECRETS = {"backoffice": "backoffice-secret-0123456789", "nextjs": "nextjs-secret-0123456789"}
ADMIN = basic("backoffice", SECRETS["backoffice"])


@pytest.fixture
async def admin(
    settings: Settings, issuers: Issuers, clock: FakeClock
) -> AsyncIterator[httpx.AsyncClient]:
    configured = dataclasses.replace(settings, clients=SECRETS, admin_clients=("backoffice",))
    async with running(configured, issuers, clock) as (_, http):
        # Two users and their sign-in events: a next page exists for limit=1.
        for sub in ("a", "b"):
            token = issuers.google.mint(sub=sub, email=f"{sub}@gmail.com")
            answer = await exchange(http, token, headers=basic("nextjs", SECRETS["nextjs"]))
            assert answer.status_code == 200
        yield http


def cursor(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).rstrip(b"=").decode()


@pytest.mark.parametrize(
    ("path", "query"),
    [
        ("/admin/users", {"limit": "²"}),  # str.isdigit() says yes, int() says no
        ("/admin/users", {"limit": "٣"}),  # a digit, not an ASCII one
        ("/admin/users", {"limit": " 5"}),
        ("/admin/events", {"limit": "²"}),
        ("/admin/users", {"cursor": cursor("9" * 19 + ":abc")}),  # past datetime's years
        ("/admin/users", {"cursor": cursor("9" * 18 + ":abc")}),
        ("/admin/events", {"cursor": cursor("9" * 19)}),  # past a BIGINT
        ("/admin/events", {"since": "0001-01-01T00:00:00+14:00"}),  # before year 1 in UTC
        ("/admin/events", {"since": "9999-12-31T23:59:59-14:00"}),  # after year 9999 in UTC
        ("/admin/events", {"since": "2026-13-01"}),
    ],
)
async def test_bad_admin_inputs_are_400(
    admin: httpx.AsyncClient, path: str, query: dict[str, str]
) -> None:
    answer = await admin.get(path, params=query, headers=ADMIN)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == "invalid_request"
    assert set(answer.json()) == {"error", "error_description"}


async def test_good_inputs_still_page(admin: httpx.AsyncClient) -> None:
    first = (await admin.get("/admin/users", params={"limit": "1"}, headers=ADMIN)).json()
    rest = await admin.get(
        "/admin/users", params={"limit": "1", "cursor": first["next_cursor"]}, headers=ADMIN
    )
    assert rest.status_code == 200
    assert rest.json()["users"][0]["id"] != first["users"][0]["id"]
    events = await admin.get(
        "/admin/events", params={"limit": "1", "since": "2000-01-01T00:00:00+14:00"}, headers=ADMIN
    )
    assert events.status_code == 200
    page = await admin.get(
        "/admin/events", params={"cursor": events.json()["next_cursor"]}, headers=ADMIN
    )
    assert page.status_code == 200


texts = st.one_of(
    st.text(max_size=40),
    st.from_regex(r"-?[0-9]{1,25}", fullmatch=True),
    st.builds(cursor, st.from_regex(r"-?[0-9]{1,22}(:[A-Za-z0-9_-]{0,34})?", fullmatch=True)),
    st.builds(
        lambda d, off: f"{d.isoformat()}{off}",
        st.datetimes(),
        st.sampled_from(["", "Z", "+14:00", "-14:00", "+23:59", "-23:59"]),
    ),
)


@given(raw=texts)
def test_the_parsers_raise_only_a_400(raw: str) -> None:
    for parse in (
        listing.limit,
        listing.since,
        listing.read_user_cursor,
        listing.read_event_cursor,
    ):
        with contextlib.suppress(InvalidRequest):
            parse(raw)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    path=st.sampled_from(["/admin/users", "/admin/events"]),
    name=st.sampled_from(["limit", "cursor", "since", "email", "provider", "type", "user_id"]),
    raw=texts,
)
async def test_no_admin_query_is_a_5xx(
    admin: httpx.AsyncClient, path: str, name: str, raw: str
) -> None:
    answer = await admin.get(path, params={name: raw}, headers=ADMIN)
    assert answer.status_code < 500, (name, raw, answer.text)
