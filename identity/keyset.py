"""A cache of a remote JSON Web Key Set, shared by upstream and downstream verification.

Rules (SPEC §5): keys are kept for as long as the response's `Cache-Control: max-age` says (one
hour when absent); an unknown `kid` triggers at most one refetch per cooldown, single flight
across concurrent callers; a failed fetch keeps the keys we had; an empty or unusable set is
never cached; with no usable keys at all the caller gets KeysUnavailable (fail closed).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import re
import time
from collections.abc import Callable
from typing import Any

import httpx
from joserfc.errors import JoseError
from joserfc.jwk import RSAKey

from .errors import KeysUnavailable, UpstreamTokenError

logger = logging.getLogger("identity.keyset")

Clock = Callable[[], float]
_MAX_AGE = re.compile(r"(?:^|,)\s*max-age\s*=\s*\"?(\d+)\"?", re.IGNORECASE)
_MAX_BODY = 256 * 1024
MIN_RSA_BITS = 2048


class KeySetCache:
    def __init__(
        self,
        url: str,
        http_client: httpx.AsyncClient,
        *,
        clock: Clock = time.time,
        default_max_age: float = 3600.0,
        refetch_cooldown: float = 30.0,
        on_fetch: Callable[[str], None] | None = None,
    ) -> None:
        self.url = url
        self._http = http_client
        self._clock = clock
        self._default_max_age = default_max_age
        self._cooldown = refetch_cooldown
        self._on_fetch = on_fetch
        self._keys: dict[str, RSAKey] = {}
        self._expires_at = 0.0
        self._last_attempt = float("-inf")
        self._lock = asyncio.Lock()
        self._generation = 0  # counts finished fetches
        self._failed = False  # whether the last fetch failed

    @property
    def kids(self) -> frozenset[str]:
        return frozenset(self._keys)

    async def get(self, kid: str) -> RSAKey:
        """The key named `kid`; UpstreamTokenError('unknown_kid') or KeysUnavailable if none."""
        now = self._clock()
        cooled = now - self._last_attempt >= self._cooldown
        # Expired keys are refetched (after a failed fetch, only once the cooldown has passed);
        # an unknown kid refetches at most once per cooldown. So an outage or a flood of forged
        # kids costs the provider at most one request per cooldown.
        stale = now >= self._expires_at and (cooled or not self._failed)
        unknown = kid not in self._keys and cooled
        # A caller arriving while a fetch is in flight waits for that fetch instead.
        if stale or unknown or (self._lock.locked() and kid not in self._keys):
            await self._refresh()
        if not self._keys:
            raise KeysUnavailable(self.url)
        key = self._keys.get(kid)
        if key is None:
            raise UpstreamTokenError("unknown_kid")
        return key

    async def _refresh(self) -> None:
        generation = self._generation
        async with self._lock:
            # Single flight: whoever waited on the lock reuses the fetch that just finished.
            if self._generation != generation:
                return
            self._last_attempt = self._clock()
            try:
                keys, max_age = await self._fetch()
            except (httpx.HTTPError, ValueError, JoseError) as exc:
                self._generation += 1
                self._failed = True
                self._report("failure")
                # Keep whatever we had: cached keys keep working while the provider is down.
                logger.warning(
                    "key set fetch failed",
                    extra={"event": {"url": self.url, "error": type(exc).__name__}},
                )
                return
            self._generation += 1
            self._failed = False
            self._report("success")
            self._keys = keys
            self._expires_at = self._clock() + max_age

    async def _fetch(self) -> tuple[dict[str, RSAKey], float]:
        response = await self._http.get(self.url, headers={"Accept": "application/json"})
        if response.status_code != 200:
            raise ValueError(f"status {response.status_code}")
        if len(response.content) > _MAX_BODY:
            raise ValueError("key set too large")
        document = response.json()
        keys = _usable_keys(document)
        if not keys:
            # Never cache an empty set: it would turn a provider glitch into an outage.
            raise ValueError("no usable keys")
        return keys, self._max_age(response.headers.get("cache-control", ""))

    def _max_age(self, cache_control: str) -> float:
        if "no-store" in cache_control.lower() or "no-cache" in cache_control.lower():
            return 0.0
        match = _MAX_AGE.search(cache_control)
        if match is None:
            return self._default_max_age
        # Bound a hostile or mistaken max-age to a day so key removals are noticed eventually.
        return float(min(int(match.group(1)), 86_400))

    def _report(self, outcome: str) -> None:
        if self._on_fetch is not None:
            self._on_fetch(outcome)


def _usable_keys(document: Any) -> dict[str, RSAKey]:
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("not a key set")
    keys: dict[str, RSAKey] = {}
    for entry in document["keys"]:
        if not isinstance(entry, dict) or entry.get("kty") != "RSA":
            continue
        kid = entry.get("kid")
        if not isinstance(kid, str) or not kid:
            continue
        if entry.get("use", "sig") != "sig" or entry.get("alg", "RS256") != "RS256":
            continue
        if any(name in entry for name in ("d", "p", "q", "dp", "dq", "qi")):
            continue  # a published private key is a provider mistake; never use it
        n, e = entry.get("n"), entry.get("e")
        if not isinstance(n, str) or not isinstance(e, str) or _bits(n) < MIN_RSA_BITS:
            continue  # weak keys are skipped before import
        try:
            keys[kid] = RSAKey.import_key({"kty": "RSA", "n": n, "e": e})
        except (JoseError, ValueError, TypeError):
            continue
    return keys


def _bits(modulus: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(modulus + "=" * (-len(modulus) % 4))
    except (binascii.Error, ValueError):
        return 0
    return int.from_bytes(raw, "big").bit_length()
