"""Prometheus metrics of the three fort services, scraped from the real services behind a hub:
guarded by read:metrics like /hub/metrics, counters that move on real requests, bounded label
values, and the Grafana dashboard in the repository only uses metrics the services expose."""

from __future__ import annotations

import json
import re
import secrets
import uuid
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from fort_hub import scopes
from tests.fortstack import call, services_behind_hub, url
from tests.fortsvc import auth

DASHBOARD = Path(__file__).resolve().parent.parent / "docs" / "grafana" / "fort-hub.json"
SERVICES = (scopes.GROUPS_SERVICE, scopes.CREDENTIALS_SERVICE, scopes.QUERY_SERVICE)
SQL = {"sql": "SELECT country FROM url_shares LIMIT 3", "dataset": "url_shares"}


PROMETHEUS_TOKEN = secrets.token_hex(24)
#: the scrape token of docs/metrics.md: a token-only hub service with a read:metrics role
PROMETHEUS = f"""
c.JupyterHub.services.append({{"name": "prometheus", "api_token": {PROMETHEUS_TOKEN!r}}})
c.JupyterHub.load_roles.append(
    {{"name": "prometheus", "scopes": ["read:metrics"], "services": ["prometheus"]}}
)
"""


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    yield from services_behind_hub(tmp_path_factory.mktemp("metrics"), PROMETHEUS)


@pytest.fixture(scope="module")
def metrics_token(env):
    return PROMETHEUS_TOKEN


def scrape(env, service, token) -> dict[str, list]:
    """{sample name: [(labels, value)]} of one service's /metrics."""
    r = requests.get(url(env, service, "metrics"), headers=auth(token), timeout=30)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("text/plain")
    samples: dict[str, list] = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            samples.setdefault(s.name, []).append((s.labels, s.value))
    return samples


def value(samples, name, **labels) -> float:
    return sum(
        v for lab, v in samples.get(name, []) if all(lab.get(k) == w for k, w in labels.items())
    )


def run_query(env, user="alice") -> str:
    r = call(env, scopes.QUERY_SERVICE, "POST", "api/v1/queries", SQL, user=user)
    assert r.status_code in (201, 202), r.text
    qid = r.json()["id"]
    r = call(env, scopes.QUERY_SERVICE, "GET", f"api/v1/queries/{qid}?wait=30", user=user)
    assert r.json()["state"] == "succeeded", r.text
    return qid


@pytest.mark.parametrize("service", SERVICES)
def test_metrics_need_read_metrics_like_the_hub(env, metrics_token, service):
    anonymous = requests.get(url(env, service, "metrics"), timeout=30)
    assert anonymous.status_code == 401
    assert "fort_" not in anonymous.text
    researcher = requests.get(
        url(env, service, "metrics"), headers=auth(env["tokens"]["alice"]), timeout=30
    )
    assert researcher.status_code == 403
    assert "read:metrics" in researcher.json()["error"]["message"]
    assert "fort_request_duration_seconds" not in researcher.text
    samples = scrape(env, service, metrics_token)
    assert "fort_request_duration_seconds_count" in samples


def test_requests_decisions_and_audit_latency_move_on_real_requests(env, metrics_token):
    q = scopes.QUERY_SERVICE
    before = scrape(env, q, metrics_token)
    qid = run_query(env)
    r = call(env, q, "GET", f"api/v1/queries/{qid}/results?format=csv")
    assert r.status_code == 200 and r.content
    denied = call(env, q, "POST", "api/v1/queries", SQL, user="dave")
    assert denied.status_code == 403
    after = scrape(env, q, metrics_token)

    def moved(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("fort_request_duration_seconds_count", route="api/v1/queries",
                 method="POST", code="202") + moved(
        "fort_request_duration_seconds_count", route="api/v1/queries", method="POST",
        code="201") == 1  # fmt: skip
    assert moved("fort_request_duration_seconds_count", route="api/v1/queries", code="403") == 1
    assert moved("fort_decisions_total", action="query.submit", decision="allow") == 1
    assert moved("fort_decisions_total", action="query.submit", decision="deny") == 1
    assert moved("fort_decisions_total", action="query.download", decision="allow") == 1
    assert moved("fort_audit_commit_duration_seconds_count", service=q) >= 4
    assert moved("fort_query_queries_total", engine="duckdb", state="succeeded") == 1
    assert moved("fort_query_served_bytes_total") == len(r.content)
    assert value(after, "fort_query_queue_depth", engine="duckdb") == 0
    # each service counts its own decisions only
    groups = scrape(env, scopes.GROUPS_SERVICE, metrics_token)
    assert not [lab for lab, _ in groups.get("fort_decisions_total", [])
                if lab["action"].startswith("query.")]  # fmt: skip


def test_credentials_count_sts_calls_and_cache_hits(env, metrics_token):
    c = scopes.CREDENTIALS_SERVICE
    before = scrape(env, c, metrics_token)
    for _ in range(2):
        r = call(env, c, "GET", "api/v1/aws/credentials?role=fort-urls-study")
        assert r.status_code == 200, r.text
    after = scrape(env, c, metrics_token)
    calls = value(after, "fort_credentials_sts_calls_total", outcome="ok") - value(
        before, "fort_credentials_sts_calls_total", outcome="ok"
    )
    hits = value(after, "fort_credentials_cache_hits_total") - value(
        before, "fort_credentials_cache_hits_total"
    )
    assert calls + hits == 2 and hits >= 1
    assert value(after, "fort_credentials_sts_duration_seconds_count") >= calls


def test_label_values_stay_bounded_whatever_the_path(env, metrics_token):
    q = scopes.QUERY_SERVICE
    for _ in range(3):
        rid = uuid.uuid4().hex
        assert call(env, q, "GET", f"api/v1/queries/{rid}").status_code == 404
        assert call(env, q, "GET", f"api/v1/no-such/{rid}").status_code == 404
        direct = env["apps"][q].bind_url + f"/services/{q}/api/v1/usage"  # the proxy refuses it
        assert requests.request(f"M{rid[:8].upper()}", direct, timeout=30).status_code == 405
    samples = scrape(env, q, metrics_token)
    text = json.dumps(samples)
    assert "api/v1/queries/*" in text
    assert "(unmatched)" in text
    assert not re.search(r"[0-9a-f]{32}", text), "an id became a label value"
    assert not re.search(r'"method": "M[0-9A-F]{8}"', text), "a method name became a label"
    assert '"method": "other"' in text
    assert "alice" not in text


def panel_exprs(dashboard: dict) -> list[tuple[str, str]]:
    out = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            out.append((panel["title"], target["expr"]))
    return out


def metric_names(expr: str) -> set[str]:
    """The metric names in a PromQL expression (label names and functions excluded)."""
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\b(by|without)\s*\([^)]*\)", "", expr)  # grouping labels
    return set(re.findall(r"\bfort_[a-z_]+\b", expr))


def test_dashboard_panels_use_only_exposed_metrics(env, metrics_token):
    run_query(env)
    call(env, scopes.CREDENTIALS_SERVICE, "GET", "api/v1/aws/credentials?role=fort-urls-study")
    exposed: set[str] = set()
    for service in SERVICES:
        exposed |= set(scrape(env, service, metrics_token))
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = panel_exprs(dashboard)
    assert len(exprs) >= 8
    used = set()
    for title, expr in exprs:
        names = metric_names(expr)
        assert names, f"panel {title!r} shows no fort metric: {expr}"
        missing = names - exposed
        assert not missing, f"panel {title!r} uses {sorted(missing)}, not exposed"
        used |= names
    # every metric family the services expose is on the dashboard
    families = {re.sub(r"_(bucket|count|sum|total|created)$", "", n) for n in exposed}
    shown = {re.sub(r"_(bucket|count|sum|total|created)$", "", n) for n in used}
    assert families - shown == set(), f"not on the dashboard: {sorted(families - shown)}"


def test_authenticate_prometheus_false_opens_metrics_as_on_the_hub(env):
    app = env["apps"][scopes.GROUPS_SERVICE]
    app.authenticate_prometheus = False
    try:
        r = requests.get(url(env, scopes.GROUPS_SERVICE, "metrics"), timeout=30)
    finally:
        app.authenticate_prometheus = True
    assert r.status_code == 200 and "fort_request_duration_seconds" in r.text
    assert requests.get(url(env, scopes.GROUPS_SERVICE, "metrics"), timeout=30).status_code == 401
