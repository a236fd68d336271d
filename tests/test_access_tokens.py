"""Our access tokens verified again: a token that passed is remembered by its exact text, and
still has its times checked on every use and stops the moment its key is no longer published."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from identity.errors import TokenRejected
from identity.tokens.access_tokens import AccessTokens, Profile
from identity.tokens.signing_keys import KeyManager, KeyStore

from .fakes import FakeClock, FakeIssuer
from .support import bearer, exchange, resign

ISSUER = "https://id.example.com"
T0 = 1_800_000_000.0


def _tokens(directory: Path, clock: FakeClock) -> tuple[AccessTokens, KeyManager]:
    keys = KeyManager(KeyStore(directory), lead=1200, token_lifetime=86_460, clock=clock)
    keys.load()
    tokens = AccessTokens(
        keys, issuer=ISSUER, audience=[ISSUER], ttl=86_400, leeway=60, clock=clock
    )
    return tokens, keys


def _mint(tokens: AccessTokens) -> str:
    profile = Profile("ada@example.com", True, "Ada", None)
    return tokens.mint(
        subject="u1", session_id="s1", client_id="web", scope="openid", profile=profile
    )


def test_a_remembered_token_still_expires(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    KeyStore(tmp_path).generate(now=T0 - 10)
    tokens, _ = _tokens(tmp_path, clock)
    token = _mint(tokens)
    assert tokens.verify(token).subject == "u1"
    assert tokens.verify(token).session_id == "s1"  # the remembered path
    clock.advance(86_400 + 61)
    with pytest.raises(TokenRejected) as refused:
        tokens.verify(token)
    assert refused.value.reason == "expired"


def test_a_remembered_token_stops_when_its_key_is_withdrawn(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    store = KeyStore(tmp_path)
    old = store.generate(now=T0 - 10)
    tokens, keys = _tokens(tmp_path, clock)
    token = _mint(tokens)
    assert tokens.verify(token).subject == "u1"
    # An operator withdraws the key at once (say it leaked): a second key, the first file gone.
    new = store.generate(now=T0 - 5).kid
    old.path.unlink()
    assert keys.reload()
    assert set(keys.view().published) == {new}
    with pytest.raises(TokenRejected) as refused:
        tokens.verify(token)
    assert refused.value.reason == "unknown_kid"


def test_only_the_exact_text_is_remembered(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    KeyStore(tmp_path).generate(now=T0 - 10)
    tokens, _ = _tokens(tmp_path, clock)
    token = _mint(tokens)
    tokens.verify(token)
    for variant in (token + "\n", token + "A", " " + token, token.replace(".", "..", 1)):
        with pytest.raises(TokenRejected):
            tokens.verify(variant)


@pytest.mark.anyio
async def test_absurd_times_in_our_own_tokens_are_refused(
    client: httpx.AsyncClient, google: FakeIssuer, keys_dir: Path
) -> None:
    """Signed with our own key: the time bounds are the claim checker's, not the minter's."""
    access = (await exchange(client, google.mint())).json()["access_token"]
    assert (await client.get("/users/me", headers=bearer(access))).status_code == 200
    now = 1_800_000_000
    for claims in ({"exp": 10**15}, {"iat": now, "exp": now + 86_401}, {"nbf": 2**53 + 1}):
        token = resign(keys_dir, access, None, **claims)
        response = await client.get("/users/me", headers=bearer(token))
        assert response.status_code == 401, claims
