"""Test doubles: a controllable clock, and fake OpenID Connect providers that sign id_tokens.

Each `FakeIssuer` has its own key, publishes its key set (and a discovery document where the real
provider has one), and mints tokens shaped like its provider's: Google, Microsoft Entra ID
(v2.0, per-tenant issuer), Apple (string booleans), and a generic issuer signing with ES256.
`Issuers.client()` serves all of them through httpx.MockTransport; `serve_issuers()` over real
HTTP on loopback, for service processes.
"""

from __future__ import annotations

import base64
import http.server
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import httpx
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from joserfc.jwk import ECKey, OKPKey, RSAKey

START = 1_800_000_000.0  # 2027-01-15, a fixed "now" for tests with a controllable clock
GOOGLE_ISSUER = "https://accounts.google.com"
GOOGLE_JWKS = "https://www.googleapis.com/oauth2/v3/certs"
WEB_CLIENT = "web-client.apps.googleusercontent.com"
IOS_CLIENT = "ios-client.apps.googleusercontent.com"
MS_AUTHORITY = "https://login.microsoftonline.com"
MS_CLIENT = "6731de76-14a6-49ae-97bc-6eba6914391e"
MS_OTHER_APP = "2a7b6a26-7d6e-4d8e-8f4a-0b1c2d3e4f50"
MS_TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
MS_CONSUMERS = "9188040d-6c67-4c5b-b112-36a304b66dad"
APPLE_ISSUER = "https://appleid.apple.com"
APPLE_JWKS = "https://appleid.apple.com/auth/keys"
APPLE_WEB = "com.example.web"  # a Services ID
APPLE_APP = "com.example.ios"  # a bundle ID
OKTA_ISSUER = "https://example.okta.com/oauth2/default"
OKTA_CLIENT = "0oa1example"


class FakeClock:
    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class _Drop:
    pass


DROP: Any = _Drop()  # pass as a claim value to remove the claim


def sign(alg: str, key: Any, signing_input: bytes) -> bytes:
    """A JWS signature with `key` (a joserfc key), computed here so headers can be anything."""
    private = key.private_key
    digests: dict[str, Callable[[], hashes.HashAlgorithm]] = {
        "256": hashes.SHA256,
        "384": hashes.SHA384,
        "512": hashes.SHA512,
    }
    digest = digests.get(alg[2:])
    if isinstance(private, rsa.RSAPrivateKey):
        assert digest is not None
        scheme: padding.AsymmetricPadding = (
            padding.PKCS1v15()
            if alg.startswith("RS")
            else padding.PSS(mgf=padding.MGF1(digest()), salt_length=digest().digest_size)
        )
        return private.sign(signing_input, scheme, digest())
    if isinstance(private, ec.EllipticCurvePrivateKey):
        assert digest is not None
        r, s = decode_dss_signature(private.sign(signing_input, ec.ECDSA(digest())))
        size = (private.curve.key_size + 7) // 8
        return r.to_bytes(size, "big") + s.to_bytes(size, "big")
    return bytes(private.sign(signing_input))


@dataclass
class FakeIssuer:
    """One provider: its key, key set and discovery document, and tokens shaped like its own."""

    name: str
    key: Any
    clock: Any
    claims_of: Callable[[FakeIssuer], dict[str, Any]]
    jwks_url: str
    alg: str = "RS256"
    kid: str = "key-1"
    discovery_url: str | None = None
    discovery_issuer: str | None = None
    status: int = 200
    cache_control: str = "public, max-age=3600"
    body: bytes | None = None  # overrides the key set (garbage tests)
    headers: dict[bytes, bytes] = field(default_factory=dict)  # more key-set headers
    fetches: int = 0
    extra_keys: list[dict[str, Any]] = field(default_factory=list)
    counter: int = 0

    def jwks(self) -> dict[str, Any]:
        public = self.key.as_dict(private=False)
        entry = {**public, "kid": self.kid, "alg": self.alg, "use": "sig"}
        return {"keys": [entry, *self.extra_keys]}

    def discovery(self) -> dict[str, Any]:
        return {
            "issuer": self.discovery_issuer,
            "jwks_uri": self.jwks_url,
            "id_token_signing_alg_values_supported": [self.alg],
        }

    def handle(self, url: str) -> httpx.Response | None:
        if url == self.discovery_url:
            return httpx.Response(200, json=self.discovery())
        if url != self.jwks_url:
            return None
        self.fetches += 1
        if self.status != 200:
            return httpx.Response(self.status, text="unavailable")
        body = self.body if self.body is not None else json.dumps(self.jwks()).encode()
        headers = {b"Cache-Control": self.cache_control.encode(), **self.headers}
        return httpx.Response(200, content=body, headers=headers)

    def claims(self, **overrides: Any) -> dict[str, Any]:
        self.counter += 1
        claims = {**self.claims_of(self), "jti": f"{self.name}-{self.counter}", **overrides}
        return {k: v for k, v in claims.items() if not isinstance(v, _Drop)}

    def mint(self, header: dict[str, Any] | None = None, **overrides: Any) -> str:
        protected = {"alg": self.alg, "kid": self.kid, "typ": "JWT", **(header or {})}
        return self.mint_raw(protected, json.dumps(self.claims(**overrides)).encode())

    def mint_raw(self, header: dict[str, Any], payload: bytes, key: Any = None) -> str:
        """Sign arbitrary bytes as payload under an arbitrary header."""
        signing_input = (b64(json.dumps(header).encode()) + "." + b64(payload)).encode()
        alg = header.get("alg") if isinstance(header.get("alg"), str) else self.alg
        if alg not in {
            "RS256",
            "RS384",
            "RS512",
            "PS256",
            "PS384",
            "PS512",
            "ES256",
            "ES384",
            "EdDSA",
        }:
            alg = self.alg
        return signing_input.decode() + "." + b64(sign(alg, key or self.key, signing_input))


def _times(issuer: FakeIssuer) -> dict[str, Any]:
    now = int(issuer.clock())
    return {"iat": now, "exp": now + 3600}


def google(
    clock: Any, key: Any, *, jwks_url: str = GOOGLE_JWKS, issuer: str = GOOGLE_ISSUER
) -> FakeIssuer:
    def claims(i: FakeIssuer) -> dict[str, Any]:
        return {
            "iss": issuer,
            "aud": WEB_CLIENT,
            "azp": WEB_CLIENT,
            "sub": "110000000000000000001",
            "email": "ada@gmail.com",
            "email_verified": True,
            "name": "Ada Lovelace",
            "picture": "https://lh3.googleusercontent.com/a/ada",
            **_times(i),
        }

    return FakeIssuer("google", key, clock, claims, jwks_url, kid="google-key-1")


def microsoft(
    clock: Any, key: Any, *, authority: str = MS_AUTHORITY, tenant: str = MS_TENANT
) -> FakeIssuer:
    def claims(i: FakeIssuer) -> dict[str, Any]:
        tid = tenant
        return {
            "iss": f"{authority}/{tid}/v2.0",
            "aud": MS_CLIENT,
            "tid": tid,
            "oid": "00000000-0000-0000-66f3-3332eca7ea81",
            "sub": "AAAAAAAAAAAAAAAAAAAAAIkzqFVrSaSaFHy782bbtaQ",  # pairwise per application
            "email": "grace@contoso.example",
            "preferred_username": "grace@contoso.example",
            "name": "Grace Hopper",
            "ver": "2.0",
            **_times(i),
        }

    return FakeIssuer(
        "microsoft", key, clock, claims, f"{authority}/common/discovery/v2.0/keys", kid="ms-key-1"
    )


def apple(
    clock: Any, key: Any, *, jwks_url: str = APPLE_JWKS, issuer: str = APPLE_ISSUER
) -> FakeIssuer:
    def claims(i: FakeIssuer) -> dict[str, Any]:
        return {
            "iss": issuer,
            "aud": APPLE_WEB,
            "sub": "001234.abcdef0123456789abcdef0123456789.0123",
            "email": "q7ab1c@privaterelay.appleid.com",
            "email_verified": "true",
            "is_private_email": "true",
            "auth_time": int(i.clock()),
            **_times(i),
        }

    return FakeIssuer("apple", key, clock, claims, jwks_url, kid="apple-key-1")


def okta(clock: Any, key: Any, *, issuer: str = OKTA_ISSUER) -> FakeIssuer:
    """A generic OIDC issuer found through discovery, signing with ES256."""

    def claims(i: FakeIssuer) -> dict[str, Any]:
        return {
            "iss": issuer,
            "aud": OKTA_CLIENT,
            "sub": "00u1example",
            "email": "alan@example.com",
            "email_verified": True,
            "name": "Alan Turing",
            **_times(i),
        }

    return FakeIssuer(
        "okta",
        key,
        clock,
        claims,
        f"{issuer}/v1/keys",
        alg="ES256",
        kid="okta-key-1",
        discovery_url=f"{issuer}/.well-known/openid-configuration",
        discovery_issuer=issuer,
    )


@dataclass
class Issuers:
    google: FakeIssuer
    microsoft: FakeIssuer
    apple: FakeIssuer
    okta: FakeIssuer

    def all(self) -> list[FakeIssuer]:
        return [self.google, self.microsoft, self.apple, self.okta]

    def handler(self, request: httpx.Request) -> httpx.Response:
        url = str(request.url)
        for issuer in self.all():
            response = issuer.handle(url)
            if response is not None:
                return response
        return httpx.Response(404)

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(self.handler))


def new_keys() -> dict[str, Any]:
    return {
        "google": RSAKey.generate_key(2048, private=True),
        "microsoft": RSAKey.generate_key(2048, private=True),
        "apple": RSAKey.generate_key(2048, private=True),
        "okta": ECKey.generate_key("P-256", private=True),
        "other_rsa": RSAKey.generate_key(2048, private=True),
        "ed25519": OKPKey.generate_key("Ed25519", private=True),
    }


@dataclass
class Served:
    """Issuers served over real HTTP at `base`; add issuers whose URLs start with it."""

    base: str
    issuers: list[FakeIssuer] = field(default_factory=list)
    # More tokens at /mint/<name>: a security event (tests/security_events.py), from the query.
    minters: dict[str, Callable[[dict[str, str]], str]] = field(default_factory=dict)

    def add(self, issuer: FakeIssuer) -> FakeIssuer:
        self.issuers.append(issuer)
        return issuer


@contextmanager
def serve_issuers(delay: float = 0.0, port: int = 0, host: str = "127.0.0.1") -> Iterator[Served]:
    """A loopback HTTP server for fake issuers' key sets and discovery documents.

    `GET /mint/<name>?claim=value` returns a fresh token of that issuer, for manual tries.
    """
    served: Served

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path, _, query = self.path.partition("?")
            minter = served.minters.get(path.removeprefix("/mint/"))
            if minter is not None:
                self._send(200, minter(dict(parse_qsl(query))).encode(), "text/plain")
                return
            if path.startswith("/mint/"):
                issuer = next(i for i in served.issuers if i.name == path.removeprefix("/mint/"))
                overrides: dict[str, Any] = dict(parse_qsl(query))
                overrides.setdefault("iat", int(time.time()))
                overrides.setdefault("exp", int(time.time()) + 3600)
                self._send(200, issuer.mint(**overrides).encode(), "text/plain")
                return
            time.sleep(delay)  # a slow provider, for in-flight request tests
            for issuer in served.issuers:
                response = issuer.handle(served.base + path)
                if response is not None:
                    cache = response.headers.get("cache-control")
                    self._send(response.status_code, response.content, "application/json", cache)
                    return
            self._send(404, b"{}", "application/json")

        def _send(self, status: int, body: bytes, kind: str, cache: str | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Cache-Control", cache or "public, max-age=3600")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer((host, port), Handler)
    served = Served(f"http://127.0.0.1:{server.server_address[1]}")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield served
    finally:
        server.shutdown()
        server.server_close()


def http_google(key: Any, base: str) -> FakeIssuer:
    """Google as `serve_issuers` serves it at `base` (its `iss` stays Google's own)."""
    return google(time.time, key, jwks_url=f"{base}/oauth2/v3/certs")


def http_microsoft(key: Any, base: str) -> FakeIssuer:
    """Microsoft with its authority at `base`/ms: issuer `base/ms/{tid}/v2.0`."""
    return microsoft(time.time, key, authority=f"{base}/ms")
