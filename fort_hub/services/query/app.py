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
from .engines.athena import AthenaEngine
from .engines.base import QueryEngine
from .engines.duckdb import DuckDBEngine
from .results import ResultStore
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

    results_dir = Unicode(
        help="""Directory for stored query results (Arrow IPC stream files, mode 0700).
        Defaults to ./fort-query-results.

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

    @validate(
        "result_ttl",
        "query_timeout",
        "cleanup_interval",
        "max_result_rows",
        "max_result_bytes",
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
            self.max_sql_bytes, self.parse_threads,
        )  # fmt: skip
        self.runner = QueryRunner(
            self.access, engines, ResultStore(self.results_dir), limits, self.log
        )

    def handlers(self) -> list[tuple]:
        from .handlers import handlers

        return handlers()

    def template_path(self) -> str:
        return os.path.join(os.path.dirname(__file__), "templates")

    async def on_start(self) -> None:
        await self.runner.recover()
        self._cleanup = PeriodicCallback(self._cleanup_tick, self.cleanup_interval * 1000)
        self._cleanup.start()

    def _cleanup_tick(self) -> None:
        self._cleanup_task = asyncio.ensure_future(self.runner.remove_expired())

    async def shutdown(self) -> None:
        if getattr(self, "_cleanup", None):
            self._cleanup.stop()
        self.runner.close()
        await super().shutdown()
