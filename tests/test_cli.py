"""The `identity` command, run as a user would: real processes, real HTTP."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import jwt
import pytest

from .conftest import EXCHANGE
from .fakes import WEB_CLIENT, FakeGoogle, serve_jwks
from .servers import base_env, run_cli, serve


def test_bad_configuration_is_one_line(tmp_path: Path) -> None:
    result = run_cli("serve", env=base_env(IDENTITY_ACCESS_TOKEN_TTL="soon"), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "identity: IDENTITY_ACCESS_TOKEN_TTL: must be a whole number (got 'soon')"
    ]
    assert "Traceback" not in result.stderr


def test_production_refuses_to_generate_a_key(tmp_path: Path) -> None:
    env = base_env(
        IDENTITY_ENV="production",
        IDENTITY_ISSUER="https://id.example.com",
        IDENTITY_GOOGLE_CLIENT_IDS=WEB_CLIENT,
        IDENTITY_CLIENTS="nextjs:0123456789abcdef",
    )
    result = run_cli("serve", env=env, cwd=tmp_path)
    assert result.returncode == 1
    assert "IDENTITY_KEYS_DIR" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "keys").exists() or not list((tmp_path / "keys").iterdir())


def test_keys_generate_list_and_bad_file(tmp_path: Path) -> None:
    env = base_env()
    first = run_cli("keys", "generate", env=env, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    again = run_cli("keys", "generate", env=env, cwd=tmp_path)
    assert "already has a key" in again.stdout
    assert len(list((tmp_path / "keys").glob("rsa-*.pem"))) == 1
    listing = run_cli("keys", "list", env=env, cwd=tmp_path)
    lines = listing.stdout.splitlines()
    assert lines[0].split() == ["KID", "STATE", "CREATED", "ACTIVATES", "RETIRES"]
    assert " active " in lines[1]
    key_file = next((tmp_path / "keys").glob("rsa-*.pem"))
    key_file.write_text("garbage")
    broken = run_cli("keys", "list", env=env, cwd=tmp_path)
    assert broken.returncode == 1
    assert key_file.name in broken.stderr


def test_migrate_command(tmp_path: Path) -> None:
    env = base_env(IDENTITY_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path}/x.db")
    result = run_cli("migrate", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "x.db").exists()


def test_zero_config_serve_end_to_end(tmp_path: Path, google: FakeGoogle) -> None:
    """The README's run command: key generated, SQLite migrated, exchange and /users/me work."""
    with serve_jwks(google) as jwks_url:
        env = base_env(IDENTITY_GOOGLE_JWKS_URL=jwks_url, IDENTITY_GOOGLE_CLIENT_IDS=WEB_CLIENT)
        with serve(env, tmp_path) as server:
            assert list((tmp_path / "keys").glob("rsa-*.pem"))
            assert (tmp_path / "identity.db").exists()
            token = google.mint(iat=_now(), exp=_now() + 3600)
            response = httpx.post(server.url + "/token", data={**EXCHANGE, "subject_token": token})
            assert response.status_code == 200, response.text
            access = response.json()["access_token"]
            me = httpx.get(server.url + "/users/me", headers={"Authorization": f"Bearer {access}"})
            assert me.json()["email"] == "ada@gmail.com"
            # A downstream service given only the JWKS URL verifies the token (PyJWT).
            signing_key = jwt.PyJWKClient(
                server.url + "/.well-known/jwks.json"
            ).get_signing_key_from_jwt(access)
            claims = jwt.decode(
                access, signing_key.key, algorithms=["RS256"], audience="http://127.0.0.1:8001"
            )
            assert claims["sub"] == me.json()["id"]
            log = server.log_text()
        for line in log.splitlines():
            json.loads(line)  # every line the process wrote is JSON, uvicorn's included
        assert token not in log and access not in log
        assert response.json()["refresh_token"] not in log
        assert "jwks.json" in log and "openid-configuration" in log


def _now() -> int:
    import time

    return int(time.time())


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_sees_the_documents(tmp_path: Path) -> None:
    import subprocess

    with serve(base_env(), tmp_path) as server:
        out = subprocess.run(
            ["curl", "-sf", server.url + "/.well-known/jwks.json"], capture_output=True, check=True
        )
        assert json.loads(out.stdout)["keys"]


def test_rotate_if_older_than_bits_and_passphrase(tmp_path: Path) -> None:
    env = base_env(IDENTITY_KEYS_PASSPHRASE="correct horse battery")
    assert run_cli("keys", "generate", env=env, cwd=tmp_path).returncode == 0
    skipped = run_cli("keys", "rotate", "--if-older-than", "30d", env=env, cwd=tmp_path)
    assert skipped.returncode == 0
    assert "nothing done" in skipped.stdout
    assert len(list((tmp_path / "keys").glob("rsa-*.pem"))) == 1
    rotated = run_cli("keys", "rotate", "--bits", "3072", env=env, cwd=tmp_path)
    assert rotated.returncode == 0, rotated.stderr
    assert "signs from" in rotated.stdout
    files = sorted((tmp_path / "keys").glob("rsa-*.pem"))
    assert len(files) == 2
    assert all(f.read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----") for f in files)
    states = [
        line.split()[1]
        for line in run_cli("keys", "list", env=env, cwd=tmp_path).stdout.splitlines()[1:]
    ]
    assert states == ["active", "next"]
    bad = run_cli("keys", "rotate", "--if-older-than", "soon", env=env, cwd=tmp_path)
    assert bad.returncode == 1
    assert "--if-older-than" in bad.stderr
    wrong = run_cli("keys", "list", env={**env, "IDENTITY_KEYS_PASSPHRASE": "wrong"}, cwd=tmp_path)
    assert wrong.returncode == 1
    assert "wrong passphrase" in wrong.stderr
    small = run_cli("keys", "rotate", "--bits", "1024", env=env, cwd=tmp_path)
    assert small.returncode == 1
    assert "2048" in small.stderr


def test_open_key_file_is_refused_with_its_name(tmp_path: Path) -> None:
    env = base_env()
    run_cli("keys", "generate", env=env, cwd=tmp_path)
    key_file = next((tmp_path / "keys").glob("rsa-*.pem"))
    key_file.chmod(0o644)
    result = run_cli("serve", env=env, cwd=tmp_path)
    assert result.returncode == 1
    assert key_file.name in result.stderr
    assert "chmod 600" in result.stderr
    assert "Traceback" not in result.stderr


def test_sigterm_finishes_in_flight_requests(tmp_path: Path, google: FakeGoogle) -> None:
    import signal
    import threading
    import time

    google.clock = time.time
    now = int(time.time())
    token = google.mint(iat=now, exp=now + 600)
    with serve_jwks(google, delay=2.0) as jwks_url:
        env = base_env(IDENTITY_GOOGLE_JWKS_URL=jwks_url, IDENTITY_GOOGLE_CLIENT_IDS=WEB_CLIENT)
        with serve(env, tmp_path) as server:
            answers: list[httpx.Response] = []
            worker = threading.Thread(
                target=lambda: answers.append(
                    httpx.post(
                        server.url + "/token", data={**EXCHANGE, "subject_token": token}, timeout=30
                    )
                )
            )
            worker.start()
            time.sleep(0.7)  # the exchange is now waiting for Google's keys
            server.process.send_signal(signal.SIGTERM)
            worker.join(timeout=30)
            assert server.process.wait(timeout=30) == 0
    assert answers[0].status_code == 200


def test_check_reports_problems(tmp_path: Path) -> None:
    env = base_env(
        IDENTITY_DATABASE_URL="postgresql+asyncpg://nobody@127.0.0.1:1/none",
        IDENTITY_GOOGLE_JWKS_URL="http://127.0.0.1:1/certs",
    )
    result = run_cli("check", env=env, cwd=tmp_path)
    assert result.returncode == 1
    problems = result.stderr
    assert "IDENTITY_KEYS_DIR: no signing key" in problems
    assert "IDENTITY_DATABASE_URL: database unreachable" in problems
    assert "IDENTITY_GOOGLE_CLIENT_IDS: not set" in problems
    assert "IDENTITY_GOOGLE_JWKS_URL: no usable keys" in problems
    assert "Traceback" not in problems


def test_check_passes_on_a_good_setup(tmp_path: Path, google: FakeGoogle) -> None:
    with serve_jwks(google) as jwks_url:
        env = base_env(
            IDENTITY_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path}/ok.db",
            IDENTITY_GOOGLE_JWKS_URL=jwks_url,
            IDENTITY_GOOGLE_CLIENT_IDS=WEB_CLIENT,
        )
        run_cli("keys", "generate", env=env, cwd=tmp_path)
        stale = run_cli("check", env=env, cwd=tmp_path)
        assert stale.returncode == 1
        assert "run `identity migrate`" in stale.stderr
        assert run_cli("migrate", env=env, cwd=tmp_path).returncode == 0
        result = run_cli("check", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "fine" in result.stdout
