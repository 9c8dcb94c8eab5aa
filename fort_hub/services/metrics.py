"""Prometheus metrics of the fort services, in JupyterHub's style.

Each service serves its metrics at ``<prefix>metrics`` (``/services/fort-query/metrics``...),
guarded like the hub's ``/hub/metrics``: the caller's token needs the ``read:metrics`` scope
(``c.FortServiceApp.authenticate_prometheus = False`` opens it, as
``c.JupyterHub.authenticate_prometheus`` does for the hub).

Names: what every service measures is ``fort_*`` with a ``service`` label (the hub service
name); what only one service measures is ``fort_query_*``, ``fort_credentials_*`` or
``fort_groups_*``. Every label value comes from a bounded set: route *templates* (never a path
with a user name or an id in it), HTTP methods and status codes, audit actions (constants in
the code), engines and query states. docs/metrics.md lists the metrics and a scrape config.

One :class:`CollectorRegistry` per service application (one per process in a deployment), so
several services in one test process never mix their numbers. Domain objects get a small
metrics object injected (``QueryRunner(..., metrics=QueryMetrics(...))``); built without one
they count into a private registry nobody scrapes.
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from .handler import FortHandler

METRICS_SCOPE = "read:metrics"
HTTP_METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"))
#: the route label of requests no route matched (their paths are never label values)
UNMATCHED = "(unmatched)"
#: buckets for audit commits: a group commit takes about a millisecond on SQLite
AUDIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
#: buckets for requests (JupyterHub's request histogram uses the prometheus defaults)
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class ServiceMetrics:
    """What every fort service measures: requests, decisions, audit commits.

    *audit_prefix* selects the audit actions this service decides (``"query."``): the fort
    store is shared by everything in a process, and each service counts its own decisions.
    """

    def __init__(self, service: str, audit_prefix: str = "", registry=None):
        self.service = service
        self.audit_prefix = audit_prefix
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Histogram(
            "fort_request_duration_seconds",
            "Requests to a fort service by route template, method and status code",
            ["service", "route", "method", "code"],
            buckets=REQUEST_BUCKETS,
            registry=r,
        )
        self.decisions = Counter(
            "fort_decisions",
            "Audited decisions by action and outcome (allow / deny)",
            ["service", "action", "decision"],
            registry=r,
        )
        self.audit_commit = Histogram(
            "fort_audit_commit_duration_seconds",
            "Time until an audit record was durably committed (group commit included)",
            ["service"],
            buckets=AUDIT_BUCKETS,
            registry=r,
        )
        self.audit_failures = Counter(
            "fort_audit_failures",
            "Audit records that could not be committed (the action was refused)",
            ["service"],
            registry=r,
        )
        # a series exists from the start, so dashboards show 0 rather than "no data"
        self.audit_failures.labels(service)

    def observe_request(self, route: str, method: str, code: int, seconds: float) -> None:
        method = method if method in HTTP_METHODS else "other"  # any word reaches tornado
        self.requests.labels(self.service, route, method, str(code)).observe(seconds)

    def observe_audit(self, action: str, decision: str, seconds: float, committed: bool) -> None:
        """The audit log's observer (:meth:`fort_hub.store.audit.AuditLog.add_observer`)."""
        if not action.startswith(self.audit_prefix):
            return
        self.audit_commit.labels(self.service).observe(seconds)
        if committed:
            self.decisions.labels(self.service, action, decision).inc()
        else:
            self.audit_failures.labels(self.service).inc()

    def expose(self) -> bytes:
        """The Prometheus text format of this service's registry."""
        return generate_latest(self.registry)


class QueryMetrics(ServiceMetrics):
    """fort-query: queries by state and engine, bytes scanned and served, queue depth."""

    def __init__(self, service: str = "fort-query", registry=None):
        super().__init__(service, "query.", registry)
        r = self.registry
        self.queries = Counter(
            "fort_query_queries",
            "Finished queries by engine and final state (succeeded, failed, cancelled)",
            ["engine", "state"],
            registry=r,
        )
        self.scanned = Counter(
            "fort_query_scanned_bytes",
            "Bytes the engines report scanned for finished queries",
            ["engine"],
            registry=r,
        )
        self.served = Counter(
            "fort_query_served_bytes", "Bytes of query results sent to clients", registry=r
        )
        self.inflight = Gauge(
            "fort_query_queue_depth",
            "Queries this replica admitted and has not finished (queued or running); each"
            " replica counts only its own: sum over replicas for the deployment's",
            ["engine"],
            registry=r,
        )

    def query_started(self, engine: str) -> None:
        self.inflight.labels(engine).inc()

    def query_finished(self, engine: str, state: str, bytes_scanned: int) -> None:
        self.inflight.labels(engine).dec()
        self.queries.labels(engine, state).inc()
        self.scanned.labels(engine).inc(max(0, bytes_scanned or 0))

    def result_served(self, nbytes: int) -> None:
        self.served.inc(nbytes)


class CredentialsMetrics(ServiceMetrics):
    """fort-credentials: STS calls by outcome, hand-overs from the session cache."""

    def __init__(self, service: str = "fort-credentials", registry=None):
        super().__init__(service, "credentials.", registry)
        r = self.registry
        self.sts_calls = Counter(
            "fort_credentials_sts_calls",
            "AssumeRole calls to AWS STS by outcome (ok, or the STS error code)",
            ["outcome"],
            registry=r,
        )
        self.sts_duration = Histogram(
            "fort_credentials_sts_duration_seconds",
            "Duration of AssumeRole calls to AWS STS",
            buckets=REQUEST_BUCKETS,
            registry=r,
        )
        self.cache_hits = Counter(
            "fort_credentials_cache_hits",
            "Credentials handed over from the session cache (no STS call)",
            registry=r,
        )
        self.sts_calls.labels("ok")

    def sts_call(self, outcome: str, seconds: float) -> None:
        """*outcome*: "ok" or the STS error code (a bounded set of AWS codes)."""
        self.sts_calls.labels(outcome[:64] or "error").inc()
        self.sts_duration.observe(seconds)

    def cache_hit(self) -> None:
        self.cache_hits.inc()


class GroupsMetrics(ServiceMetrics):
    """fort-groups: reconciliation runs and the changes they made."""

    def __init__(self, service: str = "fort-groups", registry=None):
        super().__init__(service, "groups.", registry)
        self.reconciles = Counter(
            "fort_groups_reconcile_runs",
            "Reconciliations of hub groups with the fort store, by outcome (ok, error)",
            ["outcome"],
            registry=self.registry,
        )
        self.reconciles.labels("ok")

    def reconciled(self, ok: bool) -> None:
        self.reconciles.labels("ok" if ok else "error").inc()


class MetricsHandler(FortHandler):
    """``<prefix>metrics``: Prometheus text, for tokens with ``read:metrics`` (as the hub's).

    The service's own access scope is not required: a Prometheus token needs only
    ``read:metrics``, exactly as for ``/hub/metrics``.
    """

    required_scopes = (METRICS_SCOPE,)

    @property
    def hub_scopes(self):
        return {METRICS_SCOPE}

    async def prepare(self) -> None:
        if self.app.authenticate_prometheus:
            await super().prepare()
        else:
            self.check_query_params()

    async def get(self):
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.finish(self.app.metrics.expose())


__all__ = [
    "METRICS_SCOPE",
    "UNMATCHED",
    "CredentialsMetrics",
    "GroupsMetrics",
    "MetricsHandler",
    "QueryMetrics",
    "ServiceMetrics",
]
