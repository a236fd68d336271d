"""`identity serve` as a newcomer meets it: real processes, real signals, real sockets."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import make_url

from .fakes import WEB_CLIENT
from .servers import base_env, free_port, run_cli, wait_until_ok
from .support import EXCHANGE

CRASH_WORDS = ("Traceback", "KeyboardInterrupt", "CancelledError")


@contextmanager
def started(
    env: dict[str, str], cwd: Path, *args: str, probe: str = "/readyz", name: str = "server"
) -> Iterator[tuple[subprocess.Popen[bytes], str, Path]]:
    """`identity serve` in its own process group (as a terminal runs it), answering `probe`."""
    port = free_port()
    log = cwd / f"{name}.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "identity", "serve", "--port", str(port), *args],
            env=env,
            cwd=cwd,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_until_ok(url + probe, process=process, timeout=60)
        except RuntimeError as error:
            raise RuntimeError(f"{error}:\n{log.read_text()}") from None
        yield process, url, log
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=30)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_ctrl_c_is_a_clean_stop(tmp_path: Path, workers: str) -> None:
    """Ctrl-C reaches the whole process group: every process stops gracefully, exit 0."""
    with started(base_env(), tmp_path, "--workers", workers) as (process, url, log):
        assert httpx.get(url + "/healthz").status_code == 200
        os.killpg(process.pid, signal.SIGINT)
        assert process.wait(timeout=30) == 0
    text = log.read_text()
    assert not [word for word in CRASH_WORDS if word in text], text[-3000:]
    assert "Shutting down" in text


def test_a_port_in_use_is_one_line_and_never_ready(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("serve", "--port", str(port), env=base_env(), cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"identity: cannot listen on 127.0.0.1:{port}: Address already in use "
        "(another `identity serve`? Stop it, or pick another --port)"
    ]
    assert "identity ready" not in result.stdout + result.stderr
    assert not (tmp_path / "keys").exists()  # refused before anything was made


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_two_servers_started_at_once_on_a_fresh_database(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    """Both start; the database is migrated once and one key made between them."""
    env = base_env()
    if backend == "postgresql":
        url = request.getfixturevalue("empty_pg_database")
        env.update(IDENTITY_DATABASE_URL=url, IDENTITY_MIGRATE_ON_START="1")
    with (
        started(env, tmp_path, name="first") as (_, first, first_log),
        started(env, tmp_path, name="second") as (_, second, second_log),
    ):
        keys = [httpx.get(url + "/.well-known/jwks.json").json() for url in (first, second)]
        logs = first_log.read_text() + second_log.read_text()
    assert keys[0] == keys[1] and len(keys[0]["keys"]) == 1
    assert len(list((tmp_path / "keys").glob("rsa-*.pem"))) == 1
    assert logs.count("database migrated from nothing to") == 1
    assert "cannot migrate" not in logs


def test_workers_keep_their_metrics_to_a_directory_of_their_own(tmp_path: Path) -> None:
    """PROMETHEUS_MULTIPROC_DIR may hold other files (here the SQLite database itself): a run
    works in a fresh directory inside it and touches nothing else."""
    shared = tmp_path / "shared"
    shared.mkdir()
    database = shared / "identity.db"
    stale = shared / "counter_12345.db"  # as an earlier run's metrics would look
    stale.write_bytes(b"\0" * 64)
    env = base_env(
        PROMETHEUS_MULTIPROC_DIR=str(shared),
        IDENTITY_DATABASE_URL=f"sqlite+aiosqlite:///{database}",
    )
    with started(env, tmp_path, "--workers", "2") as (_, url, _log):
        private = [p for p in shared.iterdir() if p.is_dir()]
        assert [p.name.startswith("identity-metrics-") for p in private] == [True]
        metrics = httpx.get(url + "/metrics")
        assert metrics.status_code == 200 and "identity_http_requests_total" in metrics.text
        assert list(private[0].glob("*.db"))  # the workers' own files
    assert database.exists() and stale.read_bytes() == b"\0" * 64
    assert sorted(p.name for p in shared.iterdir() if p.is_dir()) == []  # removed at exit
    result = run_cli("check", env={**env, "IDENTITY_GOOGLE_CLIENT_IDS": WEB_CLIENT}, cwd=tmp_path)
    assert "IDENTITY_DATABASE_URL" not in result.stderr


def _post_token(url: str) -> httpx.Response:
    return httpx.post(url + "/token", data={**EXCHANGE, "subject_token": "a.b.c"}, timeout=10)


def newcomer_env(database_url: str) -> dict[str, str]:
    """A newcomer's environment: the failure limit on, as by default (its count is the first
    statement of a request, before any route)."""
    env = base_env(IDENTITY_DATABASE_URL=database_url, IDENTITY_GOOGLE_CLIENT_IDS=WEB_CLIENT)
    for name in ("IDENTITY_RATE_LIMIT_FAILURES", "IDENTITY_RATE_LIMIT_SUBJECT"):
        del env[name]
    return env


@pytest.mark.postgres_only
def test_an_unmigrated_postgres_database_is_said_everywhere(
    tmp_path: Path, empty_pg_database: str
) -> None:
    """Not ready, a JSON 500 (never plain text), the start-up log and `check` say what to run."""
    env = newcomer_env(empty_pg_database)
    with started(env, tmp_path, probe="/healthz") as (_, url, log):
        ready = httpx.get(url + "/readyz")
        assert ready.status_code == 503
        assert ready.json()["reasons"] == ["database not migrated (at none, head 0005)"]
        token = _post_token(url)
        assert token.status_code == 500, token.text
        assert token.headers["content-type"] == "application/json"
        assert token.json() == {"error": "server_error", "error_description": "internal error"}
        assert token.headers["x-request-id"]
        check = run_cli("check", env=env, cwd=tmp_path)
        assert (
            "IDENTITY_DATABASE_URL: not migrated (at none, head 0005): run `identity migrate`"
            in check.stderr
        )
        migrated = run_cli("migrate", env=env, cwd=tmp_path)
        assert migrated.stdout.strip() == "identity: database migrated from nothing (empty) to 0005"
        assert httpx.get(url + "/readyz").status_code == 200
        assert _post_token(url).status_code == 400  # a real answer now: a bad token
        text = log.read_text()
    warning = next(json.loads(line) for line in text.splitlines() if "not migrated" in line)
    assert warning["level"] == "warning"
    assert warning["msg"].endswith("run `identity migrate`")
    assert "UndefinedTable" not in migrated.stdout + check.stderr


@pytest.mark.postgres_only
def test_a_missing_postgres_database_or_role_is_named(
    tmp_path: Path, empty_pg_database: str
) -> None:
    address = make_url(empty_pg_database)
    missing = address.set(database=f"{address.database}_missing")
    env = newcomer_env(missing.render_as_string(hide_password=False))
    with started(env, tmp_path, probe="/healthz") as (_, url, log):
        assert httpx.get(url + "/readyz").json()["reasons"] == ["database unreachable"]
        token = _post_token(url)
        assert token.status_code == 500
        assert token.json()["error"] == "server_error"
        messages = [json.loads(line)["msg"] for line in log.read_text().splitlines()]
    assert any(
        m.startswith(
            f'IDENTITY_DATABASE_URL: database "{missing.database}" does not exist: createdb'
        )
        for m in messages
    ), messages
    check = run_cli("check", env=env, cwd=tmp_path)
    assert f'IDENTITY_DATABASE_URL: database "{missing.database}" does not exist' in check.stderr
    nobody = address.set(username="nobody_at_all")
    check = run_cli(
        "check",
        env={**env, "IDENTITY_DATABASE_URL": nobody.render_as_string(hide_password=False)},
        cwd=tmp_path,
    )
    assert 'IDENTITY_DATABASE_URL: role "nobody_at_all" does not exist' in check.stderr
    assert "DBAPIError" not in check.stderr
