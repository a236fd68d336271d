"""Rate limits, counted in the database so every worker and replica counts together.

A fixed-window counter per key: `INSERT … ON CONFLICT DO UPDATE SET count = count + 1 RETURNING
count`, atomic on PostgreSQL and SQLite alike, and the decision is made on the count that
increment returned, so a concurrent burst gets at most the limit through.

The failure limit (IDENTITY_RATE_LIMIT_FAILURES, docs/security.md "Rate limits") is keyed so one
user's broken session never locks out the others behind the same web server:
- a request without client authentication, or whose client authentication failed: its IP
  (an IPv6 address by its /64). On a route that authenticates clients (and the admin API) that
  IP is checked *before* the credentials are: past the limit every request from it gets 429,
  the right secret's too, so no answer tells a right secret from a wrong one;
- a request of an authenticated client: (client, subject), the subject being the provider
  account or user the request is about, or the presented token's fingerprint;
- a Bearer request: its verified user (client, `sub`); only a missing or invalid token counts
  per IP, under a key of its own (a web server relaying expired tokens never locks its
  clients' /token).
A key past the limit gets 429 until its window ends. The success path reads nothing for it: the
subject check runs inside the grant's own statement, a Bearer user's is answered from memory
(keys this process saw pass the limit), and IP checks are answered from a cache (keys known
locked until their window ends, keys known under the limit for one second).

`Attempt` is one guarded request: its handler tells it who the request is about, and it alone
decides which key that is; the web layer's `FailureLimit` checks and counts it around the route.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import time
from dataclasses import dataclass
from typing import Protocol

from identity.clock import Clock, utc
from identity.environment import RateLimit
from identity.errors import RateLimited, TemporarilyUnavailable
from identity.store.database import Database, Sql
from identity.store.functions import Arguments

INCREMENT = """
INSERT INTO rate_limits (key, window_start, count, expires_at) VALUES ($1, $2, 1, $3)
ON CONFLICT (key, window_start) DO UPDATE SET count = rate_limits.count + 1
RETURNING count
"""
COUNT = "SELECT count FROM rate_limits WHERE key = $1 AND window_start = $2"
UNDER_LIMIT_FOR = 1.0  # seconds an IP key known to be under the limit is not read again
_CACHE_SIZE = 10_000


@dataclass(frozen=True, slots=True)
class Window:
    limit: RateLimit
    start: int
    now: float

    @property
    def ends(self) -> int:
        return self.start + self.limit.period

    @property
    def retry_after(self) -> int:
        return max(1, math.ceil(self.ends - self.now))


class Limited(Protocol):
    """A request that carries the failure limit's window and the user's success budget."""

    @property
    def lock(self) -> Window | None: ...

    @property
    def budget(self) -> Window | None: ...


# The two windows as the hot-path functions take them (identity_sign_in, identity_refresh).
WINDOW_ARGUMENTS: Arguments[Limited] = (
    ("p_lock_limit", lambda r: r.lock.limit.count if r.lock else None),
    ("p_lock_window", lambda r: r.lock.start if r.lock else None),
    ("p_budget_limit", lambda r: r.budget.limit.count if r.budget else None),
    ("p_budget_window", lambda r: r.budget.start if r.budget else None),
    ("p_budget_expires", lambda r: utc(r.budget.ends) if r.budget else None),
)


class Counter:
    """One rate limit's windows (the subject and mail limits, and the failure limit)."""

    def __init__(self, limit: RateLimit | None, *, clock: Clock = time.time) -> None:
        self.limit = limit
        self._clock = clock

    def window(self) -> Window | None:
        if self.limit is None:
            return None
        now = self._clock()
        return Window(self.limit, int(now // self.limit.period * self.limit.period), now)

    async def increment(self, sql: Sql, key: str) -> tuple[int, Window] | None:
        """Count one event for `key` on `sql`: the window's count with it, and the window."""
        window = self.window()
        if window is None:
            return None
        row = await sql.fetchone(INCREMENT, key[:200], window.start, utc(window.ends))
        return int(row["count"]), window

    async def hit(self, sql: Sql, key: str) -> RateLimited | None:
        """Count one event for `key`; the 429 to answer when that went past the limit."""
        counted = await self.increment(sql, key)
        if counted is not None and counted[0] > counted[1].limit.count:
            return RateLimited(
                "too many requests; try again later", retry_after=counted[1].retry_after
            )
        return None


async def reached(sql: Sql, key: str, window: Window) -> bool:
    """Whether `key` has reached its limit in `window` (for checks inside a grant's statement)."""
    row = await sql.fetchrow(COUNT, key[:200], window.start)
    return row is not None and row["count"] >= window.limit.count


async def over_budget(sql: Sql, user_id: str, budget: Window | None) -> bool:
    """Count one success against the user's IDENTITY_RATE_LIMIT_SUBJECT; whether it is over.
    (SQLite's grants; the PostgreSQL functions count it themselves.)"""
    if budget is None:
        return False
    row = await sql.fetchone(INCREMENT, f"user:{user_id}", budget.start, utc(budget.ends))
    return bool(row["count"] > budget.limit.count)


def ip_key(address: str | None) -> str:
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return "fail:ip:unknown"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return f"fail:ip:{ip.ipv4_mapped}"
        # One IPv6 host holds a whole /64: per-address keys would be free to rotate.
        return f"fail:ip:{ipaddress.IPv6Network((ip, 64), strict=False)}"
    return f"fail:ip:{ip}"


def subject_key(client: str, subject: str) -> str:
    kind, _, value = subject.partition(":")
    if kind == "user":
        # User ids are opaque random strings: short, not personal, and a statement can build
        # this key itself from the row it finds (see `user_key_prefix`).
        return f"{user_key_prefix(client)}{value}"
    # Anything else hashed: bounded in length, and no account key or token sits in the table.
    digest = hashlib.sha256(subject.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return f"fail:{client}:{kind}:{digest}"


def user_key_prefix(client: str) -> str:
    return f"fail:{client}:user:"


def bearer_key(client: str, subject: str) -> str:
    """A Bearer caller's key: apart from its grants' key, so mistakes on /users/me never stop
    the user's refreshes."""
    return f"fail:{client}:me:{subject}"


def bearer_ip_key(address: str | None) -> str:
    """A missing or invalid Bearer token's key: per IP, apart from failed client authentication."""
    return "fail:bearer:" + ip_key(address).removeprefix("fail:")


class FailureGuard:
    def __init__(self, database: Database, limit: RateLimit | None, *, clock: Clock = time.time):
        self.counter = Counter(limit, clock=clock)
        self._db = database
        self._clock = clock
        self._locked: dict[str, float] = {}  # key -> window end
        self._under: dict[str, float] = {}  # key -> when it was seen under the limit
        # key -> (window start, failures this process answered in it), counted before the
        # database is: failures still being written lock the key here at once (`fail`).
        self._tally: dict[str, tuple[int, int]] = {}

    @property
    def enabled(self) -> bool:
        return self.counter.limit is not None

    async def check(self, key: str) -> None:
        """RateLimited when `key` is past the limit (cached; at most one read a second)."""
        window = self.counter.window()
        if window is None:
            return
        now = window.now
        if self._locked.get(key, 0.0) > now:
            raise self._refusal(window)
        if now - self._under.get(key, float("-inf")) < UNDER_LIMIT_FOR:
            return
        row = await self._db.fetchrow(COUNT, key[:200], window.start)
        if row is not None and row["count"] >= window.limit.count:
            self._remember(self._locked, key, window.ends)
            raise self._refusal(window)
        self._remember(self._under, key, now)

    async def fail(self, key: str) -> RateLimited | None:
        """Count one failure of `key`; the 429 to send instead when that passed the limit."""
        # Counted here before anything is awaited: a burst of concurrent guesses all past the
        # check while their failures are still being written would otherwise all be judged,
        # and a right secret among them answered. In memory, so it costs a success nothing.
        self._tally_here(key)
        return await self._count(key)

    async def _count(self, key: str) -> RateLimited | None:
        try:
            async with self._db.hot() as sql:
                counted = await self.counter.increment(sql, key)
        except TemporarilyUnavailable:
            return None  # the database is down: counting is best effort, the answer stands
        if counted is None:
            return None
        count, window = counted
        self._under.pop(key, None)
        if count >= window.limit.count:  # from now on this key is refused, here at once
            self._remember(self._locked, key, window.ends)
        return self._refusal(window) if count > window.limit.count else None

    def _tally_here(self, key: str) -> None:
        window = self.counter.window()
        if window is None:
            return
        self._under.pop(key, None)
        start, seen = self._tally.get(key, (window.start, 0))
        seen = seen + 1 if start == window.start else 1
        if len(self._tally) >= _CACHE_SIZE:
            self._tally.clear()  # bounded memory; the database stays the truth
        self._tally[key] = (window.start, seen)
        if seen >= window.limit.count:
            self._remember(self._locked, key, window.ends)

    def known_locked(self, key: str) -> None:
        """RateLimited when this process knows `key` is past the limit (reads nothing)."""
        window = self.counter.window()
        if window is not None and self._locked.get(key, 0.0) > window.now:
            raise self._refusal(window)

    def locked(self, key: str, until: float) -> None:
        """A statement found `key` past the limit: remember it for the rest of its window."""
        self._remember(self._locked, key, until)

    def _refusal(self, window: Window) -> RateLimited:
        return RateLimited(
            "too many failed requests; try again later", retry_after=window.retry_after
        )

    @staticmethod
    def _remember(cache: dict[str, float], key: str, value: float) -> None:
        if len(cache) >= _CACHE_SIZE:
            cache.clear()  # bounded memory; the database stays the truth
        cache[key] = value


@dataclass(frozen=True, slots=True)
class Lock:
    """What a grant's own statement needs to check an attempt against the failure limit."""

    window: Window
    key: str  # the attempt's key when the statement was built
    user_prefix: str  # for a statement that finds the user itself: its key is this + the user id


class Attempt:
    """One request behind the failure limit: who it is about, as its handler learns it, and so
    the key its failure counts under. Which key is decided here and nowhere else."""

    def __init__(self, guard: FailureGuard, address: str | None, *, bearer: bool = False) -> None:
        self._guard = guard
        # A Bearer route: until its token is verified, a failure is the IP's (a key of its own).
        self._address = address
        self._bearer = bearer
        # Once a client authenticated, its failures count per (client, subject), not per IP.
        self._client: str | None = None
        self._subject = "token:-"
        self._user_key: str | None = None
        self._counted = True

    def _ip_key(self) -> str:
        # Built only when needed: a verified Bearer request never parses its address.
        return bearer_ip_key(self._address) if self._bearer else ip_key(self._address)

    def bearer_verified(self, client_id: str, subject: str) -> None:
        """The Bearer token verified: from now on this request is its user's (client, `sub`);
        RateLimited when this process knows that user is past the limit (reads nothing)."""
        self._user_key = bearer_key(client_id, subject)
        self._guard.known_locked(self._user_key)

    def admin_authenticated(self, client_id: str) -> None:
        """An admin client authenticated: its own mistakes after that (an unknown user id, a
        bad query) are not guesses at a secret, and count nowhere. RateLimited when this
        process saw its IP reach the limit since the request was checked (`_judged`)."""
        self._judged()
        self._client = client_id
        self._counted = False

    def client_authenticated(self, client_id: str) -> None:
        """The client's secret was right; RateLimited as for `admin_authenticated`."""
        self._judged()
        self._client = client_id

    def _judged(self) -> None:
        # A right secret is answered only if the IP was under the limit when it was judged, not
        # only when the request came in: the twin of a burst of wrong guesses in flight.
        if not self._bearer:
            self._guard.known_locked(self._ip_key())

    def about_token(self, fingerprint: str) -> None:
        self._subject = f"token:{fingerprint}"

    def about_account(self, provider: str, account_key: str) -> None:
        self._subject = f"account:{provider}:{account_key}"

    def about_user(self, user_id: str) -> None:
        self._subject = f"user:{user_id}"

    def key(self) -> str:
        """The key a failure of this request counts under."""
        if self._user_key is not None:
            return self._user_key
        if self._client is None:
            return self._ip_key()
        return subject_key(self._client, self._subject)

    async def check(self) -> None:
        """Before the handler runs: RateLimited when this IP is already past the limit, before
        any credentials are looked at, so a right secret gets the same 429 as a wrong one.
        A client's subject is checked inside its grant's own statement (`lock`); a Bearer
        route's caller once its token is verified (`bearer_verified`)."""
        if not self._bearer:
            await self._guard.check(self._ip_key())

    async def fail(self) -> RateLimited | None:
        """Count this request's failure; the 429 to answer instead when it passed the limit."""
        if not self._counted:
            return None
        return await self._guard.fail(self.key())

    def lock(self) -> Lock | None:
        """For the grant's statement: the window to check this attempt's key in, when the key
        was not checked before the handler ran (a client's); None otherwise or when off."""
        if self._client is None or not self._counted:
            return None
        window = self._guard.counter.window()
        return Lock(window, self.key(), user_key_prefix(self._client)) if window else None

    def locked(self, lock: Lock | None) -> RateLimited:
        """The grant's statement found this attempt's key past the limit."""
        if lock is None:
            return RateLimited("too many failed requests; try again later", retry_after=1)
        self._guard.locked(self.key(), lock.window.ends)
        return RateLimited(
            "too many failed requests; try again later", retry_after=lock.window.retry_after
        )
