"""Key rotation without downtime: publish first, sign later, retire after expiry."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from identity.verifier import InvalidAccessToken, TokenVerifier

from .fakes import WEB_CLIENT, http_google, serve_issuers
from .servers import base_env, free_port, run_cli, serve
from .support import EXCHANGE

pytestmark = pytest.mark.anyio
LEAD, MAX_AGE, TTL = 2, 1, 5


async def test_rotation_under_traffic_across_two_processes(
    tmp_path: Path, keys_dir: Path, keys: dict[str, Any]
) -> None:
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    shared = {
        "IDENTITY_ISSUER": issuer,  # both processes speak as one issuer, as replicas do
        "IDENTITY_KEYS_DIR": str(keys_dir),
        "IDENTITY_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/shared.db",
        "IDENTITY_GOOGLE_CLIENT_IDS": WEB_CLIENT,
        "IDENTITY_KEY_PUBLISH_LEAD": str(LEAD),
        "IDENTITY_JWKS_MAX_AGE": str(MAX_AGE),
        "IDENTITY_ACCESS_TOKEN_TTL": str(TTL),
        "IDENTITY_CLOCK_SKEW": "0",
    }
    with serve_issuers() as served:
        google = served.add(http_google(keys["google"], served.base))
        env = base_env(**shared, IDENTITY_GOOGLE_JWKS_URL=google.jwks_url)
        with (
            serve({**env, "IDENTITY_PORT": str(port)}, tmp_path) as first,
            serve(env, tmp_path) as second,
        ):
            # The downstream service: honours max-age, and never refetches on an unknown kid, so
            # a token signed by a key it has not seen yet would fail.
            inf = float("inf")
            verifier = TokenVerifier(issuer, issuer, leeway=0, refetch_cooldown=inf)
            tokens: list[tuple[str, int]] = []
            failures: list[str] = []
            kids_seen: set[str] = set()
            rotated_at = None
            started = time.monotonic()
            async with httpx.AsyncClient(timeout=10) as client:
                try:
                    while True:
                        elapsed = time.monotonic() - started
                        if rotated_at is None and elapsed > 1.5:
                            result = run_cli("keys", "rotate", env=env, cwd=tmp_path)
                            assert result.returncode == 0, result.stderr
                            # Worst case: the downstream fetched the key set just before the
                            # servers noticed the new key, and keeps it for max-age.
                            await verifier.aclose()
                            verifier = TokenVerifier(issuer, issuer, leeway=0, refetch_cooldown=inf)
                            # Primed with a token minted now (the command may take longer than a
                            # token's life on a loaded machine), before any server has reloaded.
                            now = int(time.time())
                            fresh = await client.post(
                                first.url + "/token",
                                data={
                                    **EXCHANGE,
                                    "subject_token": google.mint(iat=now, exp=now + 600),
                                },
                            )
                            await verifier.verify(fresh.json()["access_token"])
                            for server in (first, second):
                                server.process.send_signal(signal.SIGHUP)
                            rotated_at = time.monotonic()
                        if (
                            rotated_at is not None
                            and time.monotonic() - rotated_at > LEAD + TTL + 3
                        ):
                            break
                        server = (first, second)[len(tokens) % 2]
                        now = int(time.time())
                        response = await client.post(
                            server.url + "/token",
                            data={**EXCHANGE, "subject_token": google.mint(iat=now, exp=now + 600)},
                        )
                        assert response.status_code == 200, response.text
                        token = response.json()["access_token"]
                        kids_seen.add(jwt.get_unverified_header(token)["kid"])
                        exp = jwt.decode(token, options={"verify_signature": False})["exp"]
                        tokens.append((token, exp))
                        # Every unexpired token, new or old, must verify with the cached key set.
                        for candidate, expires in tokens:
                            if expires - time.time() > 0.3:
                                try:
                                    await verifier.verify(candidate)
                                except InvalidAccessToken as error:
                                    failures.append(error.reason)
                        await asyncio.sleep(0.1)
                finally:
                    await verifier.aclose()
                assert failures == []
                assert len(kids_seen) == 2, "the new key never signed"
                assert len(tokens) > 50
                # After retirement only the new key is published, by both processes.
                for server in (first, second):
                    published = (await client.get(server.url + "/.well-known/jwks.json")).json()
                    assert len(published["keys"]) == 1
    _check_prune(env, tmp_path, keys_dir)


def _check_prune(env: dict[str, str], tmp_path: Path, keys_dir: Path) -> None:
    listing = run_cli("keys", "list", env=env, cwd=tmp_path).stdout
    assert [line.split()[1] for line in listing.splitlines()[1:]] == ["expired", "active"]
    pruned = run_cli("keys", "prune", env=env, cwd=tmp_path)
    assert "1 expired key(s) removed" in pruned.stdout
    assert len(list(keys_dir.glob("rsa-*.pem"))) == 1


def test_sighup_reload_and_a_broken_key_file(tmp_path: Path, keys_dir: Path) -> None:
    """A corrupt key file is reported by name; the running server keeps its keys and serves."""
    env = base_env(IDENTITY_KEYS_DIR=str(keys_dir), IDENTITY_LOG_FORMAT="json")
    with serve(env, tmp_path, "--workers", "2") as server:
        before = httpx.get(server.url + "/.well-known/jwks.json").json()
        broken = keys_dir / "rsa-20990101T000000Z.pem"
        broken.write_text("-----BEGIN PRIVATE KEY-----\ntruncated")
        broken.chmod(0o600)
        server.process.send_signal(signal.SIGHUP)
        _eventually(lambda: broken.name in server.log_text())
        assert server.process.poll() is None
        assert httpx.get(server.url + "/.well-known/jwks.json").json() == before
        assert httpx.get(server.url + "/readyz").status_code == 200
        assert broken.name in server.log_text()
        broken.unlink()
        result = run_cli("keys", "rotate", env=env, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        server.process.send_signal(signal.SIGHUP)

        # Both workers reloaded (well before the 30 s periodic check): ten answers in a row,
        # from either worker, list both keys.
        def both_keys() -> bool:
            return all(
                len(httpx.get(server.url + "/.well-known/jwks.json").json()["keys"]) == 2
                for _ in range(10)
            )

        _eventually(both_keys)
        # Every line is JSON (no worker crashed with a traceback), and nobody was restarted.
        messages = [json.loads(line)["msg"].lower() for line in server.log_text().splitlines()]
        assert not [m for m in messages if "restarting" in m or "died" in m]
    shutil.rmtree(keys_dir)


def _eventually(condition: Callable[[], bool], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "not within the deadline"
        time.sleep(0.2)
