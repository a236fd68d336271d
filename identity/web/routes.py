"""A route and its description, declared together (docs/architecture.md, "Where to add things").

Every route of the service is an `ApiRoute`: one method, one handler, and the `Operation` that
describes it — summary, request body models, answers, security, query parameters. `openapi.py`
writes /openapi.json from these alone (path parameters come from the path itself), and refuses
a route without one: a route cannot exist without its description.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .inputs import JSON

Schema = dict[str, Any]
Body = type[BaseModel] | Schema | None  # a model, an inline schema, or no body at all
Security = tuple[Mapping[str, list[str]], ...]  # one requirement of these is enough

STRING: Schema = {"type": "string"}
OBJECT: Schema = {"type": "object"}
BEARER: Security = ({"bearer": []},)
CLIENT: Security = ({"client_basic": []}, {})  # the empty one: when IDENTITY_CLIENTS is unset
ADMIN: Security = ({"client_basic": []},)
# What an endpoint behind the failure limit answers besides its own: a bad request, failed
# client or Bearer authentication, refusal, a body over 64 KiB, the limit, an outage.
LIMITED_ERRORS = (400, 401, 403, 413, 429, 503)


def obj(*required: str, **properties: Schema) -> Schema:
    """An inline object schema: `required` names members of `properties`."""
    return {"type": "object", "required": list(required), "properties": properties}


@dataclass(frozen=True, slots=True)
class Query:
    name: str
    schema: Schema | None = None  # None: a string
    required: bool = False


@dataclass(frozen=True, slots=True)
class Operation:
    """What /openapi.json says of one route.

    `returns`: each answer the route gives by design (a success, a 304, a readiness 503) and
    its body; `errors`: statuses answered with the error body; `pages`: statuses answered with
    an HTML page (as well, when also in `returns` or `errors`); `notes`: what a status means
    here, where the usual words say too little. `body`: the request body's models, one or one
    per variant; `accepts`: its media types. `media`: the answers' own."""

    summary: str
    returns: Mapping[int, Body]
    errors: tuple[int, ...] = ()
    security: Security | None = None
    body: tuple[type[BaseModel], ...] = ()
    accepts: tuple[str, ...] = (JSON,)
    query: tuple[Query, ...] = ()
    media: str = JSON
    pages: tuple[int, ...] = ()
    notes: Mapping[int, str] = field(default_factory=dict)


class ApiRoute(Route):
    """A Starlette route of one method that carries its `Operation`."""

    def __init__(
        self,
        path: str,
        endpoint: Callable[[Request], Awaitable[Response]],
        *,
        method: str,
        operation: Operation,
    ) -> None:
        super().__init__(path, endpoint, methods=[method])
        self.method = method
        self.operation = operation
