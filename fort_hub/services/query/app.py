"""fort-query: the audited, quota'd, authorized door between notebooks and the warehouse.

Run by the hub as the ``fort-query`` service::

    c.JupyterHub.services.append({
        "name": "fort-query",
        "url": "http://127.0.0.1:10103",
        "command": [sys.executable, "-m", "fort_hub.services.query"],
    })

This module holds the settings and wires them together; what happens to a query is
:class:`.runner.QueryRunner`. Results are stored as Arrow IPC stream files and served as Arrow,
JSON pages or CSV until they expire.
"""

from __future__ import annotations

import asyncio
import os

from jupyterhub.traitlets import EntryPointType
from tornado.ioloop import PeriodicCallback
from traitlets import Float, Integer, Unicode, default, validate

from ..base import FortServiceApp
from ..metrics import QueryMetrics
from .engines.athena import AthenaEngine
from .engines.base import QueryEngine
from .engines.duckdb import DuckDBEngine
from .results import LocalResultStore, ResultStore
from .runner import RESTART_REASON, Limits, QueryRunner

__all__ = ["RESTART_REASON", "QueryService"]


class QueryService(FortServiceApp):
    """The fort-query service (``python -m fort_hub.services.query``)."""

    name = "fort-query"
    default_service_name = "fort-query"
    description = "fort-query: the authorized, audited SQL proxy to the data warehouse"

    duckdb_engine_class = EntryPointType(
        DuckDBEngine,
        klass=QueryEngine,
        entry_point_group="fort_hub.query_engines",
        help="""Engine for datasets with `engine: duckdb` (see fort_hub.services.query.engines.base
        for the contract): a name registered in the `fort_hub.query_engines` entry point group
        (`duckdb`, `athena`) or an import string.

            c.QueryService.duckdb_engine_class = "mypackage.MyDuckDBEngine"
        """,
    ).tag(config=True)

    athena_engine_class = EntryPointType(
        AthenaEngine,
        klass=QueryEngine,
        entry_point_group="fort_hub.query_engines",
        help="""Engine for datasets with `engine: athena`: an entry point name of the
        `fort_hub.query_engines` group or an import string.

            c.QueryService.athena_engine_class = "athena"
        """,
    ).tag(config=True)

    result_store_class = EntryPointType(
        LocalResultStore,
        klass=ResultStore,
        entry_point_group="fort_hub.result_stores",
        help="""Where query results are kept (see fort_hub.services.query.results for the
        contract): a name in the `fort_hub.result_stores` entry point group or an import
        string. `local` (the default) is a directory (`results_dir`): one replica, or replicas
        sharing a ReadWriteMany volume. `s3` is a bucket (`c.S3ResultStore.bucket`): any
        replica serves any query's result.

            c.QueryService.result_store_class = "s3"
            c.S3ResultStore.bucket = "fort-query-results"
        """,
    ).tag(config=True)

    results_dir = Unicode(
        help="""Directory for stored query results with the `local` result store (Arrow IPC
        stream files, mode 0700). Defaults to ./fort-query-results.

            c.QueryService.results_dir = "/var/lib/fort/query-results"
        """,
    ).tag(config=True)

    @default("results_dir")
    def _default_results_dir(self):
        return os.path.abspath("fort-query-results")

    result_ttl = Float(
        24 * 3600,
        help="""Seconds a query's result is kept for download; then the file is removed (the
        query record stays, with `result_available: false`).

            c.QueryService.result_ttl = 7 * 24 * 3600
        """,
    ).tag(config=True)

    query_timeout = Float(
        300,
        help="""Seconds a query may run before it is interrupted and marked failed.

            c.QueryService.query_timeout = 900
        """,
    ).tag(config=True)

    max_result_rows = Integer(
        50_000_000,
        help="""Hard cap on result rows for everyone (the policy's per-user `max_result_rows`
        applies below it).

            c.QueryService.max_result_rows = 10_000_000
        """,
    ).tag(config=True)

    max_result_bytes = Integer(
        4 * 1024**3,
        help="""Cap on a result's size in bytes (Arrow, uncompressed).

            c.QueryService.max_result_bytes = 1024**3
        """,
    ).tag(config=True)

    inline_result_bytes = Integer(
        4 * 1024**2,
        help="""Largest result (Arrow bytes, uncompressed) a waiting submit
        (`POST /api/v1/queries?wait=<seconds>` with `Accept: application/vnd.apache.arrow.stream`)
        answers whole, once the query finished and its records are committed: one round trip.
        A larger result streams in the same answer as the engine produces it; the service
        holds at most this much per waiting submit before it starts sending.

            c.QueryService.inline_result_bytes = 16 * 1024**2
        """,
    ).tag(config=True)

    cleanup_interval = Float(
        60,
        help="""Seconds between sweeps that remove expired results.

            c.QueryService.cleanup_interval = 300
        """,
    ).tag(config=True)

    max_sql_bytes = Integer(
        64 * 1024,
        help="""Largest SQL text accepted, in bytes (UTF-8). Longer statements are refused with
        413 before they are parsed: parsing is the one step whose cost the caller chooses.

            c.QueryService.max_sql_bytes = 256 * 1024
        """,
    ).tag(config=True)

    parse_threads = Integer(
        2,
        help="""Threads that parse and authorize SQL, off the event loop (admitted queries
        only), so a long statement never delays other requests.

            c.QueryService.parse_threads = 4
        """,
    ).tag(config=True)

    lease_ttl = Float(
        30,
        help="""Seconds a replica's lease on its running queries lasts without a heartbeat.
        When a replica dies, its queries are failed (with a reason, freeing their concurrency
        slots) by another replica this long after its last heartbeat.

            c.QueryService.lease_ttl = 60
        """,
    ).tag(config=True)

    heartbeat_interval = Float(
        2,
        help="""Seconds between heartbeats: each renews this replica's leases, stops queries
        that another replica was asked to cancel and fails queries of replicas that are gone.
        Must be well below `lease_ttl`.

            c.QueryService.heartbeat_interval = 5
        """,
    ).tag(config=True)

    @validate("heartbeat_interval")
    def _heartbeat_below_ttl(self, proposal):
        value = proposal["value"]
        if not 0 < value <= self.lease_ttl / 3:
            raise ValueError(
                f"QueryService.heartbeat_interval ({value:g}) must be positive and at most a "
                f"third of QueryService.lease_ttl ({self.lease_ttl:g})"
            )
        return value

    @validate(
        "lease_ttl",
        "result_ttl",
        "query_timeout",
        "cleanup_interval",
        "max_result_rows",
        "max_result_bytes",
        "inline_result_bytes",
        "max_sql_bytes",
        "parse_threads",
    )
    def _positive(self, proposal):
        if proposal["value"] <= 0:
            raise ValueError(f"QueryService.{proposal['trait'].name} must be positive")
        return proposal["value"]

    # ----- lifecycle --------------------------------------------------------------------------

    def initialize(self, argv: list[str] | None = None) -> None:
        super().initialize(argv)
        engines: dict[str, QueryEngine] = {
            "duckdb": self.duckdb_engine_class(parent=self),
            "athena": self.athena_engine_class(parent=self),
        }
        limits = Limits(
            self.query_timeout, self.max_result_rows, self.max_result_bytes, self.result_ttl,
            self.max_sql_bytes, self.parse_threads, self.lease_ttl,
        )  # fmt: skip
        self.runner = QueryRunner(
            self.access, engines, self.result_store_class(self.results_dir, parent=self),
            limits, self.log, self.metrics,
            replica=self.replica_name,
        )  # fmt: skip

    def make_metrics(self) -> QueryMetrics:
        return QueryMetrics(self.service_name)

    def handlers(self) -> list[tuple]:
        from .handlers import handlers

        return handlers()

    def template_path(self) -> str:
        return os.path.join(os.path.dirname(__file__), "templates")

    async def on_start(self) -> None:
        await self.runner.recover()
        self._cleanup = PeriodicCallback(self._cleanup_tick, self.cleanup_interval * 1000)
        self._cleanup.start()
        self._heartbeat = PeriodicCallback(self._heartbeat_tick, self.heartbeat_interval * 1000)
        self._heartbeat.start()

    def _heartbeat_tick(self) -> None:
        if getattr(self, "_beating", None) is None or self._beating.done():
            self._beating = asyncio.ensure_future(self.runner.heartbeat())

    def _cleanup_tick(self) -> None:
        self._cleanup_task = asyncio.ensure_future(self.runner.remove_expired())

    async def shutdown(self) -> None:
        for periodic in ("_cleanup", "_heartbeat"):
            if getattr(self, periodic, None):
                getattr(self, periodic).stop()
        self.runner.close()
        self.runner.results.close()
        await super().shutdown()
