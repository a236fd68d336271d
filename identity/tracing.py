"""Optional OpenTelemetry tracing: spans for requests, key-set fetches and database statements.

Off unless OTEL_EXPORTER_OTLP_ENDPOINT is set and the `otel` extra is installed
(`pip install 'identity-exchange[otel]'`). Off, a span is one attribute check on a shared no-op
object: nothing is imported, allocated or exported. Attributes are chosen by us and never hold a
token, a secret or an SQL parameter (docs/operations.md, "Tracing").
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Iterator, Mapping
from typing import Any, Protocol

logger = logging.getLogger("identity.tracing")
Attributes = Mapping[str, str | int | float | bool]

# The request being served, set by the request middleware: every span inside it carries the id,
# so a database statement in a trace can be matched with the access-log line.
REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)


class Span(Protocol):
    def set_attribute(self, key: str, value: str | int | float | bool) -> None: ...


class _NoSpan:
    def set_attribute(self, key: str, value: str | int | float | bool) -> None:
        return None


_NO_SPAN = _NoSpan()


class Tracer:
    """Wraps an OpenTelemetry tracer, or nothing (`enabled` False)."""

    def __init__(self, otel_tracer: Any = None) -> None:
        self._tracer = otel_tracer
        self.enabled = otel_tracer is not None

    @contextlib.contextmanager
    def span(
        self,
        name: str,
        attributes: Attributes | None = None,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> Iterator[Span]:
        """A span; a W3C `traceparent` in `headers` makes it a child of the caller's span."""
        if self._tracer is None:
            yield _NO_SPAN
            return
        values = dict(attributes or {})
        request_id = REQUEST_ID.get()
        if request_id is not None:
            values["identity.request_id"] = request_id
        parent = _extract(headers) if headers is not None else None
        with self._tracer.start_as_current_span(name, context=parent, attributes=values) as span:
            yield span


def _extract(headers: Mapping[str, str]) -> Any:
    from opentelemetry.propagate import extract

    return extract(headers)


NO_TRACING = Tracer()


def from_settings(endpoint: str | None, *, service_name: str = "identity") -> tuple[Tracer, Any]:
    """A tracer exporting over OTLP when `endpoint` is set, and the provider to shut down.

    Returns (NO_TRACING, None) when tracing is off or the extra is not installed (logged).
    """
    if not endpoint:
        return NO_TRACING, None
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        logger.warning(
            "OTEL_EXPORTER_OTLP_ENDPOINT is set but the otel extra is not installed "
            "(pip install 'identity-exchange[otel]'): tracing is off"
        )
        return NO_TRACING, None
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    # The exporter reads OTEL_EXPORTER_OTLP_* itself (endpoint, headers, timeout).
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return Tracer(provider.get_tracer("identity")), provider
