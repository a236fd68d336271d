"""The claim checker shared by every token we accept, a provider's id_token or our access token.

Shaped like joserfc's `JWTClaimsRegistry`: decoding a token checks no claim; a `ClaimRules`
object built once with the issuers, audiences, leeway and maximum age then checks a decoded
payload at a given `now`. Provider quirks (hd, tid, Apple's booleans, the nonce) are checked on
top of this by the provider descriptions in `providers.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from identity.errors import TokenRejected

MAX_SUBJECT_LENGTH = 255
# Times are seconds since 1970 as JSON integers. 2^53 is the largest every JSON reader holds
# exactly (a double's integers); past it, or below 0, a time is nonsense, and a huge one once
# overflowed the date arithmetic behind it (a 500 instead of a refusal).
MAX_TIME = 2**53
# No token we accept lives longer than a day (ours live at most IDENTITY_ACCESS_TOKEN_TTL, a day
# at most); a longer one is a mistake or a forgery meant to outlive every key rotation.
MAX_LIFETIME = 86_400


@dataclass(frozen=True, slots=True)
class Checked:
    """What every accepted token has: its subject and times."""

    subject: str
    issued_at: int
    expires_at: int


@dataclass(frozen=True)
class ClaimRules:
    # None: the caller has matched `iss` itself (Microsoft's per-tenant issuer template).
    issuers: frozenset[str] | None
    audiences: frozenset[str]
    # "all": every `aud` member must be ours (a provider's token meant for another party too is
    # refused); "any": our audience is among them (a resource server checking our token).
    audience_mode: Literal["all", "any"]
    leeway: int
    max_age: int | None = None  # iat not older than this (provider tokens)
    check_azp: bool = False  # `azp`, when present, must be one of the audiences

    def check(self, claims: dict[str, Any], now: float) -> Checked:
        # NOTE: exact string match; no normalisation of case, trailing slashes or scheme.
        if self.issuers is not None and claims.get("iss") not in self.issuers:
            raise TokenRejected("bad_issuer")
        self._check_audience(claims.get("aud"))
        if self.check_azp and "azp" in claims and claims["azp"] not in self.audiences:
            raise TokenRejected("bad_azp")
        exp = _time(claims, "exp")
        iat = _time(claims, "iat")
        if exp - iat > MAX_LIFETIME:
            raise TokenRejected("lifetime_too_long")
        leeway = self.leeway
        if exp + leeway <= now:
            raise TokenRejected("expired")
        if iat - leeway > now:
            raise TokenRejected("issued_in_future")
        if self.max_age is not None and now - iat > self.max_age + leeway:
            raise TokenRejected("too_old")
        if "nbf" in claims and _time(claims, "nbf") - leeway > now:
            raise TokenRejected("not_yet_valid")
        sub = claims.get("sub")
        # Printable text only: a NUL or a lone surrogate would reach the database as input.
        if (
            not isinstance(sub, str)
            or not 0 < len(sub) <= MAX_SUBJECT_LENGTH
            or not sub.isprintable()
        ):
            raise TokenRejected("bad_subject")
        return Checked(subject=sub, issued_at=iat, expires_at=exp)

    def _check_audience(self, aud: object) -> None:
        if isinstance(aud, str):
            members = [aud]
        elif isinstance(aud, list) and aud and all(isinstance(a, str) for a in aud):
            members = aud
        else:
            raise TokenRejected("bad_audience")
        ours = [a in self.audiences for a in members]
        if not (all(ours) if self.audience_mode == "all" else any(ours)):
            raise TokenRejected("bad_audience")


def _time(claims: dict[str, Any], name: str) -> int:
    if name not in claims:
        raise TokenRejected(f"missing_{name}")
    value = claims[name]
    # A JSON integer only: bool is an int in Python, and a fraction or a string is not a time.
    if type(value) is not int or not 0 <= value <= MAX_TIME:
        raise TokenRejected(f"bad_{name}")
    return value
