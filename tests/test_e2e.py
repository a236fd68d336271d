"""End to end: a real Next.js + NextAuth app in headless Chromium, against identity (issue #6)."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest

from .e2e.stack import APP_DIR, build, install, npm, stack

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = APP_DIR / "artifacts"
ACCESS_TOKEN_TTL = 8


@pytest.fixture(scope="module")
def built_app() -> None:
    if npm() is None or shutil.which("node") is None:
        pytest.skip("Node.js/npm are not installed: the NextAuth browser test cannot run")
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    install()
    build()


def test_sign_in_rename_refresh_sign_out(built_app: None, tmp_path: Path) -> None:
    with stack(tmp_path, access_token_ttl=ACCESS_TOKEN_TTL) as running:
        result = subprocess.run(
            [
                "node",
                "browser.mjs",
                running.app_url,
                str(ARTIFACTS),
                str((ACCESS_TOKEN_TTL + 2) * 1000),
            ],
            cwd=APP_DIR,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
            env={"PATH": "/usr/bin:/bin", "CHROMIUM_PATH": CHROMIUM, "HOME": str(tmp_path)},
        )
        identity_log = running.identity.log_text()
    assert result.returncode == 0, result.stdout + result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    # The dashboard showed what our /users/me returned.
    assert seen["name"] == "Ada Lovelace"
    assert seen["email"] == "ada@gmail.com"
    # PATCH /users/me through the app, seen again after a reload.
    assert seen["renamed"] == "Ada King"
    # After the access token expired, the app refreshed it by itself and kept working.
    assert seen["nameAfterRefresh"] == "Ada King"
    assert seen["expiresAfter"] > seen["expiresBefore"]
    events = [json.loads(line) for line in identity_log.splitlines() if '"identity.auth"' in line]
    outcomes = [(e.get("event"), e.get("outcome")) for e in events]
    assert ("exchange", "success") in outcomes
    assert ("refresh", "success") in outcomes
    assert ("revoke", "success") in outcomes
    # Signing out revoked our session, not just NextAuth's cookie.
    assert seen["afterSignOut"] == "/signin"
    with sqlite3.connect(running.database) as db:
        assert db.execute("SELECT count(*) FROM sessions").fetchone()[0] == 0
        assert db.execute("SELECT name FROM users").fetchone()[0] == "Ada King"
    for step in (
        "1-signin",
        "2-google-account-picker",
        "3-dashboard",
        "4-renamed",
        "5-after-token-refresh",
        "6-signed-out",
    ):
        assert (ARTIFACTS / f"{step}.png").stat().st_size > 1000
