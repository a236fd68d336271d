"""The container image: hadolint, then a real build and run with podman.

These machines have no Docker engine; rootful podman builds the same Dockerfile against a local
stand-in for python:3.11-slim (../shared/container/prepare.sh). Where podman cannot run, the
build-and-run test is skipped and says why.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx

from .fakes import WEB_CLIENT, http_google, serve_issuers
from .kube import podman
from .servers import free_port, wait_until_ok
from .support import EXCHANGE

ROOT = Path(__file__).resolve().parent.parent


def test_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint") or str(
        Path(__import__("sys").executable).parent / "hadolint"
    )
    result = subprocess.run(
        [hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    text = (ROOT / "Dockerfile").read_text()
    assert text.startswith("# ") and "ARG PYTHON_IMAGE=python:3.11-slim" in text
    assert "FROM ${PYTHON_IMAGE}" in text
    assert "USER 10001:10001" in text


def _podman(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return podman(*args, timeout=timeout)


def test_image_exchanges_tokens(
    identity_image: str, keys: dict[str, Any], postgres_or_none: str | None
) -> None:
    image = identity_image
    port = free_port()
    name = f"identity-test-{port}"
    # This run's own PostgreSQL database when there is one (migrated again by the container:
    # IDENTITY_MIGRATE_ON_START=1 on an up-to-date database is a no-op), else SQLite inside.
    database = postgres_or_none or "sqlite+aiosqlite:////var/lib/identity/identity.db"
    with serve_issuers() as served:
        google = served.add(http_google(keys["google"], served.base))
        jwks_url = google.jwks_url
        started = _podman(
            "run",
            "-d",
            "--name",
            name,
            "--network",
            "host",
            "-e",
            f"IDENTITY_PORT={port}",
            "-e",
            f"IDENTITY_ISSUER=http://127.0.0.1:{port}",
            "-e",
            f"IDENTITY_DATABASE_URL={database}",
            "-e",
            "IDENTITY_MIGRATE_ON_START=1",
            "-e",
            f"IDENTITY_GOOGLE_JWKS_URL={jwks_url}",
            "-e",
            f"IDENTITY_GOOGLE_CLIENT_IDS={WEB_CLIENT}",
            image,
        )
        assert started.returncode == 0, started.stderr
        try:
            url = f"http://127.0.0.1:{port}"
            wait_until_ok(url + "/healthz", timeout=60)
            assert _podman("healthcheck", "run", name).returncode == 0
            assert _podman("exec", name, "id", "-u").stdout.strip() == "10001"
            token = google.mint(sub=f"ctr-{port}", email=f"ctr{port}@gmail.com")
            response = httpx.post(url + "/token", data={**EXCHANGE, "subject_token": token})
            assert response.status_code == 200, response.text
            me = httpx.get(
                url + "/users/me",
                headers={"Authorization": f"Bearer {response.json()['access_token']}"},
            )
            assert me.json()["email"] == f"ctr{port}@gmail.com"
            assert httpx.get(url + "/readyz").json() == {"status": "ready"}
            logs = _podman("logs", name).stdout + _podman("logs", name).stderr
            assert "generated a signing key" in logs
            # SIGTERM: the container stops cleanly.
            stopped = _podman("stop", "-t", "20", name)
            assert stopped.returncode == 0
            assert _podman("inspect", "-f", "{{.State.ExitCode}}", name).stdout.strip() == "0"
        finally:
            _podman("rm", "-f", name)
