"""Tracing with the OpenTelemetry SDK's in-memory exporter: which spans, which attributes.

The spans of one request share the caller's trace (W3C `traceparent`), carry the request id of
the access-log line, and never hold a token: every attribute of every span is scanned for the
raw id_token, access token and refresh token and for each of their segments.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from identity.settings import Settings
from identity.tracing import NO_TRACING, Tracer, from_settings

from .fakes import FakeClock, Issuers
from .support import bearer, exchange, refresh, running

pytestmark = pytest.mark.anyio
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


@pytest.fixture
def exported() -> Iterator[tuple[Tracer, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield Tracer(provider.get_tracer("test")), exporter
    provider.shutdown()


def by_request(spans: tuple[ReadableSpan, ...], request_id: str) -> list[ReadableSpan]:
    return [s for s in spans if (s.attributes or {}).get("identity.request_id") == request_id]


def values(span: ReadableSpan) -> list[str]:
    return [str(v) for v in (span.attributes or {}).values()]


async def test_an_exchange_is_one_trace_with_request_fetch_and_statement_spans(
    settings: Settings,
    issuers: Issuers,
    clock: FakeClock,
    exported: tuple[Tracer, InMemorySpanExporter],
) -> None:
    tracer, exporter = exported
    async with running(settings, issuers, clock, tracer=tracer) as (_, client):
        id_token = issuers.google.mint()
        answer = await exchange(client, id_token, headers={"traceparent": TRACEPARENT})
        assert answer.status_code == 200, answer.text
        tokens = answer.json()
        me = await client.get("/users/me", headers=bearer(tokens["access_token"]))
        assert me.status_code == 200
        rotated = await refresh(client, tokens["refresh_token"])
        assert rotated.status_code == 200

    spans = exporter.get_finished_spans()
    request_id = answer.headers["x-request-id"]
    mine = by_request(spans, request_id)
    names = [s.name for s in mine]
    assert names.count("http.request") == 1
    assert "identity.fetch" in names  # Google's key set, fetched on the first exchange
    assert "db.statement" in names
    request = next(s for s in mine if s.name == "http.request")
    assert request.attributes is not None
    assert request.attributes["http.route"] == "/token"
    assert request.attributes["http.status_code"] == 200
    # The gateway's trace continues here: every span of the request is in the caller's trace.
    assert {format(s.context.trace_id, "032x") for s in mine} == {TRACE_ID}
    assert all(s.parent is not None for s in mine)
    fetch = next(s for s in mine if s.name == "identity.fetch")
    assert fetch.attributes is not None
    assert fetch.attributes["http.url"] == issuers.google.jwks_url

    # A request without a traceparent starts its own trace; its spans carry its own id.
    assert by_request(spans, me.headers["x-request-id"])
    assert {
        format(s.context.trace_id, "032x") for s in by_request(spans, me.headers["x-request-id"])
    } != {TRACE_ID}

    secrets = [id_token, tokens["access_token"], tokens["refresh_token"]]
    secrets += [rotated.json()["access_token"], rotated.json()["refresh_token"]]
    pieces = {piece for secret in secrets for piece in secret.split(".") if len(piece) >= 16}
    for span in spans:
        for value in values(span):
            leaked = [piece for piece in pieces if piece in value]
            assert not leaked, (span.name, value)


async def test_statement_spans_hold_the_statement_text_not_its_parameters(
    settings: Settings,
    issuers: Issuers,
    clock: FakeClock,
    exported: tuple[Tracer, InMemorySpanExporter],
) -> None:
    tracer, exporter = exported
    async with running(settings, issuers, clock, tracer=tracer) as (_, client):
        answer = await exchange(client, issuers.google.mint(email="traced@gmail.com"))
        assert answer.status_code == 200
    statements = [s for s in exporter.get_finished_spans() if s.name == "db.statement"]
    assert statements
    for span in statements:
        assert span.attributes is not None
        assert span.attributes["db.system"] in ("sqlite", "postgresql")
        assert not any("traced@gmail.com" in value for value in values(span))


def test_tracing_is_off_without_an_endpoint() -> None:
    tracer, provider = from_settings(None)
    assert tracer is NO_TRACING and provider is None and not tracer.enabled
    with tracer.span("anything", {"a": 1}) as span:
        span.set_attribute("b", 2)  # a no-op, and no SDK object behind it


def test_an_endpoint_turns_it_on() -> None:
    pytest.importorskip("opentelemetry.exporter.otlp.proto.http.trace_exporter")
    tracer, provider = from_settings("http://127.0.0.1:4318")
    try:
        assert tracer.enabled and provider is not None
    finally:
        if provider is not None:
            provider.shutdown()


def test_settings_read_the_standard_variable() -> None:
    environ = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}
    assert Settings.from_env(environ).otlp_endpoint == "http://collector:4318"
