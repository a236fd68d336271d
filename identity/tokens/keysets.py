"""Caches of remote JSON documents: a provider's (or our own) key set, and discovery documents.

One `KeySetCache` instance per key set. Rules (docs/security.md, "Keys" and "Key sets and
discovery documents"):
- keys are kept for as long as the response's `Cache-Control: max-age` says (one hour when
  absent, at most a day, at least a second: `no-store` cannot make it a fetch per request);
- an unknown `kid` refetches at most once per cooldown (30 s), single flight across concurrent
  callers; a failed fetch keeps the keys we had and is retried only after the cooldown; an
  empty or unusable set is never cached;
- any failure to fetch or parse a document — a bad URL, status, header or body, whatever
  exception httpx or a parser raises — is a fetch failure, never an error of the caller;
- with no usable keys at all the caller gets KeysUnavailable (fail closed, a 503);
- a response is read in chunks and refused past 256 KiB, without reading the rest; redirects
  are not followed, and no URL found inside a token is ever requested.

`Discovery` fetches an OpenID discovery document the same way, holds its `issuer` to the one
configured, and hands out `jwks_uri`. Reading the entries of a key set is `public_keys.py`.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import orjson

from identity.clock import Clock
from identity.errors import KeysUnavailable, TokenRejected
from identity.tracing import NO_TRACING, Tracer

from .jws import PublicKey, compatible
from .public_keys import KeysByKid, NotAKeySet, usable_keys

logger = logging.getLogger("identity.jwks")
_MAX_AGE = re.compile(r"(?:^|,)\s*max-age\s*=\s*\"?(\d+)\"?", re.IGNORECASE | re.ASCII)
MAX_DOCUMENT_BYTES = 256 * 1024
MIN_MAX_AGE = 1.0
MAX_MAX_AGE = 86_400.0
# More digits than this is more than a day anyway; int() of 4,300+ digits raises ValueError.
_MAX_DIGITS = 9


class FetchFailed(Exception):
    """A remote document could not be used; the message is a short reason for the log."""


def failure_reason(error: Exception) -> str:
    """A short reason for the log: our own wording, or the exception's type, never its
    message (which may echo what the remote side sent)."""
    return str(error) if isinstance(error, FetchFailed | NotAKeySet) else type(error).__name__


async def fetch_json(
    http: httpx.AsyncClient, url: str, tracer: Tracer = NO_TRACING
) -> tuple[Any, str]:
    """GET `url` as JSON, at most 256 KiB; returns the document and its Cache-Control.

    Any failure is FetchFailed: httpx raises more than HTTPError (InvalidURL for a bad URL,
    StreamError, ValueError and UnicodeError from odd URLs and headers), and a remote document
    must never turn into an error of ours."""
    with tracer.span("identity.fetch", {"http.url": url}) as span:
        try:
            async with http.stream("GET", url, headers={"Accept": "application/json"}) as response:
                span.set_attribute("http.status_code", response.status_code)
                if response.status_code != 200:
                    raise FetchFailed(f"status {response.status_code}")
                _check_length(response.headers.get("content-length"))
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_DOCUMENT_BYTES:
                        raise FetchFailed("too large")  # stop reading here
                cache_control = response.headers.get("cache-control", "")
            return orjson.loads(bytes(body)), cache_control
        except FetchFailed:
            raise
        except orjson.JSONDecodeError:
            raise FetchFailed("not JSON") from None
        except Exception as error:
            raise FetchFailed(type(error).__name__) from None


def _check_length(length: str | None) -> None:
    """A declared Content-Length is ASCII digits ("²".isdigit() is true) and within the cap;
    one too long to parse (int() refuses 4,300 digits) is too large without parsing it."""
    if length is None:
        return
    if not (length.isascii() and length.isdigit()):
        raise FetchFailed("bad content-length")
    if len(length) > _MAX_DIGITS or int(length) > MAX_DOCUMENT_BYTES:
        raise FetchFailed("too large")


def max_age(cache_control: str, default: float) -> float:
    """Seconds to keep a response, from its Cache-Control: within a second and a day."""
    lowered = cache_control.lower()
    if "no-store" in lowered or "no-cache" in lowered:
        return MIN_MAX_AGE
    match = _MAX_AGE.search(cache_control)
    if match is None:
        return default
    digits = match.group(1)
    # RFC 9111 §1.2.2: a delta-seconds too large to represent counts as very large; bound a
    # hostile or mistaken max-age to a day so key removals are noticed eventually.
    seconds = MAX_MAX_AGE if len(digits) > _MAX_DIGITS else float(int(digits))
    return min(max(seconds, MIN_MAX_AGE), MAX_MAX_AGE)


class _Refetcher:
    """Single-flight fetching, at most once per cooldown (shared by both caches)."""

    def __init__(self, clock: Clock, cooldown: float) -> None:
        self._clock = clock
        self._cooldown = cooldown
        self._lock = asyncio.Lock()
        self._generation = 0  # counts finished fetches
        self._last_attempt = float("-inf")
        self.failed = False  # whether the last fetch failed

    @property
    def cooled(self) -> bool:
        return self._clock() - self._last_attempt >= self._cooldown

    @property
    def in_flight(self) -> bool:
        return self._lock.locked()

    async def run(self, fetch: Callable[[], Awaitable[None]]) -> None:
        generation = self._generation
        async with self._lock:
            # Whoever waited on the lock reuses the fetch that just finished.
            if self._generation != generation:
                return
            self._last_attempt = self._clock()
            try:
                await fetch()
                self.failed = False
            except FetchFailed:
                self.failed = True  # logged by the fetcher; whatever was cached stays
            finally:
                self._generation += 1

    def may_refresh_stale(self) -> bool:
        """Expired content is refetched at once, unless the last fetch failed: then it waits
        for the cooldown, so an outage costs the provider one request per cooldown."""
        return not self.failed or self.cooled


class Discovery:
    """An issuer's discovery document, cached; `jwks_uri()` or KeysUnavailable."""

    def __init__(
        self,
        issuer: str,
        http: httpx.AsyncClient,
        *,
        clock: Clock = time.time,
        cooldown: float = 30.0,
        require_https: bool = False,
        tracer: Tracer = NO_TRACING,
    ) -> None:
        self.issuer = issuer
        self.url = f"{issuer.rstrip('/')}/.well-known/openid-configuration"
        self._http = http
        self._clock = clock
        self._https = require_https
        self._tracer = tracer
        self._jwks_uri: str | None = None
        self._expires_at = 0.0
        self._refetch = _Refetcher(clock, cooldown)

    async def jwks_uri(self) -> str:
        stale = self._jwks_uri is None or self._clock() >= self._expires_at
        if stale and self._refetch.may_refresh_stale():
            await self._refetch.run(self._fetch)
        if self._jwks_uri is None:
            raise KeysUnavailable(self.url)
        return self._jwks_uri

    async def _fetch(self) -> None:
        try:
            document, cache_control = await fetch_json(self._http, self.url, self._tracer)
            if not isinstance(document, dict):
                raise FetchFailed("not a JSON object")
            # The document must be about this issuer (OpenID Connect Discovery §4.3).
            if document.get("issuer") != self.issuer:
                raise FetchFailed("issuer mismatch")
            jwks_uri = _jwks_uri(document.get("jwks_uri"), self._https)
            expires_at = self._clock() + max_age(cache_control, 3600.0)
        except Exception as error:
            reason = failure_reason(error)
            logger.warning(
                "discovery fetch failed", extra={"event": {"url": self.url, "error": reason}}
            )
            raise FetchFailed(reason) from None
        self._jwks_uri = jwks_uri
        self._expires_at = expires_at


def _jwks_uri(value: object, require_https: bool) -> str:
    """A `jwks_uri` we can request: a string httpx parses as an absolute URL with a host."""
    if not isinstance(value, str):
        raise FetchFailed("bad jwks_uri")
    try:
        url = httpx.URL(value)
    except Exception:  # InvalidURL, or whatever else a hostile string makes httpx raise
        raise FetchFailed("bad jwks_uri") from None
    schemes = ("https",) if require_https else ("https", "http")
    if url.scheme not in schemes or not url.host:
        raise FetchFailed("bad jwks_uri")
    return value


class KeySetCache:
    def __init__(
        self,
        source: str | Discovery,
        http: httpx.AsyncClient,
        *,
        clock: Clock = time.time,
        default_max_age: float = 3600.0,
        refetch_cooldown: float = 30.0,
        on_fetch: Callable[[str], None] | None = None,
        tracer: Tracer = NO_TRACING,
    ) -> None:
        self.source = source
        self._http = http
        self._clock = clock
        self._default_max_age = default_max_age
        self._on_fetch = on_fetch
        self._tracer = tracer
        self._keys: KeysByKid = {}
        self._expires_at = 0.0
        self._refetch = _Refetcher(clock, refetch_cooldown)

    @property
    def name(self) -> str:
        return self.source if isinstance(self.source, str) else self.source.url

    @property
    def kids(self) -> frozenset[str]:
        return frozenset(self._keys)

    async def get(self, kid: str, alg: str) -> PublicKey:
        """The key named `kid` usable with `alg`; TokenRejected or KeysUnavailable if none."""
        r = self._refetch
        # An unknown kid refetches at most once per cooldown, so a flood of forged kids costs
        # the provider at most one request per cooldown; expired keys refetch at once.
        stale = self._clock() >= self._expires_at and r.may_refresh_stale()
        unknown = kid not in self._keys
        # A caller arriving while a fetch is in flight waits for that fetch instead.
        if stale or (unknown and r.cooled) or (r.in_flight and unknown):
            await r.run(self._fetch)
        if not self._keys:
            raise KeysUnavailable(self.name)
        for key, key_alg in self._keys.get(kid, ()):
            if (key_alg is None or key_alg == alg) and compatible(alg, key):
                return key
        raise TokenRejected("unknown_kid" if kid not in self._keys else "kid_alg_mismatch")

    async def _fetch(self) -> None:
        source = self.source
        url = source if isinstance(source, str) else source.url
        try:
            if not isinstance(source, str):
                try:
                    url = await source.jwks_uri()
                except KeysUnavailable:
                    raise FetchFailed("discovery unavailable") from None
            document, cache_control = await fetch_json(self._http, url, self._tracer)
            keys = usable_keys(document)
            if not keys:
                # Never cache an empty set: it would turn a provider glitch into an outage.
                raise FetchFailed("no usable keys")
            expires_at = self._clock() + max_age(cache_control, self._default_max_age)
        except Exception as error:
            # Whatever went wrong is a fetch failure: the refetcher then waits for the cooldown,
            # and cached keys keep working while the provider is down or serving nonsense.
            reason = failure_reason(error)
            self._report("failure")
            logger.warning("key set fetch failed", extra={"event": {"url": url, "error": reason}})
            raise FetchFailed(reason) from None
        self._report("success")
        self._keys = keys
        self._expires_at = expires_at

    def _report(self, outcome: str) -> None:
        if self._on_fetch is not None:
            self._on_fetch(outcome)
