"""Each provider's own rules, on top of the common ones (docs/providers.md)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

import httpx
import pytest

from identity.errors import TokenRejected
from identity.settings import Settings
from identity.tokens.id_tokens import IdTokenVerifier, key_sets
from identity.tokens.providers import configured

from . import fakes
from .fakes import DROP, MS_CONSUMERS, MS_TENANT, FakeClock, FakeIssuer, Issuers
from .support import Sql, exchange, running, sign_in

pytestmark = pytest.mark.anyio


def verifier_for(settings: Settings, issuers: Issuers, clock: FakeClock) -> IdTokenVerifier:
    enabled = configured(settings)
    return IdTokenVerifier(
        enabled, key_sets(enabled, issuers.client(), clock=clock, production=False), clock=clock
    )


@pytest.fixture
def verifier(settings: Settings, issuers: Issuers, clock: FakeClock) -> IdTokenVerifier:
    return verifier_for(settings, issuers, clock)


async def rejected(verifier: IdTokenVerifier, token: str, **options: Any) -> str:
    with pytest.raises(TokenRejected) as caught:
        await verifier.check(token, **options)
    return caught.value.reason


# -- Google -------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["true", 1, "True", None, DROP])
async def test_google_email_verified_only_as_json_true(
    verifier: IdTokenVerifier, google: FakeIssuer, value: object
) -> None:
    identity = await verifier.check(google.mint(email_verified=value))
    assert (identity.email_verified, identity.authoritative) == (False, False)


@pytest.mark.parametrize(
    ("claims", "authoritative"),
    [
        pytest.param({}, True, id="gmail_verified"),
        pytest.param({"email": "ada@corp.example"}, False, id="other_domain_no_hd"),
        pytest.param(
            {"email": "ada@corp.example", "hd": "corp.example"}, True, id="workspace_domain"
        ),
        pytest.param(
            {"email": "ada@corp.example", "hd": "other.example"}, False, id="hd_of_another_domain"
        ),
        pytest.param({"email": "ada@gmail.com.evil.test"}, False, id="gmail_as_a_prefix"),
        pytest.param({"email_verified": False}, False, id="not_verified"),
    ],
)
async def test_google_is_authoritative_for(
    verifier: IdTokenVerifier, google: FakeIssuer, claims: dict[str, Any], authoritative: bool
) -> None:
    assert (await verifier.check(google.mint(**claims))).authoritative is authoritative


async def test_google_hosted_domain_must_be_listed(
    settings: Settings, issuers: Issuers, clock: FakeClock
) -> None:
    verifier = verifier_for(
        dataclasses.replace(settings, google_hosted_domains=("example.com",)), issuers, clock
    )
    google = issuers.google
    assert await verifier.check(google.mint(hd="example.com", email="a@example.com"))
    for token in (google.mint(hd="evil.com"), google.mint(), google.mint(hd="EXAMPLE.COM")):
        assert await rejected(verifier, token) == "bad_hosted_domain"


# -- Microsoft Entra ID ------------------------------------------------------------------------


def ms(issuers: Issuers, tid: str = MS_TENANT, **claims: Any) -> str:
    return issuers.microsoft.mint(iss=f"{fakes.MS_AUTHORITY}/{tid}/v2.0", tid=tid, **claims)


async def test_microsoft_account_key_is_tid_and_oid(
    verifier: IdTokenVerifier, issuers: Issuers
) -> None:
    identity = await verifier.check(ms(issuers))
    assert identity.provider == "microsoft"
    assert identity.account_key == f"{MS_TENANT}:00000000-0000-0000-66f3-3332eca7ea81"
    # The email claim is informational: unverified unless the tenant proved the domain.
    assert (identity.email, identity.email_verified, identity.authoritative) == (
        "grace@contoso.example",
        False,
        False,
    )


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        pytest.param({"tid": DROP}, "unknown_issuer", id="tid_missing"),
        pytest.param({"tid": MS_TENANT.upper()}, "unknown_issuer", id="tid_not_lower_case"),
        pytest.param({"tid": "not-a-guid"}, "unknown_issuer", id="tid_not_a_guid"),
        pytest.param(
            {"tid": "00000000-1111-2222-3333-444444444444"},
            "unknown_issuer",
            id="tid_not_the_issuers",
        ),
        pytest.param(
            {"iss": f"https://sts.windows.net/{MS_TENANT}/"}, "unknown_issuer", id="v1_token"
        ),
        pytest.param(
            {"iss": f"{fakes.MS_AUTHORITY}/{MS_TENANT}/v2.0/"},
            "unknown_issuer",
            id="iss_trailing_slash",
        ),
        pytest.param(
            {"iss": f"https://login.microsoftonline.us/{MS_TENANT}/v2.0"},
            "unknown_issuer",
            id="other_cloud",
        ),
        pytest.param({"ver": "1.0"}, "bad_version", id="ver_1"),
        pytest.param({"oid": DROP}, "bad_object_id", id="oid_missing"),
        pytest.param({"oid": "x"}, "bad_object_id", id="oid_not_a_guid"),
        pytest.param(
            {"oid": "00000000-0000-0000-66f3-3332eca7ea81\n"},
            "bad_object_id",
            id="oid_trailing_newline",
        ),
        pytest.param(
            {"tid": MS_TENANT + "\n", "iss": f"{fakes.MS_AUTHORITY}/{MS_TENANT}\n/v2.0"},
            "unknown_issuer",
            id="tid_trailing_newline",
        ),
        pytest.param({"scp": "User.Read"}, "not_an_id_token", id="access_token_scp"),
        pytest.param({"idtyp": "app", "roles": ["Tasks.Read"]}, "not_an_id_token", id="app_token"),
        pytest.param({"aud": "some-other-app"}, "bad_audience", id="aud_other_app"),
    ],
)
async def test_microsoft_rules(
    verifier: IdTokenVerifier, issuers: Issuers, claims: dict[str, Any], reason: str
) -> None:
    assert await rejected(verifier, issuers.microsoft.mint(**claims)) == reason


@pytest.mark.parametrize(
    ("tenants", "tid", "allowed"),
    [
        pytest.param(("organizations",), MS_TENANT, True, id="organizations_work_account"),
        pytest.param(("organizations",), MS_CONSUMERS, False, id="organizations_personal_account"),
        pytest.param(("consumers",), MS_CONSUMERS, True, id="consumers_personal_account"),
        pytest.param(("consumers",), MS_TENANT, False, id="consumers_work_account"),
        pytest.param(("common",), MS_CONSUMERS, True, id="common_personal"),
        pytest.param(("common",), MS_TENANT, True, id="common_work"),
        pytest.param((MS_TENANT,), MS_TENANT, True, id="listed_tenant"),
        pytest.param(
            (MS_TENANT,), "00000000-1111-2222-3333-444444444444", False, id="unlisted_tenant"
        ),
    ],
)
async def test_microsoft_tenant_allowlist(
    settings: Settings,
    issuers: Issuers,
    clock: FakeClock,
    tenants: tuple[str, ...],
    tid: str,
    allowed: bool,
) -> None:
    verifier = verifier_for(
        dataclasses.replace(settings, microsoft_tenants=tenants), issuers, clock
    )
    token = ms(issuers, tid=tid)
    if allowed:
        assert (await verifier.check(token)).account_key.startswith(tid)
    else:
        assert await rejected(verifier, token) == "tenant_not_allowed"


async def test_a_tid_with_a_trailing_newline_is_no_tenant(
    settings: Settings, issuers: Issuers, clock: FakeClock
) -> None:
    """With every tenant allowed, "<tid>\\n" once passed `re.match(...$)` and signed in."""
    every_tenant = dataclasses.replace(settings, microsoft_tenants=("common",))
    async with running(every_tenant, issuers, clock) as (_, client):
        assert (await exchange(client, ms(issuers))).status_code == 200
        tid = MS_TENANT + "\n"
        token = issuers.microsoft.mint(iss=f"{fakes.MS_AUTHORITY}/{tid}/v2.0", tid=tid)
        response = await exchange(client, token)
        assert response.status_code == 400
        assert response.json()["error_description"] == "the id_token is not valid"


async def test_microsoft_xms_edov_makes_the_address_authoritative(
    verifier: IdTokenVerifier, issuers: Issuers
) -> None:
    assert (await verifier.check(ms(issuers, xms_edov=True))).authoritative is True
    for value in ("true", 1, False):
        assert (await verifier.check(ms(issuers, xms_edov=value))).authoritative is False
    # preferred_username is never read as an address.
    identity = await verifier.check(
        ms(issuers, email=DROP, preferred_username="grace@contoso.example")
    )
    assert identity.email is None


async def test_microsoft_one_person_through_two_app_registrations_is_one_account(
    client: httpx.AsyncClient, issuers: Issuers, sql: Sql
) -> None:
    first = (await sign_in(client, issuers.microsoft))["user"]
    # Another registration: another aud, another pairwise sub, the same tid:oid.
    second = (
        await sign_in(client, issuers.microsoft, aud=fakes.MS_OTHER_APP, sub="other-pairwise-sub")
    )["user"]
    assert second["id"] == first["id"]
    assert await sql.scalar("SELECT count(*) FROM accounts") == 1


async def test_sovereign_cloud_authority(
    settings: Settings, keys: dict[str, Any], clock: FakeClock
) -> None:
    authority = "https://login.microsoftonline.us"
    cloud = fakes.microsoft(clock, keys["microsoft"], authority=authority)
    issuers = Issuers(
        fakes.google(clock, keys["google"]),
        cloud,
        fakes.apple(clock, keys["apple"]),
        fakes.okta(clock, keys["okta"]),
    )
    verifier = verifier_for(
        dataclasses.replace(settings, microsoft_authority=authority), issuers, clock
    )
    assert (await verifier.check(cloud.mint())).provider == "microsoft"
    public_cloud = cloud.mint(iss=f"{fakes.MS_AUTHORITY}/{MS_TENANT}/v2.0")
    assert await rejected(verifier, public_cloud) == "unknown_issuer"


# -- Apple --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "verified"),
    [(True, True), ("true", True), (False, False), ("false", False), (DROP, False)],
)
async def test_apple_booleans_as_json_or_strings(
    verifier: IdTokenVerifier, issuers: Issuers, value: object, verified: bool
) -> None:
    identity = await verifier.check(
        issuers.apple.mint(email_verified=value, is_private_email=value)
    )
    assert identity.email_verified is verified


@pytest.mark.parametrize("name", ["email_verified", "is_private_email"])
@pytest.mark.parametrize("value", ["True", "yes", 1, 0, None, ["true"]])
async def test_apple_refuses_other_boolean_spellings(
    verifier: IdTokenVerifier, issuers: Issuers, name: str, value: Any
) -> None:
    assert await rejected(verifier, issuers.apple.mint(**{name: value})) == f"bad_{name}"


@pytest.mark.parametrize(
    ("email", "authoritative"),
    [
        ("q7ab1c@privaterelay.appleid.com", True),
        ("ada@icloud.com", True),
        ("ada@me.com", True),
        ("ada@mac.com", True),
        ("ada@gmail.com", False),
        ("ada@icloud.com.evil.test", False),
    ],
)
async def test_apple_is_authoritative_for_its_own_domains(
    verifier: IdTokenVerifier, issuers: Issuers, email: str, authoritative: bool
) -> None:
    identity = await verifier.check(issuers.apple.mint(email=email))
    assert (identity.email_verified, identity.authoritative) == (True, authoritative)


async def test_apple_services_id_and_bundle_id_and_hashed_nonce(
    verifier: IdTokenVerifier, issuers: Issuers
) -> None:
    apple = issuers.apple
    assert await verifier.check(apple.mint(aud=fakes.APPLE_WEB))
    assert await verifier.check(apple.mint(aud=fakes.APPLE_APP))
    assert await rejected(verifier, apple.mint(aud="com.other.app")) == "bad_audience"
    # A native app hands Apple the SHA-256 of its nonce and us the nonce itself.
    hashed = hashlib.sha256(b"raw-nonce").hexdigest()
    assert await verifier.check(apple.mint(nonce=hashed), nonce="raw-nonce")
    identity = await verifier.check(apple.mint())
    assert identity.name is None  # Apple's id_token carries no name


# -- any other issuer, from the providers file ---------------------------------------------------


async def test_generic_issuer_through_discovery_with_es256(
    verifier: IdTokenVerifier, issuers: Issuers
) -> None:
    okta = issuers.okta
    identity = await verifier.check(okta.mint())
    assert (identity.provider, identity.account_key, identity.authoritative) == (
        "okta",
        "00u1example",
        True,
    )
    assert (await verifier.check(okta.mint(email="alan@elsewhere.test"))).authoritative is False
    # RS256 is not among its configured algorithms.
    rs = okta.mint_raw(
        {"alg": "RS256", "kid": okta.kid}, json.dumps(okta.claims()).encode(), issuers.google.key
    )
    assert await rejected(verifier, rs) == "bad_alg"


async def test_generic_issuer_discovery_must_name_the_configured_issuer(
    settings: Settings, issuers: Issuers, clock: FakeClock
) -> None:
    issuers.okta.discovery_issuer = "https://impostor.test"
    verifier = verifier_for(settings, issuers, clock)
    from identity.errors import KeysUnavailable

    with pytest.raises(KeysUnavailable):
        await verifier.check(issuers.okta.mint())


@pytest.mark.parametrize(
    ("alg", "key_name"), [("ES256", "okta"), ("EdDSA", "ed25519"), ("PS256", "other_rsa")]
)
async def test_generic_issuer_algorithms(
    settings: Settings,
    issuers: Issuers,
    keys: dict[str, Any],
    clock: FakeClock,
    alg: str,
    key_name: str,
) -> None:
    provider = dataclasses.replace(settings.oidc_providers[0], algorithms=(alg,))
    okta = issuers.okta
    okta.key, okta.alg = keys[key_name], alg
    verifier = verifier_for(
        dataclasses.replace(settings, oidc_providers=(provider,)), issuers, clock
    )
    assert (await verifier.check(okta.mint())).provider == "okta"


# -- end to end, per provider --------------------------------------------------------------------


@pytest.mark.parametrize("name", ["google", "microsoft", "apple", "okta"])
async def test_each_provider_signs_in_through_token_and_callback(
    client: httpx.AsyncClient, issuers: Issuers, sql: Sql, name: str
) -> None:
    issuer: FakeIssuer = getattr(issuers, name)
    body = await sign_in(client, issuer)
    assert body["user"]["accounts"][0]["provider"] == name
    again = await client.post(
        "/auth/oauth/callback", json={"provider": name, "id_token": issuer.mint()}
    )
    assert again.status_code == 200, again.text
    assert again.json()["user"]["id"] == body["user"]["id"]
    assert await sql.scalar("SELECT count(*) FROM users") == 1


async def test_provider_rules_through_http_write_nothing(
    client: httpx.AsyncClient, issuers: Issuers, sql: Sql
) -> None:
    before = await sql.counts()
    for token in (
        issuers.microsoft.mint(ver="1.0"),
        ms(issuers, tid="00000000-1111-2222-3333-444444444444"),
        # Entra access tokens: for our own API (aud is our client ID), delegated or app-only.
        ms(issuers, scp="access_as_user"),
        ms(issuers, idtyp="app", roles=["Tasks.Read"]),
        ms(issuers, oid="00000000-0000-0000-66f3-3332eca7ea81\n"),
        issuers.apple.mint(email_verified="yes"),
        issuers.okta.mint(aud="someone-else"),
    ):
        response = await exchange(client, token)
        assert response.status_code == 400
        assert response.json()["error_description"] == "the id_token is not valid"
    assert await sql.counts() == before


async def test_microsoft_address_stored_unverified_and_linking_refused(
    client: httpx.AsyncClient, issuers: Issuers
) -> None:
    user = (await sign_in(client, issuers.microsoft))["user"]
    assert (user["email"], user["email_verified"]) == ("grace@contoso.example", None)
    # A Google account proving the same address is a new user who takes it (it was unproven).
    google = (
        await sign_in(
            client,
            issuers.google,
            sub="g-grace",
            email="grace@contoso.example",
            hd="contoso.example",
        )
    )["user"]
    assert google["id"] != user["id"] and google["email_verified"]
    # Now held verified: a Microsoft sign-in of another person with that address is refused.
    response = await exchange(
        client,
        ms(issuers, oid="99999999-0000-0000-0000-000000000001", email="grace@contoso.example"),
    )
    assert response.status_code == 409


async def test_providers_file_provider_end_to_end(
    settings: Settings, issuers: Issuers, clock: FakeClock
) -> None:
    only_okta = dataclasses.replace(
        settings, google_client_ids=(), microsoft_client_ids=(), apple_client_ids=()
    )
    async with running(only_okta, issuers, clock) as (_, client):
        body = await sign_in(client, issuers.okta)
        assert body["user"]["email_verified"] is not None
        assert (await exchange(client, issuers.google.mint())).status_code == 400
