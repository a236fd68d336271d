"""Three `identity serve` replicas behind HAProxy on one PostgreSQL database and one key
directory: real processes, real HTTP, a real balancer (round-robin, checking `/readyz`), for the
tests of tests/test_replicas.py and tests/test_replica_workers.py.

Each replica may hold 30 connections (20 for the hot paths, 10 for the others): two clusters
side by side, 180 connections, would pass PostgreSQL's default `max_connections` of 100, so a
test that needs settings of its own starts its cluster where no other cluster is running
(docs/operations.md, the sizing table: replicas * workers * 30 under `max_connections`).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy.engine import make_url

from . import fakes
from .fakes import FakeIssuer, http_google, serve_issuers
from .poolers import HAProxy, find, haproxy
from .servers import Server, base_env, free_port, run_cli, serve
from .support import EXCHANGE, bearer

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


@contextmanager
def running_cluster(
    database: str, keys: dict[str, Any], work: Path, **extra: str
) -> Iterator[Cluster]:
    """Three replicas on `database`: with a key directory, or with `extra` naming
    IDENTITY_KEY_ENCRYPTION_KEY, the database key store (the replicas make the first key)."""
    if find("haproxy") is None:
        pytest.skip("haproxy is not installed (apt-get install haproxy)")
    keys_dir = work / "keys"
    asyncio.run(fresh(database))
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


async def fresh(url: str) -> None:
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


async def rotation_under_traffic(
    cluster: Cluster, rotate: Callable[[], Awaitable[None]], wait: float = 5
) -> list[tuple[str, str, float]]:
    """Traffic through the balancer while `rotate` happens: every token any replica signs is
    accepted by every other, before, during and after. Which replica minted with which kid,
    when."""
    before = await post_all(cluster.url, [{**EXCHANGE, "subject_token": cluster.google.mint()}])
    old_kid = kid_of(before[0].json()["access_token"])
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
                minted.append((replica, kid_of(access), time.time()))
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


def kid_of(token: str) -> str:
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    return str(header["kid"])
