"""The whole demo: a Google and a Microsoft emulator, identity, and one of the web apps (two
instances behind a router, as a web app runs on several servers), on loopback ports.

The apps, each a Next.js production build with its own npm lock file:

- `nextauth`: NextAuth v4 with the Pages Router (this folder);
- `authjs`: Auth.js v5 (next-auth 5 beta) with the App Router (`authjs/`);
- `better-auth`: Better Auth with the App Router (`better-auth/`).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..servers import Server, base_env, free_port, serve, wait_until_ok
from .emulator import TENANT, Emulator, running, self_signed
from .router import routing

E2E_DIR = Path(__file__).resolve().parent
APP_DIR = E2E_DIR  # the NextAuth v4 app, and the browser driver (playwright-core) every test uses
APPS = {"nextauth": E2E_DIR, "authjs": E2E_DIR / "authjs", "better-auth": E2E_DIR / "better-auth"}
GOOGLE_CLIENT_ID = "demo-app.apps.googleusercontent.com"
GOOGLE_CLIENT_SECRET = "demo-google-secret"
MICROSOFT_CLIENT_ID = "6731de76-14a6-49ae-97bc-6eba6914391e"
MICROSOFT_CLIENT_SECRET = "demo-microsoft-secret"
IDENTITY_CLIENT_ID = "nextjs"
IDENTITY_CLIENT_SECRET = "demo-nextjs-secret-0123"
# The back office's admin client (docs/admin.md): the tests disable a user through it.
ADMIN_CLIENT_ID = "backoffice"
ADMIN_CLIENT_SECRET = "demo-backoffice-secret-0123"
LOGOUT_PATH = "/api/backchannel-logout"
REFRESH_MARGIN_MS = 1000  # the apps refresh our access token this long before it expires


@dataclass
class Stack:
    app_url: str
    identity: Server
    google: Emulator
    microsoft: Emulator
    database: Path
    keys: Path
    # Where identity sends the app's back-channel logout: the second instance, straight (the
    # browser's requests go to the first), so the instances are seen to share the logout.
    logout_uri: str


def npm() -> str | None:
    return shutil.which("npm")


def install(app_dir: Path = APP_DIR) -> None:
    """npm packages of the app, from its lock file (once; .ci/run installs them beforehand)."""
    if not (app_dir / "node_modules" / ".package-lock.json").exists():
        subprocess.run(
            [npm() or "npm", "ci", "--no-audit", "--no-fund"], cwd=app_dir, check=True, timeout=900
        )


def build(app_dir: Path = APP_DIR) -> None:
    """`next build`, once per run: a build newer than every source file is kept."""
    if _built(app_dir):
        return
    subprocess.run(
        [str(app_dir / "node_modules" / ".bin" / "next"), "build"],
        cwd=app_dir,
        check=True,
        timeout=900,
        env=base_env(NEXT_TELEMETRY_DISABLED="1"),
        stdout=subprocess.DEVNULL,
    )


def _built(app_dir: Path) -> bool:
    marker = app_dir / ".next" / "BUILD_ID"
    installed = app_dir / "node_modules" / ".package-lock.json"
    if not marker.exists() or not installed.exists():
        return False
    built = marker.stat().st_mtime
    if installed.stat().st_mtime > built:
        return False
    skip = {"node_modules", ".next", "artifacts", ".demo", "__pycache__", "authjs", "better-auth"}
    for path in app_dir.rglob("*"):
        if skip.intersection(path.relative_to(app_dir).parts):
            continue
        if path.is_file() and path.stat().st_mtime > built:
            return False
    return True


def _app_env(
    app: str, app_url: str, google: Emulator, microsoft: Emulator, workdir: Path
) -> dict[str, str]:
    google_discovery = google.base + google.paths["discovery"]
    if app == "nextauth":
        return {
            "GOOGLE_CLIENT_ID": GOOGLE_CLIENT_ID,
            "GOOGLE_CLIENT_SECRET": GOOGLE_CLIENT_SECRET,
            "GOOGLE_WELL_KNOWN": google_discovery,
            "MICROSOFT_CLIENT_ID": MICROSOFT_CLIENT_ID,
            "MICROSOFT_CLIENT_SECRET": MICROSOFT_CLIENT_SECRET,
            "MICROSOFT_WELL_KNOWN": microsoft.base + microsoft.paths["discovery"],
            "NEXTAUTH_URL": app_url,
            "NEXTAUTH_SECRET": "demo-nextauth-secret-0123456789",
            "LOGGED_OUT_DIR": str(workdir / "logged-out"),
        }
    if app == "authjs":
        return {
            "AUTH_URL": app_url,
            "AUTH_SECRET": "demo-authjs-secret-0123456789abcdef",
            "AUTH_GOOGLE_ID": GOOGLE_CLIENT_ID,
            "AUTH_GOOGLE_SECRET": GOOGLE_CLIENT_SECRET,
            "AUTH_GOOGLE_ISSUER": google.issuer,
            "AUTH_MICROSOFT_ENTRA_ID_ID": MICROSOFT_CLIENT_ID,
            "AUTH_MICROSOFT_ENTRA_ID_SECRET": MICROSOFT_CLIENT_SECRET,
            "AUTH_MICROSOFT_ENTRA_ID_ISSUER": microsoft.issuer,
            "LOGGED_OUT_DIR": str(workdir / "logged-out"),
            "NODE_EXTRA_CA_CERTS": str(workdir / "emulator-cert.pem"),
        }
    if app == "better-auth":
        return {
            "BETTER_AUTH_URL": app_url,
            "BETTER_AUTH_SECRET": "demo-better-auth-secret-0123456789abcdef",
            "BETTER_AUTH_DATABASE": str(workdir / "better-auth.db"),
            "GOOGLE_CLIENT_ID": GOOGLE_CLIENT_ID,
            "GOOGLE_CLIENT_SECRET": GOOGLE_CLIENT_SECRET,
            "GOOGLE_DISCOVERY_URL": google_discovery,
        }
    raise ValueError(f"unknown app {app!r}: one of {sorted(APPS)}")


@contextmanager
def stack(
    workdir: Path, *, app: str = "nextauth", access_token_ttl: int = 900, app_port: int = 0
) -> Iterator[Stack]:
    database = workdir / "identity.db"
    identity_port = free_port()
    issuer = f"http://127.0.0.1:{identity_port}"
    # Auth.js v5 asks Microsoft Entra ID's emulator over HTTPS only (see emulator.self_signed).
    tls = self_signed(workdir) if app == "authjs" else None
    trust = {"SSL_CERT_FILE": str(tls[0])} if tls else {}
    ports = (free_port(), free_port())
    logout_uri = f"http://127.0.0.1:{ports[1]}{LOGOUT_PATH}"
    with (
        running(GOOGLE_CLIENT_ID, GOOGLE_CLIENT_SECRET) as google,
        running(MICROSOFT_CLIENT_ID, MICROSOFT_CLIENT_SECRET, microsoft=True, tls=tls) as microsoft,
    ):
        env = base_env(
            **trust,
            IDENTITY_PORT=str(identity_port),
            IDENTITY_ISSUER=issuer,
            IDENTITY_DATABASE_URL=f"sqlite+aiosqlite:///{database}",
            IDENTITY_GOOGLE_JWKS_URL=google.base + google.paths["jwks"],
            IDENTITY_GOOGLE_ISSUERS=google.issuer,
            IDENTITY_GOOGLE_CLIENT_IDS=GOOGLE_CLIENT_ID,
            IDENTITY_MICROSOFT_CLIENT_IDS=MICROSOFT_CLIENT_ID,
            IDENTITY_MICROSOFT_TENANTS=TENANT,
            IDENTITY_MICROSOFT_AUTHORITY=microsoft.base,
            IDENTITY_CLIENTS=(
                f"{IDENTITY_CLIENT_ID}:{IDENTITY_CLIENT_SECRET},"
                f"{ADMIN_CLIENT_ID}:{ADMIN_CLIENT_SECRET}"
            ),
            IDENTITY_ADMIN_CLIENTS=ADMIN_CLIENT_ID,
            # Development allows a plain-http loopback receiver (docs/notifications.md).
            IDENTITY_BACKCHANNEL_LOGOUT_URIS=f"{IDENTITY_CLIENT_ID}={logout_uri}",
            IDENTITY_ACCESS_TOKEN_TTL=str(access_token_ttl),
            IDENTITY_CLOCK_SKEW="0",
        )
        with serve(env, workdir) as identity, routing(*ports, port=app_port) as router_url:
            # The App Router rewrites 127.0.0.1 to localhost in the URL route handlers see;
            # Auth.js then builds redirect URIs that differ from the sign-in's: use localhost.
            app_url = router_url
            if app != "nextauth":
                app_url = router_url.replace("//127.0.0.1:", "//localhost:")
            app_env = base_env(
                IDENTITY_URL=identity.url,
                IDENTITY_CLIENT_ID=IDENTITY_CLIENT_ID,
                IDENTITY_CLIENT_SECRET=IDENTITY_CLIENT_SECRET,
                IDENTITY_REFRESH_MARGIN_MS=str(REFRESH_MARGIN_MS),
                NEXT_TELEMETRY_DISABLED="1",
                **_app_env(app, app_url, google, microsoft, workdir),
            )
            # One after the other: the first instance has prepared the app's database (if
            # it has one) when the second starts.
            with (
                _next(APPS[app], ports[0], app_env, workdir / "next-a.log"),
                _next(APPS[app], ports[1], app_env, workdir / "next-b.log"),
            ):
                yield Stack(
                    app_url, identity, google, microsoft, database, workdir / "keys", logout_uri
                )


@contextmanager
def _next(app_dir: Path, port: int, env: dict[str, str], log_path: Path) -> Iterator[None]:
    """One instance of the app (`next start`), until the block ends."""
    with log_path.open("wb") as log:
        app = subprocess.Popen(
            [
                str(app_dir / "node_modules" / ".bin" / "next"),
                "start",
                "-p",
                str(port),
                "-H",
                "127.0.0.1",
            ],
            cwd=app_dir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_until_ok(f"http://127.0.0.1:{port}/signin", timeout=60, process=app)
            yield
        finally:
            app.terminate()
            app.wait(timeout=20)


def main() -> None:
    """`python -m tests.e2e.demo [nextauth|authjs|better-auth]`'s body: install, build, run
    until Ctrl+C."""
    app = sys.argv[1] if len(sys.argv) > 1 else "nextauth"
    if app not in APPS:
        sys.exit(f"unknown app {app!r}: one of {', '.join(sorted(APPS))}")
    if npm() is None:
        sys.exit("npm is not installed: the demo app needs Node.js and npm")
    install(APPS[app])
    print("building the Next.js app (about a minute the first time)…", flush=True)
    build(APPS[app])
    workdir = Path(os.environ.get("DEMO_DIR", E2E_DIR / ".demo"))
    workdir.mkdir(exist_ok=True)
    # SIGTERM ends the demo like Ctrl+C does, so the services it started are stopped too.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with stack(workdir, app=app, app_port=3000) as running_stack:
        print(f"demo app:   {running_stack.app_url}  ({app}; sign in with an emulated account)")
        print(f"identity:   {running_stack.identity.url}")
        print(f"admin API:  curl -u {ADMIN_CLIENT_ID}:{ADMIN_CLIENT_SECRET} … (docs/admin.md)")
        print(f"google:     {running_stack.google.issuer}")
        print(f"microsoft:  {running_stack.microsoft.issuer}")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
