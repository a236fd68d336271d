"""The providers whose id_tokens can be exchanged, each a description (docs/providers.md).

A `Provider` is data — name, how its issuer is recognised, key set, audiences, algorithms — and
one small rule function for what really differs between providers: the account key, which
claims are checked beyond the common rules, and which addresses it is authoritative for. The
verifier (`id_tokens.py`) is one code path for all of them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from identity import addresses
from identity.errors import TokenRejected
from identity.providers_file import OidcProviderConfig
from identity.settings import GUID, Settings

# GUID (the settings' pattern) is used with fullmatch only: `$` also matches before a trailing
# newline, so `re.match(…$)` once let a tid of "<guid>\n" through. Lower case only: the
# canonical form, one spelling per tenant.
MICROSOFT_CONSUMERS_TENANT = "9188040d-6c67-4c5b-b112-36a304b66dad"
APPLE_DOMAINS = frozenset({"privaterelay.appleid.com", "icloud.com", "me.com", "mac.com"})
MAX_NAME = 200
MAX_PICTURE = 2048


@dataclass(frozen=True, slots=True)
class ProviderClaims:
    """What a provider's rules read from a verified token."""

    account_key: str
    email: str | None
    email_verified: bool  # the provider says so
    authoritative: bool  # verified, and the provider may vouch for this address (docs/accounts.md)
    name: str | None
    picture: str | None


# The rule function: the token's claims (signature, issuer, audience, times and sub already
# checked) -> ProviderClaims, or TokenRejected naming the broken rule.
Rules = Callable[[dict[str, Any]], ProviderClaims]


@dataclass(frozen=True)
class Provider:
    name: str
    audiences: frozenset[str]
    algorithms: frozenset[str]
    rules: Rules
    issuers: frozenset[str] = frozenset()  # exact `iss` values
    # Microsoft: `iss` is `{prefix}{tid}{suffix}` with the token's own `tid`.
    issuer_template: tuple[str, str] | None = None
    jwks_url: str | None = None  # None: jwks_uri from the discovery document of `discovery`
    discovery: str | None = None
    backchannel_logout: bool = False  # its logout tokens are received (docs/signals.md)

    def issued(self, iss: str, claims: dict[str, Any]) -> bool:
        """Whether this provider issued a token with this `iss` (unverified claims)."""
        if iss in self.issuers:
            return True
        if self.issuer_template is None:
            return False
        prefix, suffix = self.issuer_template
        tid = claims.get("tid")
        return (
            isinstance(tid, str)
            and GUID.fullmatch(tid) is not None
            and iss == f"{prefix}{tid}{suffix}"
        )


def configured(settings: Settings) -> tuple[Provider, ...]:
    """Every provider the settings enable (a provider without client IDs is off)."""
    providers: list[Provider] = []
    if settings.google_client_ids:
        providers.append(
            Provider(
                name="google",
                audiences=frozenset(settings.google_client_ids),
                algorithms=frozenset({"RS256"}),
                rules=partial(
                    google_rules, hosted_domains=frozenset(settings.google_hosted_domains)
                ),
                issuers=frozenset(settings.google_issuers),
                jwks_url=settings.google_jwks_url,
            )
        )
    if settings.microsoft_client_ids:
        authority = settings.microsoft_authority
        providers.append(
            Provider(
                name="microsoft",
                audiences=frozenset(settings.microsoft_client_ids),
                algorithms=frozenset({"RS256"}),
                rules=partial(microsoft_rules, tenants=frozenset(settings.microsoft_tenants)),
                issuer_template=(f"{authority}/", "/v2.0"),
                jwks_url=settings.microsoft_jwks_url or f"{authority}/common/discovery/v2.0/keys",
            )
        )
    if settings.apple_client_ids:
        providers.append(
            Provider(
                name="apple",
                audiences=frozenset(settings.apple_client_ids),
                algorithms=frozenset({"RS256"}),
                rules=apple_rules,
                issuers=frozenset(settings.apple_issuers),
                jwks_url=settings.apple_jwks_url,
            )
        )
    providers += [_generic(config) for config in settings.oidc_providers]
    return tuple(providers)


def _generic(config: OidcProviderConfig) -> Provider:
    return Provider(
        name=config.name,
        audiences=frozenset(config.client_ids),
        algorithms=frozenset(config.algorithms),
        rules=partial(generic_rules, email_domains=frozenset(config.email_domains)),
        issuers=frozenset({config.issuer}),
        jwks_url=config.jwks_url,
        discovery=None if config.jwks_url else config.issuer,
        backchannel_logout=config.backchannel_logout,
    )


def google_rules(claims: dict[str, Any], *, hosted_domains: frozenset[str]) -> ProviderClaims:
    hd = claims.get("hd")
    if hd is not None and not isinstance(hd, str):
        raise TokenRejected("bad_hosted_domain")
    if hosted_domains and hd not in hosted_domains:
        raise TokenRejected("bad_hosted_domain")
    email = addresses.normalize(claims.get("email"))
    # Only the JSON boolean true counts: "true", 1 and the like are not a verification.
    verified = email is not None and claims.get("email_verified") is True
    # Google vouches for its own consumer domain, and for a Workspace domain named by `hd`; a
    # consumer account that once verified some other address proves nothing about it.
    authoritative = (
        verified
        and email is not None
        and (
            addresses.domain_of(email) == "gmail.com"
            or (hd is not None and addresses.domain_of(email) == hd.lower())
        )
    )
    return _claims(claims, claims["sub"], email, verified, authoritative)


def microsoft_rules(claims: dict[str, Any], *, tenants: frozenset[str]) -> ProviderClaims:
    # Entra signs its access tokens with the same keys and issuer as its id_tokens, and one
    # meant for our app's own API even has our client ID as `aud`; only access tokens carry
    # `scp` (delegated scopes) or `idtyp` (the optional token-type claim, "app" or "user").
    if "scp" in claims or "idtyp" in claims:
        raise TokenRejected("not_an_id_token")
    tid = claims.get("tid")
    # The issuer already matched the template with this tid; v1 tokens (sts.windows.net) did not.
    if not isinstance(tid, str) or not GUID.fullmatch(tid):
        raise TokenRejected("bad_tenant")
    if not _tenant_allowed(tid, tenants):
        raise TokenRejected("tenant_not_allowed")
    if "ver" in claims and claims["ver"] != "2.0":
        raise TokenRejected("bad_version")
    oid = claims.get("oid")
    if not isinstance(oid, str) or not GUID.fullmatch(oid):
        raise TokenRejected("bad_object_id")
    email = addresses.normalize(claims.get("email"))
    # Entra does not verify `email`; `xms_edov: true` says the tenant proved it owns the domain.
    # `preferred_username` is never read as an address.
    verified = email is not None and claims.get("xms_edov") is True
    # `sub` is pairwise per application; tid:oid is the same person across registrations.
    return _claims(claims, f"{tid}:{oid}", email, verified, verified)


def _tenant_allowed(tid: str, tenants: frozenset[str]) -> bool:
    if "common" in tenants:
        return True
    if "consumers" in tenants:
        return tid == MICROSOFT_CONSUMERS_TENANT
    if "organizations" in tenants:
        return tid != MICROSOFT_CONSUMERS_TENANT
    return tid in tenants


def apple_rules(claims: dict[str, Any]) -> ProviderClaims:
    email = addresses.normalize(claims.get("email"))
    verified = _apple_boolean(claims, "email_verified") and email is not None
    _apple_boolean(claims, "is_private_email")  # read only to refuse anything but a boolean
    authoritative = verified and email is not None and addresses.domain_of(email) in APPLE_DOMAINS
    # Apple's id_token carries no name or picture.
    return ProviderClaims(claims["sub"], email, verified, authoritative, None, None)


def _apple_boolean(claims: dict[str, Any], name: str) -> bool:
    value = claims.get(name, False)
    # Apple sends JSON booleans or the strings "true"/"false"; nothing else is accepted.
    if value is True or value == "true":
        return True
    if value is False or value == "false":
        return False
    raise TokenRejected(f"bad_{name}")


def generic_rules(claims: dict[str, Any], *, email_domains: frozenset[str]) -> ProviderClaims:
    email = addresses.normalize(claims.get("email"))
    verified = email is not None and claims.get("email_verified") is True
    authoritative = verified and email is not None and addresses.domain_of(email) in email_domains
    return _claims(claims, claims["sub"], email, verified, authoritative)


def _claims(
    claims: dict[str, Any], key: str, email: str | None, verified: bool, authoritative: bool
) -> ProviderClaims:
    return ProviderClaims(
        account_key=key,
        email=email,
        email_verified=verified,
        authoritative=authoritative,
        name=_text(claims.get("name"), MAX_NAME),
        picture=_picture(claims.get("picture")),
    )


def _text(value: object, limit: int) -> str | None:
    if not isinstance(value, str):
        return None
    cleaned = "".join(c for c in value if c.isprintable()).strip()
    return cleaned[:limit] or None


def _picture(value: object) -> str | None:
    if not isinstance(value, str) or len(value) > MAX_PICTURE:
        return None
    # Only https pictures are kept: anything else would be rendered by apps as an active link.
    return value if value.startswith("https://") and value.isprintable() else None
