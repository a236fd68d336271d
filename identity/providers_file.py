"""IDENTITY_PROVIDERS_FILE: further OpenID Connect providers, one TOML table each.

    [providers.okta]
    issuer = "https://example.okta.com/oauth2/default"   # exact `iss`
    client_ids = ["0oa1example"]                         # accepted `aud` values
    jwks_url = "https://..."        # optional; else jwks_uri from the issuer's discovery
    algorithms = ["RS256"]          # optional
    email_domains = ["example.com"] # optional: addresses it is authoritative for
    backchannel_logout = true       # optional: receive its logout tokens (docs/signals.md)

Parsed with the standard library's `tomllib`. Any mistake stops every command with one line
naming the file and the key (docs/providers.md).
"""

from __future__ import annotations

import difflib
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from identity.environment import ConfigError, Invalid, check_url

# The algorithms we verify (identity.tokens.jws); `none` and HMAC never.
ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA")
BUILT_IN = frozenset({"google", "microsoft", "apple"})
# Not a provider: how our own mailed link proved an address (users.email_verified_by).
RESERVED = frozenset({"mail"})
_NAME = re.compile(r"[a-z0-9-]{1,32}")
_DOMAIN = re.compile(r"(?=.{1,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}")
_KEYS = frozenset(
    {"issuer", "client_ids", "jwks_url", "algorithms", "email_domains", "backchannel_logout"}
)


@dataclass(frozen=True)
class OidcProviderConfig:
    name: str
    issuer: str
    client_ids: tuple[str, ...]
    jwks_url: str | None
    algorithms: tuple[str, ...]
    email_domains: tuple[str, ...]
    backchannel_logout: bool = False  # POST /signals/backchannel-logout/{name} is live


def load(path: Path) -> tuple[OidcProviderConfig, ...]:
    where = f"IDENTITY_PROVIDERS_FILE: {path}"
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(f"{where}: cannot be read ({type(error).__name__})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        # The parser's message names the line and column; it quotes no secret of ours.
        raise ConfigError(f"{where}: not valid TOML ({error})") from None
    extra = sorted(set(document) - {"providers"})
    if extra:
        raise ConfigError(
            f"{where}: unknown key {extra[0]!r}{_close(extra[0], {'providers'})} "
            "(only [providers.<name>] tables)"
        )
    tables = document.get("providers", {})
    if not isinstance(tables, dict):
        raise ConfigError(f"{where}: providers: must be a table of tables")
    return tuple(_provider(where, name, table) for name, table in tables.items())


def _provider(where: str, name: str, table: Any) -> OidcProviderConfig:
    key = f"{where}: providers.{name}"
    if not _NAME.fullmatch(name):
        raise ConfigError(f"{key}: names are 1-32 lower-case letters, digits and '-'")
    if name in BUILT_IN:
        raise ConfigError(f"{key}: {name!r} is a built-in provider; choose another name")
    if name in RESERVED:
        raise ConfigError(f"{key}: {name!r} is reserved (our own mail); choose another name")
    if not isinstance(table, dict):
        raise ConfigError(f"{key}: must be a table")
    unknown = sorted(set(table) - _KEYS)
    if unknown:
        raise ConfigError(f"{key}.{unknown[0]}: unknown key{_close(unknown[0], _KEYS)}")
    issuer = table.get("issuer")
    if not isinstance(issuer, str):
        raise ConfigError(f"{key}.issuer: required, a string")
    _url(f"{key}.issuer", issuer)
    client_ids = _strings(f"{key}.client_ids", table.get("client_ids"), required=True)
    jwks_url = table.get("jwks_url")
    if jwks_url is not None:
        if not isinstance(jwks_url, str):
            raise ConfigError(f"{key}.jwks_url: must be a string")
        _url(f"{key}.jwks_url", jwks_url)
    algorithms = _strings(f"{key}.algorithms", table.get("algorithms", ["RS256"]), required=True)
    for algorithm in algorithms:
        if algorithm not in ALGORITHMS:
            raise ConfigError(
                f"{key}.algorithms: {algorithm!r} is not one of {', '.join(ALGORITHMS)}"
            )
    domains = _strings(f"{key}.email_domains", table.get("email_domains", []), required=False)
    for domain in domains:
        if not _DOMAIN.fullmatch(domain):
            raise ConfigError(f"{key}.email_domains: {domain!r} is not a lower-case domain name")
    logout = table.get("backchannel_logout", False)
    if not isinstance(logout, bool):
        raise ConfigError(f"{key}.backchannel_logout: must be true or false")
    return OidcProviderConfig(name, issuer, client_ids, jwks_url, algorithms, domains, logout)


def _close(name: str, known: frozenset[str] | set[str]) -> str:
    """ "; did you mean 'client_ids'?" for a near miss (as the environment's typo warning)."""
    close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _strings(key: str, value: Any, *, required: bool) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{key}: must be a list of non-empty strings")
    if required and not value:
        raise ConfigError(f"{key}: must not be empty")
    return tuple(dict.fromkeys(value))


def _url(key: str, value: str) -> None:
    try:
        check_url(value)
    except Invalid:
        raise ConfigError(f"{key}: must be an http(s) URL without query or fragment") from None
