"""How a notice leaves: the back-channel logout token to a client's logout URI, a Standard
Webhooks request to an endpoint (docs/notifications.md), or a refresh token revoked at Apple
(tokens/apple_revocation.py: IDENTITY_APPLE_REVOKE_URL, the operator's setting, so the receivers'
address checks below do not apply to it).

Every attempt is one POST that follows no redirect, ended after 5 s whatever the receiver does
(resolving, connecting, a response sent a byte at a time): the lease of a claimed notice is
30 s, and a round waits for its slowest attempt. The status decides; at most `BODY_READ` bytes
of the answer are read and dropped (an endless body costs nothing). In production the URL must
be https:// and its host must resolve only to public addresses; the request then goes to the very
address that was checked (the URL's host kept for the Host header and TLS's server name), so a
name that resolves differently a moment later (DNS rebinding) cannot reach an internal service.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import httpx
import orjson

from identity.clock import Clock
from identity.destinations import RefusedTarget, WebhookEndpoint, public_addresses
from identity.settings import Settings
from identity.tokens import logout_tokens
from identity.tokens.apple_revocation import AppleRevoker
from identity.tokens.signing_keys import KeyManager

from .outbox import APPLE, BACKCHANNEL

TIMEOUT = 5.0  # seconds for a whole attempt, and for each phase of the request within it
BODY_READ = 4096  # bytes of a receiver's answer read (then dropped); the status is the answer
WEBHOOK = "webhook:"
Resolver = Callable[[str, int], Awaitable[list[str]]]


@dataclass(frozen=True, slots=True)
class Notice:
    """A claimed outbox row."""

    id: int
    event: str
    destination: str
    payload: dict[str, Any]
    attempts: int
    created_at: datetime
    audit_event_id: int | None = None
    sealed: str | None = field(default=None, repr=False)  # an Apple revocation's token, sealed

    @property
    def kind(self) -> str:
        if self.destination.startswith(APPLE):
            return "apple"
        return "backchannel" if self.destination.startswith(BACKCHANNEL) else "webhook"


@dataclass(frozen=True, slots=True)
class Attempt:
    """How one attempt went: delivered, failed (worth retrying) or gone (its destination is
    no longer configured: dropped at once)."""

    outcome: str
    status: int | None = None
    error: str | None = None  # a class of error, never a response body


def sign_webhook(secret: bytes, message_id: str, timestamp: int, body: bytes) -> str:
    """Standard Webhooks' `webhook-signature`: v1, base64 HMAC-SHA256 of `id.timestamp.body`."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


class Senders:
    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        keys: KeyManager,
        issuer: str,
        webhooks: tuple[WebhookEndpoint, ...],
        backchannel: Mapping[str, str],
        production: bool,
        clock: Clock = time.time,
        resolve: Resolver = public_addresses,
        apple: AppleRevoker | None = None,
    ) -> None:
        self._http = http
        self._keys = keys
        self._issuer = issuer
        self._webhooks = {w.destination: w for w in webhooks}
        self._backchannel = dict(backchannel)
        self._production = production
        self._clock = clock
        self._resolve = resolve
        self._apple = apple  # None: Apple revocation is not configured

    async def send(self, notice: Notice) -> Attempt:
        if notice.destination.startswith(APPLE):
            try:
                async with asyncio.timeout(TIMEOUT):  # Apple's answer too, however slow
                    return await self._revoke_at_apple(notice)
            except TimeoutError:
                return Attempt("failed", error="timeout")
        if notice.destination.startswith(BACKCHANNEL):
            return await self._logout(notice)
        return await self._webhook(notice)

    async def _revoke_at_apple(self, notice: Notice) -> Attempt:
        if self._apple is None or notice.sealed is None:
            return Attempt("gone", error="not_configured")
        answer = await self._apple.revoke(notice.sealed, notice.destination.removeprefix(APPLE))
        # Apple's 400 (or a token no key opens) is final: retrying cannot make it pass.
        outcome = {True: "delivered", False: "gone", None: "failed"}[answer.done]
        return Attempt(outcome, answer.status, answer.error)

    async def _logout(self, notice: Notice) -> Attempt:
        client_id = notice.destination.removeprefix(BACKCHANNEL)
        uri = self._backchannel.get(client_id)
        if uri is None:
            return Attempt("gone", error="not_configured")
        token = logout_tokens.mint(
            self._keys,
            issuer=self._issuer,
            client_id=client_id,
            subject=str(notice.payload["user_id"]),
            session_id=str(notice.payload["sid"]),
            clock=self._clock,
        )
        body = urlencode({"logout_token": token}).encode()
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        return await self._post(uri, body, headers)

    async def _webhook(self, notice: Notice) -> Attempt:
        endpoint = self._webhooks.get(notice.destination)
        if endpoint is None:
            return Attempt("gone", error="not_configured")
        # The same on every retry: receivers deduplicate by it. The outbox id, which is never
        # handed out twice in one database (PostgreSQL's sequence; SQLite's AUTOINCREMENT since
        # migration 0013), rather than a random id on the row: no column, and no change to the
        # SQL functions that write notices. A database started afresh starts at msg_1 again.
        message_id = f"msg_{notice.id}"
        body = orjson.dumps(
            {
                "type": notice.event,
                "timestamp": notice.created_at.isoformat().replace("+00:00", "Z"),
                "data": notice.payload,
            }
        )
        timestamp = int(self._clock())
        headers = {
            "Content-Type": "application/json",
            "webhook-id": message_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign_webhook(endpoint.secret, message_id, timestamp, body),
        }
        return await self._post(endpoint.url, body, headers)

    async def _post(self, url: str, body: bytes, headers: dict[str, str]) -> Attempt:
        status: list[int] = []  # the status, once the headers are in
        try:
            # One deadline for the whole attempt: httpx's timeout is per read, so a receiver
            # dripping a byte at a time would otherwise hold the attempt past the lease.
            async with asyncio.timeout(TIMEOUT):
                return await self._exchange(url, body, headers, status)
        except TimeoutError:
            if not status:
                return Attempt("failed", error="timeout")
        except httpx.HTTPError as error:
            if not status:
                return Attempt("failed", error=type(error).__name__)
        # The headers came and the rest of the answer did not: the status still decides.
        return _judged(status[0])

    async def _exchange(
        self, url: str, body: bytes, headers: dict[str, str], status: list[int]
    ) -> Attempt:
        target, extensions = url, {}
        if self._production:
            parts = urlsplit(url)
            if parts.scheme != "https" or parts.hostname is None:
                return Attempt("failed", error="not_https")
            port = parts.port or 443
            try:
                address = (await self._resolve(parts.hostname, port))[0]
            except RefusedTarget:
                return Attempt("failed", error="refused_address")
            # To the checked address, the name kept for Host and for the certificate's check.
            host = f"[{address}]" if ":" in address else address
            target = urlunsplit(("https", f"{host}:{port}", parts.path or "/", "", ""))
            headers = {**headers, "Host": parts.netloc}
            extensions = {"sni_hostname": parts.hostname}
        request = self._http.build_request(
            "POST", target, content=body, headers=headers, extensions=extensions, timeout=TIMEOUT
        )
        response = await self._http.send(request, stream=True, follow_redirects=False)
        try:
            status.append(response.status_code)
            # Raw bytes, drained a little and never kept (nor decompressed). A response built
            # in memory (a test's transport) has nothing left to drain.
            if not response.is_stream_consumed:
                read = 0
                async for chunk in response.aiter_raw():
                    read += len(chunk)
                    if read >= BODY_READ:
                        break
        finally:
            await response.aclose()
        return _judged(response.status_code)


def _judged(status: int) -> Attempt:
    if 200 <= status < 300:
        return Attempt("delivered", status)
    return Attempt("failed", status, error="status")


def from_settings(
    settings: Settings,
    http: httpx.AsyncClient,
    keys: KeyManager,
    clock: Clock,
    *,
    apple: AppleRevoker | None = None,
) -> Senders:
    return Senders(
        http,
        keys=keys,
        issuer=settings.issuer,
        webhooks=settings.webhooks,
        backchannel=settings.backchannel_logout_uris,
        production=settings.production,
        clock=clock,
        apple=apple,
    )
