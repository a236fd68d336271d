"""Configuration, read from an environment mapping in exactly one place per entry point.

Each setting is declared once: a field whose metadata names its variable and parser
(`environment.setting`) and whose default is the one both `Settings()` and an empty environment
get. Every variable is described in docs/configuration.md (a test keeps the two in step).
`from_env` reports every problem at once, each naming its variable; entry points print one
line per problem and stop.

Longer than most modules: one field per variable, and the rules that tie them together.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from identity import credentials, destinations, providers_file
from identity.destinations import WebhookEndpoint
from identity.environment import (
    ConfigError,
    Invalid,
    RateLimit,
    address,
    attribute,
    base_url,
    boolean,
    choice,
    database_driver_url,
    fernet_keys,
    integer,
    items,
    lowered_items,
    path,
    rate,
    read,
    setting,
    text,
    unknown_variables,
    url,
    urls,
    variable_of,
)
from identity.providers_file import OidcProviderConfig

__all__ = ["ConfigError", "RateLimit", "Settings"]

# A tenant or object id in canonical lower-case form; always `fullmatch` (a `$` lets "\n" in).
GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
MICROSOFT_TENANT_GROUPS = ("organizations", "consumers", "common")
MAIL_OFF = "off"


def _tenants(raw: str) -> tuple[str, ...]:
    lowered = lowered_items(raw)
    groups = [v for v in lowered if v in MICROSOFT_TENANT_GROUPS]
    if groups and len(lowered) > 1:
        raise Invalid("organizations, consumers or common stands alone")
    for value in lowered:
        if value not in MICROSOFT_TENANT_GROUPS and not GUID.fullmatch(value):
            raise Invalid(f"{value!r} is not a tenant GUID")
    return lowered


def _smtp_url(value: str) -> str:
    if value.lower() == MAIL_OFF:
        return MAIL_OFF
    credentials.smtp_server(value)  # refuses what the mailer could not use
    return value


def _local_issuer(host: str, port: int) -> str:
    # A wildcard listen address is not one to be reached at; loopback is.
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host  # noqa: S104 - compared
    return f"http://[{shown}]:{port}" if ":" in shown else f"http://{shown}:{port}"


@dataclass(frozen=True)
class Settings:
    env: str = setting("IDENTITY_ENV", "development", choice("development", "production"))
    # Empty: http://{host}:{port} of this very process (development; production refuses it).
    issuer: str = setting("IDENTITY_ISSUER", "", base_url)
    database_url: str = setting(
        "IDENTITY_DATABASE_URL", "sqlite+aiosqlite:///./identity.db", database_driver_url
    )
    database_pool_size: int = setting("IDENTITY_DATABASE_POOL_SIZE", 20, integer(2, 200))
    # "transaction": behind PgBouncer, RDS Proxy or Supavisor pooling per transaction.
    database_pool_mode: str = setting(
        "IDENTITY_DATABASE_POOL_MODE", "session", choice("session", "transaction")
    )
    keys_dir: Path = setting("IDENTITY_KEYS_DIR", Path("./keys"), path)
    keys_passphrase: str | None = setting("IDENTITY_KEYS_PASSPHRASE", None, text)
    google_client_ids: tuple[str, ...] = setting("IDENTITY_GOOGLE_CLIENT_IDS", (), items)
    google_jwks_url: str = setting(
        "IDENTITY_GOOGLE_JWKS_URL", "https://www.googleapis.com/oauth2/v3/certs", url
    )
    google_issuers: tuple[str, ...] = setting(
        "IDENTITY_GOOGLE_ISSUERS", ("https://accounts.google.com", "accounts.google.com"), items
    )
    google_hosted_domains: tuple[str, ...] = setting(
        "IDENTITY_GOOGLE_HOSTED_DOMAINS", (), lowered_items
    )
    microsoft_client_ids: tuple[str, ...] = setting("IDENTITY_MICROSOFT_CLIENT_IDS", (), items)
    microsoft_tenants: tuple[str, ...] = setting("IDENTITY_MICROSOFT_TENANTS", (), _tenants)
    microsoft_authority: str = setting(
        "IDENTITY_MICROSOFT_AUTHORITY", "https://login.microsoftonline.com", base_url
    )
    # None: {authority}/common/discovery/v2.0/keys
    microsoft_jwks_url: str | None = setting("IDENTITY_MICROSOFT_JWKS_URL", None, url)
    apple_client_ids: tuple[str, ...] = setting("IDENTITY_APPLE_CLIENT_IDS", (), items)
    apple_issuers: tuple[str, ...] = setting(
        "IDENTITY_APPLE_ISSUERS", ("https://appleid.apple.com",), urls
    )
    apple_jwks_url: str = setting(
        "IDENTITY_APPLE_JWKS_URL", "https://appleid.apple.com/auth/keys", url
    )
    # Security events (docs/signals.md): Google's RISC issuer has the trailing slash.
    google_risc_issuer: str = setting(
        "IDENTITY_GOOGLE_RISC_ISSUER", "https://accounts.google.com/", url
    )
    signal_max_age: int = setting("IDENTITY_SIGNAL_MAX_AGE", 604_800, integer(60, 2_592_000))
    # Apple token revocation: the team's key signs the client secret (all three, or none).
    apple_team_id: str | None = setting("IDENTITY_APPLE_TEAM_ID", None, text)
    apple_key_id: str | None = setting("IDENTITY_APPLE_KEY_ID", None, text)
    apple_private_key_file: Path | None = setting("IDENTITY_APPLE_PRIVATE_KEY_FILE", None, path)
    apple_revoke_url: str = setting(
        "IDENTITY_APPLE_REVOKE_URL", "https://appleid.apple.com/auth/revoke", url
    )
    providers_file: Path | None = setting("IDENTITY_PROVIDERS_FILE", None, path)
    oidc_providers: tuple[OidcProviderConfig, ...] = ()  # what `from_env` found in that file
    audience: tuple[str, ...] = setting("IDENTITY_AUDIENCE", (), items)
    access_token_ttl: int = setting("IDENTITY_ACCESS_TOKEN_TTL", 900, integer(5, 86_400))
    refresh_token_ttl: int = setting(
        "IDENTITY_REFRESH_TOKEN_TTL", 2_592_000, integer(60, 31_622_400)
    )
    refresh_idle_ttl: int = setting("IDENTITY_REFRESH_IDLE_TTL", 1_209_600, integer(60, 31_622_400))
    refresh_reuse_interval: int = setting("IDENTITY_REFRESH_REUSE_INTERVAL", 10, integer(0, 60))
    clock_skew: int = setting("IDENTITY_CLOCK_SKEW", 60, integer(0, 300))
    id_token_max_age: int = setting("IDENTITY_ID_TOKEN_MAX_AGE", 3600, integer(60, 86_400))
    clients: Mapping[str, str] = setting("IDENTITY_CLIENTS", {}, credentials.clients)
    admin_clients: tuple[str, ...] = setting("IDENTITY_ADMIN_CLIENTS", (), items)
    backchannel_logout_uris: Mapping[str, str] = setting(
        "IDENTITY_BACKCHANNEL_LOGOUT_URIS", {}, destinations.backchannel_logout_uris
    )
    webhooks_file: Path | None = setting("IDENTITY_WEBHOOKS_FILE", None, path)
    webhooks: tuple[WebhookEndpoint, ...] = ()  # what `from_env` found in that file
    key_publish_lead: int = setting("IDENTITY_KEY_PUBLISH_LEAD", 1200, integer(0, 31_622_400))
    # Set: signing keys live in the database, sealed under these Fernet keys (newest first);
    # unset: in IDENTITY_KEYS_DIR (docs/operations.md, "Keys").
    key_encryption_keys: tuple[str, ...] = setting("IDENTITY_KEY_ENCRYPTION_KEY", (), fernet_keys)
    # Seconds between automatic rotations of the database's keys; 0: never (90 days by default).
    key_rotation_interval: int = setting(
        "IDENTITY_KEY_ROTATION_INTERVAL", 7_776_000, integer(0, 315_360_000)
    )
    jwks_max_age: int = setting("IDENTITY_JWKS_MAX_AGE", 600, integer(0, 86_400))
    # None: text on a terminal, JSON otherwise (always in production)
    log_format: str | None = setting("IDENTITY_LOG_FORMAT", None, choice("json", "text"))
    # None: on in development with SQLite, else off (decided when built, below)
    migrate_on_start: bool | None = setting("IDENTITY_MIGRATE_ON_START", None, boolean)
    host: str = setting("IDENTITY_HOST", "127.0.0.1", text)
    port: int = setting("IDENTITY_PORT", 8001, integer(1, 65_535))
    forwarded_allow_ips: str = setting("IDENTITY_FORWARDED_ALLOW_IPS", "127.0.0.1", text)
    # None: mails go to the log; "off": email verification is off
    smtp_url: str | None = setting("IDENTITY_SMTP_URL", None, _smtp_url)
    mail_from: str = setting("IDENTITY_MAIL_FROM", "identity@localhost", address)
    # None: {issuer}/auth/verify-email
    verify_email_url: str | None = setting("IDENTITY_VERIFY_EMAIL_URL", None, url)
    token_encryption_keys: tuple[str, ...] = setting(
        "IDENTITY_TOKEN_ENCRYPTION_KEY", (), fernet_keys
    )
    audit_retention: int = setting(
        "IDENTITY_AUDIT_RETENTION", 7_776_000, integer(3600, 315_360_000)
    )
    # The limits are on wherever Settings comes from; tests that need them off say so.
    rate_limit_mail: RateLimit | None = setting(
        "IDENTITY_RATE_LIMIT_MAIL", RateLimit(5, 3600), rate
    )
    rate_limit_failures: RateLimit | None = setting(
        "IDENTITY_RATE_LIMIT_FAILURES", RateLimit(60, 60), rate
    )
    rate_limit_subject: RateLimit | None = setting(
        "IDENTITY_RATE_LIMIT_SUBJECT", RateLimit(30, 60), rate
    )
    # Set by `identity serve --workers N` (or the operator): workers share metrics through it.
    metrics_dir: str | None = setting("PROMETHEUS_MULTIPROC_DIR", None, text)
    otlp_endpoint: str | None = setting("OTEL_EXPORTER_OTLP_ENDPOINT", None, text)
    unknown_variables: tuple[tuple[str, str | None], ...] = ()

    def __post_init__(self) -> None:
        # Defaults that follow other settings, decided here for code and environment alike.
        if not self.issuer:
            object.__setattr__(self, "issuer", _local_issuer(self.host, self.port))
        if self.migrate_on_start is None:
            local = not self.production and self.database_url.startswith("sqlite")
            object.__setattr__(self, "migrate_on_start", local)

    @property
    def keys_in_database(self) -> bool:
        """Where signing keys live: the database when a key-encryption key is set."""
        return bool(self.key_encryption_keys)

    @property
    def production(self) -> bool:
        return self.env == "production"

    @property
    def access_audience(self) -> tuple[str, ...]:
        return self.audience or (self.issuer,)

    @property
    def verification_link_base(self) -> str:
        return self.verify_email_url or f"{self.issuer}/auth/verify-email"

    @property
    def mail_enabled(self) -> bool:
        return self.smtp_url != MAIL_OFF

    @property
    def apple_revocation(self) -> bool:
        """Whether Apple refresh tokens are revoked (the team's key is configured)."""
        return bool(self.apple_team_id and self.apple_key_id and self.apple_private_key_file)

    @property
    def any_provider(self) -> bool:
        return bool(
            self.google_client_ids
            or self.microsoft_client_ids
            or self.apple_client_ids
            or self.oidc_providers
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Parse and validate every variable; raise one ConfigError listing every problem."""
        reading = read(dataclasses.fields(cls), environ)
        problems = reading.problems
        providers_path = reading.values.get("providers_file")
        if providers_path is not None:
            try:
                reading.values["oidc_providers"] = providers_file.load(providers_path)
            except ConfigError as error:
                problems += error.problems
                reading.failed.add("IDENTITY_PROVIDERS_FILE")
        webhooks_path = reading.values.get("webhooks_file")
        if webhooks_path is not None:
            try:
                reading.values["webhooks"] = destinations.load_webhooks(webhooks_path)
            except ConfigError as error:
                problems += error.problems
                reading.failed.add("IDENTITY_WEBHOOKS_FILE")
        known = cls.variables()
        settings = cls(**reading.values, unknown_variables=tuple(unknown_variables(environ, known)))
        # A rule about a variable whose value could not be read cannot be judged: skip it.
        problems += [
            p
            for p in settings._problems()
            if not any(re.search(rf"\b{name}\b", p) for name in reading.failed)
        ]
        if problems:
            raise ConfigError(*(attribute(p, environ) for p in problems))
        return settings

    @classmethod
    def variables(cls) -> frozenset[str]:
        """Every variable `from_env` reads (what docs/configuration.md must describe)."""
        found = (variable_of(f) for f in dataclasses.fields(cls))
        return frozenset(v.name for v in found if v is not None)

    def check(self) -> None:
        """Raise ConfigError listing every cross-variable or production rule broken."""
        problems = self._problems()
        if problems:
            raise ConfigError(*problems)

    def _problems(self) -> list[str]:
        problems = []
        if self.key_publish_lead < 2 * self.jwks_max_age:
            # A key must be published for two cache lifetimes before it signs, or downstream
            # caches that fetched just before the rotation reject the first tokens it signs.
            problems.append(
                "IDENTITY_KEY_PUBLISH_LEAD: must be at least 2 x IDENTITY_JWKS_MAX_AGE "
                f"({2 * self.jwks_max_age}s)"
            )
        if 0 < self.key_rotation_interval < self.key_publish_lead:
            # A key must be published for its whole lead before it signs: rotating faster
            # would queue keys that never sign.
            problems.append(
                "IDENTITY_KEY_ROTATION_INTERVAL: must be 0 (off) or at least "
                f"IDENTITY_KEY_PUBLISH_LEAD ({self.key_publish_lead}s)"
            )
        if self.refresh_idle_ttl > self.refresh_token_ttl:
            problems.append("IDENTITY_REFRESH_IDLE_TTL: must not exceed IDENTITY_REFRESH_TOKEN_TTL")
        if self.microsoft_client_ids and not self.microsoft_tenants:
            problems.append(
                "IDENTITY_MICROSOFT_TENANTS: required with IDENTITY_MICROSOFT_CLIENT_IDS "
                "(tenant GUIDs, or one of organizations, consumers, common)"
            )
        problems += [
            f"IDENTITY_ADMIN_CLIENTS: {admin!r} is not in IDENTITY_CLIENTS"
            for admin in self.admin_clients
            if admin not in self.clients
        ]
        problems += [
            f"IDENTITY_BACKCHANNEL_LOGOUT_URIS: {client!r} is not in IDENTITY_CLIENTS"
            for client in self.backchannel_logout_uris
            if client not in self.clients
        ]
        problems += self._issuer_problems()
        apple_key = (self.apple_team_id, self.apple_key_id, self.apple_private_key_file)
        if any(apple_key) and not all(apple_key):
            problems.append(
                "IDENTITY_APPLE_TEAM_ID: IDENTITY_APPLE_TEAM_ID, IDENTITY_APPLE_KEY_ID and "
                "IDENTITY_APPLE_PRIVATE_KEY_FILE go together (all three, or none)"
            )
        if self.production:
            problems += self._production_problems()
        return problems

    def _issuer_problems(self) -> list[str]:
        seen: dict[str, str] = {}
        problems = []
        configured = [("google", i) for i in self.google_issuers if self.google_client_ids]
        configured += [("apple", i) for i in self.apple_issuers if self.apple_client_ids]
        configured += [(p.name, p.issuer) for p in self.oidc_providers]
        for name, issuer in configured:
            if issuer in seen and seen[issuer] != name:
                # The issuer picks the provider: one issuer with two providers is ambiguous.
                problems.append(
                    f"IDENTITY_PROVIDERS_FILE: issuer {issuer!r} is also {seen[issuer]!r}"
                )
            seen[issuer] = name
        return problems

    def _production_problems(self) -> list[str]:
        problems = []
        if not self.issuer.startswith("https://"):
            problems.append("IDENTITY_ISSUER: must be set to an https:// URL in production")
        if not self.any_provider:
            problems.append(
                "IDENTITY_GOOGLE_CLIENT_IDS: production needs at least one provider "
                "(Google, Microsoft, Apple or IDENTITY_PROVIDERS_FILE)"
            )
        if not self.clients:
            problems.append(
                "IDENTITY_CLIENTS: must be set in production (open endpoints are refused)"
            )
        # A guessable shared secret is a client anyone can be (docs/security.md).
        problems += credentials.weak_clients(self.clients)
        problems += destinations.production_problems(self.backchannel_logout_uris, self.webhooks)
        if self.smtp_url is None:
            # The development mailer writes mail tokens to the log; production logs are shared.
            problems.append(
                "IDENTITY_SMTP_URL: must be set in production (smtps://…, "
                "smtp://…?starttls=required, or off to turn email verification off)"
            )
        elif self.mail_enabled and not credentials.smtp_server(self.smtp_url).encrypted:
            # Whoever strips the STARTTLS offer reads the login and every live link.
            problems.append(
                "IDENTITY_SMTP_URL: must use TLS in production: smtps://…, or "
                "smtp://…?starttls=required (plain smtp:// falls back to clear text)"
            )
        if self.log_format == "text":
            problems.append("IDENTITY_LOG_FORMAT: production logs are JSON")
        # Whoever can answer a plain-http key-set request can forge id_tokens.
        urls = [("IDENTITY_VERIFY_EMAIL_URL", self.verify_email_url)]
        if self.google_client_ids:
            urls.append(("IDENTITY_GOOGLE_JWKS_URL", self.google_jwks_url))
        if self.microsoft_client_ids:
            urls.append(("IDENTITY_MICROSOFT_AUTHORITY", self.microsoft_authority))
            urls.append(("IDENTITY_MICROSOFT_JWKS_URL", self.microsoft_jwks_url))
        if self.apple_client_ids:
            urls.append(("IDENTITY_APPLE_JWKS_URL", self.apple_jwks_url))
            urls += [("IDENTITY_APPLE_ISSUERS", issuer) for issuer in self.apple_issuers]
        for p in self.oidc_providers:
            urls.append((f"IDENTITY_PROVIDERS_FILE: providers.{p.name}.issuer", p.issuer))
            urls.append((f"IDENTITY_PROVIDERS_FILE: providers.{p.name}.jwks_url", p.jwks_url))
        problems += [
            f"{name}: must be an https:// URL in production"
            for name, value in urls
            if value is not None and not value.startswith("https://")
        ]
        return problems
