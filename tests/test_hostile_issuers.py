"""Whatever an issuer serves as a key set or discovery document: a fetch failure at worst.

An odd entry is skipped and the rest of the set still works; anything else that cannot be used
(a bad URL, header, member or body, any exception of httpx) is a fetch failure: 503 and one fetch
per cooldown, never a 500. Over HTTP for the cases the attacker's review ran, then a property
test that mutates key sets, discovery documents and headers at both verifiers that fetch keys:
a provider's (IdTokenVerifier, behind POST /token) and a downstream API's (TokenVerifier).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from joserfc.jwk import ECKey, RSAKey

from identity.errors import InvalidSubjectToken, TemporarilyUnavailable
from identity.tokens.id_tokens import IdTokenVerifier, key_sets
from identity.tokens.providers import Provider, generic_rules
from identity.verifier import InvalidAccessToken, TokenVerifier, VerifierUnavailable

from .fakes import START, FakeClock, FakeIssuer, Issuers, b64, sign
from .support import Sql, exchange

pytestmark = pytest.mark.anyio

# Entries of a key set that must each be skipped on their own (the review's first one beside).
ODD_ENTRIES: list[Any] = [
    {"kty": "EC", "kid": "odd-1", "alg": ["ES256"], "crv": "P-256", "x": "AA", "y": "AA"},
    {"kty": ["RSA"], "kid": "odd-2"},
    {"kty": "RSA", "kid": {"nested": 1}, "n": "AQAB", "e": "AQAB"},
    {"kty": "RSA", "kid": "odd-3", "n": 7, "e": "AQAB"},
    {"kty": "EC", "kid": "odd-4", "crv": ["P-256"], "x": "AA", "y": "AA"},
    {"kty": "OKP", "kid": "odd-5", "crv": "Ed25519", "x": 12},
    {"kty": "RSA", "kid": "odd-6", "use": ["sig"], "n": "AQAB", "e": "AQAB"},
    "a string",
    None,
    [1, 2],
]
BAD_JWKS_URIS: list[Any] = [
    "https://[::1",  # httpx.InvalidURL, not an HTTPError: once a 500 per request
    "https://keys.test\x00/",
    "https:///keys",
    "https://" + "a" * 70_000,
    "ftp://keys.test/",
    "/relative/keys",
    ["https://keys.test/"],
    7,
]


async def test_odd_entries_beside_a_good_key_leave_the_provider_working(
    client: httpx.AsyncClient, google: FakeIssuer
) -> None:
    google.extra_keys = ODD_ENTRIES
    response = await exchange(client, google.mint())
    assert response.status_code == 200, response.text


async def test_a_max_age_of_4400_digits_counts_as_a_day(
    client: httpx.AsyncClient, google: FakeIssuer, clock: FakeClock
) -> None:
    google.cache_control = "public, max-age=" + "9" * 4400
    assert (await exchange(client, google.mint())).status_code == 200
    clock.advance(86_399)
    assert (await exchange(client, google.mint())).status_code == 200
    assert google.fetches == 1


@pytest.mark.parametrize("jwks_uri", BAD_JWKS_URIS, ids=range(len(BAD_JWKS_URIS)))
async def test_a_bad_jwks_uri_in_discovery_is_a_503_and_one_fetch_per_cooldown(
    client: httpx.AsyncClient,
    issuers: Issuers,
    clock: FakeClock,
    sql: Sql,
    jwks_uri: Any,
) -> None:
    okta = issuers.okta
    okta.jwks_url = jwks_uri
    requests = _counting(okta)
    assert okta.discovery_url is not None
    before = await sql.counts()
    for _ in range(5):
        response = await exchange(client, okta.mint())
        assert response.status_code == 503
        assert response.json()["error"] == "temporarily_unavailable"
    assert requests[okta.discovery_url] == 1
    clock.advance(31)
    assert (await exchange(client, okta.mint())).status_code == 503
    assert requests[okta.discovery_url] == 2
    assert await sql.counts() == before


def _counting(issuer: FakeIssuer) -> Counter[str]:
    """Counts every request the issuer answers (its discovery document included)."""
    requests: Counter[str] = Counter()
    handle = issuer.handle

    def counted(url: str) -> httpx.Response | None:
        response = handle(url)
        if response is not None:
            requests[url] += 1
        return response

    issuer.handle = counted  # type: ignore[method-assign]
    return requests


# -- the property test -------------------------------------------------------------------------

ISSUER = "https://issuer.test"
DISCOVERY_URL = f"{ISSUER}/.well-known/openid-configuration"
JWKS_URL = f"{ISSUER}/keys"
CLIENT, API = "client-1", "https://api.test"
HUGE = "__huge__"  # replaced in the JSON text by a number of 5,000 digits
COOLDOWN = 30.0
GOOD_KEY = RSAKey.generate_key(2048, private=True)
GOOD_ENTRY = {**GOOD_KEY.as_dict(private=False), "kid": "good", "alg": "RS256"}
EC_ENTRY = {**ECKey.generate_key("P-256", private=True).as_dict(private=False), "kid": "ec"}


@dataclass
class Reply:
    """What the issuer answers at one URL."""

    body: bytes
    status: int = 200
    headers: dict[bytes, bytes] = field(default_factory=dict)
    raises: Callable[[], Exception] | None = None


@dataclass
class World:
    """An issuer serving a discovery document and, at every other URL, a key set."""

    discovery: Reply
    jwks: Reply
    fetches: Counter[str] = field(default_factory=Counter)

    def handler(self, request: httpx.Request) -> httpx.Response:
        url = str(request.url)
        self.fetches[url] += 1
        reply = self.discovery if url == DISCOVERY_URL else self.jwks
        if reply.raises is not None:
            raise reply.raises()
        return httpx.Response(reply.status, content=reply.body, headers=reply.headers)

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(self.handler))


def _text(document: Any, huge: str = "9" * 5000) -> bytes:
    return json.dumps(document).replace(json.dumps(HUGE), huge).encode()


odd = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12).filter(lambda t: t != "good"),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.sampled_from(
        [HUGE, "AQAB", "Aw", "RS256", ["ES256"], "sig", "enc", "RSA", "EC", "OKP", "oct", "P-256"]
    ),
    st.sampled_from(["Ed25519", "", "9" * 5000]),
)
MEMBERS = ["kty", "kid", "alg", "use", "n", "e", "crv", "x", "y", "d", "key_ops", "x5c"]
mutation = st.one_of(
    st.tuples(st.just("set"), st.sampled_from(MEMBERS), odd),
    st.tuples(st.just("del"), st.sampled_from(MEMBERS), st.none()),
    st.tuples(st.just("add"), st.text(min_size=1, max_size=8), odd),
)
broken_url = st.sampled_from([*BAD_JWKS_URIS[:-2], "https://keys.test:99999/", "http://x y/"])
HUGE_AGES = ["max-age=" + "9" * 5000, "public, max-age=60, max-age=" + "9" * 4400]
cache_control = st.sampled_from(
    [
        "",
        "no-store",
        "max-age=0",
        "max-age=-1",
        "max-age=1e9",
        'max-age=""',
        "max-age=٣",
        *HUGE_AGES,
    ]
) | st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=30)
odd_header_value = st.sampled_from([b"\xff\xfe", "\u00b2".encode(), b"-1", b"9" * 5000, b"1e3"])
raised = st.sampled_from(
    [
        lambda: httpx.ConnectError("down"),
        lambda: httpx.ReadTimeout("slow"),
        lambda: httpx.RemoteProtocolError("broken"),
        lambda: httpx.InvalidURL("bad url"),
        lambda: ValueError("odd"),
        lambda: UnicodeDecodeError("utf-8", b"\xff", 0, 1, "odd"),
    ]
)


def _mutated(base: dict[str, Any], changes: list[tuple[str, str, Any]]) -> dict[str, Any]:
    entry = dict(base)
    for kind, name, value in changes:
        if kind == "del":
            entry.pop(name, None)
        else:
            entry[name] = value
    return entry


@st.composite
def bad_entries(draw: st.DrawFn, bases: list[dict[str, Any]]) -> list[Any]:
    entries: list[Any] = []
    for i in range(draw(st.integers(0, 5))):
        base = {**draw(st.sampled_from(bases)), "kid": f"bad-{i}"}
        changes = draw(st.lists(mutation, min_size=1, max_size=4))
        entries.append(draw(st.just(_mutated(base, changes)) | odd))
    return entries


@st.composite
def key_sets_with_the_good_key(draw: st.DrawFn) -> Any:
    entries = draw(bad_entries([GOOD_ENTRY, EC_ENTRY]))
    entries.insert(draw(st.integers(0, len(entries))), GOOD_ENTRY)
    names = st.text(max_size=6).filter(lambda t: t != "keys")
    return {**draw(st.dictionaries(names, odd, max_size=2)), "keys": entries}


@st.composite
def any_reply(draw: st.DrawFn, document: st.SearchStrategy[Any]) -> Reply:
    """A reply that is mostly healthy, broken in one or more ways often enough."""
    json_body = draw(st.sampled_from([True, True, True, False]))
    body = _text(draw(document)) if json_body else draw(st.binary(max_size=40))
    headers = {b"Cache-Control": draw(cache_control).encode()}
    if draw(st.sampled_from([False, False, False, True])):
        name = draw(st.sampled_from([b"Content-Length", b"Cache-Control"]))
        headers[name] = draw(odd_header_value)
    status = draw(st.sampled_from([200, 200, 200, 200, 200, 301, 404, 500]))
    return Reply(body, status, headers, draw(st.one_of(st.none(), st.none(), st.none(), raised)))


def discovery_documents() -> st.SearchStrategy[Any]:
    good = {"issuer": ISSUER, "jwks_uri": JWKS_URL}
    changes = st.lists(
        st.one_of(
            st.tuples(st.just("set"), st.sampled_from(["issuer", "jwks_uri"]), odd | broken_url),
            st.tuples(st.just("del"), st.sampled_from(["issuer", "jwks_uri"]), st.none()),
            st.tuples(st.just("add"), st.text(min_size=1, max_size=8), odd),
        ),
        min_size=1,
        max_size=3,
    )
    return st.one_of(st.just(good), st.just(good), changes.map(lambda c: _mutated(good, c)), odd)


def _tokens(now: int) -> tuple[str, str]:
    """An id_token for the provider, and an access token for the downstream API."""
    base = {"iss": ISSUER, "sub": "u1", "iat": now, "exp": now + 600}
    id_token = _mint({"alg": "RS256", "kid": "good"}, {**base, "aud": CLIENT})
    access = {**base, "aud": API, "sid": "s1", "client_id": "web", "jti": "j1"}
    return id_token, _mint({"alg": "RS256", "kid": "good", "typ": "at+jwt"}, access)


def _mint(header: dict[str, Any], claims: dict[str, Any]) -> str:
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    return f"{signing_input}.{b64(sign('RS256', GOOD_KEY, signing_input.encode()))}"


def _provider(world: World, clock: FakeClock) -> IdTokenVerifier:
    provider = Provider(
        name="issuer",
        audiences=frozenset({CLIENT}),
        algorithms=frozenset({"RS256"}),
        rules=partial(generic_rules, email_domains=frozenset()),
        issuers=frozenset({ISSUER}),
        discovery=ISSUER,
    )
    caches = key_sets([provider], world.client(), clock=clock, production=True)
    return IdTokenVerifier([provider], caches, clock=clock)


async def _each_call(discovery: Reply, jwks: Reply, calls: int) -> list[bool]:
    """Both verifiers `calls` times, then again after a cooldown; whether each call accepted.
    Only the documented exceptions are caught: any other fails the test."""
    clock = FakeClock(START)
    id_token, access = _tokens(int(clock()))
    provider_world, downstream_world = World(discovery, jwks), World(discovery, jwks)
    provider = _provider(provider_world, clock)
    downstream = TokenVerifier(ISSUER, API, http_client=downstream_world.client(), clock=clock)
    accepted: list[bool] = []
    for round_ in range(2):
        for _ in range(calls):
            try:
                await provider.verify(id_token)
                accepted.append(True)
            except (InvalidSubjectToken, TemporarilyUnavailable):
                accepted.append(False)
            try:
                await downstream.verify(access)
                accepted.append(True)
            except (InvalidAccessToken, VerifierUnavailable):
                accepted.append(False)
        for world in (provider_world, downstream_world):
            # Within one cooldown, at most one fetch of each document.
            assert max(world.fetches.values(), default=0) <= round_ + 1, world.fetches
        clock.advance(COOLDOWN + 1)
    return accepted


class _Unexpected(logging.Handler):
    """Records TokenVerifier's last-resort line: the property must never need it."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.seen.append(record.getMessage())


@pytest.fixture
def unexpected() -> Iterator[_Unexpected]:
    handler = _Unexpected()
    logger = logging.getLogger("identity.verifier")
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


PROPERTY = settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@PROPERTY
@given(document=key_sets_with_the_good_key(), cache=cache_control)
async def test_a_good_key_beside_any_bad_entries_keeps_working(
    unexpected: _Unexpected, document: Any, cache: str
) -> None:
    # Huge numbers as text only: as JSON numbers they make the whole document unreadable.
    jwks = Reply(
        _text(document, huge='"' + "9" * 5000 + '"'), headers={b"Cache-Control": cache.encode()}
    )
    discovery = Reply(_text({"issuer": ISSUER, "jwks_uri": JWKS_URL}))
    assert all(await _each_call(discovery, jwks, calls=3))
    assert unexpected.seen == []


@PROPERTY
@given(
    discovery=any_reply(discovery_documents()),
    jwks=any_reply(st.one_of(key_sets_with_the_good_key(), key_sets_with_the_good_key(), odd)),
)
async def test_whatever_is_served_only_documented_exceptions_and_one_fetch_per_cooldown(
    unexpected: _Unexpected, discovery: Reply, jwks: Reply
) -> None:
    accepted = await _each_call(discovery, jwks, calls=3)
    event(f"accepted: {any(accepted)}")
    assert unexpected.seen == []
