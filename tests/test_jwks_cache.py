"""The key-set cache: Cache-Control, single-flight refetch, stale keys, size cap, fail closed."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from identity.errors import KeysUnavailable, TokenRejected
from identity.tokens.keysets import MAX_DOCUMENT_BYTES, KeySetCache

from .fakes import GOOGLE_JWKS, FakeClock, FakeIssuer, Issuers, b64

pytestmark = pytest.mark.anyio


def cache_for(issuers: Issuers, clock: FakeClock) -> KeySetCache:
    return KeySetCache(GOOGLE_JWKS, issuers.client(), clock=clock)


async def test_keys_are_cached_for_max_age(
    issuers: Issuers, google: FakeIssuer, clock: FakeClock
) -> None:
    google.cache_control = "public, max-age=120, must-revalidate"
    cache = cache_for(issuers, clock)
    await cache.get(google.kid, "RS256")
    clock.advance(119)
    await cache.get(google.kid, "RS256")
    assert google.fetches == 1
    clock.advance(2)
    await cache.get(google.kid, "RS256")
    assert google.fetches == 2


async def test_one_hour_without_cache_control(
    issuers: Issuers, google: FakeIssuer, clock: FakeClock
) -> None:
    google.cache_control = ""
    cache = cache_for(issuers, clock)
    await cache.get(google.kid, "RS256")
    clock.advance(3599)
    await cache.get(google.kid, "RS256")
    assert google.fetches == 1
    clock.advance(2)
    await cache.get(google.kid, "RS256")
    assert google.fetches == 2


async def test_no_store_is_a_refetch_a_second_at_most(
    issuers: Issuers, google: FakeIssuer, clock: FakeClock
) -> None:
    google.cache_control = "no-store"
    cache = cache_for(issuers, clock)
    for _ in range(10):
        await cache.get(google.kid, "RS256")
    assert google.fetches == 1
    clock.advance(1)
    await cache.get(google.kid, "RS256")
    assert google.fetches == 2


async def test_unknown_kid_refetches_at_most_once_per_cooldown(
    issuers: Issuers, google: FakeIssuer, clock: FakeClock
) -> None:
    cache = cache_for(issuers, clock)
    await cache.get(google.kid, "RS256")
    for _ in range(5):
        with pytest.raises(TokenRejected) as caught:
            await cache.get("forged-kid", "RS256")
        assert caught.value.reason == "unknown_kid"
    assert google.fetches == 1  # the first fetch was under 30 s ago
    clock.advance(31)
    with pytest.raises(TokenRejected):
        await cache.get("forged-kid", "RS256")
    assert google.fetches == 2


async def test_a_rotated_provider_key_is_found_by_refetch(
    issuers: Issuers, google: FakeIssuer, clock: FakeClock
) -> None:
    cache = cache_for(issuers, clock)
    await cache.get(google.kid, "RS256")
    clock.advance(31)
    google.kid = "google-key-2"  # the provider rotated
    assert await cache.get("google-key-2", "RS256")
    assert google.fetches == 2


async def test_the_kid_must_name_a_key_of_that_alg(
    issuers: Issuers, google: FakeIssuer, clock: FakeClock
) -> None:
    cache = cache_for(issuers, clock)
    with pytest.raises(TokenRejected) as caught:
        await cache.get(google.kid, "ES256")  # an RSA key
    assert caught.value.reason == "kid_alg_mismatch"
    with pytest.raises(TokenRejected):
        await cache.get(google.kid, "RS384")  # the JWK says RS256


async def test_concurrent_unknown_kids_share_one_fetch(
    issuers: Issuers, google: FakeIssuer, clock: FakeClock
) -> None:
    gate = asyncio.Event()
    calls = 0

    async def slow(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        await gate.wait()
        return issuers.handler(request)

    cache = KeySetCache(
        GOOGLE_JWKS, httpx.AsyncClient(transport=httpx.MockTransport(slow)), clock=clock
    )
    tasks = [asyncio.create_task(cache.get(google.kid, "RS256")) for _ in range(20)]
    await asyncio.sleep(0.01)
    gate.set()
    results = await asyncio.gather(*tasks)
    assert calls == 1
    assert all(r is results[0] for r in results)


FAILURES = [
    "status_500",
    "garbage",
    "not_an_object",
    "empty_set",
    "unknown_kty",
    "small_key",
    "private_members",
    "too_large",
    "alg_a_list",
    "exponent_3",
    "modulus_over_8192_bits",
    "kid_an_object",
    "content_length_superscript",
    "content_length_5000_digits",
]


@pytest.mark.parametrize("failure", FAILURES)
async def test_failed_refresh_keeps_cached_keys(
    issuers: Issuers, google: FakeIssuer, clock: FakeClock, failure: str
) -> None:
    cache = cache_for(issuers, clock)
    key = await cache.get(google.kid, "RS256")
    clock.advance(3601)  # cache expired
    _break(google, failure)
    assert await cache.get(google.kid, "RS256") is key
    assert google.fetches == 2


@pytest.mark.parametrize("failure", FAILURES)
async def test_no_usable_keys_fails_closed(
    issuers: Issuers, google: FakeIssuer, clock: FakeClock, failure: str
) -> None:
    _break(google, failure)
    cache = cache_for(issuers, clock)
    with pytest.raises(KeysUnavailable):
        await cache.get(google.kid, "RS256")
    # Nothing was cached: once the provider is back (after the cooldown) keys return.
    google.status, google.body, google.headers = 200, None, {}
    clock.advance(31)
    assert await cache.get(google.kid, "RS256")


async def test_outage_does_not_hammer_the_provider(
    issuers: Issuers, google: FakeIssuer, clock: FakeClock
) -> None:
    cache = cache_for(issuers, clock)
    await cache.get(google.kid, "RS256")
    clock.advance(3601)
    google.status = 503
    for _ in range(50):
        await cache.get(google.kid, "RS256")
    assert google.fetches == 2


async def test_network_error_keeps_keys(
    issuers: Issuers, google: FakeIssuer, clock: FakeClock
) -> None:
    healthy = True

    def handler(request: httpx.Request) -> httpx.Response:
        if not healthy:
            raise httpx.ConnectError("down")
        return issuers.handler(request)

    cache = KeySetCache(
        GOOGLE_JWKS, httpx.AsyncClient(transport=httpx.MockTransport(handler)), clock=clock
    )
    key = await cache.get(google.kid, "RS256")
    healthy = False
    clock.advance(3601)
    assert await cache.get(google.kid, "RS256") is key


async def test_an_oversized_response_is_not_read_whole(
    issuers: Issuers, google: FakeIssuer, clock: FakeClock
) -> None:
    """Streamed and dropped past 256 KiB: an endless body costs 256 KiB, not memory."""
    sent = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal sent
        chunk = b" " * 65_536
        for _ in range(10_000):  # 640 MiB if it were all read
            sent += len(chunk)
            yield chunk

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=endless())  # no Content-Length

    cache = KeySetCache(
        GOOGLE_JWKS, httpx.AsyncClient(transport=httpx.MockTransport(handler)), clock=clock
    )
    with pytest.raises(KeysUnavailable):
        await cache.get(google.kid, "RS256")
    assert sent <= MAX_DOCUMENT_BYTES + 65_536


async def test_ec_and_okp_keys_are_usable(
    issuers: Issuers, keys: dict[str, object], clock: FakeClock
) -> None:
    okta = issuers.okta
    okta.extra_keys = [{**keys["ed25519"].as_dict(private=False), "kid": "ed", "use": "sig"}]  # type: ignore[attr-defined]
    cache = KeySetCache(okta.jwks_url, issuers.client(), clock=clock)
    assert await cache.get(okta.kid, "ES256")
    assert await cache.get("ed", "EdDSA")


def _break(issuer: FakeIssuer, failure: str) -> None:
    entry = issuer.jwks()["keys"][0]
    if failure == "status_500":
        issuer.status = 500
    elif failure == "garbage":
        issuer.body = b"<html>oops"
    elif failure == "not_an_object":
        issuer.body = b'[{"keys": []}]'
    elif failure == "empty_set":
        issuer.body = b'{"keys": []}'
    elif failure == "unknown_kty":
        issuer.body = b'{"keys": [{"kty": "oct", "kid": "google-key-1", "k": "c2VjcmV0"}]}'
    elif failure == "small_key":
        numbers = rsa.generate_private_key(65537, 1024).public_key().public_numbers()
        small = {**entry, "n": b64(numbers.n.to_bytes(128, "big"))}
        issuer.body = httpx.Response(200, json={"keys": [small]}).content
    elif failure == "private_members":
        issuer.body = httpx.Response(200, json={"keys": [{**entry, "d": "AQAB"}]}).content
    elif failure == "too_large":
        issuer.body = httpx.Response(
            200, json={"keys": [entry], "pad": "x" * MAX_DOCUMENT_BYTES}
        ).content
    elif failure == "alg_a_list":  # once a TypeError (unhashable) out of the cache: a 500
        issuer.body = httpx.Response(200, json={"keys": [{**entry, "alg": ["RS256"]}]}).content
    elif failure == "exponent_3":  # the right modulus, but not F4
        issuer.body = httpx.Response(200, json={"keys": [{**entry, "e": "Aw"}]}).content
    elif failure == "modulus_over_8192_bits":
        n = secrets.randbits(8256) | (1 << 8255) | 1
        huge = {**entry, "n": b64(n.to_bytes(1032, "big"))}
        issuer.body = httpx.Response(200, json={"keys": [huge]}).content
    elif failure == "kid_an_object":
        issuer.body = httpx.Response(200, json={"keys": [{**entry, "kid": {"a": 1}}]}).content
    elif failure == "content_length_superscript":  # "²".isdigit(), but int("²") fails
        issuer.headers = {b"Content-Length": "²".encode()}
    elif failure == "content_length_5000_digits":  # int() refuses 4,300+ digits
        issuer.headers = {b"Content-Length": b"9" * 5000}
