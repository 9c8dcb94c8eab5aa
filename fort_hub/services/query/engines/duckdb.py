"""The embedded DuckDB engine: datasets are Parquet/CSV/JSON files or a DuckDB database file.

Queries never run in the service process. Each runs in a worker process (:mod:`.worker`, kept
started by a :class:`~.pool.WorkerPool`) with hard limits of its own:

- ``worker_memory_limit``: the worker's address space (``RLIMIT_AS``), above DuckDB's
  ``memory_limit`` (which DuckDB does not apply to everything, e.g. huge strings);
- ``worker_cpu_limit``: CPU seconds per query (``RLIMIT_CPU``);
- cancel and ``query_timeout``: the worker is asked to interrupt the query, and is killed
  (SIGKILL) if it has not stopped ``cancel_grace`` seconds later (DuckDB ignores interrupts
  while it plans); a new worker takes its place.

The worker writes the result as the pieces of one Arrow IPC stream. When the
:class:`ResultSink` offers a file (``direct``: the stored copy's partial file, which this
process creates), the worker appends them there itself and reports each batch on its pipe;
this process checks the file's real growth and the row and byte caps (``appended``) and a
waiting download is sent the same bytes from the file (no copy of the result crosses the pipe
or passes through this process; the worker stops before a batch over the caps and answers
an ``ERROR`` naming the cap, and the caps are checked here again from the rows in the file's
bytes and its size). Otherwise the pieces come over the pipe and are handed as they are to
the sink (``write_ipc``), a batch that would break a cap refused before it is read. In the
worker, each dataset's tables are views in an in-memory DuckDB database hardened before
any user SQL runs (:class:`.worker.HardenedDatabases`): ``allowed_paths`` is the dataset's own
files, then ``enable_external_access = false``, extension auto-install/auto-load off,
``memory_limit`` and ``threads`` from the settings, and ``lock_configuration = true``. Each query runs on its own cursor of that database.
"""

from __future__ import annotations

import asyncio
import re
import signal
import threading
from concurrent.futures import ThreadPoolExecutor

import duckdb
from traitlets import Float, Integer, Unicode, default, validate

from ....policy.model import Dataset
from . import worker as W
from .base import (
    EngineError,
    EngineJob,
    Outcome,
    QueryCancelled,
    QueryEngine,
    ResultSink,
    ResultTooLarge,
    check_result_caps,
)
from .errors import plain_duckdb_error
from .pool import WorkerGone, WorkerPool, WorkerProcess

START_TIMEOUT = 60  # seconds a worker may take to start
UNITS = {"": 1, "b": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}
SIZE_RE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(?:([kmgt]?)(i?)b?)?\s*", re.IGNORECASE)
MIN_WORKER_MEMORY = 768 * 2**20
#: the most a worker's stated bytes_scanned counts (a usage counter is a 64-bit integer)
MAX_SCANNED = 2**62


def parse_size(text: str) -> int:
    """Bytes in ``"3GB"``, ``"1.5 GiB"``, ``"512MB"``, ``"2g"`` (KB/MB/GB/TB are powers of
    1000, KiB/MiB/GiB/TiB of 1024, as in DuckDB); ValueError otherwise."""
    m = SIZE_RE.fullmatch(text)
    if not m:
        raise ValueError(f"'{text}' is not a size such as '4GB' or '512MiB'")
    prefix = (m.group(2) or "").lower()
    base = 1024 ** "kmgt".index(prefix) * 1024 if m.group(3) and prefix else UNITS[prefix]
    return int(float(m.group(1)) * base)


def duckdb_memory_limit(value: str) -> int:
    """What DuckDB makes of a ``memory_limit`` setting, in bytes (ValueError if it refuses)."""
    try:
        con = duckdb.connect(":memory:", config={"memory_limit": value})
    except duckdb.Error as e:
        raise ValueError(W.first_line(e)) from None
    try:
        return parse_size(con.execute("SELECT current_setting('memory_limit')").fetchone()[0])
    finally:
        con.close()


def reported_bytes(body: dict) -> int | None:
    """The ``bytes_scanned`` a worker's DONE or ERROR body states (None if it states none,
    or nothing a count can be)."""
    value = body.get("bytes_scanned") if isinstance(body, dict) else None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return min(value, MAX_SCANNED)
    return None


def at_least(*figures: int | None) -> int | None:
    """The largest of the known *figures* (None if none is known)."""
    known = [f for f in figures if f is not None]
    return max(known) if known else None


def read_since(worker: WorkerProcess, start: int | None) -> int | None:
    """What *worker* has read since it was at *start* bytes (:meth:`WorkerProcess.bytes_read`):
    the count of a query it could not report itself; None if unknown."""
    now = worker.bytes_read()
    if start is None or now is None:
        return None
    return max(0, now - start)


class DuckDBEngine(QueryEngine):
    """Runs queries with DuckDB in isolated worker processes on hardened connections."""

    dialect = "duckdb"

    memory_limit = Unicode(
        "1GB",
        help="""DuckDB memory limit per query connection (what DuckDB accepts: "4GB",
        "512MiB", "50%"). DuckDB does not apply it to everything it allocates; the hard limit
        per query is worker_memory_limit.

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
        help="""Queries run at the same time (a worker process each); more wait in line.

            c.DuckDBEngine.max_running = 16
        """,
    ).tag(config=True)

    base_max_age = Float(
        300,
        help="""Seconds a dataset's hardened database (its views) is reused by a worker before
        it is rebuilt (e.g. to see a replaced DuckDB file). 0 builds one per query.

            c.DuckDBEngine.base_max_age = 60
        """,
    ).tag(config=True)

    worker_memory_limit = Unicode(
        help="""Hard limit on the address space of each query's worker process (RLIMIT_AS),
        e.g. "3GB" or "4GiB". A query that needs more fails, naming this setting; the service
        itself is not affected. It counts virtual memory, including about 0.5 GB that DuckDB,
        Arrow and Python reserve before any query; at least 768MiB and above memory_limit.
        Default: twice DuckDB's memory_limit plus 1 GiB (3 GB for the default 1GB).

            c.DuckDBEngine.worker_memory_limit = "8GB"
        """,
    ).tag(config=True)

    @default("worker_memory_limit")
    def _default_worker_memory(self):
        return f"{2 * duckdb_memory_limit(self.memory_limit) + 2**30}B"

    worker_cpu_limit = Float(
        600,
        help="""CPU seconds (all of its threads together) one query may use; its worker process
        is then ended by the kernel (RLIMIT_CPU), also while DuckDB is still planning, and the
        query fails naming this setting. query_timeout limits the wall-clock time.

            c.DuckDBEngine.worker_cpu_limit = 1800
        """,
    ).tag(config=True)

    idle_workers = Integer(
        1,
        help="""Worker processes kept started and waiting on top of the busy ones, so that a
        query does not wait for a process to start (about 0.4 s). At most max_running +
        idle_workers workers exist.

            c.DuckDBEngine.idle_workers = 2
        """,
    ).tag(config=True)

    cancel_grace = Float(
        0.5,
        help="""Seconds a worker is given to stop a cancelled or timed-out query before it is
        killed (SIGKILL) and replaced.

            c.DuckDBEngine.cancel_grace = 2
        """,
    ).tag(config=True)

    @validate("threads", "batch_rows", "max_running")
    def _positive(self, proposal):
        if proposal["value"] < 1:
            raise ValueError(f"DuckDBEngine.{proposal['trait'].name} must be at least 1")
        return proposal["value"]

    @validate("idle_workers", "cancel_grace", "base_max_age")
    def _not_negative(self, proposal):
        if proposal["value"] < 0:
            raise ValueError(f"DuckDBEngine.{proposal['trait'].name} must not be negative")
        return proposal["value"]

    @validate("worker_cpu_limit")
    def _cpu_positive(self, proposal):
        if not proposal["value"] > 0:
            raise ValueError("DuckDBEngine.worker_cpu_limit must be positive (seconds)")
        return proposal["value"]

    @validate("memory_limit")
    def _duckdb_size(self, proposal):
        try:
            duckdb_memory_limit(proposal["value"])
        except ValueError as e:
            raise ValueError(f"DuckDBEngine.memory_limit: {e}") from None
        return proposal["value"]

    @validate("worker_memory_limit")
    def _worker_size(self, proposal):
        try:
            size = parse_size(proposal["value"])
        except ValueError as e:
            raise ValueError(f"DuckDBEngine.worker_memory_limit: {e}") from None
        if size < MIN_WORKER_MEMORY:
            raise ValueError(
                f"DuckDBEngine.worker_memory_limit ({proposal['value']}) must be at least "
                "768MiB: a worker reserves about 0.5 GB of address space before any query"
            )
        return proposal["value"]

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.address_space = parse_size(self.worker_memory_limit)
        if self.address_space <= duckdb_memory_limit(self.memory_limit):
            raise ValueError(
                f"DuckDBEngine.worker_memory_limit ({self.worker_memory_limit}) must be above "
                f"DuckDBEngine.memory_limit ({self.memory_limit})"
            )
        self._running: dict[str, WorkerProcess] = {}
        self._cancelled: set[str] = set()
        self._lock = threading.Lock()
        self._threads = ThreadPoolExecutor(self.max_running, thread_name_prefix="fort-duckdb")
        self.workers = WorkerPool(
            {"memory_limit": self.memory_limit, "threads": self.threads,
             "batch_rows": self.batch_rows, "max_age": self.base_max_age,
             "address_space": self.address_space},
            self.idle_workers, self.log,
        )  # fmt: skip

    def target(self, dataset: Dataset) -> tuple[str | None, str | None]:
        return (None, dataset.name)

    # ----- contract ---------------------------------------------------------------------------

    async def describe(self, dataset: Dataset, job: EngineJob | None = None) -> dict[str, list]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._threads, self._describe, dataset)

    async def run(self, job: EngineJob, sink: ResultSink) -> Outcome:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._threads, self._run, job, sink)

    async def cancel(self, job_id: str) -> None:
        with self._lock:
            self._cancelled.add(job_id)
            worker = self._running.get(job_id)
        if worker is None:
            return
        try:
            worker.send({"op": "cancel", "id": job_id})
        except WorkerGone:
            return
        loop = asyncio.get_running_loop()
        loop.call_later(self.cancel_grace, self._kill_if_running, job_id, worker)

    def _kill_if_running(self, job_id: str, worker: WorkerProcess) -> None:
        with self._lock:
            still = self._running.get(job_id) is worker
        if still:
            self.log.warning("query %s did not stop when cancelled: killing its worker", job_id)
            worker.kill()

    def close(self) -> None:
        self.workers.close()  # running queries end with WorkerGone: they are failed at shutdown
        self._threads.shutdown(wait=False, cancel_futures=True)

    # ----- on the engine's threads ------------------------------------------------------------

    def _describe(self, dataset: Dataset) -> dict[str, list]:
        worker = self.workers.acquire()
        try:
            worker.wait_ready(START_TIMEOUT)
            worker.send({"op": "describe", "id": "", "dataset": self._dataset(dataset)})
            kind, length, _, _ = worker.header()
            if kind == W.DESCRIBED:
                return worker.json(length)
            raise EngineError(worker.json(length)["message"])
        except WorkerGone as e:
            worker.retire = True
            raise EngineError(f"dataset '{dataset.name}' could not be described: {e}") from None
        finally:
            self.workers.release(worker)

    def _run(self, job: EngineJob, sink: ResultSink) -> Outcome:
        with self._lock:
            if job.id in self._cancelled:
                self._cancelled.discard(job.id)
                raise QueryCancelled("cancelled before it started")
        worker = self.workers.acquire()
        with self._lock:
            self._running[job.id] = worker
        gone, start = None, None
        try:
            worker.wait_ready(START_TIMEOUT)
            if job.id in self._cancelled:  # cancelled while it took its worker
                raise QueryCancelled("cancelled before it started")
            start = worker.bytes_read()
            worker.send({
                "op": "run", "id": job.id, "sql": job.sql, "dataset": self._dataset(job.dataset),
                "cpu_limit": self.worker_cpu_limit, "spool": sink.direct(),
                "max_rows": sink.max_rows, "max_bytes": sink.max_bytes,
            })  # fmt: skip
            return self._receive(job, sink, worker)
        except WorkerGone as e:
            gone = e
            gone.bytes_scanned = read_since(worker, start)  # before it is reaped
        except EngineError as e:  # what it read: the worker's figure, and at least the kernel's
            e.bytes_scanned = at_least(e.bytes_scanned, read_since(worker, start))
            raise
        finally:
            with self._lock:
                self._running.pop(job.id, None)
                cancelled = job.id in self._cancelled
                self._cancelled.discard(job.id)
            if gone is None:
                self.workers.release(worker)
        rc = self.workers.discard(worker)
        error = self._gone(job, cancelled, rc, gone)
        error.bytes_scanned = gone.bytes_scanned
        raise error

    def _receive(self, job: EngineJob, sink: ResultSink, worker: WorkerProcess) -> Outcome:
        nbytes = 0
        while True:
            kind, length, rows, size = worker.header()
            if kind == W.SCHEMA:
                sink.set_schema(W.read_ipc_stream(worker.body(length))[0])
            elif kind == W.BATCH:
                if job.id in self._cancelled:  # the worker stops at its next batch
                    worker.skip(length)
                    continue
                # the bytes as sent count when they are more than the Arrow size the worker
                # states (the service forwards them without reading them back)
                size = max(size, length)
                try:  # refused before it is read: the service never holds an oversized batch
                    check_result_caps(
                        sink.rows + rows, nbytes + size, sink.max_rows, sink.max_bytes
                    )
                    nbytes += size
                    sink.write_ipc(worker.body(length), rows, size)  # forwarded as they are
                except EngineError:
                    worker.retire = True  # still sending: killed when released
                    raise
            elif kind == W.APPENDED:
                self._appended(job, sink, worker, length, rows, size)
            elif kind == W.DONE:
                done = worker.json(length)
                scanned = reported_bytes(done) or 0
                if job.id in self._cancelled:
                    cancelled = QueryCancelled("cancelled")
                    cancelled.bytes_scanned = scanned
                    raise cancelled
                return Outcome(rows=sink.rows, bytes_scanned=scanned, engine_id="")
            elif kind == W.ERROR:
                try:
                    error = worker.json(length)
                    failure = self._failure(worker, error, job, sink)
                except (ValueError, KeyError, TypeError, AttributeError):
                    raise WorkerGone("the query worker sent a malformed frame") from None
                failure.bytes_scanned = reported_bytes(error)
                raise failure
            else:
                raise WorkerGone(f"the query worker sent an unexpected frame ({kind})")

    def _appended(self, job, sink: ResultSink, worker: WorkerProcess, length, rows, size) -> None:
        """A batch the worker appended to the sink's direct() file: the sink checks the file's
        real growth and the caps."""
        if length != W.APPENDED_BODY.size:
            raise WorkerGone("the query worker sent a malformed frame")
        (written,) = W.APPENDED_BODY.unpack(worker.body(length).to_pybytes())
        if job.id in self._cancelled:  # the worker stops at its next batch
            return
        try:
            sink.appended(rows, size, written)
        except EngineError:
            worker.retire = True  # still writing: killed when released
            raise

    def _failure(self, worker: WorkerProcess, error: dict, job: EngineJob, sink) -> EngineError:
        if error["kind"] == W.CANCELLED or job.id in self._cancelled:
            return QueryCancelled(error["message"])
        if error["kind"] == W.TOO_LARGE:
            return self._over_cap(error, sink)
        if error["kind"] == W.OUT_OF_MEMORY:
            worker.retire = True
            return EngineError(
                f"the query ran out of memory (DuckDBEngine.memory_limit {self.memory_limit}, "
                f"worker_memory_limit {self.worker_memory_limit}): {error['message']}"
            )
        original = error.get("detail") or error["message"]
        plain = plain_duckdb_error(original)
        return EngineError(plain, detail=original if plain != original else None)

    @staticmethod
    def _over_cap(error: dict, sink: ResultSink) -> EngineError:
        """The worker stopped before a batch over a cap: refused in the service's own words
        if the rows and bytes it counted do go over a cap (every batch it appended was checked
        here, from the file), else a failure."""
        try:
            check_result_caps(int(error["rows"]), int(error["bytes"]), sink.max_rows,
                              sink.max_bytes)  # fmt: skip
        except ResultTooLarge as e:
            return e
        except (KeyError, TypeError, ValueError, OverflowError):  # e.g. "Infinity" rows
            pass
        return EngineError("the query worker stopped at a cap the result did not reach")

    def _gone(self, job: EngineJob, cancelled: bool, rc: int | None, e: WorkerGone):
        if cancelled:
            return QueryCancelled("cancelled: its worker process was stopped")
        if rc == -signal.SIGXCPU:
            return EngineError(
                f"the query used more than {self.worker_cpu_limit:g} s of CPU time "
                "(DuckDBEngine.worker_cpu_limit) and was stopped"
            )
        if rc is not None and rc < 0:
            return EngineError(
                f"the query's worker process was killed ({signal.Signals(-rc).name}); the query "
                f"may have needed more memory than worker_memory_limit ({self.worker_memory_limit})"
            )
        self.log.error("query %s: its worker ended (exit status %s): %s", job.id, rc, e)
        return EngineError(f"the query's worker process ended unexpectedly ({e})")

    @staticmethod
    def _dataset(dataset: Dataset) -> dict:
        return {"name": dataset.name, "tables": list(dataset.tables),
                "location": dict(dataset.location)}  # fmt: skip
