"""Three `identity serve` replicas behind HAProxy, on one PostgreSQL database and one key
directory, behave as one service (tests/clusters.py): sign-ins and refreshes racing across
replicas, a key rotation under traffic, the janitor's rounds, a replica killed mid-load.

Every test here that runs replicas shares the module's cluster (the last one only reads
compose.yaml and HAProxy's configuration); what needs settings of its own is in
tests/test_replica_workers.py.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from .clusters import (
    EXPIRED_WINDOWS,
    NAMES,
    Cluster,
    post_all,
    replicas_of,
    rotation_under_traffic,
    running_cluster,
)
from .poolers import find
from .servers import run_cli
from .support import EXCHANGE, sql_for

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def cluster(
    pg_database: str, keys: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    with running_cluster(pg_database, keys, tmp_path_factory.mktemp("replicas")) as started:
        yield started


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

    await rotation_under_traffic(cluster, rotate)


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
