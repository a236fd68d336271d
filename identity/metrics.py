"""Prometheus metrics (docs/operations.md), correct with several uvicorn workers.

With `identity serve --workers N` the CLI points PROMETHEUS_MULTIPROC_DIR at a fresh directory
before the workers start; each worker writes its counters there and /metrics, answered by any
worker, adds them all up (prometheus-client's multiprocess mode). The signing key age is computed
at scrape time by the worker that answers: every worker has the same keys.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class _KeyAge(Collector):
    def __init__(self, age: Callable[[], float]) -> None:
        self._age = age

    def collect(self) -> Iterator[Metric]:
        gauge = GaugeMetricFamily(
            "identity_signing_key_age_seconds", "Age of the key that signs new tokens"
        )
        gauge.add_metric([], self._age())
        yield gauge


class Metrics:
    def __init__(
        self, *, key_age: Callable[[], float], multiprocess_dir: str | None = None
    ) -> None:
        self._registry = CollectorRegistry()
        r = self._registry
        self._scrape = r
        if multiprocess_dir:
            # Every worker's counters, read from the shared directory at each scrape.
            self._scrape = CollectorRegistry()
            MultiProcessCollector(self._scrape, path=multiprocess_dir)  # type: ignore[no-untyped-call]
        self._scrape.register(_KeyAge(key_age))
        self.requests = Counter(
            "identity_http_requests", "HTTP requests", ["route", "method", "status"], registry=r
        )
        self.duration = Histogram(
            "identity_http_request_duration_seconds",
            "Time to answer, by route",
            ["route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=r,
        )
        self.exchanges = Counter(
            "identity_exchanges",
            "Token exchanges by outcome and reason",
            ["outcome", "reason"],
            registry=r,
        )
        self.refreshes = Counter(
            "identity_refreshes",
            "Refresh grants by outcome and reason",
            ["outcome", "reason"],
            registry=r,
        )
        self.reuse = Counter(
            "identity_refresh_reuse_detected",
            "Refresh tokens presented again after rotation: each revoked its session",
            registry=r,
        )
        self.signals = Counter(
            "identity_signals",
            "Security events received from providers, by provider, event and outcome",
            ["provider", "event", "outcome"],
            registry=r,
        )
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self.key_fetches = Counter(
            "identity_upstream_key_fetches", "Fetches of upstream key sets", ["outcome"], registry=r
        )
        # The outbox (docs/notifications.md): each worker sets the count it last read.
        self.outbox_pending = Gauge(
            "identity_outbox_pending",
            "Notices neither delivered nor dropped",
            registry=r,
            multiprocess_mode="livemax",
        )
        # The revocation feed's hold-back (docs/notifications.md): each worker sets what it last
        # read, at each delivery round.
        self.revocation_feed_lag = Gauge(
            "identity_revocation_feed_lag_seconds",
            "How long the oldest revocation not yet in the feed has waited on its commit",
            registry=r,
            multiprocess_mode="livemax",
        )
        self.deliveries = Counter(
            "identity_deliveries",
            "Delivery attempts by kind and outcome",
            ["kind", "outcome"],
            registry=r,
        )
        self.delivery_lag = Histogram(
            "identity_delivery_lag_seconds",
            "From a notice's change to its delivery",
            buckets=(0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 21_600, 86_400),
            registry=r,
        )

    def request(self, route: str, method: str, status: int, seconds: float) -> None:
        method = method if method in _METHODS else "OTHER"  # bounded label values
        key = (route, method, status)
        children = self._children.get(key)
        if children is None:  # labels() is slow; its result is stable per label set
            children = (
                self.requests.labels(route, method, str(status)),
                self.duration.labels(route),
            )
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self._scrape)
