"""deploy/kubernetes: every manifest valid against the Kubernetes schemas (offline), and the base
run with `podman kube play` beside a PostgreSQL pod: the migration, then an exchange.

Checked by schema (kubernetes-validate, strict: an unknown field fails): every kind of the base
and the monitoring overlay but the Prometheus Operator's, ServiceMonitor and PrometheusRule,
which have no schema there; they are checked here by what they must say (the service's port and
labels; the very alert rules of docs/monitoring/alerts.yml).

Debian's podman 4.3 plays Pods and Deployments (with ConfigMaps); it has no Job, panics on a
Secret volume and stores a played Secret in a form its own `secretRef` cannot read. So the test
plays the Job's pod template as a Pod, makes the `identity-env` Secret with `podman secret
create` (the form podman reads), and mounts the keys as a hostPath laid out as the kubelet lays
out a Secret volume (links through `..data`, root's files, mode 0440, group 10001).
"""

from __future__ import annotations

import asyncio
import base64
import copy
import hashlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import kubernetes_validate
import pytest
import yaml
from cryptography.fernet import Fernet

from identity.settings import Settings
from identity.tokens.signing_keys import KeyStore

from .fakes import WEB_CLIENT, http_google, serve_issuers
from .kube import KUBERNETES, ROOT, kubelet_write, podman, render
from .servers import free_port, wait_until_ok
from .support import EXCHANGE, bearer

pytestmark = pytest.mark.anyio
KUSTOMIZATIONS = [
    KUBERNETES / "base",
    KUBERNETES / "overlays" / "monitoring",
    KUBERNETES / "overlays" / "database-keys",
]
OPERATOR_KINDS = {"ServiceMonitor", "PrometheusRule"}
POSTGRES_IMAGE = "localhost/identity-test-postgres:15"


def _by_kind(resources: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["kind"]: r for r in resources}


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS, ids=lambda p: p.name)
def test_every_manifest_is_valid_kubernetes(kustomization: Path) -> None:
    resources = render(kustomization)
    checked = []
    for resource in resources:
        if resource["kind"] in OPERATOR_KINDS:
            continue
        for version in ("1.29.0", kubernetes_validate.latest_version()):
            kubernetes_validate.validate(resource, version, strict=True)
        checked.append(resource["kind"])
    expected = {"ConfigMap", "Deployment", "Service", "PodDisruptionBudget", "Job"}
    assert set(checked) == expected
    kinds = {r["kind"] for r in resources}
    assert kinds - expected == (OPERATOR_KINDS if kustomization.name == "monitoring" else set())


def test_the_base_says_what_the_service_needs() -> None:
    r = _by_kind(render(KUBERNETES / "base"))
    pod = r["Deployment"]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "USER 10001:10001" in dockerfile
    assert pod["securityContext"]["runAsUser"] == 10001 and pod["securityContext"]["fsGroup"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    keys = next(v for v in pod["volumes"] if v["name"] == "keys")
    mount = next(m for m in container["volumeMounts"] if m["name"] == "keys")
    assert keys["secret"]["defaultMode"] == 0o400 and mount["readOnly"] is True
    config = r["ConfigMap"]["data"]
    assert mount["mountPath"] == config["IDENTITY_KEYS_DIR"]
    # Every variable of the ConfigMap is a setting, spelled right, with a value it accepts.
    assert set(config) <= Settings.variables()
    Settings.from_env({**config, "IDENTITY_ENV": "development"})
    assert pod["terminationGracePeriodSeconds"] > 30
    job = r["Job"]["spec"]["template"]["spec"]["containers"][0]
    assert job["args"] == ["identity", "migrate"] and job["envFrom"] == container["envFrom"]
    selector = r["Deployment"]["spec"]["selector"]["matchLabels"]
    assert r["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"] == selector
    assert r["Service"]["spec"]["selector"] == selector
    assert r["Deployment"]["spec"]["template"]["metadata"]["labels"].items() >= selector.items()
    job_labels = r["Job"]["spec"]["template"]["metadata"]["labels"]
    assert not job_labels.items() >= selector.items()  # the Service never sends it requests


def test_the_database_keys_overlay_needs_no_volume_and_reads_the_kek_from_a_secret() -> None:
    base = _by_kind(render(KUBERNETES / "base"))
    r = _by_kind(render(KUBERNETES / "overlays" / "database-keys"))
    pod = r["Deployment"]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert [v["name"] for v in pod["volumes"]] == ["tmp"]  # no keys volume, nothing shared
    assert [m["name"] for m in container["volumeMounts"]] == ["tmp"]
    [kek] = container["env"]
    assert kek["name"] == "IDENTITY_KEY_ENCRYPTION_KEY"
    assert kek["valueFrom"]["secretKeyRef"]["name"] not in {
        ref["secretRef"]["name"] for ref in container["envFrom"] if "secretRef" in ref
    }  # a Secret of its own
    config = r["ConfigMap"]["data"]
    assert "IDENTITY_KEYS_DIR" not in config and set(config) <= Settings.variables()
    settings = Settings.from_env(
        {**config, "IDENTITY_ENV": "development", "IDENTITY_KEY_ENCRYPTION_KEY": _FERNET}
    )
    assert settings.keys_in_database and settings.key_rotation_interval > 0
    assert not any(
        k["kind"] == "CronJob" for k in render(KUBERNETES / "overlays" / "database-keys")
    )
    # Everything else is the base's: the same probes, Job, Service and budget.
    assert (
        container["readinessProbe"]
        == base["Deployment"]["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
    )
    assert {k: v for k, v in r.items() if k not in ("Deployment", "ConfigMap")} == {
        k: v for k, v in base.items() if k not in ("Deployment", "ConfigMap")
    }


_FERNET = base64.urlsafe_b64encode(bytes(32)).decode()


def test_the_monitoring_overlay_scrapes_the_service_and_carries_the_alert_rules() -> None:
    r = _by_kind(render(KUBERNETES / "overlays" / "monitoring"))
    monitor = r["ServiceMonitor"]["spec"]
    service = r["Service"]
    assert monitor["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["endpoints"][0]["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert monitor["endpoints"][0]["path"] == "/metrics"
    alerts = yaml.safe_load((ROOT / "docs" / "monitoring" / "alerts.yml").read_text())
    assert r["PrometheusRule"]["spec"]["groups"] == alerts["groups"]


@pytest.fixture(scope="module")
def postgres_image() -> str:
    """The PostgreSQL image, built once per machine (kept: it changes with its file only)."""
    if podman("image", "exists", "localhost/base:bookworm").returncode != 0:
        pytest.skip("localhost/base:bookworm is missing (run ../shared/container/prepare.sh)")
    containerfile = Path(__file__).parent / "containers" / "postgres.Containerfile"
    tag = f"{POSTGRES_IMAGE}-{_digest(containerfile)}"
    if podman("image", "exists", tag).returncode != 0:
        built = podman(
            *("build", "-q", "--pull=never", "--network", "host", "-t", tag),
            *("-f", str(containerfile), str(containerfile.parent)),
        )
        if built.returncode != 0:
            pytest.fail(f"building the PostgreSQL image failed:\n{built.stderr[-3000:]}")
    return tag


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


class Played:
    """Kubernetes files played with podman, taken down (and their secret removed) at the end."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.files: list[Path] = []
        self.secrets: list[str] = []

    def play(self, name: str, resources: list[dict[str, Any]]) -> None:
        path = self.work / f"{name}.yaml"
        path.write_text(yaml.safe_dump_all(resources))
        self.files.append(path)
        played = podman("kube", "play", str(path), timeout=120)
        assert played.returncode == 0, played.stderr

    def secret(self, secret: dict[str, Any]) -> None:
        # Podman 4.3's own form of a Secret: a JSON object of base64 values.
        path = self.work / f"{secret['metadata']['name']}.json"
        path.write_text(json.dumps(secret["data"]))
        made = podman("secret", "create", secret["metadata"]["name"], str(path))
        assert made.returncode == 0, made.stderr
        self.secrets.append(secret["metadata"]["name"])

    def close(self) -> None:
        for path in reversed(self.files):
            podman("kube", "down", str(path), timeout=120)
        for name in self.secrets:
            podman("secret", "rm", name)


@pytest.fixture
def played(tmp_path: Path) -> Iterator[Played]:
    handle = Played(tmp_path)
    try:
        yield handle
    finally:
        handle.close()


def _as_pod(job: dict[str, Any], name: str) -> dict[str, Any]:
    template = copy.deepcopy(job["spec"]["template"])
    template["spec"]["restartPolicy"] = "Never"
    template["spec"]["hostNetwork"] = True
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": template["spec"]}


async def _wait_postgres(url: str, within: float = 60) -> None:
    deadline = time.monotonic() + within
    while True:
        try:
            connection = await asyncpg.connect(url, timeout=2)
        except (OSError, asyncpg.PostgresError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)
            continue
        await connection.close()
        return


async def _stored_kids(url: str) -> list[str]:
    connection = await asyncpg.connect(url)
    try:
        return [row["kid"] for row in await connection.fetch("SELECT kid FROM signing_keys")]
    finally:
        await connection.close()


@pytest.mark.parametrize("variant", ["base", "database-keys"])
def test_podman_kube_play_runs_the_base_and_an_exchange_works(
    identity_image: str,
    postgres_image: str,
    played: Played,
    keys: dict[str, Any],
    tmp_path: Path,
    variant: str,
) -> None:
    """The base (keys from a Secret volume), or overlays/database-keys (no volume: the KEK from
    its own Secret, the first key made by the replica itself)."""
    in_database = variant == "database-keys"
    started = time.monotonic()
    pg_port, port = free_port(), free_port()
    name = f"identity-test-{port}"
    played.play(
        "postgres",
        [
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": f"{name}-postgres"},
                "spec": {
                    "hostNetwork": True,
                    "containers": [
                        {
                            "name": "postgres",
                            "image": postgres_image,
                            "args": ["-p", str(pg_port), "-c", "listen_addresses=127.0.0.1"],
                        }
                    ],
                },
            }
        ],
    )
    database = f"postgresql://postgres@127.0.0.1:{pg_port}/postgres"
    asyncio.run(_wait_postgres(database))
    # The keys Secret, as the kubelet mounts it with fsGroup 10001 (unused by database-keys).
    volume = tmp_path / "keys-volume"
    source = KeyStore(tmp_path / "key-source").generate()
    kubelet_write(volume, {source.path.name: source.path.read_bytes()}, mode=0o440)
    volume.chmod(0o1777)
    data_dir = volume / os.readlink(volume / "..data")
    os.chown(data_dir, 0, 10001)
    data_dir.chmod(0o2750)
    for entry in data_dir.iterdir():
        os.chown(entry, 0, 10001)
    with serve_issuers() as served:
        google = served.add(http_google(keys["google"], served.base))
        resources = render(KUBERNETES / ("overlays/database-keys" if in_database else "base"))
        r = _by_kind(resources)
        config = r["ConfigMap"]
        config["data"].update(
            IDENTITY_ENV="development",  # production wants https, and the fake Google is http
            IDENTITY_ISSUER=f"http://127.0.0.1:{port}",
            IDENTITY_HOST="127.0.0.1",
            IDENTITY_PORT=str(port),
            IDENTITY_GOOGLE_JWKS_URL=google.jwks_url,
            IDENTITY_GOOGLE_CLIENT_IDS=WEB_CLIENT,
        )
        url = f"postgresql+asyncpg://postgres@127.0.0.1:{pg_port}/postgres"
        played.secret(
            {
                "metadata": {"name": "identity-env"},
                "data": {"IDENTITY_DATABASE_URL": base64.b64encode(url.encode()).decode()},
            }
        )
        if in_database:
            kek = Fernet.generate_key()
            played.secret(
                {
                    "metadata": {"name": "identity-key-encryption"},
                    "data": {"IDENTITY_KEY_ENCRYPTION_KEY": base64.b64encode(kek).decode()},
                }
            )
        for workload in (r["Deployment"], r["Job"]):
            for container in workload["spec"]["template"]["spec"]["containers"]:
                container["image"] = identity_image
        migrate = _as_pod(r["Job"], f"{name}-migrate")
        played.play("migrate", [config, migrate])
        exited = podman("wait", f"{name}-migrate-migrate", timeout=120)
        logs = podman("logs", f"{name}-migrate-migrate")
        assert exited.stdout.strip() == "0", logs.stdout + logs.stderr
        deployment = r["Deployment"]
        deployment["metadata"]["name"] = name
        deployment["spec"]["replicas"] = 1
        spec = deployment["spec"]["template"]["spec"]
        spec["hostNetwork"] = True
        [server] = spec["containers"]
        server.pop("ports")  # host networking: the port is IDENTITY_PORT's, no mapping
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            server[probe]["httpGet"]["port"] = port
        if not in_database:
            keys_volume = next(v for v in spec["volumes"] if v["name"] == "keys")
            keys_volume.pop("secret")
            keys_volume["hostPath"] = {"path": str(volume), "type": "Directory"}
        played.play("deployment", [config, deployment])
        base = f"http://127.0.0.1:{port}"
        wait_until_ok(base + "/readyz", timeout=60)
        listed = podman("ps", "--format", "{{.Names}}", "--filter", f"name={name}-pod")
        [container] = [c for c in listed.stdout.split() if c.endswith("-identity")]
        assert podman("exec", container, "id", "-u").stdout.strip() == "10001"
        token = google.mint(sub=f"kube-{port}", email=f"kube{port}@gmail.com")
        response = httpx.post(base + "/token", data={**EXCHANGE, "subject_token": token})
        assert response.status_code == 200, response.text
        assert response.json()["access_token"].count(".") == 2
        me = httpx.get(base + "/users/me", headers=bearer(response.json()["access_token"]))
        assert me.json()["email"] == f"kube{port}@gmail.com"
        jwks = httpx.get(base + "/.well-known/jwks.json").json()
        if in_database:  # the replica made its key, sealed in PostgreSQL
            stored = asyncio.run(_stored_kids(database))
            assert [k["kid"] for k in jwks["keys"]] == stored and len(stored) == 1
        else:
            assert [k["kid"] for k in jwks["keys"]] == [source.kid]  # the Secret's key signs
    print(f"kube play test: {time.monotonic() - started:.1f} s")
