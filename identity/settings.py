"""Configuration, read from an environment mapping in exactly one place per entry point."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError


class ConfigError(Exception):
    """A configuration value is invalid; the message names the variable."""


_CLIENT_ID_RE = re.compile(r"^[A-Za-z0-9._~-]{1,128}$")


@dataclass(frozen=True)
class Settings:
    env: str = "development"
    issuer: str = "http://127.0.0.1:8001"
    database_url: str = "sqlite+aiosqlite:///./identity.db"
    keys_dir: Path = Path("./keys")
    keys_passphrase: str | None = None
    google_client_ids: tuple[str, ...] = ()
    google_jwks_url: str = "https://www.googleapis.com/oauth2/v3/certs"
    google_issuers: tuple[str, ...] = ("https://accounts.google.com", "accounts.google.com")
    google_hosted_domains: tuple[str, ...] = ()
    audience: tuple[str, ...] = ()
    access_token_ttl: int = 900
    refresh_token_ttl: int = 2_592_000
    refresh_idle_ttl: int = 1_209_600
    clock_skew: int = 60
    id_token_max_age: int = 3600
    clients: Mapping[str, str] = field(default_factory=dict)
    key_publish_lead: int = 1200
    jwks_max_age: int = 600
    log_format: str = "json"
    migrate_on_start: bool = False
    host: str = "127.0.0.1"
    port: int = 8001
    forwarded_allow_ips: str = "127.0.0.1"
    smtp_url: str | None = None
    mail_from: str = "identity@localhost"
    verify_email_url: str | None = None  # None: {issuer}/auth/verify-email
    token_encryption_keys: tuple[str, ...] = ()
    rate_limit_mail: RateLimit | None = field(default_factory=lambda: RateLimit(5, 3600))
    # Off when Settings is built directly (tests); from the environment they default to on.
    rate_limit_failures: RateLimit | None = None
    rate_limit_subject: RateLimit | None = None
    # Set by `identity serve --workers N` (or the operator): workers share metrics through it.
    metrics_dir: str | None = None

    @property
    def production(self) -> bool:
        return self.env == "production"

    @property
    def access_audience(self) -> tuple[str, ...]:
        return self.audience or (self.issuer,)

    @property
    def verification_link_base(self) -> str:
        return self.verify_email_url or f"{self.issuer}/auth/verify-email"

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Parse and validate every variable; raise ConfigError naming the first bad one."""
        r = _Reader(environ)
        env = r.choice("IDENTITY_ENV", "development", ("development", "production"))
        production = env == "production"
        issuer = r.url("IDENTITY_ISSUER", "http://127.0.0.1:8001").rstrip("/")
        database_url = r.database_url("IDENTITY_DATABASE_URL", "sqlite+aiosqlite:///./identity.db")
        default_migrate = not production and database_url.startswith("sqlite")
        settings = cls(
            env=env,
            issuer=issuer,
            database_url=database_url,
            keys_dir=Path(r.text("IDENTITY_KEYS_DIR", "./keys")),
            keys_passphrase=r.optional("IDENTITY_KEYS_PASSPHRASE"),
            google_client_ids=r.items("IDENTITY_GOOGLE_CLIENT_IDS"),
            google_jwks_url=r.url(
                "IDENTITY_GOOGLE_JWKS_URL", "https://www.googleapis.com/oauth2/v3/certs"
            ),
            google_issuers=r.items(
                "IDENTITY_GOOGLE_ISSUERS", "https://accounts.google.com,accounts.google.com"
            ),
            google_hosted_domains=r.items("IDENTITY_GOOGLE_HOSTED_DOMAINS"),
            audience=r.items("IDENTITY_AUDIENCE"),
            access_token_ttl=r.integer("IDENTITY_ACCESS_TOKEN_TTL", 900, 5, 86_400),
            refresh_token_ttl=r.integer("IDENTITY_REFRESH_TOKEN_TTL", 2_592_000, 60, 31_622_400),
            refresh_idle_ttl=r.integer("IDENTITY_REFRESH_IDLE_TTL", 1_209_600, 60, 31_622_400),
            clock_skew=r.integer("IDENTITY_CLOCK_SKEW", 60, 0, 300),
            id_token_max_age=r.integer("IDENTITY_ID_TOKEN_MAX_AGE", 3600, 60, 86_400),
            clients=r.clients("IDENTITY_CLIENTS"),
            key_publish_lead=r.integer("IDENTITY_KEY_PUBLISH_LEAD", 1200, 0, 31_622_400),
            jwks_max_age=r.integer("IDENTITY_JWKS_MAX_AGE", 600, 0, 86_400),
            log_format=r.choice("IDENTITY_LOG_FORMAT", "json", ("json", "text")),
            migrate_on_start=r.boolean("IDENTITY_MIGRATE_ON_START", default_migrate),
            host=r.text("IDENTITY_HOST", "127.0.0.1"),
            port=r.integer("IDENTITY_PORT", 8001, 1, 65_535),
            forwarded_allow_ips=r.text("IDENTITY_FORWARDED_ALLOW_IPS", "127.0.0.1"),
            smtp_url=r.smtp_url("IDENTITY_SMTP_URL"),
            mail_from=r.address("IDENTITY_MAIL_FROM", "identity@localhost"),
            verify_email_url=r.optional_url("IDENTITY_VERIFY_EMAIL_URL"),
            token_encryption_keys=r.fernet_keys("IDENTITY_TOKEN_ENCRYPTION_KEY"),
            rate_limit_mail=r.rate("IDENTITY_RATE_LIMIT_MAIL", "5/hour"),
            rate_limit_failures=r.rate("IDENTITY_RATE_LIMIT_FAILURES", "60/minute"),
            rate_limit_subject=r.rate("IDENTITY_RATE_LIMIT_SUBJECT", "30/minute"),
            metrics_dir=r.optional("PROMETHEUS_MULTIPROC_DIR"),
        )
        settings.check()
        return settings

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
        if not self.production:
            return
        if not self.issuer.startswith("https://"):
            raise ConfigError("IDENTITY_ISSUER: must be an https:// URL in production")
        if not self.google_client_ids:
            raise ConfigError("IDENTITY_GOOGLE_CLIENT_IDS: must be set in production")
        if not self.clients:
            raise ConfigError(
                "IDENTITY_CLIENTS: must be set in production (open endpoints are refused)"
            )


_PERIODS = {"second": 1, "minute": 60, "hour": 3600, "day": 86_400}


@dataclass(frozen=True)
class RateLimit:
    """At most `count` events per `period` seconds."""

    count: int
    period: int


class _Reader:
    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def optional(self, name: str) -> str | None:
        value = self._environ.get(name, "").strip()
        return value or None

    def text(self, name: str, default: str) -> str:
        return self.optional(name) or default

    def choice(self, name: str, default: str, allowed: tuple[str, ...]) -> str:
        value = self.text(name, default).lower()
        if value not in allowed:
            raise ConfigError(f"{name}: must be one of {', '.join(allowed)} (got {value!r})")
        return value

    def integer(self, name: str, default: int, low: int, high: int) -> int:
        raw = self.optional(name)
        if raw is None:
            return default
        if not re.fullmatch(r"[0-9]+", raw):
            raise ConfigError(f"{name}: must be a whole number (got {raw!r})")
        value = int(raw)
        if not low <= value <= high:
            raise ConfigError(f"{name}: must be between {low} and {high} (got {value})")
        return value

    def boolean(self, name: str, default: bool) -> bool:
        raw = self.optional(name)
        if raw is None:
            return default
        lowered = raw.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{name}: must be 1 or 0 (got {raw!r})")

    def items(self, name: str, default: str = "") -> tuple[str, ...]:
        raw = self._environ.get(name, default)
        return tuple(item.strip() for item in raw.split(",") if item.strip())

    def url(self, name: str, default: str) -> str:
        value = self.text(name, default)
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(f"{name}: must be an http(s) URL (got {value!r})")
        if parts.query or parts.fragment:
            raise ConfigError(f"{name}: must not have a query or fragment")
        return value

    def optional_url(self, name: str) -> str | None:
        return self.url(name, "") if self.optional(name) else None

    def smtp_url(self, name: str) -> str | None:
        value = self.optional(name)
        if value is None:
            return None
        parts = urlsplit(value)
        try:
            port = parts.port
        except ValueError:
            port = -1
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname or port == -1:
            raise ConfigError(f"{name}: must be smtp://[user:pass@]host[:port] or smtps://…")
        return value

    def address(self, name: str, default: str) -> str:
        value = self.text(name, default)
        if not re.fullmatch(r"[^@\s<>]+@[^@\s<>]+", value):
            raise ConfigError(f"{name}: must be a plain address like identity@example.com")
        return value

    def fernet_keys(self, name: str) -> tuple[str, ...]:
        keys = self.items(name)
        for key in keys:
            try:
                raw = base64.urlsafe_b64decode(key.encode())
            except (binascii.Error, ValueError):
                raw = b""
            if len(raw) != 32:
                # Refuse anything but a real Fernet key: a typo must not disable encryption.
                raise ConfigError(
                    f"{name}: each key must be a Fernet key "
                    "(python -c 'from cryptography.fernet import Fernet; "
                    "print(Fernet.generate_key().decode())')"
                )
        return keys

    def rate(self, name: str, default: str) -> RateLimit | None:
        raw = self.text(name, default)
        if raw == "0":
            return None
        match = re.fullmatch(r"(\d+)\s*/\s*(second|minute|hour|day)", raw)
        if match is None or int(match.group(1)) == 0:
            raise ConfigError(
                f"{name}: must be N/second, N/minute, N/hour, N/day or 0 (got {raw!r})"
            )
        return RateLimit(int(match.group(1)), _PERIODS[match.group(2)])

    def database_url(self, name: str, default: str) -> str:
        value = self.text(name, default)
        try:
            url = make_url(value)
        except ArgumentError:
            raise ConfigError(f"{name}: not a database URL") from None
        if url.drivername not in ("sqlite+aiosqlite", "postgresql+asyncpg"):
            raise ConfigError(
                f"{name}: driver must be sqlite+aiosqlite or postgresql+asyncpg "
                f"(got {url.drivername!r})"
            )
        return value

    def clients(self, name: str) -> dict[str, str]:
        clients: dict[str, str] = {}
        for item in self.items(name):
            client_id, sep, secret = item.partition(":")
            if not sep or not _CLIENT_ID_RE.match(client_id):
                raise ConfigError(f"{name}: each entry must be id:secret with a plain id")
            if len(secret) < 16:
                # Short shared secrets are guessable; refuse them rather than warn.
                raise ConfigError(f"{name}: the secret of {client_id!r} is shorter than 16")
            if client_id in clients:
                raise ConfigError(f"{name}: client {client_id!r} is listed twice")
            clients[client_id] = secret
        return clients
