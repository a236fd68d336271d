"""Local stand-ins for two OpenID Connect providers, for the browser test and the demo.

Google-shaped (issuer = the base URL):

    GET  /.well-known/openid-configuration   discovery (NextAuth reads it)
    GET  /o/oauth2/v2/auth                   an account picker; choosing redirects with a code
    POST /token                              code (+ PKCE verifier, client secret) -> id_token
    GET  /userinfo                           the chosen account's claims
    GET  /oauth2/v3/certs                    the emulator's public key

Microsoft-Entra-shaped (issuer `{base}/{tid}/v2.0`, keys at `{base}/common/discovery/v2.0/keys`,
tokens with `tid`, `oid` and a pairwise `sub`), at the same paths under `/{tid}/v2.0` and
`/{tid}/oauth2/v2.0/`. Tokens are signed with the emulator's own RSA key; `identity` trusts it
through the provider variables the stack sets (IDENTITY_GOOGLE_JWKS_URL, _ISSUERS;
IDENTITY_MICROSOFT_AUTHORITY).
"""

from __future__ import annotations

import base64
import hashlib
import html
import http.server
import ipaddress
import json
import secrets
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from joserfc import jws
from joserfc.jwk import RSAKey

ACCOUNT: dict[str, Any] = {
    "sub": "109876543210987654321",
    "email": "ada@gmail.com",
    "email_verified": True,
    "name": "Ada Lovelace",
    "picture": "https://lh3.googleusercontent.com/a/ada",
}
TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
MICROSOFT_ACCOUNT: dict[str, Any] = {
    "sub": "pairwise-sub-for-this-app",
    "tid": TENANT,
    "oid": "00000000-0000-0000-66f3-3332eca7ea81",
    "email": "grace@contoso.example",
    "preferred_username": "grace@contoso.example",
    "name": "Grace Hopper",
    "ver": "2.0",
}
# A second Entra account whose (unproven) address is the Google user's: signing in with it is
# identity's 409 account_conflict; linking it from the Google user's session is allowed.
MICROSOFT_ACCOUNT_CLAIMING_ADA: dict[str, Any] = {
    "sub": "pairwise-sub-for-ada-at-work",
    "tid": TENANT,
    "oid": "00000000-0000-0000-1a2b-ada000000001",
    "email": "ada@gmail.com",
    "preferred_username": "ada@gmail.com",
    "name": "Ada Lovelace (work)",
    "ver": "2.0",
}


@dataclass
class Emulator:
    base: str
    client_id: str
    client_secret: str
    microsoft: bool = False
    key: RSAKey = field(default_factory=lambda: RSAKey.generate_key(2048, private=True))
    codes: dict[str, dict[str, Any]] = field(default_factory=dict)
    userinfo: dict[str, dict[str, Any]] = field(default_factory=dict)
    kid: str = "emulator-key"

    @property
    def issuer(self) -> str:
        return f"{self.base}/{TENANT}/v2.0" if self.microsoft else self.base

    @property
    def accounts(self) -> list[dict[str, Any]]:
        """The accounts the picker offers: `#account` is the first, `#account-2` the second."""
        return [MICROSOFT_ACCOUNT, MICROSOFT_ACCOUNT_CLAIMING_ADA] if self.microsoft else [ACCOUNT]

    @property
    def paths(self) -> dict[str, str]:
        """Where each endpoint lives, as the real provider lays them out."""
        if self.microsoft:
            return {
                "discovery": f"/{TENANT}/v2.0/.well-known/openid-configuration",
                "authorize": f"/{TENANT}/oauth2/v2.0/authorize",
                "token": f"/{TENANT}/oauth2/v2.0/token",
                "userinfo": "/oidc/userinfo",
                "jwks": "/common/discovery/v2.0/keys",
            }
        return {
            "discovery": "/.well-known/openid-configuration",
            "authorize": "/o/oauth2/v2/auth",
            "token": "/token",
            "userinfo": "/userinfo",
            "jwks": "/oauth2/v3/certs",
        }

    def discovery(self) -> dict[str, Any]:
        p = self.paths
        return {
            "issuer": self.issuer,
            "authorization_endpoint": self.base + p["authorize"],
            "token_endpoint": self.base + p["token"],
            "userinfo_endpoint": self.base + p["userinfo"],
            "jwks_uri": self.base + p["jwks"],
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "scopes_supported": ["openid", "email", "profile"],
            "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
            "code_challenge_methods_supported": ["S256"],
        }

    def jwks(self) -> dict[str, Any]:
        public = self.key.as_dict(private=False)
        return {"keys": [{**public, "kid": self.kid, "alg": "RS256", "use": "sig"}]}

    def id_token(self, account: dict[str, Any], nonce: str | None) -> str:
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "aud": self.client_id,
            "azp": self.client_id,
            "iat": now,
            "exp": now + 3600,
            **account,
        }
        if nonce:
            claims["nonce"] = nonce
        header = {"alg": "RS256", "kid": self.kid, "typ": "JWT"}
        return jws.serialize_compact(header, json.dumps(claims).encode(), self.key)


def _handler(emulator: Emulator) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send(self, status: int, body: bytes, content_type: str, **headers: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: int, value: Any) -> None:
            self._send(status, json.dumps(value).encode(), "application/json")

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            paths = emulator.paths
            if url.path == paths["discovery"]:
                self._json(200, emulator.discovery())
            elif url.path == paths["jwks"]:
                self._json(200, emulator.jwks())
            elif url.path == paths["authorize"]:
                self._authorize(query)
            elif url.path == "/choose":
                self._choose(query)
            elif url.path == paths["userinfo"]:
                bearer = self.headers.get("Authorization", "").removeprefix("Bearer ")
                account = emulator.userinfo.get(bearer)
                if account is None:
                    self._json(401, {"error": "invalid_token"})
                else:
                    self._json(200, account)
            else:
                self._json(404, {"error": "not_found"})

        def _authorize(self, query: dict[str, str]) -> None:
            if query.get("client_id") != emulator.client_id or "redirect_uri" not in query:
                self._json(400, {"error": "invalid_request"})
                return
            title = "Microsoft" if emulator.microsoft else "Google Accounts"
            links = []
            for index, account in enumerate(emulator.accounts):
                choose = "/choose?" + urlencode({**query, "account": str(index)})
                anchor = "account" if index == 0 else f"account-{index + 1}"
                links.append(
                    f"<a id='{anchor}' href='{html.escape(choose, quote=True)}' "
                    "style='display:block;padding:1rem;margin:.5rem 0;border:1px solid #ccc;"
                    "border-radius:8px'>"
                    f"{html.escape(str(account['name']))}<br>"
                    f"<small>{html.escape(str(account['email']))}</small></a>"
                )
            page = (
                f"<!doctype html><html><head><title>Sign in - {title}</title></head>"
                "<body style='font-family:system-ui;max-width:420px;margin:4rem auto'>"
                "<h1>Choose an account</h1><p>to continue to the demo app</p>"
                + "".join(links)
                + "</body></html>"
            )
            self._send(200, page.encode(), "text/html; charset=utf-8")

        def _choose(self, query: dict[str, str]) -> None:
            code = secrets.token_urlsafe(16)
            emulator.codes[code] = query
            target = (
                query["redirect_uri"]
                + "?"
                + urlencode(
                    {"code": code, "state": query.get("state", ""), "scope": query.get("scope", "")}
                )
            )
            self._send(302, b"", "text/plain", Location=target)

        def do_POST(self) -> None:
            if urlsplit(self.path).path != emulator.paths["token"]:
                self._json(404, {"error": "not_found"})
                return
            length = int(self.headers.get("Content-Length", "0"))
            form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
            client_id, secret = form.get("client_id"), form.get("client_secret")
            auth = self.headers.get("Authorization", "")
            if auth.startswith("Basic "):
                client_id, _, secret = base64.b64decode(auth[6:]).decode().partition(":")
            request = emulator.codes.pop(form.get("code", ""), None)
            index = int(request.get("account", "0")) if request else 0
            if (
                request is None
                or client_id != emulator.client_id
                or secret != emulator.client_secret
                or form.get("redirect_uri") != request["redirect_uri"]
            ):
                self._json(400, {"error": "invalid_grant"})
                return
            challenge = request.get("code_challenge")
            if challenge:
                digest = hashlib.sha256(form.get("code_verifier", "").encode()).digest()
                if base64.urlsafe_b64encode(digest).rstrip(b"=").decode() != challenge:
                    self._json(400, {"error": "invalid_grant", "error_description": "PKCE"})
                    return
            account = emulator.accounts[index]
            access_token = "ya29." + secrets.token_urlsafe(24)
            emulator.userinfo[access_token] = account
            self._json(
                200,
                {
                    "access_token": access_token,
                    "token_type": "Bearer",
                    "expires_in": 3599,
                    "scope": request.get("scope", "openid email profile"),
                    "id_token": emulator.id_token(account, request.get("nonce")),
                },
            )

    return Handler


@contextmanager
def running(
    client_id: str,
    client_secret: str,
    *,
    microsoft: bool = False,
    port: int = 0,
    tls: tuple[Path, Path] | None = None,
) -> Iterator[Emulator]:
    """The emulator on loopback until the block ends; over HTTPS with `tls` (certificate, key)."""
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", port), http.server.BaseHTTPRequestHandler
    )
    scheme = "http"
    if tls is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*tls)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        scheme = "https"
    base = f"{scheme}://127.0.0.1:{server.server_address[1]}"
    emulator = Emulator(base, client_id, client_secret, microsoft=microsoft)
    server.RequestHandlerClass = _handler(emulator)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield emulator
    finally:
        server.shutdown()
        server.server_close()


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost, and its key, as PEM files in `directory`.

    Auth.js refuses plain HTTP for some of Microsoft Entra ID's requests: its emulator then runs
    over HTTPS, trusted by Node (NODE_EXTRA_CA_CERTS) and identity (SSL_CERT_FILE)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "emulator")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "emulator-cert.pem", directory / "emulator-key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path
