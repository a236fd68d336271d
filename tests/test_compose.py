"""compose.yaml starts: one image built once, mail off, keys generated, the database migrated,
identity serving, and an exchange through it.

Run with Debian's podman-compose (1.0.3) and rootful podman. No registry is reachable here, so a
small override file (written by this test) swaps what only a registry could give: PostgreSQL is
the tests' own image (tests/containers/postgres.Containerfile, trust authentication, so the URL
names its `postgres` role), and identity's image is the one the container test builds from the
same Dockerfile (`IDENTITY_IMAGE`, `up --no-build`). The `identity` service runs in development
there, because the fake Google it trusts serves its keys over plain http; `keys` and `migrate`
run in compose.yaml's production environment as written.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from .fakes import WEB_CLIENT, http_google, serve_issuers
from .kube import podman
from .servers import free_port, wait_until_ok
from .support import EXCHANGE, basic
from .test_kubernetes import postgres_image

ROOT = Path(__file__).resolve().parent.parent
__all__ = ["postgres_image"]  # a fixture, shared with the Kubernetes test


def compose_file() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return loaded


def test_one_image_built_once_and_mail_said() -> None:
    services = compose_file()["services"]
    ours = {name: s for name, s in services.items() if "IDENTITY_ENV" in s.get("environment", {})}
    assert set(ours) >= {"keys", "migrate", "identity"}
    assert [name for name, s in services.items() if "build" in s] == ["keys"]
    assert len({s["image"] for s in ours.values()}) == 1
    for service in ours.values():
        assert service["environment"]["IDENTITY_SMTP_URL"] == "${IDENTITY_SMTP_URL:-off}"
        assert service["environment"]["IDENTITY_ENV"] == "production"


@pytest.fixture
def compose() -> list[str]:
    tool = shutil.which("podman-compose")
    if shutil.which("podman") is None or tool is None:
        pytest.skip("podman or podman-compose is not installed (apt-get install podman-compose)")
    return [tool]


def test_compose_up_serves_an_exchange(
    compose: list[str],
    identity_image: str,
    postgres_image: str,
    keys: dict[str, Any],
    tmp_path: Path,
) -> None:
    started = time.monotonic()
    port, google_port = free_port(), free_port()
    project = f"identity-compose-{port}"
    secret = secrets.token_hex(32)
    # The image trusts local connections only; the compose network's are the services'.
    hba = tmp_path / "pg_hba.conf"
    hba.write_text("local all all trust\nhost all all 0.0.0.0/0 trust\nhost all all ::/0 trust\n")
    hba.chmod(0o644)
    database = "postgresql+asyncpg://postgres@db:5432/postgres"
    # Containers reach the host's fake Google through the network's gateway name.
    google_base = f"http://host.containers.internal:{google_port}"
    override = {
        "services": {
            "db": {
                "image": postgres_image,
                "command": [
                    *("-p", "5432", "-c", "listen_addresses=*"),
                    *("-c", "hba_file=/etc/test-hba.conf"),
                ],
                "volumes": [f"{hba}:/etc/test-hba.conf:ro"],
            },
            "keys": {"environment": {"IDENTITY_DATABASE_URL": database}},
            "migrate": {"environment": {"IDENTITY_DATABASE_URL": database}},
            "identity": {
                "environment": {
                    "IDENTITY_DATABASE_URL": database,
                    "IDENTITY_ENV": "development",
                    "IDENTITY_GOOGLE_JWKS_URL": f"{google_base}/oauth2/v3/certs",
                    "IDENTITY_GOOGLE_CLIENT_IDS": WEB_CLIENT,
                }
            },
        }
    }
    (tmp_path / "override.yaml").write_text(yaml.safe_dump(override))
    run = [
        *compose,
        *("-p", project, "-f", str(ROOT / "compose.yaml"), "-f", str(tmp_path / "override.yaml")),
    ]
    environment = {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "IDENTITY_IMAGE": identity_image,
        "IDENTITY_CLIENT_SECRET": secret,
        "IDENTITY_COMPOSE_PORT": str(port),
    }
    # Bound on every interface for the test's length: the containers reach it via the gateway.
    with serve_issuers(host="0.0.0.0", port=google_port) as served:  # noqa: S104
        # Served as 127.0.0.1 (the fake matches its own URL); the same path through the gateway.
        google = served.add(http_google(keys["google"], served.base))
        try:
            up = subprocess.run(
                # The services by name: podman-compose 1.0.3 knows no profiles, and would start
                # the replicas profile too.
                [*run, "up", "-d", "--no-build", "db", "keys", "migrate", "identity"],
                cwd=ROOT,
                env=environment,
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
            assert up.returncode == 0, up.stdout[-2000:] + up.stderr[-2000:]
            url = f"http://127.0.0.1:{port}"
            try:
                wait_until_ok(url + "/readyz", timeout=120)
            except Exception:
                logs = [podman("logs", f"{project}_{s}_1") for s in ("keys", "migrate", "identity")]
                pytest.fail(
                    "not ready:\n" + "".join(r.stdout[-1500:] + r.stderr[-1500:] for r in logs)
                )
            token = google.mint(sub=f"compose-{port}", email=f"compose{port}@gmail.com")
            response = httpx.post(
                url + "/token",
                data={**EXCHANGE, "subject_token": token},
                headers=basic("nextjs", secret),
            )
            assert response.status_code == 200, response.text
            me = httpx.get(
                url + "/users/me",
                headers={"Authorization": f"Bearer {response.json()['access_token']}"},
            )
            assert me.json()["email"] == f"compose{port}@gmail.com"
            # The one-off services ran to completion: the key and the migration, in production.
            for service, said in (("keys", "generated"), ("migrate", "database migrated")):
                name = f"{project}_{service}_1"
                assert podman("inspect", "-f", "{{.State.ExitCode}}", name).stdout.strip() == "0"
                assert said in podman("logs", name).stderr + podman("logs", name).stdout
        finally:
            subprocess.run(
                [*run, "down", "-v"],
                cwd=ROOT,
                env=environment,
                capture_output=True,
                timeout=300,
                check=False,
            )
    print(f"compose test: {time.monotonic() - started:.1f} s")
