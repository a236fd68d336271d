"""Reading configuration variables: typed parsing, the development `.env` file, typo detection.

`Reader` parses one variable per call and remembers every name it was asked for, so the set of
known variables is whatever `Settings.from_env` reads: a variable in the environment that no
setting reads is a typo, reported with the closest known name (docs/configuration.md).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from dotenv import dotenv_values

PREFIX = "IDENTITY_"
_PERIODS = {"second": 1, "minute": 60, "hour": 3600, "day": 86_400}


class ConfigError(Exception):
    """A configuration value is invalid; the message names the variable (or file and key)."""


@dataclass(frozen=True)
class RateLimit:
    """At most `count` events per `period` seconds."""

    count: int
    period: int


def load(environ: Mapping[str, str], directory: Path) -> dict[str, str]:
    """The environment, plus `directory/.env` in development (the environment wins).

    Production reads only the real environment: there the deployment is the truth, and a stray
    file in the working directory must not change what runs.
    """
    merged = dict(environ)
    if environ.get("IDENTITY_ENV", "").strip().lower() == "production":
        return merged
    path = directory / ".env"
    if not path.is_file():
        return merged
    try:
        values = dotenv_values(path)
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: cannot be read ({type(error).__name__})") from None
    for name, value in values.items():
        if value is not None and name not in merged:
            merged[name] = value
    if merged.get("IDENTITY_ENV", "").strip().lower() == "production":
        # A file can turn development conveniences on, never production strictness off.
        raise ConfigError(f"{path}: IDENTITY_ENV=production must come from the environment")
    return merged


def unknown_variables(environ: Mapping[str, str], known: set[str]) -> list[tuple[str, str | None]]:
    """IDENTITY_* names no setting reads, each with the closest known name (or None)."""
    # Compared without the shared prefix, which would make every name look alike.
    suffixes = {name.removeprefix(PREFIX): name for name in known if name.startswith(PREFIX)}
    found = []
    for name in sorted(environ):
        if name.startswith(PREFIX) and name not in known:
            close = difflib.get_close_matches(name.removeprefix(PREFIX), suffixes, n=1, cutoff=0.75)
            found.append((name, suffixes[close[0]] if close else None))
    return found


class Reader:
    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ
        self.names: set[str] = set()

    def optional(self, name: str) -> str | None:
        self.names.add(name)
        value = self._environ.get(name, "").strip()
        return value or None

    def text(self, name: str, default: str) -> str:
        return self.optional(name) or default

    def choice(self, name: str, default: str | None, allowed: tuple[str, ...]) -> str | None:
        raw = self.optional(name)
        if raw is None:
            return default
        value = raw.lower()
        if value not in allowed:
            raise ConfigError(f"{name}: must be one of {', '.join(allowed)} (got {raw!r})")
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

    def items(self, name: str, default: str = "", *, merge: bool = True) -> tuple[str, ...]:
        """Comma-separated values, trimmed; repeats merged unless `merge` is False."""
        raw = self.optional(name) or default
        values = tuple(item.strip() for item in raw.split(",") if item.strip())
        return tuple(dict.fromkeys(values)) if merge else values

    def url(self, name: str, default: str) -> str:
        value = self.text(name, default)
        check_url(name, value)
        return value

    def optional_url(self, name: str) -> str | None:
        value = self.optional(name)
        if value is not None:
            check_url(name, value)
        return value

    def urls(self, name: str, default: str = "") -> tuple[str, ...]:
        values = self.items(name, default)
        for value in values:
            check_url(name, value)
        return values

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


def check_url(name: str, value: str) -> None:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{name}: must be an http(s) URL (got {value!r})")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ConfigError(f"{name}: must not have a query, fragment or user:password part")
