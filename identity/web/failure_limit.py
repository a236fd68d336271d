"""IDENTITY_RATE_LIMIT_FAILURES as one step around each route it guards (docs/security.md).

`FailureLimit.guarded(handler)` is the route's endpoint: it builds the request's `Attempt`,
refuses an IP already past the limit before any work — before any credentials are looked at —
hands the attempt to the handler (which tells it who the request is about), and counts the
answer on the way out. A Bearer route (`bearer=True`) is keyed by the token's user once it is
verified, so nothing is checked before its handler runs. A client error counts
(our own failures, 5xx, and the 429s themselves do not); when that count passes the limit, the
caller gets the 429 instead of the answer it would have had. Which key counts is the attempt's
decision (`identity.accounts.limits.Attempt`), never this module's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response

from identity.accounts.limits import Attempt, FailureGuard
from identity.errors import IdentityError

Handler = Callable[[Request, Attempt], Awaitable[Response]]
Endpoint = Callable[[Request], Awaitable[Response]]


class FailureLimit:
    def __init__(self, guard: FailureGuard) -> None:
        self._guard = guard

    def guarded(self, handler: Handler, *, bearer: bool = False) -> Endpoint:
        """`handler` behind the failure limit. `bearer`: the route takes an access token, and
        counts per its verified user (the handler calls `attempt.bearer_verified`)."""

        async def endpoint(request: Request) -> Response:
            attempt = Attempt(self._guard, _address(request), bearer=bearer)
            if not self._guard.enabled:
                return await handler(request, attempt)
            await attempt.check()  # 429 (or 503 when the count cannot be read) before any work
            try:
                response = await handler(request, attempt)
            except IdentityError as error:
                if _counts(error.status):
                    refusal = await attempt.fail()
                    if refusal is not None:
                        raise refusal from None
                raise
            if _counts(response.status_code):  # an answer rendered by the handler (a page)
                refusal = await attempt.fail()
                if refusal is not None:
                    raise refusal
            return response

        return endpoint


def _counts(status: int) -> bool:
    # Client errors count; our own failures (5xx) and the 429s themselves do not.
    return 400 <= status < 500 and status != 429


def _address(request: Request) -> str | None:
    return request.client.host if request.client is not None else None
