"""The key-set cache: Cache-Control, single-flight refetch, stale keys, fail closed."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from joserfc.jwk import RSAKey

from identity.errors import KeysUnavailable, UpstreamTokenError
from identity.keyset import KeySetCache

from .fakes import FakeClock, FakeGoogle, b64

pytestmark = pytest.mark.anyio
URL = "https://keys.test/certs"


def cache_for(google: FakeGoogle, clock: FakeClock) -> KeySetCache:
    return KeySetCache(URL, google.client(), clock=clock)


async def test_keys_are_cached_for_max_age(google: FakeGoogle, clock: FakeClock) -> None:
    google.cache_control = "public, max-age=120, must-revalidate"
    cache = cache_for(google, clock)
    await cache.get(google.kid)
    clock.advance(119)
    await cache.get(google.kid)
    assert google.fetches == 1
    clock.advance(2)
    await cache.get(google.kid)
    assert google.fetches == 2


async def test_one_hour_without_cache_control(google: FakeGoogle, clock: FakeClock) -> None:
    google.cache_control = ""
    cache = cache_for(google, clock)
    await cache.get(google.kid)
    clock.advance(3599)
    await cache.get(google.kid)
    assert google.fetches == 1
    clock.advance(2)
    await cache.get(google.kid)
    assert google.fetches == 2


async def test_unknown_kid_refetches_at_most_once_per_cooldown(
    google: FakeGoogle, clock: FakeClock
) -> None:
    cache = cache_for(google, clock)
    await cache.get(google.kid)
    for _ in range(5):
        with pytest.raises(UpstreamTokenError):
            await cache.get("forged-kid")
    assert google.fetches == 1  # the first fetch was under 30 s ago
    clock.advance(31)
    with pytest.raises(UpstreamTokenError):
        await cache.get("forged-kid")
    assert google.fetches == 2


async def test_new_google_key_found_by_refetch(
    google: FakeGoogle, clock: FakeClock, google_key: RSAKey
) -> None:
    cache = cache_for(google, clock)
    await cache.get(google.kid)
    clock.advance(31)
    google.kid = "google-key-2"  # Google rotated
    assert await cache.get("google-key-2")
    assert google.fetches == 2


async def test_concurrent_unknown_kids_share_one_fetch(
    google: FakeGoogle, clock: FakeClock
) -> None:
    gate = asyncio.Event()
    calls = 0

    async def slow(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        await gate.wait()
        return google.handler(request)

    cache = KeySetCache(URL, httpx.AsyncClient(transport=httpx.MockTransport(slow)), clock=clock)
    tasks = [asyncio.create_task(cache.get(google.kid)) for _ in range(20)]
    await asyncio.sleep(0.01)
    gate.set()
    results = await asyncio.gather(*tasks)
    assert calls == 1
    assert all(r is results[0] for r in results)


@pytest.mark.parametrize(
    "failure",
    ["status_500", "garbage", "empty_set", "not_rsa", "small_key", "private_members"],
)
async def test_failed_refresh_keeps_cached_keys(
    google: FakeGoogle, clock: FakeClock, failure: str
) -> None:
    cache = cache_for(google, clock)
    key = await cache.get(google.kid)
    clock.advance(3601)  # cache expired
    _break(google, failure)
    assert await cache.get(google.kid) is key
    assert google.fetches == 2


@pytest.mark.parametrize(
    "failure",
    ["status_500", "garbage", "empty_set", "not_rsa", "small_key", "private_members"],
)
async def test_no_usable_keys_fails_closed(
    google: FakeGoogle, clock: FakeClock, failure: str
) -> None:
    _break(google, failure)
    cache = cache_for(google, clock)
    with pytest.raises(KeysUnavailable):
        await cache.get(google.kid)
    # The empty result was not cached: once Google is back (after the cooldown) keys return.
    google.status, google.body = 200, None
    clock.advance(31)
    assert await cache.get(google.kid)


async def test_outage_does_not_hammer_google(google: FakeGoogle, clock: FakeClock) -> None:
    cache = cache_for(google, clock)
    await cache.get(google.kid)
    clock.advance(3601)
    google.status = 503
    for _ in range(50):
        await cache.get(google.kid)
    assert google.fetches == 2


async def test_network_error_keeps_keys(google: FakeGoogle, clock: FakeClock) -> None:
    healthy = True

    def handler(request: httpx.Request) -> httpx.Response:
        if not healthy:
            raise httpx.ConnectError("down")
        return google.handler(request)

    cache = KeySetCache(URL, httpx.AsyncClient(transport=httpx.MockTransport(handler)), clock=clock)
    key = await cache.get(google.kid)
    healthy = False
    clock.advance(3601)
    assert await cache.get(google.kid) is key


def _break(google: FakeGoogle, failure: str) -> None:
    entry = google.jwks()["keys"][0]
    if failure == "status_500":
        google.status = 500
    elif failure == "garbage":
        google.body = b"<html>oops"
    elif failure == "empty_set":
        google.body = b'{"keys": []}'
    elif failure == "not_rsa":
        google.body = b'{"keys": [{"kty": "EC", "kid": "google-key-1", "crv": "P-256"}]}'
    elif failure == "small_key":
        numbers = rsa.generate_private_key(65537, 1024).public_key().public_numbers()
        small = {**entry, "n": b64(numbers.n.to_bytes(128, "big"))}
        google.body = httpx.Response(200, json={"keys": [small]}).content
    elif failure == "private_members":
        google.body = httpx.Response(200, json={"keys": [{**entry, "d": "AQAB"}]}).content
