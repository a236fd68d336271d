"""Configuration, read from an environment mapping in exactly one place per entry point.

Every variable is described in docs/configuration.md (a test keeps the two in step). A bad value
raises ConfigError naming the variable; entry points print it as one line and stop.

Longer than most modules: one field and one line of parsing per variable, and the rules that
tie them together; splitting them would split each variable in two places.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlsplit

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from identity import providers_file
from identity.environment import ConfigError, RateLimit, Reader, unknown_variables
from identity.providers_file import OidcProviderConfig

__all__ = ["ConfigError", "RateLimit", "Settings"]

_CLIENT_ID = re.compile(r"^[A-Za-z0-9._~-]{1,128}$")
_GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
MICROSOFT_TENANT_GROUPS = ("organizations", "consumers", "common")
MAIL_OFF = "off"


@dataclass(frozen=True)
class Settings:
    env: str = "development"
    issuer: str = "http://127.0.0.1:8001"
    database_url: str = "sqlite+aiosqlite:///./identity.db"
    database_pool_size: int = 20
    keys_dir: Path = Path("./keys")
    keys_passphrase: str | None = None
    google_client_ids: tuple[str, ...] = ()
    google_jwks_url: str = "https://www.googleapis.com/oauth2/v3/certs"
    google_issuers: tuple[str, ...] = ("https://accounts.google.com", "accounts.google.com")
    google_hosted_domains: tuple[str, ...] = ()
    microsoft_client_ids: tuple[str, ...] = ()
    microsoft_tenants: tuple[str, ...] = ()
    microsoft_authority: str = "https://login.microsoftonline.com"
    microsoft_jwks_url: str | None = None  # None: {authority}/common/discovery/v2.0/keys
    apple_client_ids: tuple[str, ...] = ()
    apple_issuers: tuple[str, ...] = ("https://appleid.apple.com",)
    apple_jwks_url: str = "https://appleid.apple.com/auth/keys"
    providers_file: Path | None = None
    oidc_providers: tuple[OidcProviderConfig, ...] = ()
    audience: tuple[str, ...] = ()
    access_token_ttl: int = 900
    refresh_token_ttl: int = 2_592_000
    refresh_idle_ttl: int = 1_209_600
    refresh_reuse_interval: int = 10
    clock_skew: int = 60
    id_token_max_age: int = 3600
    clients: Mapping[str, str] = field(default_factory=dict)
    admin_clients: tuple[str, ...] = ()
    key_publish_lead: int = 1200
    jwks_max_age: int = 600
    log_format: str | None = None  # None: text on a terminal, JSON otherwise (always in production)
    migrate_on_start: bool = False
    host: str = "127.0.0.1"
    port: int = 8001
    forwarded_allow_ips: str = "127.0.0.1"
    smtp_url: str | None = None  # None: mails go to the log; "off": email verification is off
    mail_from: str = "identity@localhost"
    verify_email_url: str | None = None  # None: {issuer}/auth/verify-email
    token_encryption_keys: tuple[str, ...] = ()
    audit_retention: int = 7_776_000
    rate_limit_mail: RateLimit | None = field(default_factory=lambda: RateLimit(5, 3600))
    # Off when Settings is built directly (tests); from the environment they default to on.
    rate_limit_failures: RateLimit | None = None
    rate_limit_subject: RateLimit | None = None
    # Set by `identity serve --workers N` (or the operator): workers share metrics through it.
    metrics_dir: str | None = None
    otlp_endpoint: str | None = None
    unknown_variables: tuple[tuple[str, str | None], ...] = ()

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
    def any_provider(self) -> bool:
        return bool(
            self.google_client_ids
            or self.microsoft_client_ids
            or self.apple_client_ids
            or self.oidc_providers
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Parse and validate every variable; raise ConfigError naming the first bad one."""
        settings, _ = cls._read(environ)
        settings.check()
        return settings

    @classmethod
    def variables(cls) -> frozenset[str]:
        """Every variable `from_env` reads (what docs/configuration.md must describe)."""
        return frozenset(cls._read({})[1])

    @classmethod
    def _read(cls, environ: Mapping[str, str]) -> tuple[Settings, set[str]]:
        r = Reader(environ)
        env = r.choice("IDENTITY_ENV", "development", ("development", "production")) or ""
        production = env == "production"
        issuer = r.url("IDENTITY_ISSUER", "http://127.0.0.1:8001").rstrip("/")
        database_url = _database_url(r.text("IDENTITY_DATABASE_URL", cls.database_url))
        providers_path = r.optional("IDENTITY_PROVIDERS_FILE")
        log_format = r.choice("IDENTITY_LOG_FORMAT", None, ("json", "text"))
        settings = cls(
            env=env,
            issuer=issuer,
            database_url=database_url,
            database_pool_size=r.integer("IDENTITY_DATABASE_POOL_SIZE", 20, 2, 200),
            keys_dir=Path(r.text("IDENTITY_KEYS_DIR", "./keys")),
            keys_passphrase=r.optional("IDENTITY_KEYS_PASSPHRASE"),
            google_client_ids=r.items("IDENTITY_GOOGLE_CLIENT_IDS"),
            google_jwks_url=r.url("IDENTITY_GOOGLE_JWKS_URL", cls.google_jwks_url),
            google_issuers=r.items("IDENTITY_GOOGLE_ISSUERS", ",".join(cls.google_issuers)),
            google_hosted_domains=tuple(
                d.lower() for d in r.items("IDENTITY_GOOGLE_HOSTED_DOMAINS")
            ),
            microsoft_client_ids=r.items("IDENTITY_MICROSOFT_CLIENT_IDS"),
            microsoft_tenants=_tenants(r.items("IDENTITY_MICROSOFT_TENANTS")),
            microsoft_authority=r.url(
                "IDENTITY_MICROSOFT_AUTHORITY", cls.microsoft_authority
            ).rstrip("/"),
            microsoft_jwks_url=r.optional_url("IDENTITY_MICROSOFT_JWKS_URL"),
            apple_client_ids=r.items("IDENTITY_APPLE_CLIENT_IDS"),
            apple_issuers=r.urls("IDENTITY_APPLE_ISSUERS", ",".join(cls.apple_issuers)),
            apple_jwks_url=r.url("IDENTITY_APPLE_JWKS_URL", cls.apple_jwks_url),
            providers_file=Path(providers_path) if providers_path else None,
            oidc_providers=providers_file.load(Path(providers_path)) if providers_path else (),
            audience=r.items("IDENTITY_AUDIENCE"),
            access_token_ttl=r.integer("IDENTITY_ACCESS_TOKEN_TTL", 900, 5, 86_400),
            refresh_token_ttl=r.integer("IDENTITY_REFRESH_TOKEN_TTL", 2_592_000, 60, 31_622_400),
            refresh_idle_ttl=r.integer("IDENTITY_REFRESH_IDLE_TTL", 1_209_600, 60, 31_622_400),
            refresh_reuse_interval=r.integer("IDENTITY_REFRESH_REUSE_INTERVAL", 10, 0, 60),
            clock_skew=r.integer("IDENTITY_CLOCK_SKEW", 60, 0, 300),
            id_token_max_age=r.integer("IDENTITY_ID_TOKEN_MAX_AGE", 3600, 60, 86_400),
            clients=_clients(r.items("IDENTITY_CLIENTS", merge=False)),
            admin_clients=r.items("IDENTITY_ADMIN_CLIENTS"),
            key_publish_lead=r.integer("IDENTITY_KEY_PUBLISH_LEAD", 1200, 0, 31_622_400),
            jwks_max_age=r.integer("IDENTITY_JWKS_MAX_AGE", 600, 0, 86_400),
            log_format=log_format,
            migrate_on_start=r.boolean(
                "IDENTITY_MIGRATE_ON_START", not production and database_url.startswith("sqlite")
            ),
            host=r.text("IDENTITY_HOST", "127.0.0.1"),
            port=r.integer("IDENTITY_PORT", 8001, 1, 65_535),
            forwarded_allow_ips=r.text("IDENTITY_FORWARDED_ALLOW_IPS", "127.0.0.1"),
            smtp_url=_smtp_url(r.optional("IDENTITY_SMTP_URL")),
            mail_from=_address(r.text("IDENTITY_MAIL_FROM", "identity@localhost")),
            verify_email_url=r.optional_url("IDENTITY_VERIFY_EMAIL_URL"),
            token_encryption_keys=_fernet_keys(r.items("IDENTITY_TOKEN_ENCRYPTION_KEY")),
            audit_retention=r.integer("IDENTITY_AUDIT_RETENTION", 7_776_000, 3600, 315_360_000),
            rate_limit_mail=r.rate("IDENTITY_RATE_LIMIT_MAIL", "5/hour"),
            rate_limit_failures=r.rate("IDENTITY_RATE_LIMIT_FAILURES", "60/minute"),
            rate_limit_subject=r.rate("IDENTITY_RATE_LIMIT_SUBJECT", "30/minute"),
            metrics_dir=r.optional("PROMETHEUS_MULTIPROC_DIR"),
            otlp_endpoint=r.optional("OTEL_EXPORTER_OTLP_ENDPOINT"),
        )
        unknown = tuple(unknown_variables(environ, r.names))
        return replace(settings, unknown_variables=unknown), r.names

    def check(self) -> None:
        """Cross-variable rules, and the conveniences production refuses."""
        if self.key_publish_lead < 2 * self.jwks_max_age:
            # A key must be published for two cache lifetimes before it signs, or downstream
            # caches that fetched just before the rotation reject the first tokens it signs.
            raise ConfigError(
                "IDENTITY_KEY_PUBLISH_LEAD: must be at least 2 x IDENTITY_JWKS_MAX_AGE "
                f"({2 * self.jwks_max_age}s)"
            )
        if self.refresh_idle_ttl > self.refresh_token_ttl:
            raise ConfigError(
                "IDENTITY_REFRESH_IDLE_TTL: must not exceed IDENTITY_REFRESH_TOKEN_TTL"
            )
        if self.microsoft_client_ids and not self.microsoft_tenants:
            raise ConfigError(
                "IDENTITY_MICROSOFT_TENANTS: required with IDENTITY_MICROSOFT_CLIENT_IDS "
                "(tenant GUIDs, or one of organizations, consumers, common)"
            )
        for admin in self.admin_clients:
            if admin not in self.clients:
                raise ConfigError(f"IDENTITY_ADMIN_CLIENTS: {admin!r} is not in IDENTITY_CLIENTS")
        self._check_issuers()
        if self.production:
            self._check_production()

    def _check_issuers(self) -> None:
        seen: dict[str, str] = {}
        configured = [("google", i) for i in self.google_issuers if self.google_client_ids]
        configured += [("apple", i) for i in self.apple_issuers if self.apple_client_ids]
        configured += [(p.name, p.issuer) for p in self.oidc_providers]
        for name, issuer in configured:
            if issuer in seen and seen[issuer] != name:
                # The issuer picks the provider: one issuer with two providers is ambiguous.
                raise ConfigError(
                    f"IDENTITY_PROVIDERS_FILE: issuer {issuer!r} is also {seen[issuer]!r}"
                )
            seen[issuer] = name

    def _check_production(self) -> None:
        if not self.issuer.startswith("https://"):
            raise ConfigError("IDENTITY_ISSUER: must be an https:// URL in production")
        if not self.any_provider:
            raise ConfigError(
                "IDENTITY_GOOGLE_CLIENT_IDS: production needs at least one provider "
                "(Google, Microsoft, Apple or IDENTITY_PROVIDERS_FILE)"
            )
        if not self.clients:
            raise ConfigError(
                "IDENTITY_CLIENTS: must be set in production (open endpoints are refused)"
            )
        if self.smtp_url is None:
            # The development mailer writes mail tokens to the log; production logs are shared.
            raise ConfigError(
                "IDENTITY_SMTP_URL: must be set in production (smtp://… or off to turn email "
                "verification off)"
            )
        if self.log_format == "text":
            raise ConfigError("IDENTITY_LOG_FORMAT: production logs are JSON")
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
        for name, url in urls:
            if url is not None and not url.startswith("https://"):
                raise ConfigError(f"{name}: must be an https:// URL in production")


def _database_url(value: str) -> str:
    try:
        url = make_url(value)
    except ArgumentError:
        raise ConfigError("IDENTITY_DATABASE_URL: not a database URL") from None
    if url.drivername not in ("sqlite+aiosqlite", "postgresql+asyncpg"):
        raise ConfigError(
            "IDENTITY_DATABASE_URL: driver must be sqlite+aiosqlite or postgresql+asyncpg "
            f"(got {url.drivername!r})"
        )
    return value


def _tenants(values: tuple[str, ...]) -> tuple[str, ...]:
    lowered = tuple(v.lower() for v in values)
    groups = [v for v in lowered if v in MICROSOFT_TENANT_GROUPS]
    if groups and len(lowered) > 1:
        raise ConfigError(
            "IDENTITY_MICROSOFT_TENANTS: organizations, consumers or common stands alone"
        )
    for value in lowered:
        if value not in MICROSOFT_TENANT_GROUPS and not _GUID.match(value):
            raise ConfigError(f"IDENTITY_MICROSOFT_TENANTS: {value!r} is not a tenant GUID")
    return lowered


def _smtp_url(value: str | None) -> str | None:
    if value is None or value.lower() == MAIL_OFF:
        return None if value is None else MAIL_OFF
    parts = urlsplit(value)
    try:
        port = parts.port
    except ValueError:
        port = -1
    if parts.scheme not in ("smtp", "smtps") or not parts.hostname or port == -1:
        raise ConfigError(
            "IDENTITY_SMTP_URL: must be smtp://[user:pass@]host[:port], smtps://…, or off"
        )
    return value


def _address(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9.-]{1,253}", value):
        raise ConfigError("IDENTITY_MAIL_FROM: must be a plain address like identity@example.com")
    return value


def _fernet_keys(keys: tuple[str, ...]) -> tuple[str, ...]:
    for key in keys:
        try:
            raw = base64.urlsafe_b64decode(key.encode())
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) != 32:
            # Refuse anything but a real Fernet key: a typo must not disable encryption.
            raise ConfigError(
                "IDENTITY_TOKEN_ENCRYPTION_KEY: each key must be a Fernet key "
                "(python -c 'from cryptography.fernet import Fernet; "
                "print(Fernet.generate_key().decode())')"
            )
    return keys


def _clients(items: tuple[str, ...]) -> dict[str, str]:
    clients: dict[str, str] = {}
    for item in items:
        client_id, sep, secret = item.partition(":")
        if not sep or not _CLIENT_ID.match(client_id):
            raise ConfigError("IDENTITY_CLIENTS: each entry must be id:secret with a plain id")
        if len(secret) < 16:
            # Short shared secrets are guessable; refuse them rather than warn.
            raise ConfigError(f"IDENTITY_CLIENTS: the secret of {client_id!r} is shorter than 16")
        if client_id in clients:
            raise ConfigError(f"IDENTITY_CLIENTS: client {client_id!r} is listed twice")
        clients[client_id] = secret
    return clients
