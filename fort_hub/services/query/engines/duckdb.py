"""The embedded DuckDB engine: datasets are Parquet/CSV/JSON files or a DuckDB database file.

Every query gets its own in-memory connection on which the dataset's tables are views
(``"<dataset>"."<table>"``). The connection is then hardened before the user's SQL runs:

- ``allowed_paths`` is the dataset's own files, then ``enable_external_access = false``: no other
  file, URL, ATTACH, COPY or extension download can be reached, even if the SQL check were
  bypassed;
- ``autoinstall_known_extensions`` / ``autoload_known_extensions`` are off;
- ``memory_limit`` and ``threads`` come from the settings, and ``lock_configuration = true`` stops
  the query from changing any of this.

The hardened database is built once per dataset and reused for ``base_max_age`` seconds; each
query runs on its own cursor (a separate connection to that database, sharing its locked
settings), so a query costs no connection set-up. Cancellation and timeouts call the cursor's
``interrupt()``.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import duckdb
from traitlets import Float, Integer, Unicode, validate

from ....policy.model import Dataset
from .base import EngineError, EngineJob, Outcome, QueryCancelled, QueryEngine, ResultSink

READERS = {
    ".parquet": "read_parquet",
    ".csv": "read_csv_auto",
    ".tsv": "read_csv_auto",
    ".json": "read_json_auto",
    ".ndjson": "read_json_auto",
}


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _lit(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _first_line(e: Exception) -> str:
    return (str(e).splitlines() or [type(e).__name__])[0]


class DuckDBEngine(QueryEngine):
    """Runs queries in-process with DuckDB on hardened per-query connections."""

    dialect = "duckdb"

    memory_limit = Unicode(
        "1GB",
        help="""DuckDB memory limit per query connection.

            c.DuckDBEngine.memory_limit = "4GB"
        """,
    ).tag(config=True)

    threads = Integer(
        2,
        help="""DuckDB worker threads per query.

            c.DuckDBEngine.threads = 4
        """,
    ).tag(config=True)

    batch_rows = Integer(
        122_880,
        help="""Rows per record batch fetched from DuckDB and written to the result file.

            c.DuckDBEngine.batch_rows = 1_000_000
        """,
    ).tag(config=True)

    max_running = Integer(
        8,
        help="""Queries run at the same time (a thread each); more wait in line.

            c.DuckDBEngine.max_running = 16
        """,
    ).tag(config=True)

    base_max_age = Float(
        300,
        help="""Seconds a dataset's hardened database (its views) is reused before it is
        rebuilt (e.g. to see a replaced DuckDB file). 0 builds one per query.

            c.DuckDBEngine.base_max_age = 60
        """,
    ).tag(config=True)

    @validate("threads", "batch_rows", "max_running")
    def _positive(self, proposal):
        if proposal["value"] < 1:
            raise ValueError(f"DuckDBEngine.{proposal['trait'].name} must be at least 1")
        return proposal["value"]

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._running: dict[str, duckdb.DuckDBPyConnection] = {}
        self._cancelled: set[str] = set()
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(self.max_running, thread_name_prefix="fort-duckdb")
        self._bases: dict[tuple, tuple[float, duckdb.DuckDBPyConnection]] = {}
        self._interrupters: set[asyncio.Task] = set()

    def target(self, dataset: Dataset) -> tuple[str | None, str | None]:
        return (None, dataset.name)

    # ----- connections ------------------------------------------------------------------------

    def _files(self, dataset: Dataset) -> list[str]:
        loc = dataset.location
        if "database" in loc:
            db = str(loc["database"])
            return [db, db + ".wal"]
        return [str(p) for p in (loc.get("paths") or {}).values()]

    def connect(self, dataset: Dataset) -> duckdb.DuckDBPyConnection:
        """A new hardened connection on which *dataset*'s tables are views."""
        loc = dataset.location
        for path in self._files(dataset)[:1] if "database" in loc else self._files(dataset):
            if not os.path.exists(path):
                raise EngineError(
                    f"dataset '{dataset.name}': its file is missing ({os.path.basename(path)})"
                )
        con = duckdb.connect(
            ":memory:",
            config={
                "autoinstall_known_extensions": False,
                "autoload_known_extensions": False,
                "memory_limit": self.memory_limit,
                "threads": self.threads,
                "python_enable_replacements": False,
            },
        )
        try:
            files = ", ".join(_lit(p) for p in self._files(dataset))
            con.execute(f"SET allowed_paths = [{files}]")
            schema = _q(dataset.name)
            con.execute(f"CREATE SCHEMA {schema}")
            if "database" in loc:
                con.execute(f"ATTACH {_lit(str(loc['database']))} AS __fort_source (READ_ONLY)")
                for table in dataset.tables:
                    con.execute(
                        f"CREATE VIEW {schema}.{_q(table)} AS SELECT * FROM __fort_source.{_q(table)}"
                    )
            else:
                for table, path in (loc.get("paths") or {}).items():
                    reader = READERS.get(os.path.splitext(str(path))[1].lower(), "read_parquet")
                    con.execute(
                        f"CREATE VIEW {schema}.{_q(table)} AS SELECT * FROM {reader}({_lit(str(path))})"
                    )
            con.execute("SET enable_external_access = false")
            con.execute("SET lock_configuration = true")
        except duckdb.Error as e:
            con.close()
            raise EngineError(
                f"dataset '{dataset.name}' could not be opened: {_first_line(e)}"
            ) from None
        return con

    def cursor(self, dataset: Dataset) -> duckdb.DuckDBPyConnection:
        """A new connection to *dataset*'s cached hardened database."""
        key = (dataset.name, dataset.tables, repr(sorted(dataset.location.items())))
        now = time.monotonic()
        with self._lock:
            hit = self._bases.get(key)
            if hit and now - hit[0] < self.base_max_age:
                return hit[1].cursor()
        base = self.connect(dataset)  # outside the lock: may read file metadata
        with self._lock:
            for k in [k for k in self._bases if k[0] == dataset.name]:
                del self._bases[k]  # cursors still running keep the old database alive
            if self.base_max_age > 0:
                self._bases[key] = (now, base)
            return base.cursor()

    # ----- contract ---------------------------------------------------------------------------

    def _describe(self, dataset: Dataset) -> dict[str, list]:
        con = self.cursor(dataset)
        try:
            out = {}
            for table in dataset.tables:
                rows = con.execute(f"DESCRIBE {_q(dataset.name)}.{_q(table)}").fetchall()
                out[table] = [{"name": r[0], "type": r[1]} for r in rows]
            return out
        except duckdb.Error as e:
            raise EngineError(f"dataset '{dataset.name}': {_first_line(e)}") from None
        finally:
            con.close()

    async def describe(self, dataset: Dataset, job: EngineJob | None = None) -> dict[str, list]:
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._describe, dataset)

    def _run(self, job: EngineJob, sink: ResultSink) -> Outcome:
        con = self.cursor(job.dataset)
        with self._lock:
            if job.id in self._cancelled:
                con.close()
                raise QueryCancelled("cancelled before it started")
            self._running[job.id] = con
        try:
            reader = con.sql(job.sql).to_arrow_reader(self.batch_rows)
            sink.set_schema(reader.schema)
            for batch in reader:
                if job.id in self._cancelled:
                    raise QueryCancelled("cancelled")
                sink.write(batch)
            if job.id in self._cancelled:
                raise QueryCancelled("cancelled")
            return Outcome(rows=sink.rows, bytes_scanned=0, engine_id="")
        except duckdb.InterruptException:
            raise QueryCancelled("interrupted") from None
        except duckdb.Error as e:
            if job.id in self._cancelled:
                raise QueryCancelled("interrupted") from None
            raise EngineError(_first_line(e)) from None
        finally:
            with self._lock:
                self._running.pop(job.id, None)
                self._cancelled.discard(job.id)
            con.close()

    async def run(self, job: EngineJob, sink: ResultSink) -> Outcome:
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._run, job, sink)

    async def cancel(self, job_id: str) -> None:
        with self._lock:
            self._cancelled.add(job_id)
            running = job_id in self._running
        if running:
            # an interrupt that lands between registration and the start of execution is lost
            # (DuckDB clears the flag when a query begins), so keep interrupting until it ends
            task = asyncio.ensure_future(self._interrupt_until_stopped(job_id))
            self._interrupters.add(task)
            task.add_done_callback(self._interrupters.discard)

    async def _interrupt_until_stopped(self, job_id: str, every: float = 0.05) -> None:
        while True:
            with self._lock:
                con = self._running.get(job_id)
            if con is None:
                return
            con.interrupt()
            await asyncio.sleep(every)

    def close(self) -> None:
        with self._lock:
            running = list(self._running.values())
            self._bases.clear()
        for con in running:  # stop what still runs; their queries are failed at shutdown
            con.interrupt()
        self._pool.shutdown(wait=False, cancel_futures=True)
