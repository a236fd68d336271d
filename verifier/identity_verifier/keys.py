"""The issuer's keys: its discovery document and its key set, fetched and cached.

The rules the service applies to providers' keys (its `identity/tokens/keysets.py`;
docs/security.md, "Key sets and discovery documents"), for one issuer's RSA keys:
- a document is kept for as long as its `Cache-Control: max-age` says (one hour when absent, at
  most a day, at least a second: `no-store` cannot make it a fetch per request);
- an unknown `kid` refetches at most once per cooldown (30 s), single flight across concurrent
  callers; a failed fetch keeps what we had and is retried only after the cooldown; an empty or
  unusable set is never cached;
- any failure to fetch or read a document — a bad URL, status, header or body, whatever
  exception httpx or a parser raises — is a fetch failure, never an error of the caller;
- a response is read in chunks and refused past 256 KiB; redirects are not followed, and no
  URL found inside a token is ever requested;
- a key set entry is used only when it is an RSA public signing key of 2048 to 8192 bits with
  exponent 65537 (anything else is skipped on its own, so one odd entry never disables the rest).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric import rsa

from .jws import ALGORITHM, loads

logger = logging.getLogger("identity.verifier")
Clock = Callable[[], float]
_MAX_AGE = re.compile(r"(?:^|,)\s*max-age\s*=\s*\"?(\d+)\"?", re.IGNORECASE | re.ASCII)
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")
MAX_DOCUMENT_BYTES = 256 * 1024
MIN_MAX_AGE = 1.0
MAX_MAX_AGE = 86_400.0
DEFAULT_MAX_AGE = 3600.0
# More digits than this is more than a day anyway; int() of 4,300+ digits raises ValueError.
_MAX_DIGITS = 9
MIN_RSA_BITS = 2048
# Verifying with an RSA key costs in proportion to its size squared; nobody signs with more.
MAX_RSA_BITS = 8192
# Every real signing key uses F4; a small or odd exponent only opens doors (RFC 8017 attacks).
RSA_EXPONENT = 65537
_PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "k")


class FetchFailed(Exception):
    """A remote document could not be used; the message is a short reason of our own."""


class Unavailable(Exception):
    """No usable keys: fail closed (the caller answers 503)."""


class UnknownKey(Exception):
    """No usable key has the token's `kid`."""


async def fetch_json(http: httpx.AsyncClient, url: str) -> tuple[Any, str]:
    """GET `url` as JSON, at most 256 KiB; the document and its Cache-Control, or FetchFailed."""
    try:
        async with http.stream("GET", url, headers={"Accept": "application/json"}) as response:
            if response.status_code != 200:
                raise FetchFailed(f"status {response.status_code}")
            length = response.headers.get("content-length")
            # ASCII digits only ("²".isdigit() is true), and too many digits is too large.
            if length is not None and not (length.isascii() and length.isdigit()):
                raise FetchFailed("bad content-length")
            if length is not None and (
                len(length) > _MAX_DIGITS or int(length) > MAX_DOCUMENT_BYTES
            ):
                raise FetchFailed("too large")
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_DOCUMENT_BYTES:
                    raise FetchFailed("too large")  # stop reading here
            cache_control = response.headers.get("cache-control", "")
        return loads(bytes(body)), cache_control
    except FetchFailed:
        raise
    except ValueError:
        raise FetchFailed("not JSON") from None
    except Exception as error:
        # httpx raises more than HTTPError (InvalidURL, StreamError, UnicodeError from odd URLs
        # and headers): a remote document must never become an error of the caller.
        raise FetchFailed(type(error).__name__) from None


def max_age(cache_control: str) -> float:
    """Seconds to keep a response, from its Cache-Control: within a second and a day."""
    lowered = cache_control.lower()
    if "no-store" in lowered or "no-cache" in lowered:
        return MIN_MAX_AGE
    match = _MAX_AGE.search(cache_control)
    if match is None:
        return DEFAULT_MAX_AGE
    digits = match.group(1)
    # RFC 9111 §1.2.2: a delta-seconds too large to represent counts as very large; bounded to a
    # day so key removals are noticed eventually.
    seconds = MAX_MAX_AGE if len(digits) > _MAX_DIGITS else float(int(digits))
    return min(max(seconds, MIN_MAX_AGE), MAX_MAX_AGE)


class _Refetcher:
    """Single-flight fetching, at most once per cooldown."""

    def __init__(self, clock: Clock, cooldown: float) -> None:
        self._clock = clock
        self._cooldown = cooldown
        self._lock = asyncio.Lock()
        self._generation = 0  # counts finished fetches
        self._last_attempt = float("-inf")
        self.failed = False

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
            except FetchFailed as error:
                self.failed = True  # whatever was cached stays
                logger.warning("issuer document fetch failed: %s", error)
            finally:
                self._generation += 1

    def may_refresh_stale(self) -> bool:
        """Expired content is refetched at once, unless the last fetch failed: then it waits for
        the cooldown, so an outage costs the issuer one request per cooldown."""
        return not self.failed or self.cooled


class IssuerKeys:
    """The issuer's discovery document and, behind it, its key set; `get(kid)` an RSA key."""

    def __init__(
        self, issuer: str, http: httpx.AsyncClient, *, clock: Clock, cooldown: float
    ) -> None:
        self.issuer = issuer
        self.url = f"{issuer.rstrip('/')}/.well-known/openid-configuration"
        self._http = http
        self._clock = clock
        self._jwks_uri: str | None = None
        self._jwks_uri_expires = 0.0
        self._discovery = _Refetcher(clock, cooldown)
        self._keys: dict[str, list[rsa.RSAPublicKey]] = {}
        self._keys_expire = 0.0
        # One cooldown for the key set whatever `jwks_uri` the issuer names from one fetch to
        # the next, so nothing it serves makes more than one fetch per cooldown.
        self._key_set = _Refetcher(clock, cooldown)

    async def get(self, kid: str) -> rsa.RSAPublicKey:
        """The RSA key named `kid`; UnknownKey, or Unavailable when there are no keys at all."""
        r = self._key_set
        # An unknown kid refetches at most once per cooldown, so a flood of forged kids costs
        # the issuer at most one request per cooldown; expired keys refetch at once.
        stale = self._clock() >= self._keys_expire and r.may_refresh_stale()
        unknown = kid not in self._keys
        # A caller arriving while a fetch is in flight waits for that fetch instead.
        if stale or (unknown and r.cooled) or (r.in_flight and unknown):
            await r.run(self._fetch_keys)
        if not self._keys:
            raise Unavailable(self.issuer)
        keys = self._keys.get(kid)
        if not keys:
            raise UnknownKey(kid)
        return keys[0]

    async def _jwks(self) -> str:
        stale = self._jwks_uri is None or self._clock() >= self._jwks_uri_expires
        if stale and self._discovery.may_refresh_stale():
            await self._discovery.run(self._fetch_discovery)
        if self._jwks_uri is None:
            raise FetchFailed("discovery unavailable")
        return self._jwks_uri

    async def _fetch_discovery(self) -> None:
        document, cache_control = await fetch_json(self._http, self.url)
        # The document must be about this issuer (OpenID Connect Discovery §4.3).
        if not isinstance(document, dict) or document.get("issuer") != self.issuer:
            raise FetchFailed("not this issuer's discovery document")
        self._jwks_uri = _jwks_uri(document.get("jwks_uri"))
        self._jwks_uri_expires = self._clock() + max_age(cache_control)

    async def _fetch_keys(self) -> None:
        document, cache_control = await fetch_json(self._http, await self._jwks())
        keys = usable_keys(document)
        if not keys:
            # Never cache an empty set: it would turn an issuer's glitch into an outage.
            raise FetchFailed("no usable keys")
        self._keys = keys
        self._keys_expire = self._clock() + max_age(cache_control)


def _jwks_uri(value: object) -> str:
    """A `jwks_uri` we can request: a string httpx parses as an absolute URL with a host."""
    if not isinstance(value, str):
        raise FetchFailed("bad jwks_uri")
    try:
        url = httpx.URL(value)
    except Exception:  # InvalidURL, or whatever else a hostile string makes httpx raise
        raise FetchFailed("bad jwks_uri") from None
    if url.scheme not in ("https", "http") or not url.host:
        raise FetchFailed("bad jwks_uri")
    return value


def usable_keys(document: Any) -> dict[str, list[rsa.RSAPublicKey]]:
    """The RSA verification keys of a JWKS document by kid; every other entry is skipped."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise FetchFailed("not a key set")
    keys: dict[str, list[rsa.RSAPublicKey]] = {}
    for entry in document["keys"]:
        try:
            key = _rsa_key(entry)
        except Exception:  # whatever one entry does (it is hostile input), the others count
            key = None
        if key is not None:
            keys.setdefault(entry["kid"], []).append(key)
    return keys


def _rsa_key(entry: Any) -> rsa.RSAPublicKey | None:
    # Each member is checked for its JSON type first: a list where a string belongs is a
    # skipped entry, not an exception.
    if not isinstance(entry, dict) or entry.get("kty") != "RSA":
        return None
    kid, alg, use = entry.get("kid"), entry.get("alg"), entry.get("use", "sig")
    if not isinstance(kid, str) or not kid or use != "sig":
        return None
    if alg is not None and alg != ALGORITHM:
        return None
    if any(name in entry for name in _PRIVATE_MEMBERS):
        return None  # a published private key is the issuer's mistake; never use it
    n, e = _integer(entry.get("n")), _integer(entry.get("e"))
    # Checked before the key is built: a weak, huge or oddly-exponented key never is.
    if not MIN_RSA_BITS <= n.bit_length() <= MAX_RSA_BITS or e != RSA_EXPONENT:
        return None
    return rsa.RSAPublicNumbers(e, n).public_key()


def _integer(value: object) -> int:
    """A base64url big-endian unsigned integer (RFC 7518 §6.3.1); 0 when it is not one."""
    if not isinstance(value, str) or not _BASE64URL.fullmatch(value) or len(value) % 4 == 1:
        return 0
    return int.from_bytes(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)), "big")
