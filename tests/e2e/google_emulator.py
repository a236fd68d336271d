"""A local stand-in for Google's OpenID Connect endpoints, for the browser test and the demo.

    GET  /.well-known/openid-configuration   discovery (NextAuth reads it)
    GET  /o/oauth2/v2/auth                   an account picker; choosing redirects with a code
    POST /token                              code (+ PKCE verifier, client secret) -> id_token
    GET  /userinfo                           the chosen account's claims
    GET  /oauth2/v3/certs                    the emulator's public key

Tokens are signed with the emulator's own RSA key; `identity` trusts it through
IDENTITY_GOOGLE_JWKS_URL and IDENTITY_GOOGLE_ISSUERS.
"""

from __future__ import annotations

import base64
import hashlib
import html
import http.server
import json
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from joserfc import jws
from joserfc.jwk import RSAKey

ACCOUNT: dict[str, Any] = {
    "sub": "109876543210987654321",
    "email": "ada@gmail.com",
    "email_verified": True,
    "name": "Ada Lovelace",
    "picture": "https://lh3.googleusercontent.com/a/ada",
}


@dataclass
class Emulator:
    issuer: str
    client_id: str
    client_secret: str
    key: RSAKey = field(default_factory=lambda: RSAKey.generate_key(2048, private=True))
    codes: dict[str, dict[str, Any]] = field(default_factory=dict)
    kid: str = "emulator-key"

    def discovery(self) -> dict[str, Any]:
        return {
            "issuer": self.issuer,
            "authorization_endpoint": f"{self.issuer}/o/oauth2/v2/auth",
            "token_endpoint": f"{self.issuer}/token",
            "userinfo_endpoint": f"{self.issuer}/userinfo",
            "jwks_uri": f"{self.issuer}/oauth2/v3/certs",
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

    def id_token(self, nonce: str | None) -> str:
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "aud": self.client_id,
            "azp": self.client_id,
            "iat": now,
            "exp": now + 3600,
            **ACCOUNT,
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
            if url.path == "/.well-known/openid-configuration":
                self._json(200, emulator.discovery())
            elif url.path == "/oauth2/v3/certs":
                self._json(200, emulator.jwks())
            elif url.path == "/o/oauth2/v2/auth":
                self._authorize(query)
            elif url.path == "/choose":
                self._choose(query)
            elif url.path == "/userinfo":
                self._json(200, ACCOUNT)
            else:
                self._json(404, {"error": "not_found"})

        def _authorize(self, query: dict[str, str]) -> None:
            if query.get("client_id") != emulator.client_id or "redirect_uri" not in query:
                self._json(400, {"error": "invalid_request"})
                return
            choose = "/choose?" + urlencode(query)
            page = (
                "<!doctype html><html><head><title>Sign in - Google Accounts</title></head>"
                "<body style='font-family:system-ui;max-width:420px;margin:4rem auto'>"
                "<h1>Choose an account</h1><p>to continue to the demo app</p>"
                f"<a id='account' href='{html.escape(choose, quote=True)}' "
                "style='display:block;padding:1rem;border:1px solid #ccc;border-radius:8px'>"
                f"{html.escape(str(ACCOUNT['name']))}<br><small>{html.escape(str(ACCOUNT['email']))}</small>"
                "</a></body></html>"
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
            if urlsplit(self.path).path != "/token":
                self._json(404, {"error": "not_found"})
                return
            length = int(self.headers.get("Content-Length", "0"))
            form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
            client_id, secret = form.get("client_id"), form.get("client_secret")
            auth = self.headers.get("Authorization", "")
            if auth.startswith("Basic "):
                client_id, _, secret = base64.b64decode(auth[6:]).decode().partition(":")
            request = emulator.codes.pop(form.get("code", ""), None)
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
            self._json(
                200,
                {
                    "access_token": "ya29." + secrets.token_urlsafe(24),
                    "token_type": "Bearer",
                    "expires_in": 3599,
                    "scope": request.get("scope", "openid email profile"),
                    "id_token": emulator.id_token(request.get("nonce")),
                },
            )

    return Handler


@contextmanager
def running(client_id: str, client_secret: str, port: int = 0) -> Iterator[Emulator]:
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", port), http.server.BaseHTTPRequestHandler
    )
    emulator = Emulator(f"http://127.0.0.1:{server.server_address[1]}", client_id, client_secret)
    server.RequestHandlerClass = _handler(emulator)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield emulator
    finally:
        server.shutdown()
        server.server_close()
