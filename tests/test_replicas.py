"""Three `identity serve` replicas behind HAProxy, on one PostgreSQL database and one key
directory, behave as one service: real processes, real HTTP, a real balancer (round-robin,
checking `/readyz`).

What must be done once across replicas is proven once across them: an automatic key rotation
(one rotation in `Cluster.lines(...)` across the replicas' logs), each janitor round, and each
notice of the outbox (real receivers count what arrives). Tests that need settings of their own
start their own cluster with `running_cluster(..., **extra)`; the others share the module's.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import asyncpg
import httpx
import jwt
import pytest
import yaml
from cryptography.fernet import Fernet
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text
from sqlalchemy.engine import make_url
from standardwebhooks.webhooks import Webhook

from identity.store.database import migrate

from . import fakes
from .fakes import FakeIssuer, http_google, serve_issuers
from .poolers import HAProxy, find, haproxy
from .receivers import Received, Receiver, receiver
from .servers import Server, base_env, free_port, run_cli, serve
from .support import EXCHANGE, bearer, sql_for

pytestmark = pytest.mark.anyio
NAMES = ("r1", "r2", "r3")
EXPIRED_WINDOWS = 9  # seeded before the replicas start: what the first janitor round deletes


@dataclass
class Cluster:
    balancer: HAProxy
    google: FakeIssuer
    database: str  # PostgreSQL itself, for the tests' own reads
    env: dict[str, str]  # every replica's environment (the CLI's too)
    work: Path
    ports: dict[str, int]
    stack: ExitStack
    servers: dict[str, Server] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.balancer.url

    def start(self, name: str) -> None:
        env = {**self.env, "IDENTITY_PORT": str(self.ports[name])}
        self.servers[name] = self.stack.enter_context(serve(env, self.work))

    def kill(self, name: str) -> None:
        """SIGKILL: no graceful shutdown, in-flight requests cut."""
        self.servers[name].process.send_signal(signal.SIGKILL)
        self.servers[name].process.wait()

    def hup_all(self) -> None:
        """What an operator (or a sidecar) does after a rotation: every replica re-reads keys."""
        for server in self.servers.values():
            if server.process.poll() is None:
                os.kill(server.process.pid, signal.SIGHUP)

    def lines(self, name: str, message: str) -> list[dict[str, Any]]:
        """The replica's JSON log lines whose message is `message`."""
        found = []
        for line in self.servers[name].log_text().splitlines():
            try:
                parsed = json.loads(line)
            except ValueError:
                continue
            if isinstance(parsed, dict) and parsed.get("msg") == message:
                found.append(parsed)
        return found

    def wait_all_ready(self, names: tuple[str, ...] = NAMES, timeout: float = 15) -> None:
        """Until the balancer has sent a request to each of `names` (its checks saw them up)."""
        deadline, seen = time.monotonic() + timeout, set[str | None]()
        while time.monotonic() < deadline and not set(names) <= seen:
            response = httpx.get(self.url + "/readyz", timeout=5)
            seen.add(response.headers.get("x-replica"))
            time.sleep(0.05)
        assert set(names) <= seen, f"the balancer sent requests only to {seen}"


@pytest.fixture(scope="module")
def cluster(
    pg_database: str, keys: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    with running_cluster(pg_database, keys, tmp_path_factory.mktemp("replicas")) as started:
        yield started


@contextmanager
def running_cluster(
    database: str, keys: dict[str, Any], work: Path, **extra: str
) -> Iterator[Cluster]:
    """Three replicas on `database`: with a key directory, or with `extra` naming
    IDENTITY_KEY_ENCRYPTION_KEY, the database key store (the replicas make the first key)."""
    if find("haproxy") is None:
        pytest.skip("haproxy is not installed (apt-get install haproxy)")
    keys_dir = work / "keys"
    asyncio.run(_fresh(database))
    ports = {name: free_port() for name in NAMES}
    with ExitStack() as stack:
        served = stack.enter_context(serve_issuers())
        google = served.add(http_google(keys["google"], served.base))
        balancer = stack.enter_context(haproxy([(name, ports[name]) for name in NAMES]))
        env = base_env(
            IDENTITY_DATABASE_URL=database,
            IDENTITY_KEYS_DIR=str(keys_dir),
            IDENTITY_ISSUER=balancer.url,  # one issuer, the public address, for every replica
            IDENTITY_GOOGLE_JWKS_URL=google.jwks_url,
            IDENTITY_GOOGLE_CLIENT_IDS=fakes.WEB_CLIENT,
            IDENTITY_LOG_FORMAT="json",
            # A rotated key signs 2 s after it is published (and SIGHUP reaches every replica
            # well within that): the rotation test need not wait 20 minutes.
            IDENTITY_JWKS_MAX_AGE="1",
            IDENTITY_KEY_PUBLISH_LEAD="2",
        )
        env.update(extra)
        if "IDENTITY_KEY_ENCRYPTION_KEY" not in extra:
            generated = run_cli("keys", "generate", env=env, cwd=work)
            assert generated.returncode == 0, generated.stderr
        started = Cluster(balancer, google, database, env, work, ports, stack)
        for name in NAMES:
            started.start(name)
        started.wait_all_ready()
        yield started


async def _fresh(url: str) -> None:
    """An empty database but for rate-limit windows that ended long ago."""
    plain = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    connection = await asyncpg.connect(plain)
    try:
        await connection.execute(
            "TRUNCATE users, accounts, sessions, rotated_refresh_tokens, verification_tokens,"
            " used_id_tokens, rate_limits, audit_events, signing_keys RESTART IDENTITY CASCADE"
        )
        await connection.executemany(
            "INSERT INTO rate_limits (key, window_start, count, expires_at)"
            " VALUES ($1, 0, 1, '2000-01-01')",
            [(f"old:{i}",) for i in range(EXPIRED_WINDOWS)],
        )
    finally:
        await connection.close()


async def post_all(url: str, bodies: list[dict[str, str]]) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=30) as client:
        return list(await asyncio.gather(*(client.post(url + "/token", data=b) for b in bodies)))


def replicas_of(responses: list[httpx.Response]) -> set[str | None]:
    return {r.headers.get("x-replica") for r in responses}


async def test_a_hundred_concurrent_first_sign_ins_make_one_user(cluster: Cluster) -> None:
    sub = f"hundred-{time.monotonic_ns()}"
    tokens = [cluster.google.mint(sub=sub, email=f"{sub}@gmail.com") for _ in range(100)]
    responses = await post_all(cluster.url, [{**EXCHANGE, "subject_token": t} for t in tokens])
    assert Counter(r.status_code for r in responses) == {200: 100}, [
        r.text for r in responses if r.status_code != 200
    ][:3]
    assert replicas_of(responses) == set(NAMES)  # every replica took its share
    assert len({r.json()["user"]["id"] for r in responses}) == 1
    async with sql_for(cluster.database) as sql:
        rows = await sql.rows(
            "SELECT count(DISTINCT a.user_id) AS users, count(DISTINCT a.id) AS accounts,"
            " (SELECT count(*) FROM sessions s WHERE s.user_id = min(a.user_id)) AS sessions"
            " FROM accounts a WHERE a.provider_account_id = :sub",
            sub=sub,
        )
    assert rows == [{"users": 1, "accounts": 1, "sessions": 100}]


async def test_concurrent_refreshes_through_every_replica_share_one_successor(
    cluster: Cluster,
) -> None:
    signed_in = await post_all(cluster.url, [{**EXCHANGE, "subject_token": cluster.google.mint()}])
    token = signed_in[0].json()["refresh_token"]
    twins = [{"grant_type": "refresh_token", "refresh_token": token}] * 30
    responses = await post_all(cluster.url, twins)
    assert Counter(r.status_code for r in responses) == {200: 30}, responses[0].text
    assert replicas_of(responses) == set(NAMES)
    successors = {r.json()["refresh_token"] for r in responses}
    assert len(successors) == 1
    # The one successor works, through whichever replica.
    again = await post_all(
        cluster.url, [{"grant_type": "refresh_token", "refresh_token": t} for t in successors]
    )
    assert again[0].status_code == 200


async def test_a_key_rotation_across_replicas_never_breaks_a_token(cluster: Cluster) -> None:
    """The key directory: an operator rotates, then signals every replica."""

    async def rotate() -> None:
        rotated = await asyncio.to_thread(
            run_cli, "keys", "rotate", env=cluster.env, cwd=cluster.work
        )
        assert rotated.returncode == 0, rotated.stderr
        cluster.hup_all()

    await _rotation_under_traffic(cluster, rotate)


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

            minted = await _rotation_under_traffic(cluster, rotate, wait=9)
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


async def _rotation_under_traffic(
    cluster: Cluster, rotate: Callable[[], Awaitable[None]], wait: float = 5
) -> list[tuple[str, str, float]]:
    """Traffic through the balancer while `rotate` happens: every token any replica signs is
    accepted by every other, before, during and after. Which replica minted with which kid,
    when."""
    before = await post_all(cluster.url, [{**EXCHANGE, "subject_token": cluster.google.mint()}])
    old_kid = _kid(before[0].json()["access_token"])
    statuses: Counter[int] = Counter()
    minted: list[tuple[str, str, float]] = []
    stop = asyncio.Event()

    async def traffic() -> None:
        # Mint on one replica, use at the next (round-robin): every token any replica signs
        # must be accepted by every other, before, during and after the rotation.
        async with httpx.AsyncClient(base_url=cluster.url, timeout=30) as client:
            while not stop.is_set():
                body = {**EXCHANGE, "subject_token": cluster.google.mint()}
                response = await client.post("/token", data=body)
                statuses[response.status_code] += 1
                if response.status_code != 200:
                    continue
                access = response.json()["access_token"]
                replica = response.headers.get("x-replica", "?")
                minted.append((replica, _kid(access), time.time()))
                for _ in range(3):
                    statuses[
                        (await client.get("/users/me", headers=bearer(access))).status_code
                    ] += 1

    runners = [asyncio.create_task(traffic()) for _ in range(4)]
    await asyncio.sleep(0.5)
    await rotate()
    # Past the publish lead: the new key signs everywhere for the last second or more.
    await asyncio.sleep(wait)
    stop.set()
    await asyncio.gather(*runners)
    assert set(statuses) == {200}, statuses
    kids = {kid for _, kid, _ in minted}
    assert len(kids) == 2 and old_kid in kids  # the rotation happened under the traffic
    for name in NAMES:
        assert cluster.lines(name, "signing keys reloaded"), f"{name} never reloaded"
    # A token signed before the rotation still works on every replica.
    async with httpx.AsyncClient(base_url=cluster.url, timeout=30) as client:
        access = before[0].json()["access_token"]
        checks = [await client.get("/users/me", headers=bearer(access)) for _ in range(6)]
    assert {r.status_code for r in checks} == {200} and replicas_of(checks) == set(NAMES)
    return minted


def _kid(token: str) -> str:
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    return str(header["kid"])


def test_the_janitor_prunes_once_per_round_across_replicas(cluster: Cluster) -> None:
    # Each replica looks 30 s after it started, then every 30 s: wait for every replica's
    # first look (the tests above took part of that time).
    deadline = time.monotonic() + 75
    while time.monotonic() < deadline:
        decisions = {name: _janitor_decisions(cluster, name) for name in NAMES}
        if all(decisions.values()):
            break
        time.sleep(0.5)
    assert all(decisions.values()), f"not every replica's janitor looked: {decisions}"
    done = [
        line
        for lines in decisions.values()
        for line in lines
        if line["msg"] == "janitor round done"
    ]
    rounds = Counter(line["round"] for line in done)
    assert rounds and max(rounds.values()) == 1, done  # never two replicas in one round
    # The windows that ended long ago were deleted by the one replica that did the first round.
    assert done[0]["deleted"]["rate_limits"] == EXPIRED_WINDOWS
    skipped = [
        line
        for lines in decisions.values()
        for line in lines
        if line["msg"] != "janitor round done"
    ]
    assert skipped, "no replica skipped a round another had done"


def _janitor_decisions(cluster: Cluster, name: str) -> list[dict[str, Any]]:
    return cluster.lines(name, "janitor round done") + cluster.lines(
        name, "janitor round done elsewhere"
    )


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
        async with sql_for(empty_pg_database) as sql:
            states = await sql.rows("SELECT state, count(*) AS n FROM outbox GROUP BY state")
            attempts = await sql.scalar("SELECT count(*) FROM deliveries")

    # The webhooks: every notice signed the standard way, each id answered 2xx exactly once.
    delivered = [r for r in hooks.received if r.status == 200]
    ids = Counter(r.headers["webhook-id"] for r in delivered)
    assert set(ids.values()) == {1}, [i for i, n in ids.items() if n > 1]
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


async def test_a_replica_killed_mid_load_costs_only_its_in_flight_requests(
    cluster: Cluster,
) -> None:
    n, concurrency = 240, 24
    outcomes: list[tuple[str, int | str, dict[str, Any] | None]] = []
    queue = iter(range(n))
    killed = asyncio.Event()

    async def worker(client: httpx.AsyncClient) -> None:
        for i in queue:
            if i == n // 3 and not killed.is_set():
                killed.set()
                cluster.kill("r2")
            body = {**EXCHANGE, "subject_token": cluster.google.mint()}
            try:
                response = await client.post("/token", data=body)
            except httpx.TransportError as error:
                outcomes.append(("-", type(error).__name__, None))
                continue
            replica = response.headers.get("x-replica", "balancer")
            payload = response.json() if response.status_code == 200 else None
            outcomes.append((replica, response.status_code, payload))

    async with httpx.AsyncClient(base_url=cluster.url, timeout=30) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    assert killed.is_set()
    by_replica = Counter((replica, status) for replica, status, _ in outcomes)
    failed = [(r, s) for r, s, _ in outcomes if s != 200]
    # Survivors answered everything they were given, and kept answering after the kill.
    assert not [f for f in failed if f[0] in ("r1", "r3")], by_replica
    assert by_replica[("r1", 200)] > n // 3 and by_replica[("r3", 200)] > n // 3, by_replica
    # What failed is what r2 was serving when it died (the balancer's 502s; requests it had not
    # yet sent there went elsewhere): at most one per connection, far fewer in practice.
    assert {replica for replica, _ in failed} <= {"balancer", "-"}, by_replica
    assert len(failed) <= concurrency, by_replica
    # Every session the service handed out works, whichever replica made it.
    sessions = [payload["refresh_token"] for _, _, payload in outcomes if payload is not None]
    refreshed = await post_all(
        cluster.url, [{"grant_type": "refresh_token", "refresh_token": t} for t in sessions]
    )
    assert Counter(r.status_code for r in refreshed) == {200: len(sessions)}
    assert replicas_of(refreshed) == {"r1", "r3"}


def test_the_compose_replicas_profile_balances_the_three_services() -> None:
    root = Path(__file__).resolve().parent.parent
    services = yaml.safe_load((root / "compose.yaml").read_text())["services"]
    replicas = [
        n
        for n, s in services.items()
        if s.get("environment") == services["identity"]["environment"]
    ]
    replicas = [n for n in replicas if n.startswith("identity")]
    assert replicas == ["identity", "identity-2", "identity-3"]
    for name in replicas[1:]:
        assert services[name]["profiles"] == ["replicas"]
        assert services[name]["volumes"] == services["identity"]["volumes"]  # one key directory
    balancer = services["balancer"]
    config = root / "deploy" / "haproxy" / "haproxy.cfg"
    assert balancer["volumes"] == [
        f"./{config.relative_to(root)}:/usr/local/etc/haproxy/haproxy.cfg:ro"
    ]
    servers = [
        line.split()[1]
        for line in config.read_text().splitlines()
        if line.strip().startswith("server ")
    ]
    assert servers == replicas and set(balancer["depends_on"]) == set(replicas)
    program = find("haproxy")
    if program is not None:  # the file is one HAProxy accepts (names unresolved here: fine)
        checked = subprocess.run(
            [program, "-c", "-f", str(config)], capture_output=True, text=True, check=False
        )
        assert checked.returncode == 0, checked.stdout + checked.stderr
