"""Email addresses: the one syntax every address must have, from a provider or a user.

A plain `local@domain` (docs/security.md, "Addresses"): ASCII only, checked before lower-casing
(so no Unicode character can fold into another address, like the Kelvin sign into `k`); the
local part a dot-atom without quotes, commas, spaces, angle brackets, `%` or `!` (the last two
route mail through relays); the domain two or more host-name labels. At most 254 characters.
Anything else is not an address: from a provider it is dropped, from a user it is a 400.
"""

from __future__ import annotations

import re

MAX_LENGTH = 254
_ATOM = r"[a-z0-9#$&'*+/=?^_`{|}~-]+"
_LOCAL = re.compile(rf"{_ATOM}(?:\.{_ATOM})*")
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_DOMAIN = re.compile(rf"(?:{_LABEL}\.)+(?!\d+$){_LABEL}")


def normalize(value: object) -> str | None:
    """The address trimmed and lower-cased, or None when it is not a plain address."""
    if not isinstance(value, str) or not value.isascii():
        return None
    address = value.strip().lower()
    local, sep, domain = address.partition("@")
    if (
        not sep
        or len(address) > MAX_LENGTH
        or len(local) > 64
        or not _LOCAL.fullmatch(local)
        or not _DOMAIN.fullmatch(domain)
    ):
        return None
    return address


def domain_of(address: str) -> str:
    return address.rpartition("@")[2]
