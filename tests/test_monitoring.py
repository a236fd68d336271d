"""The alert rules and the Grafana dashboard in docs/monitoring/ name only what /metrics exports.

No promtool: the expressions are read for the metric names and label matchers they use, and each
one is checked against the exposition of a service that has just served traffic, so a renamed
metric or label breaks this test instead of silently breaking an alert.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from .fakes import FakeIssuer
from .support import Sql, exchange, refresh

pytestmark = pytest.mark.anyio
MONITORING = Path(__file__).resolve().parent.parent / "docs" / "monitoring"
SOURCES = Path(__file__).resolve().parent.parent / "identity"
# Labels Prometheus adds to every scraped series, and the histogram bucket bound.
TARGET_LABELS = {"job", "instance", "le"}
SELECTOR = re.compile(r"\b(identity_[a-z_]+)\b(?:\{([^}]*)\})?")
MATCHER = re.compile(r'(\w+)\s*(=~|!=|!~|=)\s*"([^"]*)"')


def rules() -> list[dict[str, Any]]:
    document = yaml.safe_load((MONITORING / "alerts.yml").read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def dashboard_expressions() -> list[str]:
    document = json.loads((MONITORING / "dashboard.json").read_text())
    return [target["expr"] for panel in document["panels"] for target in panel["targets"]]


def exported(text: str) -> dict[str, set[str]]:
    """Every sample name in the exposition, with the label names its samples carry."""
    families: dict[str, set[str]] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            names = {
                "counter": [name if name.endswith("_total") else name + "_total"],
                "histogram": [name + "_bucket", name + "_count", name + "_sum"],
            }.get(kind, [name])
            for sample in names:
                families.setdefault(sample, set())
        elif line and not line.startswith("#"):
            name, _, rest = line.partition("{")
            labels = {m.group(1) for m in re.finditer(r'(\w+)="', rest.partition("}")[0])}
            families.setdefault(name.split()[0], set()).update(labels)
    return families


@pytest.fixture
async def exposition(client: httpx.AsyncClient, google: FakeIssuer, sql: Sql) -> str:
    # Traffic that makes every labelled family show its labels.
    ok = await exchange(client, google.mint())
    await exchange(client, google.mint(aud="elsewhere"))
    assert (await refresh(client, ok.json()["refresh_token"])).status_code == 200
    await sql.set_time("sessions", "rotated_at")  # the reuse interval has ended
    assert (await refresh(client, ok.json()["refresh_token"])).status_code == 400  # reuse
    refused = await client.post("/signals/google", content="garbage")  # a refused signal
    assert refused.status_code == 400
    response = await client.get("/metrics")
    assert response.status_code == 200
    return response.text


def check(expression: str, families: dict[str, set[str]], where: str) -> set[str]:
    used = set()
    for match in SELECTOR.finditer(expression):
        name, matchers = match.group(1), match.group(2) or ""
        assert name in families, f"{where}: {name} is not exported"
        used.add(name)
        for label, _, value in MATCHER.findall(matchers):
            assert label in families[name] | TARGET_LABELS, f"{where}: {name} has no {label}"
            if label in ("outcome", "reason"):
                # A value the service can actually produce: it is a literal in its code.
                assert f'"{value}"' in _source(), f"{where}: {label}={value} is never produced"
    return used


_SOURCE: list[str] = []


def _source() -> str:
    if not _SOURCE:
        _SOURCE.append("\n".join(p.read_text() for p in sorted(SOURCES.rglob("*.py"))))
    return _SOURCE[0]


async def test_every_alert_names_exported_metrics_and_labels(exposition: str) -> None:
    families = exported(exposition)
    names = {rule["alert"] for rule in rules()}
    # The four the operations guide promises.
    assert {
        "IdentityRefreshReuseDetected",
        "IdentityUpstreamKeysUnavailable",
        "IdentityHigh5xxRate",
        "IdentitySigningKeyTooOld",
        "IdentitySignalsRefused",
    } <= names
    for rule in rules():
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["summary"]
        assert check(rule["expr"], families, rule["alert"]), rule["alert"]


async def test_the_dashboard_shows_every_exported_family(exposition: str) -> None:
    families = exported(exposition)
    used: set[str] = set()
    for expression in dashboard_expressions():
        used |= check(expression, families, "dashboard")
    ours = {name for name in families if name.startswith("identity_")}
    # Each family appears in at least one panel (a histogram through any of its series).
    roots = {re.sub(r"_(bucket|count|sum|total|created)$", "", n) for n in used}
    missing = {n for n in ours if re.sub(r"_(bucket|count|sum|total|created)$", "", n) not in roots}
    assert not missing, missing


def test_the_check_would_catch_a_renamed_metric() -> None:
    families = {"identity_http_requests_total": {"route", "method", "status"}}
    with pytest.raises(AssertionError, match="not exported"):
        check("rate(identity_http_request_total[5m])", families, "probe")
    with pytest.raises(AssertionError, match="has no"):
        check('rate(identity_http_requests_total{code="500"}[5m])', families, "probe")


def test_every_audit_type_the_docs_name_exists() -> None:
    """`identity events --type X` in an alert, the dashboard or a page: X is an audit type."""
    from identity.accounts.audit import TYPES

    documents = [*MONITORING.iterdir(), *MONITORING.parent.glob("*.md")]
    named = {
        found
        for document in documents
        for found in re.findall(r"identity events --type (\w+)", document.read_text())
    }
    assert "refresh_reuse" in named
    assert named <= TYPES, named - TYPES
