"""Credentials in the configuration: the clients' shared secrets and the SMTP server's URL.

Both are parsed here once. Production asks more of them than development (docs/security.md,
"Secrets and mail"): each client secret must look machine-generated (`weakness`), and the
mail server must be reached over TLS, so that nobody on the path reads the login and the
verification links (`SmtpServer.encrypted`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qsl, unquote, urlsplit

from identity.environment import Invalid, entries

MIN_SECRET = 16  # characters, everywhere
PRODUCTION_SECRET = 32  # characters, in production
PRODUCTION_BITS = 128  # estimated, in production
_STRETCH = 4  # a shorter repeat or run happens by chance in random text
_CLIENT_ID = re.compile(r"^[A-Za-z0-9._~-]{1,128}$")
# Words that mark a secret typed as a placeholder. Six letters or more, so that a random
# secret contains one by chance less than once in a million.
_PLACEHOLDERS = (
    "change",
    "secret",
    "password",
    "passwd",
    "example",
    "sample",
    "placeholder",
    "default",
    "replace",
    "letmein",
    "qwerty",
)
_SMTP_FORMS = "must be smtp://[user:pass@]host[:port][?starttls=required], smtps://…, or off"


def clients(raw: str) -> dict[str, str]:
    """`id:secret,id2:secret2` (IDENTITY_CLIENTS) as a mapping of id to secret."""
    found: dict[str, str] = {}
    for item in entries(raw):
        client_id, sep, secret = item.partition(":")
        if not sep or not _CLIENT_ID.match(client_id):
            raise Invalid("each entry must be id:secret with a plain id")
        if len(secret) < MIN_SECRET:
            # Short shared secrets are guessable; refuse them rather than warn.
            raise Invalid(f"the secret of {client_id!r} is shorter than {MIN_SECRET}")
        if client_id in found:
            raise Invalid(f"client {client_id!r} is listed twice")
        found[client_id] = secret
    return found


def weakness(secret: str) -> str | None:
    """Why `secret` is too weak for production, in words that never quote it; None if fine.

    Nobody can measure the entropy of one string; this refuses what is plainly not random:
    under 32 characters, a placeholder's word, or under 128 bits by `estimated_bits`.
    """
    if len(secret) < PRODUCTION_SECRET:
        return f"shorter than {PRODUCTION_SECRET} characters"
    lowered = secret.lower()
    if any(word in lowered for word in _PLACEHOLDERS):
        return "it looks like a placeholder (it contains a word such as change, secret, example)"
    bits = estimated_bits(secret)
    if bits < PRODUCTION_BITS:
        return f"too predictable (about {int(bits)} bits estimated, {PRODUCTION_BITS} needed)"
    return None


def estimated_bits(secret: str) -> float:
    """A deliberately simple estimate of a secret's entropy, in bits.

    Each character is worth log2 of the alphabet its character classes span (lower case 26,
    upper case 26, digits 10, anything else 33), except that a stretch of four or more that
    repeats an earlier one (`abcdabcd`) or runs with a fixed step of -1, 0 or +1 (`aaaa`,
    `1234`, `zyxw`) is worth one character as a whole. `openssl rand -hex 16` gives 140 to 165
    bits; `Tr0ub4dor&3` three times, about 80.
    """
    sample = secret[:256]  # plenty to decide; keeps the quadratic search short
    classes = (str.islower, str.isupper, str.isdigit)
    sizes = [26, 26, 10]
    pool = sum(size for test, size in zip(classes, sizes, strict=True) if any(map(test, sample)))
    if any(not (c.islower() or c.isupper() or c.isdigit()) for c in sample):
        pool += 33
    tokens = 0
    i = 0
    while i < len(sample):
        i += max(_run(sample, i), _repeat(sample, i), 1)
        tokens += 1
    return tokens * math.log2(max(pool, 2))


def _run(s: str, i: int) -> int:
    """The length of the run at `i` stepping by -1, 0 or +1 (0 if shorter than _STRETCH)."""
    if i + 2 >= len(s):
        return 0
    step = ord(s[i + 1]) - ord(s[i])
    if step not in (-1, 0, 1):
        return 0
    end = i + 1
    while end + 1 < len(s) and ord(s[end + 1]) - ord(s[end]) == step:
        end += 1
    length = end - i + 1
    return length if length >= _STRETCH else 0


def _repeat(s: str, i: int) -> int:
    """The longest stretch at `i` that also began earlier (0 if shorter than _STRETCH)."""
    length = 0
    while i + length < len(s) and s.find(s[i : i + length + 1], 0, i + length) != -1:
        length += 1
    return length if length >= _STRETCH else 0


@dataclass(frozen=True)
class SmtpServer:
    """IDENTITY_SMTP_URL parsed: where to connect, the login, and how TLS is used.

    `implicit` (smtps://) is TLS from the first byte; `required` (smtp://…?starttls=required)
    upgrades with STARTTLS or fails before anything is sent; `opportunistic` (plain smtp://)
    upgrades only when the server offers it, so whoever can strip the offer reads everything.
    """

    host: str
    port: int
    username: str | None
    password: str | None
    tls: Literal["implicit", "required", "opportunistic"]

    @property
    def encrypted(self) -> bool:
        return self.tls != "opportunistic"


def smtp_server(value: str) -> SmtpServer:
    """Parse an SMTP URL; the error never quotes it (it may carry a password)."""
    parts = urlsplit(value)
    try:
        port = parts.port
    except ValueError:
        raise Invalid(_SMTP_FORMS) from None
    if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
        raise Invalid(_SMTP_FORMS)
    if parts.path not in ("", "/") or parts.fragment:
        raise Invalid(_SMTP_FORMS)
    try:
        query = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError:
        raise Invalid(_SMTP_FORMS) from None
    names = [name for name, _ in query]
    for name in names:
        if name != "starttls":
            # An option we do not know might be one the operator believes protects the mail.
            raise Invalid(f"unknown parameter {name!r} (the only one is starttls=required)")
    if len(names) > 1:
        raise Invalid("starttls is given twice")
    required = bool(query)
    if required and (query[0][1] != "required" or parts.scheme == "smtps"):
        raise Invalid("starttls=required is its only form, and only with smtp://")
    implicit = parts.scheme == "smtps"
    return SmtpServer(
        host=parts.hostname,
        port=port or (465 if implicit else 25),
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        tls="implicit" if implicit else "required" if required else "opportunistic",
    )


def weak_clients(secrets: Mapping[str, str]) -> list[str]:
    """One problem per client whose secret production refuses, naming the client only."""
    return [
        f"IDENTITY_CLIENTS: the secret of {client_id!r} is too weak for production: {reason}; "
        "generate one with `openssl rand -hex 32`"
        for client_id, secret in secrets.items()
        if (reason := weakness(secret)) is not None
    ]
