"""End to end with the App Router: an Auth.js v5 app and a Better Auth app (two instances each)
in headless Chromium, against identity. Each signs in, calls /users/me with our access token,
lives through two refreshes, signs out (ending identity's session), and is signed out by
identity's back-channel logout.

The back-channel logout is identity's own: an admin disables the user (`PATCH /admin/users/{id}`)
and identity's delivery worker POSTs its logout token to the app's route on the other instance
(IDENTITY_BACKCHANNEL_LOGOUT_URIS, tests/e2e/stack.py). How the test knows that this token, not
a refresh identity refused, signed the browser out well before the access token expired (the
demos' tokens last 8 s, to refresh within the test) is `assert_signed_out_by_identity`'s
docstring (tests/e2e/backchannel.py); the app's logged-out store is checked here. Tokens the app
must refuse (forged with identity's key) are each a 400 and change nothing.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import pytest

from .e2e.backchannel import assert_signed_out_by_identity, backchannel_step
from .e2e.driver import drive
from .e2e.stack import APP_DIR, APPS, Stack, build, install, npm, stack

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = APP_DIR / "artifacts"
ACCESS_TOKEN_TTL = 8


def _ready(app: str) -> None:
    if npm() is None or shutil.which("node") is None:
        pytest.skip("Node.js/npm are not installed: the browser tests cannot run")
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    try:
        install(APP_DIR)  # the browser driver (playwright-core)
        install(APPS[app])
    except subprocess.CalledProcessError as error:
        pytest.skip(f"npm could not install the {app} demo's packages: {error}")
    build(APPS[app])


def _browse(running: Stack, script: str, tmp_path: Path) -> dict[str, Any]:
    def sessions() -> int:
        with sqlite3.connect(running.database) as db:
            count: int = db.execute("SELECT count(*) FROM sessions").fetchone()[0]
            return count

    def on_step(message: dict[str, Any]) -> dict[str, Any]:
        if message["step"] == "signed-out":
            return {"sessions": sessions()}
        return backchannel_step(running, message)

    return drive(
        script,
        [running.app_url, str(ARTIFACTS), str((ACCESS_TOKEN_TTL + 2) * 1000)],
        on_step,
        env={"PATH": "/usr/bin:/bin", "CHROMIUM_PATH": CHROMIUM, "HOME": str(tmp_path)},
        log=tmp_path / "browser.log",
        timeout=300,
    )


def _identity_events(running: Stack) -> list[dict[str, Any]]:
    lines = running.identity.log_text().splitlines()
    return [json.loads(line) for line in lines if '"identity.auth"' in line]


def _refreshes(events: list[dict[str, Any]]) -> list[str]:
    return [
        e["reason"] for e in events if e.get("event") == "refresh" and e.get("outcome") == "success"
    ]


def test_authjs_v5_app_router(tmp_path: Path) -> None:
    _ready("authjs")
    with stack(tmp_path, app="authjs", access_token_ttl=ACCESS_TOKEN_TTL) as running:
        seen = _browse(running, "browser-authjs.mjs", tmp_path)
        events = _identity_events(running)
        sid = assert_signed_out_by_identity(seen, running)
        # The instance that got the token wrote the session to the store both instances read.
        logged_out = tmp_path / "logged-out" / hashlib.sha256(sid.encode()).hexdigest()
        assert logged_out.exists()
        with sqlite3.connect(running.database) as db:
            accounts = sorted(
                row[0] for row in db.execute("SELECT provider FROM accounts ORDER BY provider")
            )
            users = db.execute("SELECT count(*) FROM users").fetchone()[0]
    assert seen["start"] == "/signin"
    # The dashboard, a Server Component, showed what identity's /users/me returned.
    signed_in = seen["signedIn"]
    assert (signed_in["name"], signed_in["email"], signed_in["accounts"]) == (
        "Ada Lovelace",
        "ada@gmail.com",
        "google",
    )
    # Two refreshes, each done once, in the proxy: a Server Component that refreshed too would
    # show here as a second refresh of the same token ("reused").
    first, second = seen["refreshed"]
    assert signed_in["expiresAt"] < first["expiresAt"] < second["expiresAt"]
    assert first["name"] == second["name"] == "Ada Lovelace"
    assert _refreshes(events)[:2] == ["rotated", "rotated"], _refreshes(events)
    assert "reused" not in _refreshes(events)
    assert not [e for e in events if e.get("reason") == "reuse_detected"]
    # Signing out revoked identity's session, not only the cookie.
    assert seen["identityAfterSignOut"] == {"sessions": 0}
    assert seen["dashboardAfterSignOut"] == "/signin"
    # identity's 409 for the Microsoft account claiming Ada's address: our page, with its words.
    assert seen["conflict"]["path"] == "/signin"
    assert seen["conflict"]["code"] == "account_conflict"
    assert "link this one from your dashboard" in seen["conflict"]["message"]
    # Linked from Ada's session: one user, two accounts, and the session went on.
    linked = seen["linked"]
    assert linked["userId"] == signed_in["userId"]
    assert linked["accounts"] == "google, microsoft"
    assert not seen["linkCookieLeft"]
    assert accounts == ["google", "microsoft"] and users == 1
    for step in (
        "1-signin",
        "2-google-account-picker",
        "3-dashboard",
        "4-after-refresh-1",
        "5-after-refresh-2",
        "6-signed-out",
        "7-microsoft-account-picker",
        "8-account-conflict",
        "9-linked",
        "10-back-channel-logout",
    ):
        assert (ARTIFACTS / f"authjs-{step}.png").stat().st_size > 1000


def test_better_auth(tmp_path: Path) -> None:
    _ready("better-auth")
    with stack(tmp_path, app="better-auth", access_token_ttl=ACCESS_TOKEN_TTL) as running:
        seen = _browse(running, "browser-better-auth.mjs", tmp_path)
        events = _identity_events(running)
        sid = assert_signed_out_by_identity(seen, running)
        # The instance that got the token deleted Better Auth's session holding identity's.
        with sqlite3.connect(tmp_path / "better-auth.db") as db:
            left = db.execute("SELECT count(*) FROM session WHERE identitySid = ?", (sid,))
            assert left.fetchone()[0] == 0
    assert seen["start"] == "/signin"
    signed_in = seen["signedIn"]
    assert (signed_in["name"], signed_in["email"], signed_in["accounts"]) == (
        "Ada Lovelace",
        "ada@gmail.com",
        "google",
    )
    # Our tokens never reach the browser: Better Auth's session endpoint leaves them out.
    assert "identity" not in seen["getSession"] and '"session"' in seen["getSession"]
    # Two refreshes, each once (the tokens are on the session row: no second copy to refresh).
    first, second = seen["refreshed"]
    assert signed_in["expiresAt"] < first["expiresAt"] < second["expiresAt"]
    assert first["name"] == second["name"] == "Ada Lovelace"
    assert _refreshes(events)[:2] == ["rotated", "rotated"], _refreshes(events)
    assert not [e for e in events if e.get("reason") == "reuse_detected"]
    # Signing out (deleting Better Auth's session) revoked identity's session.
    assert seen["identityAfterSignOut"] == {"sessions": 0}
    assert seen["dashboardAfterSignOut"] == "/signin"
    assert seen["again"]["userId"] == signed_in["userId"]
    for step in (
        "1-signin",
        "2-google-account-picker",
        "3-dashboard",
        "4-after-refresh-1",
        "5-after-refresh-2",
        "6-signed-out",
        "7-signed-in-again",
        "8-back-channel-logout",
    ):
        assert (ARTIFACTS / f"better-auth-{step}.png").stat().st_size > 1000
