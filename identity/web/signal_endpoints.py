"""The receivers of providers' security events (docs/signals.md), behind the failure limit.

    POST /signals/google                        a SET as the body (RFC 8935)   202 | 400 {err}
    POST /signals/apple                         {"payload": JWS}               200 | 400
    POST /signals/backchannel-logout/{provider} form logout_token (OIDC BCL)   200 | 400

No client authentication: the provider's signature is the authentication. A receiver whose
provider is not configured answers 404. The provider's keys being unavailable is a 503 (the
sender retries), never a refusal of an event that may be genuine.
"""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute

from identity.accounts.limits import Attempt
from identity.accounts.signals import Outcome, Signals
from identity.errors import (
    InvalidRequest,
    KeysUnavailable,
    NotFound,
    TemporarilyUnavailable,
    TokenRejected,
)
from identity.metrics import Metrics
from identity.tokens import jws
from identity.tokens.signal_tokens import Kind, Signal, SignalVerifier

from . import inputs
from .failure_limit import FailureLimit
from .rendering import NO_STORE, context
from .requests import AppleNotification, LogoutTokenBody
from .responses import SetErrorBody
from .routes import ApiRoute, Operation

logger = logging.getLogger("identity.signals")
SECEVENT = "application/secevent+jwt"
# RFC 8935 §2.4's codes for what broke: the issuer, the audience, the key or its signature;
# anything else is a malformed request.
_SET_ERRORS = {
    "bad_issuer": "invalid_issuer",
    "bad_audience": "invalid_audience",
    "unknown_kid": "invalid_key",
    "kid_alg_mismatch": "invalid_key",
    "bad_key_type": "invalid_key",
    "bad_signature": "authentication_failed",
}
_REFUSED = "the security event token is not valid"


class SignalEndpoints:
    def __init__(
        self,
        *,
        verifier: SignalVerifier,
        signals: Signals,
        limit: FailureLimit,
        metrics: Metrics,
    ) -> None:
        self._verifier = verifier
        self._signals = signals
        self._limit = limit
        self._metrics = metrics

    def routes(self) -> list[BaseRoute]:
        guarded = self._limit.guarded
        return [
            ApiRoute(
                "/signals/google",
                guarded(self.google),
                method="POST",
                operation=Operation(
                    "Receive a security event token from Google (Cross-Account Protection)",
                    {202: None, 400: SetErrorBody},
                    errors=(404, 413, 429, 503),
                    accepts=(SECEVENT,),
                    notes={400: "Refused (RFC 8935 error codes)", 404: "Google is not configured"},
                ),
            ),
            ApiRoute(
                "/signals/apple",
                guarded(self.apple),
                method="POST",
                operation=Operation(
                    "Receive a server-to-server notification from Apple",
                    {200: None},
                    errors=(400, 404, 413, 429, 503),
                    body=(AppleNotification,),
                    notes={404: "Apple is not configured"},
                ),
            ),
            ApiRoute(
                "/signals/backchannel-logout/{provider}",
                guarded(self.backchannel_logout),
                method="POST",
                operation=Operation(
                    "Receive an OpenID Connect back-channel logout token",
                    {200: None},
                    errors=(400, 404, 413, 429, 503),
                    body=(LogoutTokenBody,),
                    accepts=(inputs.FORM,),
                    notes={404: "No such provider, or its back-channel logout is off"},
                ),
            ),
        ]

    async def google(self, request: Request, attempt: Attempt) -> Response:
        self._live("google", "set")
        body = await request.body()
        try:
            token = body.decode("ascii").strip()
        except UnicodeDecodeError:
            token = ""
        try:
            signal = await self._verify(request, token, "google", "set")
        except TokenRejected as error:
            code = _SET_ERRORS.get(error.reason, "invalid_request")
            return JSONResponse(
                {"err": code, "description": _REFUSED}, status_code=400, headers=NO_STORE
            )
        await self._receive(request, signal)
        return Response(status_code=202)

    async def apple(self, request: Request, attempt: Attempt) -> Response:
        self._live("apple", "apple")
        body = inputs.parse(AppleNotification, await inputs.json_object(request))
        try:
            signal = await self._verify(request, body.payload, "apple", "apple")
        except TokenRejected:
            raise InvalidRequest("the notification is not valid", reason="bad_signal") from None
        await self._receive(request, signal)
        return Response(status_code=200)

    async def backchannel_logout(self, request: Request, attempt: Attempt) -> Response:
        provider = request.path_params["provider"]
        self._live(provider, "logout")
        body = inputs.parse(LogoutTokenBody, await inputs.form(request))
        try:
            signal = await self._verify(request, body.logout_token, provider, "logout")
        except TokenRejected:
            raise InvalidRequest("the logout token is not valid", reason="bad_signal") from None
        await self._receive(request, signal)
        # OIDC Back-Channel Logout §2.8: 200, not cached.
        return Response(status_code=200, headers=NO_STORE)

    def _live(self, provider: str, kind: Kind) -> None:
        if not self._verifier.receives(provider, kind):
            raise NotFound("no such endpoint")

    async def _verify(self, request: Request, token: str, provider: str, kind: Kind) -> Signal:
        try:
            return await self._verifier.verify(token, provider=provider, kind=kind)
        except TokenRejected as error:
            self._metrics.signals.labels(provider, "unknown", "refused").inc()
            # The rule broken and a fingerprint go to the log; never the token itself.
            logger.warning(
                "signal refused",
                extra={
                    "event": {
                        "provider": provider,
                        "reason": error.reason,
                        "token_fingerprint": jws.fingerprint(token) if token else None,
                        "request_id": context(request).request_id,
                    }
                },
            )
            raise
        except KeysUnavailable:
            # Fail closed, but as an outage: the provider retries a 5xx, and the event may be
            # genuine.
            raise TemporarilyUnavailable(
                "the provider's signing keys are unavailable; try again shortly",
                reason="upstream_keys_unavailable",
                retry_after=30,
            ) from None

    async def _receive(self, request: Request, signal: Signal) -> list[Outcome]:
        ctx = context(request)
        outcomes = await self._signals.receive(signal, context=ctx)
        for o in outcomes:
            self._metrics.signals.labels(signal.provider, o.event, o.outcome).inc()
            logger.info(
                "signal received",
                extra={
                    "event": {
                        "provider": signal.provider,
                        "event": o.event,
                        "action": o.action,
                        "outcome": o.outcome,
                        "jti": signal.jti,
                        "request_id": ctx.request_id,
                    }
                },
            )
        return outcomes
