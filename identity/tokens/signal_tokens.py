"""Verifying a provider's security events: Google's SETs, Apple's notifications, logout tokens.

Each is checked like an id_token (docs/signals.md), on the same code path as `id_tokens.py`:

    parse (jws, strict)  ->  typ where the kind has one  ->  alg allowed for the provider
    ->  its key, by kid, from the provider's own key-set cache  ->  signature
    ->  exact iss  ->  aud among the provider's client ids  ->  iat bounded  ->  jti
    ->  the kind's own claims (events; a logout token's sub/sid and no nonce)

The provider is the one the endpoint names, never one chosen from the token. SETs carry no
`exp`: `iat` is bounded instead, no further in the future than the clock skew and no older than
IDENTITY_SIGNAL_MAX_AGE; the `jti` is then remembered that long (accounts/signals.py).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Literal, overload

from identity.clock import Clock, utc
from identity.errors import TokenRejected

from . import jws
from .claims import MAX_SUBJECT_LENGTH, MAX_TIME
from .keysets import KeySetCache
from .providers import Provider

Kind = Literal["set", "apple", "logout"]
BACKCHANNEL_LOGOUT = "http://schemas.openid.net/event/backchannel-logout"
MAX_JTI = 255
# A jti record outlives the event's acceptance by this much: replicas' clocks may disagree.
REPLAY_MARGIN = 300
# `typ` per kind: None (absent) is accepted. A SET's is RFC 8417's; Google documents none, and
# a plain "JWT" says nothing either way. A logout token's is OIDC Back-Channel Logout's. Any
# other type (an access token's "at+jwt", a SET offered as a logout token) is refused.
_TYPES: dict[Kind, frozenset[str | None]] = {
    "set": frozenset({None, "secevent+jwt", "application/secevent+jwt", "jwt"}),
    "logout": frozenset({None, "logout+jwt", "application/logout+jwt"}),
    "apple": frozenset({None, "jwt"}),
}


@dataclass(frozen=True, slots=True)
class Signal:
    """A security event token that passed every rule."""

    provider: str
    kind: Kind
    jti: str
    issued_at: int
    keep_until: datetime  # how long its jti is remembered
    events: dict[str, Any]  # event type -> its object (Apple's: {type: object})
    subject: str | None = None  # a logout token's `sub`
    sid: str | None = None  # a logout token's `sid`


class SignalVerifier:
    def __init__(
        self,
        providers: Sequence[Provider],
        key_sets: Mapping[str, KeySetCache],
        *,
        google_issuer: str,
        clock: Clock = time.time,
        leeway: int = 60,
        max_age: int = 604_800,
    ) -> None:
        self._providers = {p.name: p for p in providers}
        self._keys = key_sets
        self._google_issuer = google_issuer
        self._clock = clock
        self._leeway = leeway
        self._max_age = max_age

    def receives(self, provider: str, kind: Kind) -> bool:
        """Whether this receiver is live: its provider configured (and, for logout tokens,
        back-channel logout turned on for it)."""
        found = self._providers.get(provider)
        if found is None:
            return False
        if kind == "logout":
            return found.backchannel_logout
        return provider == {"set": "google", "apple": "apple"}[kind]

    async def verify(self, token: object, *, provider: str, kind: Kind) -> Signal:
        """The signal, or TokenRejected (the rule broken is its `reason`); KeysUnavailable when
        the provider's keys cannot be had (the sender retries)."""
        chosen = self._providers.get(provider)
        if chosen is None:
            raise TokenRejected("unknown_provider")
        compact = jws.parse(token)
        typ = compact.header.get("typ")
        if typ is not None and not isinstance(typ, str):
            raise TokenRejected("bad_typ")
        if (typ.lower() if typ else None) not in _TYPES[kind]:
            raise TokenRejected("bad_typ")
        if compact.alg not in chosen.algorithms:
            raise TokenRejected("bad_alg")
        key = await self._keys[chosen.name].get(compact.kid, compact.alg)
        jws.verify(compact, key)
        claims = compact.claims()
        self._check_issuer(chosen, kind, claims)
        _check_audience(chosen, claims.get("aud"))
        issued_at = self._check_times(claims)
        jti = claims.get("jti")
        if not isinstance(jti, str) or not 0 < len(jti) <= MAX_JTI or not jti.isprintable():
            raise TokenRejected("bad_jti")
        keep_until = utc(issued_at + self._max_age + 2 * self._leeway + REPLAY_MARGIN)
        signal = Signal(chosen.name, kind, jti, issued_at, keep_until, {})
        if kind == "apple":
            return _apple(signal, claims)
        if kind == "logout":
            return _logout(signal, claims)
        return _set(signal, claims)

    def _check_issuer(self, provider: Provider, kind: Kind, claims: dict[str, Any]) -> None:
        iss = claims.get("iss")
        if not isinstance(iss, str):
            raise TokenRejected("bad_issuer")
        # Exact match, no normalisation: Google's RISC issuer is its own setting.
        expected = iss == self._google_issuer if kind == "set" else provider.issued(iss, claims)
        if not expected:
            raise TokenRejected("bad_issuer")

    def _check_times(self, claims: dict[str, Any]) -> int:
        now = self._clock()
        iat = _time(claims, "iat", required=True)
        if iat - self._leeway > now:
            raise TokenRejected("issued_in_future")
        if now - iat > self._max_age + self._leeway:
            raise TokenRejected("too_old")
        exp = _time(claims, "exp", required=False)  # a logout token's, when it has one
        if exp is not None and exp + self._leeway <= now:
            raise TokenRejected("expired")
        return iat


def _check_audience(provider: Provider, aud: object) -> None:
    members = [aud] if isinstance(aud, str) else aud
    if not isinstance(members, list) or not members:
        raise TokenRejected("bad_audience")
    # One of ours among them: an event about a shared subject may name several of our clients.
    if not any(isinstance(a, str) and a in provider.audiences for a in members):
        raise TokenRejected("bad_audience")
    if not all(isinstance(a, str) for a in members):
        raise TokenRejected("bad_audience")


@overload
def _time(claims: dict[str, Any], name: str, *, required: Literal[True]) -> int: ...
@overload
def _time(claims: dict[str, Any], name: str, *, required: bool) -> int | None: ...
def _time(claims: dict[str, Any], name: str, *, required: bool) -> int | None:
    if name not in claims:
        if required:
            raise TokenRejected(f"missing_{name}")
        return None
    value = claims[name]
    # A JSON integer only, within what every reader holds exactly (as for id_tokens).
    if type(value) is not int or not 0 <= value <= MAX_TIME:
        raise TokenRejected(f"bad_{name}")
    return value


def _text(value: object, limit: int = MAX_SUBJECT_LENGTH) -> str | None:
    """Printable text of 1..limit characters, else None."""
    if isinstance(value, str) and 0 < len(value) <= limit and value.isprintable():
        return value
    return None


def _events(claims: dict[str, Any]) -> dict[str, Any]:
    events = claims.get("events")
    # RFC 8417 §2.2: a JSON object of event types, each with a JSON object.
    if not isinstance(events, dict) or not events:
        raise TokenRejected("bad_events")
    if not all(_text(k, 512) and isinstance(v, dict) for k, v in events.items()):
        raise TokenRejected("bad_events")
    return events


def _set(signal: Signal, claims: dict[str, Any]) -> Signal:
    return _with(signal, events=_events(claims))


def _logout(signal: Signal, claims: dict[str, Any]) -> Signal:
    # OIDC Back-Channel Logout 1.0 §2.6: the logout event, sub and/or sid, and never a nonce
    # (an id_token, which has one, must not pass for a logout token).
    if "nonce" in claims:
        raise TokenRejected("nonce_present")
    events = _events(claims)
    if BACKCHANNEL_LOGOUT not in events:
        raise TokenRejected("not_a_logout_token")
    subject = claims.get("sub")
    sid = claims.get("sid")
    if subject is not None and _text(subject) is None:
        raise TokenRejected("bad_subject")
    if sid is not None and _text(sid) is None:
        raise TokenRejected("bad_sid")
    if subject is None and sid is None:
        raise TokenRejected("no_subject_or_sid")
    return _with(
        signal, events={BACKCHANNEL_LOGOUT: events[BACKCHANNEL_LOGOUT]}, subject=subject, sid=sid
    )


def _apple(signal: Signal, claims: dict[str, Any]) -> Signal:
    events = claims.get("events")
    # Apple's real notifications carry `events` as a JSON string holding the object; some
    # examples show the object itself. Both are read, the string as strictly as a payload.
    if isinstance(events, str):
        if len(events) > jws.MAX_TOKEN_BYTES:
            raise TokenRejected("bad_events")
        try:
            # surrogatepass: a lone surrogate reaches the strict reader and is refused there.
            events = jws.strict_json(events.encode("utf-8", "surrogatepass"))
        except TokenRejected:
            raise TokenRejected("bad_events") from None
    if not isinstance(events, dict) or _text(events.get("type"), 64) is None:
        raise TokenRejected("bad_events")
    if _text(events.get("sub")) is None:
        raise TokenRejected("bad_subject")
    return _with(signal, events={events["type"]: events}, subject=events["sub"])


def _with(signal: Signal, **changes: Any) -> Signal:
    return replace(signal, **changes)
