"""GET /metrics: Prometheus text, the named series, correct across workers."""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
import pytest

from .fakes import FakeIssuer
from .servers import base_env, serve
from .support import Sql, exchange, refresh

pytestmark = pytest.mark.anyio


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one series in Prometheus text, 0 when absent."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    pattern = (
        re.escape(name) + (r"\{" + re.escape(wanted) + r"\}" if wanted else "") + r" ([0-9.e+-]+)"
    )
    match = re.search(pattern, text)
    return float(match.group(1)) if match else 0.0


async def test_metrics_count_what_happened(
    client: httpx.AsyncClient, google: FakeIssuer, sql: Sql
) -> None:
    ok = await exchange(client, google.mint())
    await exchange(client, google.mint(aud="elsewhere"))
    rotated = await refresh(client, ok.json()["refresh_token"])
    await refresh(client, "nope")
    await sql.set_time("sessions", "rotated_at")  # the reuse interval has ended
    await refresh(client, ok.json()["refresh_token"])  # reuse after the interval
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = response.text
    assert (
        sample(text, "identity_http_requests_total", route="/token", method="POST", status="200")
        == 2
    )
    assert (
        sample(text, "identity_http_requests_total", route="/token", method="POST", status="400")
        == 3
    )
    assert sample(text, "identity_exchanges_total", outcome="success", reason="created") == 1
    assert sample(text, "identity_exchanges_total", outcome="failure", reason="bad_audience") == 1
    assert sample(text, "identity_refreshes_total", outcome="success", reason="rotated") == 1
    assert sample(text, "identity_refreshes_total", outcome="failure", reason="unknown_token") == 1
    assert sample(text, "identity_refreshes_total", outcome="failure", reason="reuse_detected") == 1
    assert sample(text, "identity_refresh_reuse_detected_total") == 1
    assert rotated.status_code == 200
    assert sample(text, "identity_upstream_key_fetches_total", outcome="success") == 1
    assert sample(text, "identity_http_request_duration_seconds_count", route="/token") == 5
    assert 'identity_http_request_duration_seconds_bucket{le="0.005",route="/token"}' in text
    # The test key was made long before the fake clock's "now".
    assert sample(text, "identity_signing_key_age_seconds") > 86_400


async def test_unmatched_paths_do_not_create_series(client: httpx.AsyncClient) -> None:
    for i in range(5):
        await client.get(f"/random-{i}")
    text = (await client.get("/metrics")).text
    assert "random-" not in text
    assert (
        sample(
            text, "identity_http_requests_total", route="(unmatched)", method="GET", status="404"
        )
        == 5
    )


def test_metrics_add_up_across_workers(tmp_path: Path) -> None:
    with serve(base_env(), tmp_path, "--workers", "2") as server, httpx.Client() as client:
        for _ in range(40):
            assert client.get(server.url + "/healthz").status_code == 200
        time.sleep(0.2)
        # Whichever worker answers, it reports the requests of both.
        totals = {
            sample(
                client.get(server.url + "/metrics").text,
                "identity_http_requests_total",
                route="/healthz",
                method="GET",
                status="200",
            )
            for _ in range(6)
        }
    assert totals == {40.0}
