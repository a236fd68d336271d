"""What must be done once across three replicas, each test on a cluster of its own with the
settings it needs (tests/clusters.py: never beside another cluster): the automatic key rotation
of the database key store, and the outbox's notices (real receivers count what arrives).
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import jwt
import pytest
from cryptography.fernet import Fernet
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text
from standardwebhooks.webhooks import Webhook

from identity.store.database import migrate

from .clusters import NAMES, Cluster, replicas_of, rotation_under_traffic, running_cluster
from .receivers import Received, Receiver, receiver
from .support import EXCHANGE, bearer, sql_for

pytestmark = pytest.mark.anyio


async def test_automatic_rotation_in_the_database_is_done_once_and_never_breaks_a_token(
    empty_pg_database: str, keys: dict[str, Any], tmp_path: Path
) -> None:
    """The database key store: nobody rotates, nobody signals. The key's time comes (its rows
    are aged here, by the interval), one replica makes the next key, every replica publishes it
    within its reload interval (a quarter of the 4 s lead) and signs with it once it is due."""
    await asyncio.to_thread(migrate, empty_pg_database)
    extra = {
        "IDENTITY_KEY_ENCRYPTION_KEY": Fernet.generate_key().decode(),
        "IDENTITY_KEY_ROTATION_INTERVAL": "3600",
        "IDENTITY_KEY_PUBLISH_LEAD": "4",
    }
    stack = ExitStack()  # started and stopped off the event loop: the fixture's code is sync
    cluster = await asyncio.to_thread(
        stack.enter_context, running_cluster(empty_pg_database, keys, tmp_path, **extra)
    )
    try:
        async with sql_for(cluster.database) as sql:
            assert await sql.scalar("SELECT count(*) FROM signing_keys") == 1  # made once

            async def rotate() -> None:
                async with sql.engine.begin() as connection:
                    await connection.execute(
                        text(
                            "UPDATE signing_keys SET created_at = created_at - interval '1 hour',"
                            " activates_at = activates_at - interval '1 hour'"
                        )
                    )

            minted = await rotation_under_traffic(cluster, rotate, wait=9)
            rows = await sql.rows("SELECT kid, activates_at FROM signing_keys ORDER BY created_at")
        assert len(rows) == 2  # exactly one new key, across three replicas
        made = [line for name in NAMES for line in cluster.lines(name, "signing key rotated")]
        assert len(made) == 1 and made[0]["kid"] == rows[1]["kid"]
        # Every replica signs with the new key once it is due (a second's grace for its clock).
        due = rows[1]["activates_at"].timestamp() + 1
        late = {(replica, kid) for replica, kid, at in minted if at > due}
        assert {replica for replica, _ in late} == set(NAMES)
        assert {kid for _, kid in late} == {rows[1]["kid"]}
    finally:
        await asyncio.to_thread(stack.close)


WEB_SECRET = "web-secret-0123456789abcdef"
ADMIN_SECRET = "backoffice-secret-0123456789"
HOOK_KEY = b"0123456789abcdef0123456789abcdef"
HOOK_SECRET = "whsec_" + base64.b64encode(HOOK_KEY).decode()
REFUSED_AT_FIRST = 12  # the webhook receiver's first answers: 503, each notice retried later


async def test_each_notice_is_delivered_once_across_replicas(
    empty_pg_database: str, keys: dict[str, Any], tmp_path: Path
) -> None:
    """Three delivery workers poll one outbox: 40 sessions started and ended through the
    balancer (logouts, revocations, an admin's disable, spread over the replicas) reach a
    webhook receiver and the web app's back-channel logout receiver once each; the webhook
    receiver, down (503) at first, gets the notices it refused once they are retried."""
    await asyncio.to_thread(migrate, empty_pg_database)
    # A slow receiver (half a second per request) keeps a round busy: one worker alone would
    # still be at the backlog when the others wake, so each of the three takes a share.
    refusing = receiver(*[503] * REFUSED_AT_FIRST, 200, delay=0.5)
    with refusing as hooks, receiver(200) as web:
        (tmp_path / "webhooks.toml").write_text(
            f'[[endpoints]]\nurl = "{hooks.url}/hooks"\nsecret = "{HOOK_SECRET}"\n'
            'events = ["user.created", "user.disabled", "session.ended"]\n'
        )
        extra = {
            "IDENTITY_CLIENTS": f"web:{WEB_SECRET},backoffice:{ADMIN_SECRET}",
            "IDENTITY_ADMIN_CLIENTS": "backoffice",
            "IDENTITY_BACKCHANNEL_LOGOUT_URIS": f"web={web.url}/backchannel-logout",
            "IDENTITY_WEBHOOKS_FILE": str(tmp_path / "webhooks.toml"),
        }
        stack = ExitStack()
        cluster = await asyncio.to_thread(
            stack.enter_context, running_cluster(empty_pg_database, keys, tmp_path, **extra)
        )
        try:
            sids, user_ids, disabled = await _start_and_end_sessions(cluster)
            expected = len(user_ids) + len(sids) + 1  # created, ended, the one disabled
            await _until(lambda: _delivered(hooks) >= expected and _delivered(web) >= len(sids))
            await asyncio.sleep(2.5)  # two more rounds of every worker: a duplicate would show
            jwks = (
                await asyncio.to_thread(httpx.get, cluster.url + "/.well-known/jwks.json")
            ).json()
            counted = await asyncio.to_thread(_delivery_metrics, cluster)
        finally:
            await asyncio.to_thread(stack.close)
        warnings = [
            (name, line["msg"], line.get("event"))
            for name in NAMES
            for message in ("delivery round failed", "notice dropped")
            for line in cluster.lines(name, message)
        ]
        async with sql_for(empty_pg_database) as sql:
            states = await sql.rows("SELECT state, count(*) AS n FROM outbox GROUP BY state")
            attempts = await sql.scalar("SELECT count(*) FROM deliveries")
            tried = await sql.rows(
                "SELECT outbox_id, attempted_at, outcome, status_code, error FROM deliveries "
                "ORDER BY outbox_id, attempted_at"
            )

    # The webhooks: every notice signed the standard way, each id answered 2xx exactly once.
    delivered = [r for r in hooks.received if r.status == 200]
    ids = Counter(r.headers["webhook-id"] for r in delivered)
    twice = {int(i.removeprefix("msg_")) for i, n in ids.items() if n > 1}
    arrivals = [(r.headers["webhook-id"], r.at, r.status) for r in hooks.received]
    assert not twice, (
        warnings,
        [dict(r) for r in tried if r["outbox_id"] in twice],
        [a for a in arrivals if int(a[0].removeprefix("msg_")) in twice],
    )
    messages = [Webhook(HOOK_SECRET).verify(r.body, r.headers) for r in delivered]
    created = {m["data"]["user_id"] for m in messages if m["type"] == "user.created"}
    ended = {m["data"]["sid"] for m in messages if m["type"] == "session.ended"}
    disables = [m["data"]["user_id"] for m in messages if m["type"] == "user.disabled"]
    assert created == user_ids and ended == sids and disables == [disabled]
    assert len(delivered) == len(user_ids) + len(sids) + 1
    # What the receiver refused came again, with its id, and was delivered once.
    refused = [r.headers["webhook-id"] for r in hooks.received if r.status == 503]
    assert len(refused) == REFUSED_AT_FIRST and set(refused) <= set(ids)
    assert len(hooks.received) == len(delivered) + REFUSED_AT_FIRST
    # Back-channel logout: one verified logout token per ended session, each sid and jti once.
    tokens = [_logout_claims(r, jwks, cluster.url) for r in web.received]
    assert Counter(t["sid"] for t in tokens) == Counter(sids)
    assert len({t["jti"] for t in tokens}) == len(tokens) == len(sids)
    # Every replica's worker delivered a share, and their counts add up to what arrived: no
    # worker sent a notice another had sent.
    assert {name for name, _, outcome in counted if outcome == "delivered"} == set(NAMES)
    added: Counter[tuple[str, str]] = Counter()
    for (_, kind, outcome), n in counted.items():
        added[(kind, outcome)] += n
    assert added == Counter(
        {
            ("webhook", "delivered"): len(delivered),
            ("webhook", "failed"): REFUSED_AT_FIRST,
            ("backchannel", "delivered"): len(tokens),
        }
    )
    assert {(r["state"], r["n"]) for r in states} == {("delivered", len(delivered) + len(sids))}
    assert attempts == len(delivered) + len(sids) + REFUSED_AT_FIRST


async def _start_and_end_sessions(cluster: Cluster) -> tuple[set[str], set[str], str]:
    """30 people sign in, one of them 10 more times; 15 log out, 15 are revoked, an admin
    disables the one with 11 sessions. The sessions' sids, the users' ids, the disabled one."""
    web = httpx.BasicAuth("web", WEB_SECRET)
    async with httpx.AsyncClient(base_url=cluster.url, timeout=30) as client:
        run = f"outbox-{time.monotonic_ns()}"
        subs = [f"{run}-{n}" for n in range(30)] + [f"{run}-0"] * 10
        first = [
            {**EXCHANGE, "subject_token": cluster.google.mint(sub=s, email=f"{s}@gmail.com")}
            for s in subs
        ]
        signed_in = [await client.post("/token", data=first[0], auth=web)]  # makes the user
        signed_in += await asyncio.gather(
            *(client.post("/token", data=b, auth=web) for b in first[1:])
        )
        assert Counter(r.status_code for r in signed_in) == {200: 40}, signed_in[0].text
        assert replicas_of(signed_in) == set(NAMES)
        tokens = [r.json() for r in signed_in]
        sids = {_sid(t["access_token"]) for t in tokens}
        disabled = tokens[0]["user"]["id"]
        alone = [t for t in tokens if t["user"]["id"] != disabled]  # one session each
        ends = [
            client.post("/auth/logout", headers=bearer(t["access_token"])) for t in alone[:15]
        ] + [
            client.post("/revoke", data={"token": t["refresh_token"]}, auth=web) for t in alone[15:]
        ]
        ended = await asyncio.gather(*ends)
        assert [r.status_code for r in ended] == [204] * 15 + [200] * 14
        assert replicas_of(ended) == set(NAMES)
        admin = httpx.BasicAuth("backoffice", ADMIN_SECRET)
        patched = await client.patch(
            f"/admin/users/{disabled}", json={"disabled": True}, auth=admin
        )
        assert patched.status_code == 200, patched.text
    return sids, {t["user"]["id"] for t in tokens}, disabled


def _delivered(receiver: Receiver) -> int:
    return sum(1 for r in receiver.received if r.status == 200)


async def _until(condition: Callable[[], object], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "not every notice arrived"
        await asyncio.sleep(0.2)


def _sid(access_token: str) -> str:
    payload = access_token.split(".")[1]
    return str(json.loads(base64.urlsafe_b64decode(payload + "=="))["sid"])


def _logout_claims(request: Received, jwks: dict[str, Any], issuer: str) -> dict[str, Any]:
    (token,) = parse_qs(request.body.decode())["logout_token"]
    key = jwt.PyJWKSet.from_dict(jwks)[jwt.get_unverified_header(token)["kid"]]
    claims: dict[str, Any] = jwt.decode(
        token, key.key, algorithms=["RS256"], audience="web", issuer=issuer
    )
    return claims


def _delivery_metrics(cluster: Cluster) -> Counter[tuple[str, str, str]]:
    """identity_deliveries_total of every replica by (replica, kind, outcome)."""
    total: Counter[tuple[str, str, str]] = Counter()
    for name, server in cluster.servers.items():
        for family in text_string_to_metric_families(
            httpx.get(server.url + "/metrics", timeout=5).text
        ):
            for sample in family.samples:
                if sample.name == "identity_deliveries_total":
                    labels = sample.labels
                    total[(name, labels["kind"], labels["outcome"])] += int(sample.value)
    return total
