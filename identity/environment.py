"""Reading configuration variables: the development `.env` file, the field metadata that names
each setting's variable and parser, the reading itself, and typo detection.

A setting is declared once, as a field of `Settings` made with `setting(name, default, parse)`.
`read` applies every field's parser to its variable and collects every problem instead of
stopping at the first. A variable in the environment that no setting reads is a typo, reported
with the closest known name (docs/configuration.md).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import difflib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

from dotenv import dotenv_values
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

PREFIX = "IDENTITY_"
DOTENV = ".env"
_VARIABLE = "identity.variable"  # the field metadata key
D = TypeVar("D")
P = TypeVar("P")


class ConfigError(Exception):
    """One or more configuration problems, each naming its variable (or file and key).

    `problems` holds them one per item; `str()` joins them for a single log line.
    """

    def __init__(self, *problems: str) -> None:
        super().__init__("; ".join(problems))
        self.problems: tuple[str, ...] = problems


class Invalid(ValueError):
    """A parser's complaint about one value; the reader puts the variable's name in front."""


@dataclass(frozen=True)
class Variable:
    """Where a setting comes from: its variable, and the parser of a set (non-blank) value."""

    name: str
    parse: Callable[[str], Any]


def setting(name: str, default: D, parse: Callable[[str], P]) -> D | P:
    """A `Settings` field read from variable `name`: unset or blank gives `default`."""
    metadata = {_VARIABLE: Variable(name, parse)}
    if isinstance(default, dict):
        # One dict shared by every instance would be a trap; each gets its own copy.
        factory = cast(Callable[[], D], lambda: dict(default))
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def variable_of(field: dataclasses.Field[Any]) -> Variable | None:
    found = field.metadata.get(_VARIABLE)
    return found if isinstance(found, Variable) else None


class Environment(dict[str, str]):
    """The variables to read; `from_file` names those that came from the `.env` file."""

    def __init__(self, values: Mapping[str, str], from_file: Iterable[str] = ()) -> None:
        super().__init__(values)
        self.from_file = frozenset(from_file)


def load(environ: Mapping[str, str], directory: Path) -> Environment:
    """The environment, plus `directory/.env` in development (the environment wins).

    Production reads only the real environment: there the deployment is the truth, and a stray
    file in the working directory must not change what runs.
    """
    merged = dict(environ)
    if environ.get("IDENTITY_ENV", "").strip().lower() == "production":
        return Environment(merged)
    path = directory / DOTENV
    if not path.is_file():
        return Environment(merged)
    try:
        values = dotenv_values(path)
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: cannot be read ({type(error).__name__})") from None
    from_file = set()
    for name, value in values.items():
        if value is not None and name not in merged:
            merged[name] = value
            from_file.add(name)
    if merged.get("IDENTITY_ENV", "").strip().lower() == "production":
        # A file can turn development conveniences on, never production strictness off.
        raise ConfigError(f"{path}: IDENTITY_ENV=production must come from the environment")
    return Environment(merged, from_file)


@dataclass
class Reading:
    """What `read` found: the values of the variables that are set, and every problem."""

    values: dict[str, Any]
    problems: list[str]
    failed: set[str]  # variables whose value could not be parsed


def read(fields: Iterable[dataclasses.Field[Any]], environ: Mapping[str, str]) -> Reading:
    """Parse every field's variable that is set (non-blank) in `environ`."""
    reading = Reading({}, [], set())
    for field in fields:
        variable = variable_of(field)
        if variable is None:
            continue
        raw = environ.get(variable.name, "").strip()
        if not raw:
            continue
        try:
            reading.values[field.name] = variable.parse(raw)
        except Invalid as error:
            reading.problems.append(f"{variable.name}: {error}")
            reading.failed.add(variable.name)
    return reading


def attribute(problem: str, environ: Mapping[str, str]) -> str:
    """`problem` with "(from .env)" after its variable's name when the file set that variable."""
    name, colon, rest = problem.partition(":")
    if colon and isinstance(environ, Environment) and name in environ.from_file:
        return f"{name} (from {DOTENV}):{rest}"
    return problem


def unknown_variables(
    environ: Mapping[str, str], known: Iterable[str]
) -> list[tuple[str, str | None]]:
    """IDENTITY_* names no setting reads, each with the closest known name (or None)."""
    # Compared without the shared prefix, which would make every name look alike.
    names = set(known)
    suffixes = {name.removeprefix(PREFIX): name for name in names if name.startswith(PREFIX)}
    found = []
    for name in sorted(environ):
        if name.startswith(PREFIX) and name not in names:
            close = difflib.get_close_matches(name.removeprefix(PREFIX), suffixes, n=1, cutoff=0.75)
            found.append((name, suffixes[close[0]] if close else None))
    return found


# -- parsers of one value: each returns the typed value or raises Invalid ------------------------

_PERIODS = {"second": 1, "minute": 60, "hour": 3600, "day": 86_400}


@dataclass(frozen=True)
class RateLimit:
    """At most `count` events per `period` seconds."""

    count: int
    period: int


def text(raw: str) -> str:
    return raw


def path(raw: str) -> Path:
    return Path(raw)


def choice(*allowed: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if raw.lower() not in allowed:
            raise Invalid(f"must be one of {', '.join(allowed)} (got {raw!r})")
        return raw.lower()

    return parse


def integer(low: int, high: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        if not re.fullmatch(r"[0-9]+", raw):
            raise Invalid(f"must be a whole number (got {raw!r})")
        value = int(raw)
        if not low <= value <= high:
            raise Invalid(f"must be between {low} and {high} (got {value})")
        return value

    return parse


def boolean(raw: str) -> bool:
    lowered = raw.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise Invalid(f"must be 1 or 0 (got {raw!r})")


def entries(raw: str) -> tuple[str, ...]:
    """Comma-separated values, trimmed, in order, repeats kept."""
    return tuple(item.strip() for item in raw.split(",") if item.strip())


def items(raw: str) -> tuple[str, ...]:
    """Comma-separated values, trimmed, repeats merged."""
    return tuple(dict.fromkeys(entries(raw)))


def lowered_items(raw: str) -> tuple[str, ...]:
    return items(raw.lower())


def url(raw: str) -> str:
    check_url(raw)
    return raw


def base_url(raw: str) -> str:
    """A URL that others are appended to: its trailing `/` is dropped."""
    return url(raw).rstrip("/")


def urls(raw: str) -> tuple[str, ...]:
    values = items(raw)
    for value in values:
        check_url(value)
    return values


def rate(raw: str) -> RateLimit | None:
    if raw == "0":
        return None
    match = re.fullmatch(r"(\d+)\s*/\s*(second|minute|hour|day)", raw)
    if match is None or int(match.group(1)) == 0:
        raise Invalid(f"must be N/second, N/minute, N/hour, N/day or 0 (got {raw!r})")
    return RateLimit(int(match.group(1)), _PERIODS[match.group(2)])


def check_url(value: str) -> None:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Invalid(f"must be an http(s) URL (got {value!r})")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise Invalid("must not have a query, fragment or user:password part")


_DRIVERS = {
    # Spellings platforms hand out, for the one driver we run each database with.
    "postgres": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
}


def database_driver_url(value: str) -> str:
    try:
        drivername = make_url(value).drivername
    except ArgumentError:
        raise Invalid("not a database URL") from None
    driver = _DRIVERS.get(drivername)
    if driver is None:
        raise Invalid(
            f"use postgresql+asyncpg://user:pass@host/db or sqlite+aiosqlite:///path "
            f"(got {drivername!r})"
        )
    # Only the scheme changes: the rest (password, options) stays exactly as written.
    return driver + value[value.index(":") :]


def address(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9.-]{1,253}", value):
        raise Invalid("must be a plain address like identity@example.com")
    return value


def fernet_keys(raw: str) -> tuple[str, ...]:
    keys = items(raw)
    for key in keys:
        try:
            decoded = base64.urlsafe_b64decode(key.encode())
        except (binascii.Error, ValueError):
            decoded = b""
        if len(decoded) != 32:
            # Refuse anything but a real Fernet key: a typo must not disable encryption.
            raise Invalid(
                "each key must be a Fernet key (python -c 'from cryptography.fernet import "
                "Fernet; print(Fernet.generate_key().decode())')"
            )
    return keys
