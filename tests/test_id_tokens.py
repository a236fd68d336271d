"""The rules every provider's id_token is held to, one case each, at the verifier and over HTTP."""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

import httpx
import pytest

from identity.errors import TokenRejected
from identity.settings import Settings
from identity.tokens.id_tokens import IdTokenVerifier, key_sets
from identity.tokens.providers import configured

from .fakes import DROP, IOS_CLIENT, WEB_CLIENT, FakeClock, FakeIssuer, Issuers
from .rejections import IDS, REJECTED, Build, unused_bits
from .support import Sql, exchange

pytestmark = pytest.mark.anyio


@pytest.fixture
def verifier(settings: Settings, issuers: Issuers, clock: FakeClock) -> IdTokenVerifier:
    enabled = configured(settings)
    caches = key_sets(enabled, issuers.client(), clock=clock, production=False)
    return IdTokenVerifier(enabled, caches, clock=clock, leeway=60, max_age=3600)


@pytest.mark.parametrize(("case", "reason", "build"), REJECTED, ids=IDS)
async def test_verifier_rejects(
    verifier: IdTokenVerifier,
    google: FakeIssuer,
    keys: dict[str, Any],
    case: str,
    reason: str,
    build: Build,
) -> None:
    with pytest.raises(TokenRejected) as caught:
        await verifier.check(build(google, keys))
    assert caught.value.reason == reason


@pytest.mark.parametrize(("case", "reason", "build"), REJECTED, ids=IDS)
async def test_exchange_rejects_without_writing(
    client: httpx.AsyncClient,
    google: FakeIssuer,
    keys: dict[str, Any],
    sql: Sql,
    case: str,
    reason: str,
    build: Build,
) -> None:
    token = build(google, keys)
    before = await sql.counts()
    response = await exchange(client, token)
    assert response.status_code == 400
    assert response.json() == {
        "error": "invalid_request",
        "error_description": "the id_token is not valid",
    }
    assert token.strip() not in response.text
    assert await sql.counts() == before


async def test_accepts_a_good_token(verifier: IdTokenVerifier, google: FakeIssuer) -> None:
    identity = await verifier.check(google.mint())
    assert identity.provider == "google"
    assert identity.account_key == "110000000000000000001"
    assert identity.email == "ada@gmail.com"
    assert identity.email_verified is True
    assert identity.authoritative is True


@pytest.mark.parametrize(
    "claims",
    [
        pytest.param(
            {"exp": (1_800_000_000 - 59), "iat": 1_800_000_000 - 600}, id="expired_within_skew"
        ),
        pytest.param({"iat": 1_800_000_000 + 59}, id="iat_future_within_skew"),
        pytest.param({"nbf": 1_800_000_000 + 59}, id="nbf_within_skew"),
        pytest.param({"aud": [WEB_CLIENT, IOS_CLIENT]}, id="aud_list_all_ours"),
        pytest.param({"aud": IOS_CLIENT, "azp": IOS_CLIENT}, id="ios_client"),
        pytest.param({"iss": "accounts.google.com"}, id="iss_without_scheme"),
        pytest.param({"azp": DROP}, id="azp_absent"),
        # Apple's id_tokens live exactly a day: the longest lifetime accepted.
        pytest.param({"iat": 1_800_000_000, "exp": 1_800_000_000 + 86_400}, id="lifetime_of_a_day"),
    ],
)
async def test_accepts_within_rules(
    verifier: IdTokenVerifier, google: FakeIssuer, claims: dict[str, Any]
) -> None:
    assert (await verifier.check(google.mint(**claims))).account_key


async def test_nonce_raw_or_hashed_must_match(
    verifier: IdTokenVerifier, google: FakeIssuer
) -> None:
    assert await verifier.check(google.mint(nonce="n-123"), nonce="n-123")
    hashed = hashlib.sha256(b"n-456").hexdigest()
    assert await verifier.check(google.mint(nonce=hashed), nonce="n-456")
    for token in (
        google.mint(nonce="other"),
        google.mint(),
        google.mint(nonce=7),
        google.mint(nonce="\ud800"),
    ):
        with pytest.raises(TokenRejected) as caught:
            await verifier.check(token, nonce="n-123")
        assert caught.value.reason == "nonce_mismatch"


async def test_a_token_signed_by_one_provider_claiming_anothers_issuer_is_refused(
    verifier: IdTokenVerifier, issuers: Issuers
) -> None:
    # Signed with Apple's key (and kid), claiming Google's issuer: checked with Google's keys.
    forged = issuers.apple.mint_raw(
        {"alg": "RS256", "kid": issuers.google.kid},
        json.dumps(issuers.google.claims()).encode(),
    )
    with pytest.raises(TokenRejected) as caught:
        await verifier.check(forged)
    assert caught.value.reason == "bad_signature"
    # And with Apple's kid, Google's key set does not know it.
    named = issuers.apple.mint_raw(
        {"alg": "RS256", "kid": issuers.apple.kid}, json.dumps(issuers.google.claims()).encode()
    )
    with pytest.raises(TokenRejected) as caught:
        await verifier.check(named)
    assert caught.value.reason == "unknown_kid"


async def test_the_callers_provider_must_agree(verifier: IdTokenVerifier, issuers: Issuers) -> None:
    assert await verifier.check(issuers.google.mint(), provider="google")
    with pytest.raises(TokenRejected) as caught:
        await verifier.check(issuers.google.mint(), provider="microsoft")
    assert caught.value.reason == "provider_mismatch"


async def test_every_spelling_of_a_token_is_single_use(
    client: httpx.AsyncClient, google: FakeIssuer, sql: Sql
) -> None:
    token = google.mint()
    assert (await exchange(client, token)).status_code == 200
    spellings = [token + "\n", token + "=", unused_bits(token), token.replace(".", ".=", 1)]
    for spelling in spellings:
        assert (await exchange(client, spelling)).status_code == 400
    assert await sql.scalar("SELECT count(*) FROM sessions") == 1


async def test_the_replay_record_lasts_as_long_as_the_token_is_accepted(
    client: httpx.AsyncClient, google: FakeIssuer, clock: FakeClock, sql: Sql
) -> None:
    """Kept until exp plus the clock skew plus 5 minutes (a replica whose clock is behind the
    database's accepts it that much later): a prune inside that window must not re-open it.
    On SQLite the janitor prunes by the injected clock; on PostgreSQL by the database's
    (tests/test_clocks.py)."""
    from identity.accounts.services import data_services
    from identity.clock import as_utc, utc
    from identity.store.database import Database

    exp = int(clock()) + 600
    token = google.mint(exp=exp)
    assert (await exchange(client, token)).status_code == 200
    stored = await sql.scalar("SELECT expires_at FROM used_id_tokens")
    assert as_utc(stored) == utc(exp + 60 + 300)
    clock.advance(600 + 60 + 299)  # past exp and the skew, within the margin: still kept
    database = Database(str(sql.engine.url.render_as_string(hide_password=False)))
    try:
        settings = Settings(database_url=database.url)
        await data_services(settings, database, clock=clock).janitor.prune()
    finally:
        await database.close()
    assert await sql.scalar("SELECT count(*) FROM used_id_tokens") == 1
    assert (await exchange(client, token)).status_code == 400


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        pytest.param({"exp": 10**15}, "lifetime_too_long", id="exp_1e15"),
        pytest.param({"exp": 2**53 + 1}, "bad_exp", id="exp_past_2_53"),
        pytest.param({"exp": 1_800_000_000 + 2 * 86_400}, "lifetime_too_long", id="two_days"),
    ],
)
async def test_an_absurd_time_is_a_refusal_with_its_auth_event(
    client: httpx.AsyncClient,
    google: FakeIssuer,
    sql: Sql,
    caplog: pytest.LogCaptureFixture,
    claims: dict[str, Any],
    reason: str,
) -> None:
    """A time of 10^15 once overflowed the replay record's date: a 500 and no auth event."""
    caplog.set_level(logging.INFO, logger="identity.auth")
    before = await sql.counts()
    response = await exchange(client, google.mint(**claims))
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    events = [getattr(r, "event", {}) for r in caplog.records if r.name == "identity.auth"]
    assert [(e["event"], e["outcome"], e["reason"]) for e in events] == [
        ("exchange", "failure", reason)
    ]
    assert await sql.counts() == before
