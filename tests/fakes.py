"""Test doubles: a controllable clock and a fake Google that signs id_tokens with its own key."""

from __future__ import annotations

import base64
import http.server
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import httpx
from joserfc import jws
from joserfc.jwk import RSAKey

GOOGLE_ISSUER = "https://accounts.google.com"
WEB_CLIENT = "web-client.apps.googleusercontent.com"
IOS_CLIENT = "ios-client.apps.googleusercontent.com"
START = 1_800_000_000.0  # 2027-01-15, a fixed "now" for tests with a controllable clock


class FakeClock:
    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class FakeGoogle:
    """Google's key set and token minting, with switches to misbehave."""

    key: RSAKey
    clock: Any
    kid: str = "google-key-1"
    status: int = 200
    cache_control: str = "public, max-age=3600"
    body: bytes | None = None  # overrides the JWKS document (garbage tests)
    fetches: int = 0
    extra_keys: list[dict[str, Any]] = field(default_factory=list)
    counter: int = 0

    def jwks(self) -> dict[str, Any]:
        public = self.key.as_dict(private=False)
        entry = {
            "kty": "RSA",
            "n": public["n"],
            "e": public["e"],
            "kid": self.kid,
            "alg": "RS256",
            "use": "sig",
        }
        return {"keys": [entry, *self.extra_keys]}

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.fetches += 1
        if self.status != 200:
            return httpx.Response(self.status, text="unavailable")
        body = self.body if self.body is not None else json.dumps(self.jwks()).encode()
        return httpx.Response(200, content=body, headers={"Cache-Control": self.cache_control})

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(self.handler))

    def claims(self, **overrides: Any) -> dict[str, Any]:
        self.counter += 1
        now = int(self.clock())
        claims: dict[str, Any] = {
            "iss": GOOGLE_ISSUER,
            "aud": WEB_CLIENT,
            "azp": WEB_CLIENT,
            "sub": "110000000000000000001",
            "email": "ada@gmail.com",
            "email_verified": True,
            "name": "Ada Lovelace",
            "picture": "https://lh3.googleusercontent.com/a/ada",
            "iat": now,
            "exp": now + 3600,
            # Distinct tokens for the same person, as Google issues at each sign-in.
            "jti": f"jti-{self.counter}",
        }
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not _DROP}

    def mint(self, header: dict[str, Any] | None = None, **overrides: Any) -> str:
        protected = {"alg": "RS256", "kid": self.kid, "typ": "JWT", **(header or {})}
        payload = json.dumps(self.claims(**overrides)).encode()
        return jws.serialize_compact(protected, payload, self.key, algorithms=["RS256"])

    def mint_raw(self, header: dict[str, Any], payload: bytes, key: RSAKey | None = None) -> str:
        """Sign arbitrary bytes as payload, bypassing any library checks of the header."""
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        signing_input = (b64(json.dumps(header).encode()) + "." + b64(payload)).encode()
        private = (key or self.key).private_key
        assert private is not None
        signature = private.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
        return signing_input.decode() + "." + b64(signature)


class _Drop:
    pass


_DROP: Any = _Drop()
DROP: Any = _DROP  # pass as a claim value to remove the claim


@contextmanager
def serve_jwks(google: FakeGoogle, port: int = 0, delay: float = 0.0) -> Iterator[str]:
    """Serve the fake Google's key set over real HTTP on loopback (for service processes)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path, _, query = self.path.partition("?")
            if path == "/mint":
                # A fresh id_token for manual tries: /mint?email=...&sub=...&aud=...
                overrides: dict[str, Any] = dict(parse_qsl(query))
                overrides.setdefault("iat", int(time.time()))
                overrides.setdefault("exp", int(time.time()) + 3600)
                body = google.mint(**overrides).encode()
                content_type = "text/plain"
            else:
                time.sleep(delay)  # a slow provider, for in-flight request tests
                body = json.dumps(google.jwks()).encode()
                content_type = "application/json"
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Cache-Control", "public, max-age=3600")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/oauth2/v3/certs"
    finally:
        server.shutdown()
        server.server_close()
