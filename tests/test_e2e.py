"""End to end: a real Next.js + NextAuth app (two instances) in headless Chromium, against
identity, signing in through two providers, and signed out by identity's back-channel logout when
an admin disables the user (tests/e2e/backchannel.py says how the test knows it was that)."""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from .e2e.backchannel import assert_signed_out_by_identity, backchannel_step
from .e2e.driver import drive
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


def test_sign_in_rename_two_tabs_refresh_sign_out_second_provider_backchannel(
    built_app: None, tmp_path: Path
) -> None:
    with stack(tmp_path, access_token_ttl=ACCESS_TOKEN_TTL) as running:
        seen = drive(
            "browser.mjs",
            [running.app_url, str(ARTIFACTS), str((ACCESS_TOKEN_TTL + 2) * 1000)],
            lambda message: backchannel_step(running, message),
            env={"PATH": "/usr/bin:/bin", "CHROMIUM_PATH": CHROMIUM, "HOME": str(tmp_path)},
            log=tmp_path / "browser.log",
            timeout=300,
        )
        identity_log = running.identity.log_text()
        sid = assert_signed_out_by_identity(seen, running)
    # The instance that got the token wrote the session to the store both instances read.
    assert (tmp_path / "logged-out" / hashlib.sha256(sid.encode()).hexdigest()).exists()
    assert seen["again"]["name"] == "Ada King"
    # The dashboard showed what our /users/me returned.
    assert (seen["name"], seen["email"]) == ("Ada Lovelace", "ada@gmail.com")
    # PATCH /users/me through the app, seen again after a reload.
    assert seen["renamed"] == "Ada King"
    # Two tabs, through two instances of the app, refreshed one expired token at the same
    # moment: both stayed signed in, and stay signed in.
    assert seen["firstTab"] == seen["secondTab"] == "Ada King"
    assert seen["stillSignedIn"] == ["Ada King", "Ada King"]
    assert seen["expiresAfter"] > seen["expiresBefore"]
    events = [json.loads(line) for line in identity_log.splitlines() if '"identity.auth"' in line]
    refreshes = [
        e["reason"] for e in events if e.get("event") == "refresh" and e.get("outcome") == "success"
    ]
    # The second instance's refresh got the same successor (the reuse interval), not a reuse.
    assert "rotated" in refreshes and "reused" in refreshes, refreshes
    assert not [e for e in events if e.get("reason") == "reuse_detected"]
    providers = [
        e.get("provider")
        for e in events
        if e.get("event") == "exchange" and e.get("outcome") == "success"
    ]
    assert providers == ["google", "microsoft", "google"]
    assert ("revoke", "success") in [(e.get("event"), e.get("outcome")) for e in events]
    # Signing out revoked our session, not just NextAuth's cookie.
    assert seen["afterSignOut"] == "/signin"
    # The second provider signed in as its own user (Entra does not prove the address).
    assert (seen["microsoftName"], seen["microsoftEmail"]) == (
        "Grace Hopper",
        "grace@contoso.example",
    )
    with sqlite3.connect(running.database) as db:
        assert db.execute("SELECT count(*) FROM sessions").fetchone()[0] == 0
        names = {row[0] for row in db.execute("SELECT name FROM users")}
        assert names == {"Ada King", "Grace Hopper"}
        keys = {
            row[0]
            for row in db.execute(
                "SELECT provider_account_id FROM accounts WHERE provider = 'microsoft'"
            )
        }
        assert keys == {"72f988bf-86f1-41af-91ab-2d7cd011db47:00000000-0000-0000-66f3-3332eca7ea81"}
    for step in (
        "1-signin",
        "2-google-account-picker",
        "3-dashboard",
        "4-renamed",
        "5-first-tab-after-refresh",
        "5-second-tab-after-refresh",
        "6-signed-out",
        "7-microsoft-account-picker",
        "8-microsoft-dashboard",
        "9-back-channel-logout",
    ):
        assert (ARTIFACTS / f"{step}.png").stat().st_size > 1000
