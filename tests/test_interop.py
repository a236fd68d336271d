"""Our access tokens verify with the usual libraries, given only the JWKS or discovery URL."""

from __future__ import annotations

import json
import subprocess

import httpx
import jwt
import pytest
from jose import jwt as jose_jwt
from jwcrypto import jwk as jwcrypto_jwk
from jwcrypto import jwt as jwcrypto_jwt

from identity.verifier import InvalidAccessToken, TokenVerifier

from .support import Live, node_jose

pytestmark = pytest.mark.anyio


def test_pyjwt_with_jwks_client(live: Live) -> None:
    token = live.access_token()
    client = jwt.PyJWKClient(live.url + "/.well-known/jwks.json")
    key = client.get_signing_key_from_jwt(token)
    claims = jwt.decode(token, key.key, algorithms=["RS256"], audience=live.url, issuer=live.url)
    assert claims["email"] == "ada@gmail.com"
    assert jwt.get_unverified_header(token)["typ"] == "at+jwt"


def test_python_jose(live: Live) -> None:
    token = live.access_token()
    jwks = httpx.get(live.url + "/.well-known/jwks.json").json()
    claims = jose_jwt.decode(token, jwks, algorithms=["RS256"], audience=live.url, issuer=live.url)
    assert claims["sid"]


def test_jwcrypto(live: Live) -> None:
    token = live.access_token()
    keys = jwcrypto_jwk.JWKSet.from_json(httpx.get(live.url + "/.well-known/jwks.json").text)
    verified = jwcrypto_jwt.JWT(
        jwt=token,
        key=keys,
        algs=["RS256"],
        check_claims={"iss": live.url, "aud": live.url, "exp": None},
    )
    assert json.loads(verified.claims)["client_id"] == "public"


async def test_our_token_verifier_from_discovery(live: Live) -> None:
    token = live.access_token()
    verifier = TokenVerifier(live.url, live.url)
    try:
        claims = await verifier.verify(token)
        assert claims.subject
        with pytest.raises(InvalidAccessToken):
            await verifier.verify(token[:-4] + "AAAA")
    finally:
        await verifier.aclose()


def test_node_jose_remote_jwks(live: Live) -> None:
    cache = node_jose()
    script = cache / "verify.mjs"
    script.write_text(
        "import { createRemoteJWKSet, jwtVerify } from 'jose';\n"
        "const [jwksUrl, issuer, token] = process.argv.slice(2);\n"
        "const JWKS = createRemoteJWKSet(new URL(jwksUrl));\n"
        "const { payload, protectedHeader } = await jwtVerify(token, JWKS, {\n"
        "  issuer, audience: issuer, typ: 'at+jwt', algorithms: ['RS256'] });\n"
        "console.log(JSON.stringify({ sub: payload.sub, typ: protectedHeader.typ }));\n"
    )
    token = live.access_token()
    result = subprocess.run(
        ["node", str(script), live.url + "/.well-known/jwks.json", live.url, token],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=cache,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["typ"] == "at+jwt"
    tampered = subprocess.run(
        ["node", str(script), live.url + "/.well-known/jwks.json", live.url, token[:-4] + "AAAA"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=cache,
    )
    assert tampered.returncode != 0
