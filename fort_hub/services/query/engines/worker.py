"""The DuckDB query worker: one process running one query at a time, under hard limits.

fort-query's :class:`~.duckdb.DuckDBEngine` starts these processes (``python -P worker.py
CONFIG``: ``-P`` keeps this folder off ``sys.path``; the file imports nothing but the standard
library, DuckDB and pyarrow, so a worker starts in about 0.4 s) and keeps a few started and
waiting. A worker:

- limits its own address space (``RLIMIT_AS`` = ``worker_memory_limit``): memory DuckDB does not
  count against its ``memory_limit`` (huge strings, Arrow conversion) fails the query here
  instead of growing the service;
- limits each query's CPU time (``RLIMIT_CPU`` = CPU seconds used so far + ``worker_cpu_limit``):
  the kernel ends the process when a query goes over, also while DuckDB plans;
- dies with the service: ``PR_SET_PDEATHSIG`` (SIGKILL) and a thread that exits the process
  when its command pipe (stdin) closes;
- opens each dataset as a hardened in-memory DuckDB database (:class:`HardenedDatabases`) and
  runs each query on its own cursor.

Protocol: commands arrive on stdin as JSON lines (``run``, ``describe``, ``cancel``); answers go
to the original stdout as frames (:data:`HEADER` then a body): ``READY`` once, then per
command ``SCHEMA`` (a whole Arrow IPC stream holding the schema alone), then the result as
the pieces of *one* IPC stream, written straight from the batches' buffers (the schema message
with the first batch, then per batch the dictionaries it uses and the batch; the service adds
:data:`END_OF_STREAM`), and ``DONE``, or ``DESCRIBED`` / ``ERROR`` (JSON bodies). The pieces go
either into the result file the service created and named in the ``run`` command (``spool``:
opened write-only, append-only, never created here; each batch's pieces appended with one
``writev``, then an ``APPENDED`` frame stating the batch's rows, bytes and the length appended:
the result never crosses the pipe) or, without ``spool``, as the bodies of ``BATCH`` frames.
With a spool file the worker also stops before a batch that would break the row or byte cap
(``max_rows``, ``max_bytes``: it appends nothing and answers ``ERROR`` of kind
:data:`TOO_LARGE` naming the cap, with the rows and bytes it counted); the service checks the
caps itself, from the rows in the file's bytes and its real size, and takes no worker's word.
File descriptor 1 is pointed at stderr so that nothing else can write into the frame stream.

Each query runs profiled (``enable_profiling``, allowed on the locked connection) so that DONE,
and the ERROR of a query that failed, was cancelled or reached a cap, report the bytes it read
(:func:`scanned_bytes`, counted against ``bytes_scanned_per_day``); DuckDB prints each profile to descriptor 2, which is /dev/null in a worker (Python's
``sys.stderr`` keeps the service's stderr).
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import math
import os
import queue
import resource
import signal
import struct
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, BinaryIO

import duckdb
import pyarrow as pa

#: frame header: kind, body length, rows, bytes (Arrow ``nbytes`` of a batch)
HEADER = struct.Struct("!BQQQ")
READY, SCHEMA, BATCH, DONE, ERROR, DESCRIBED, APPENDED = range(1, 8)
#: APPENDED bodies: the bytes the worker appended to the result file (big-endian u64)
APPENDED_BODY = struct.Struct("!Q")
#: ERROR bodies of a query: {"kind": one of these, "message": text for the user, "detail": DuckDB's
#: whole message, "bytes_scanned": what it read before it ended}; DONE bodies: {"bytes_scanned":
#: what the query read from its files (see scanned_bytes)}
CANCELLED, OUT_OF_MEMORY, FAILED = "cancelled", "memory", "error"
#: ERROR kind of a result that would go over a cap: also "rows" and "bytes", what it counted
TOO_LARGE = "too_large"
#: worker environment: two malloc arenas keep the address space small (each arena reserves
#: 64 MB of address space per thread otherwise, all of it counted by RLIMIT_AS)
ENVIRONMENT = {"MALLOC_ARENA_MAX": "2"}
#: the only variables of the service's environment a worker gets: what Python, DuckDB and
#: Arrow need to start; never the service's tokens, database URL or cloud credentials
INHERITED = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "PYTHONPATH",
             "PYTHONHOME", "VIRTUAL_ENV", "LD_LIBRARY_PATH")  # fmt: skip

MAX_DETAIL = 4000  # characters of DuckDB's message kept as an error's detail

READERS = {
    ".parquet": "read_parquet",
    ".csv": "read_csv_auto",
    ".tsv": "read_csv_auto",
    ".json": "read_json_auto",
    ".ndjson": "read_json_auto",
}


class OpenError(Exception):
    """A dataset could not be opened; the message is shown to the user."""


class CapReached(Exception):
    """The next batch would take the result over a cap (:meth:`Worker.send_batches`)."""

    def __init__(self, rows: int, nbytes: int, max_rows: float, max_bytes: float):
        if rows > max_rows:
            message = (f"the result has more than {max_rows} rows (limit max_result_rows); "
                       "aggregate or add a LIMIT")  # fmt: skip
        else:
            message = (f"the result is larger than {max_bytes} bytes (limit max_result_bytes); "
                       "select fewer columns or rows")  # fmt: skip
        super().__init__(message)
        self.error = {"kind": TOO_LARGE, "message": message, "rows": rows, "bytes": nbytes}


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def first_line(e: BaseException) -> str:
    return (str(e).splitlines() or [type(e).__name__])[0]


def dataset_files(location: dict[str, Any]) -> list[str]:
    if "database" in location:
        db = str(location["database"])
        return [db, db + ".wal"]
    return [str(p) for p in (location.get("paths") or {}).values()]


class HardenedDatabases:
    """Per dataset, an in-memory DuckDB database whose tables are views over the dataset's
    files, hardened before any user SQL runs: ``allowed_paths`` = the dataset's own files,
    ``enable_external_access = false``, no extension auto-install/auto-load, ``memory_limit``
    and ``threads``, then ``lock_configuration = true``. Built once per dataset and reused for
    *max_age* seconds; every query gets its own cursor (a connection sharing the locked
    settings)."""

    def __init__(self, memory_limit: str, threads: int, max_age: float):
        self.memory_limit, self.threads, self.max_age = memory_limit, threads, max_age
        self._bases: dict[tuple, tuple[float, duckdb.DuckDBPyConnection]] = {}
        self._lock = threading.Lock()

    def connect(self, name: str, tables: list[str], location: dict[str, Any]):
        """A new hardened connection on which dataset *name*'s tables are views."""
        files = dataset_files(location)
        for path in files[:1] if "database" in location else files:
            if not os.path.exists(path):
                raise OpenError(f"dataset '{name}': its file is missing ({os.path.basename(path)})")
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
            con.execute(f"SET allowed_paths = [{', '.join(map(quote_literal, files))}]")
            schema = quote_ident(name)
            con.execute(f"CREATE SCHEMA {schema}")
            if "database" in location:
                source = quote_literal(str(location["database"]))
                con.execute(f"ATTACH {source} AS __fort_source (READ_ONLY)")
                for table in tables:
                    t = quote_ident(table)
                    con.execute(f"CREATE VIEW {schema}.{t} AS SELECT * FROM __fort_source.{t}")
            else:
                for table, path in (location.get("paths") or {}).items():
                    reader = READERS.get(os.path.splitext(str(path))[1].lower(), "read_parquet")
                    con.execute(
                        f"CREATE VIEW {schema}.{quote_ident(table)} AS "
                        f"SELECT * FROM {reader}({quote_literal(str(path))})"
                    )
            con.execute("SET enable_external_access = false")
            con.execute("SET lock_configuration = true")
        except duckdb.Error as e:
            con.close()
            raise OpenError(f"dataset '{name}' could not be opened: {first_line(e)}") from None
        return con

    def cursor(self, name: str, tables: list[str], location: dict[str, Any]):
        """A new connection to dataset *name*'s cached hardened database."""
        key = (name, tuple(tables), json.dumps(location, sort_keys=True, default=str))
        now = time.monotonic()
        with self._lock:
            hit = self._bases.get(key)
            if hit and now - hit[0] < self.max_age:
                return hit[1].cursor()
        base = self.connect(name, tables, location)
        with self._lock:
            for k in [k for k in self._bases if k[0] == name]:
                del self._bases[k]  # cursors still running keep the old database alive
            if self.max_age > 0:
                self._bases[key] = (now, base)
            return base.cursor()

    def describe(self, name: str, tables: list[str], location: dict[str, Any]) -> dict:
        con = self.cursor(name, tables, location)
        try:
            out = {}
            for table in tables:
                rows = con.execute(f"DESCRIBE {quote_ident(name)}.{quote_ident(table)}").fetchall()
                out[table] = [{"name": r[0], "type": r[1]} for r in rows]
            return out
        except duckdb.Error as e:
            raise OpenError(f"dataset '{name}': {first_line(e)}") from None
        finally:
            con.close()


# ----- frames ----------------------------------------------------------------------------------


def write_frame(out: BinaryIO, kind: int, body: Any = b"", rows: int = 0, nbytes: int = 0) -> None:
    view = memoryview(body)
    out.write(HEADER.pack(kind, view.nbytes, rows, nbytes))
    out.write(view)
    out.flush()


def write_json(out: BinaryIO, kind: int, data: dict) -> None:
    write_frame(out, kind, json.dumps(data).encode())


def ipc_stream(schema: pa.Schema, batch: pa.RecordBatch | None = None) -> pa.Buffer:
    """*batch* (or none) as a whole Arrow IPC stream: schema, the dictionaries the batch
    uses (ENUM columns), the batch, end marker. Read back with :func:`read_ipc_stream`."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, schema) as writer:
        if batch is not None:
            writer.write_batch(batch)
    return sink.getvalue()


class IpcPieces:
    """One Arrow IPC stream written piece by piece: :meth:`batch` returns what the stream
    writer produced for one batch (the schema message before the first batch, the
    dictionaries the batch uses, the batch) as views of the batch's own buffers, nothing
    copied. The pieces of all batches, then :data:`END_OF_STREAM`, are one valid stream."""

    closed = False  # the file-like side pyarrow writes into

    def __init__(self, schema: pa.Schema):
        self._parts: list = []
        self._writer = pa.ipc.new_stream(pa.PythonFile(self, mode="w"), schema)

    def write(self, data) -> int:
        self._parts.append(data)
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass

    def _take(self) -> list:
        parts, self._parts = self._parts, []
        return parts

    def batch(self, batch: pa.RecordBatch) -> list:
        self._writer.write_batch(batch)
        return self._take()

    def end(self) -> list:
        """The end-of-stream marker's pieces (and the schema's, if no batch was written)."""
        self._writer.close()
        return self._take()


#: the end-of-stream marker of an Arrow IPC stream (continuation token, zero length)
END_OF_STREAM = b"\xff\xff\xff\xff\x00\x00\x00\x00"


def write_pieces(out: BinaryIO, kind: int, pieces: list, rows: int, nbytes: int) -> None:
    """One frame whose body is *pieces* (buffer views), written without joining them."""
    views = [memoryview(p) for p in pieces]
    out.write(HEADER.pack(kind, sum(v.nbytes for v in views), rows, nbytes))
    for v in views:
        out.write(v)  # a large view goes to the pipe as it is (BufferedWriter)
    out.flush()


def append_pieces(fd: int, pieces: list) -> int:
    """Append *pieces* (buffer views) to the file *fd* with as few ``writev`` calls as the
    kernel allows; returns the bytes appended."""
    views = [memoryview(p).cast("B") for p in pieces]
    views = [v for v in views if v.nbytes]
    total = 0
    while views:
        n = os.writev(fd, views[:1024])  # IOV_MAX
        total += n
        while views and n >= views[0].nbytes:
            n -= views[0].nbytes
            views.pop(0)
        if n:
            views[0] = views[0][n:]
    return total


def open_spool(path: str) -> int:
    """The service's result file for appending: it must exist (never created here) and not be
    a symbolic link; write-only."""
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC)


def read_ipc_stream(data) -> tuple[pa.Schema, pa.RecordBatch | None]:
    reader = pa.ipc.open_stream(pa.py_buffer(data))
    try:
        return reader.schema, reader.read_next_batch()
    except StopIteration:
        return reader.schema, None


# ----- the process -----------------------------------------------------------------------------


class Worker:
    """Runs the commands read by :meth:`listen`, one at a time, on the main thread."""

    def __init__(self, config: dict[str, Any], out: BinaryIO):
        self.config = config
        self.out = out
        self.dbs = HardenedDatabases(config["memory_limit"], config["threads"], config["max_age"])
        self.commands: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._current: tuple[str, Any] | None = None  # (job id, cursor) of the running query
        self._cancelled: set[str] = set()
        self._queued: set[str] = set()
        #: appends a batch to the spool file while DuckDB makes the next one
        self.writer = ThreadPoolExecutor(1, thread_name_prefix="fort-append")

    def listen(self, source: BinaryIO) -> None:
        """The command reader (a daemon thread): cancels act at once, the rest is queued. The
        end of the pipe means the service is gone: exit immediately, whatever runs."""
        for line in iter(source.readline, b""):
            msg = json.loads(line)
            if msg["op"] == "cancel":
                self.cancel(msg["id"])
            else:
                with self._lock:
                    self._queued.add(msg.get("id", ""))
                self.commands.put(msg)
        os._exit(0)

    def cancel(self, job_id: str) -> None:
        with self._lock:
            current = self._current
            if job_id not in self._queued and not (current and current[0] == job_id):
                return  # finished already
            self._cancelled.add(job_id)
        threading.Thread(target=self._interrupt, args=(job_id,), daemon=True).start()

    def _interrupt(self, job_id: str) -> None:
        # an interrupt landing before DuckDB starts executing is cleared when it starts: repeat
        while True:
            with self._lock:
                current = self._current
            if current is None or current[0] != job_id:
                if job_id not in self._queued:
                    return
            else:
                current[1].interrupt()
            time.sleep(0.05)

    def serve(self) -> None:
        write_json(self.out, READY, {"pid": os.getpid()})
        while True:
            msg = self.commands.get()
            job_id = msg.get("id", "")
            try:
                if msg["op"] == "run":
                    self.run(msg)
                else:
                    described = self.dbs.describe(*dataset_args(msg["dataset"]))
                    write_json(self.out, DESCRIBED, described)
            except OpenError as e:
                write_json(self.out, ERROR, {"kind": FAILED, "message": str(e)})
            finally:
                with self._lock:
                    self._queued.discard(job_id)
                    self._cancelled.discard(job_id)

    def run(self, msg: dict) -> None:
        job_id = msg["id"]
        con = self.dbs.cursor(*dataset_args(msg["dataset"]))
        with self._lock:
            self._current = (job_id, con)
        limit_cpu(msg["cpu_limit"])
        try:
            error = self.attempt(job_id, con, msg)
            if error is not None:  # what it read before it ended counts against the quota
                write_json(self.out, ERROR, {**error, "bytes_scanned": scanned_bytes(con)})
        finally:
            limit_cpu(None)
            with self._lock:
                self._current = None
            con.close()

    def attempt(self, job_id: str, con, msg: dict) -> dict | None:
        """Run the query (:meth:`stream`); None once DONE is sent, else the ERROR body."""
        try:
            if job_id in self._cancelled:
                raise duckdb.InterruptException("cancelled before it started")
            con.enable_profiling()  # allowed on a locked connection; its output is discarded
            return self.stream(job_id, con, msg)
        except duckdb.InterruptException:
            return {"kind": CANCELLED, "message": "interrupted"}
        except (duckdb.OutOfMemoryException, MemoryError) as e:
            return {"kind": OUT_OF_MEMORY, "message": first_line(e)}
        except duckdb.Error as e:
            kind = CANCELLED if job_id in self._cancelled else FAILED
            return {"kind": kind, "message": first_line(e), "detail": str(e)[:MAX_DETAIL]}
        except CapReached as e:
            return e.error
        except BrokenPipeError:
            raise
        except OSError:  # the result file (e.g. a full disk): nothing of the server's path shown
            return {"kind": FAILED, "message": "the result could not be written on the server"}
        except Exception as e:  # e.g. a value Arrow cannot represent: the user's to fix
            return {"kind": FAILED, "message": f"{type(e).__name__}: {first_line(e)}"}

    def stream(self, job_id: str, con, msg: dict) -> dict | None:
        relation = con.sql(msg["sql"])  # None: a statement without a result (check bypassed)
        if relation is None:
            write_frame(self.out, SCHEMA, ipc_stream(pa.schema([])))
        else:
            reader = relation.to_arrow_reader(self.config["batch_rows"])
            write_frame(self.out, SCHEMA, ipc_stream(reader.schema))
            spool = msg.get("spool")
            fd = open_spool(spool) if spool else None
            try:
                self.send_batches(job_id, reader, fd, msg)
            finally:
                if fd is not None:
                    os.close(fd)
        if job_id in self._cancelled:
            return {"kind": CANCELLED, "message": "cancelled"}
        write_json(self.out, DONE, {"bytes_scanned": scanned_bytes(con)})
        return None

    def send_batches(self, job_id: str, reader, fd: int | None, msg: dict) -> None:
        """Each batch's pieces appended to the spool file *fd* (then an APPENDED frame), or
        sent as a BATCH frame; with a spool file, none past the caps (see the docstring). A
        batch is appended by the writer thread while DuckDB makes the next one (at most one
        batch in flight; its frame follows once it is in the file)."""
        stream = IpcPieces(reader.schema)
        rows, nbytes, pending = 0, 0, None
        max_rows, max_bytes = msg.get("max_rows", math.inf), msg.get("max_bytes", math.inf)
        try:
            for batch in reader:
                if job_id in self._cancelled:
                    return
                pieces = stream.batch(batch)
                if fd is None:
                    write_pieces(self.out, BATCH, pieces, batch.num_rows, batch.nbytes)
                    continue
                size = max(batch.nbytes, sum(memoryview(p).nbytes for p in pieces))
                rows, nbytes = rows + batch.num_rows, nbytes + size
                self.appended(pending)
                pending = None
                if rows > max_rows or nbytes > max_bytes:  # nothing past a cap: ERROR
                    raise CapReached(rows, nbytes, max_rows, max_bytes)
                write = self.writer.submit(append_pieces, fd, pieces)
                pending = (write, batch, batch.num_rows, size)  # the batch's buffers stay alive
        finally:
            self.appended(pending)

    def appended(self, pending) -> None:
        """Wait for the writer thread's append of a batch, then state it (APPENDED frame)."""
        if pending is not None:
            write, _batch, rows, size = pending
            write_frame(self.out, APPENDED, APPENDED_BODY.pack(write.result()), rows, size)


def scanned_bytes(con) -> int:
    """The bytes the query that just ran on *con* read from its dataset's files, from DuckDB's
    profile (``enable_profiling``): per table scan, DuckDB's ``bytes_scanned`` (Parquet: the
    column chunks of the row groups it read; CSV/JSON: the file), or for tables of a DuckDB
    database file the size of the scanned columns (the scan's output bytes per row times the
    rows it scanned); at least the bytes read from disk (``io.total_bytes_read``: footers,
    metadata). A query DuckDB answers from file metadata alone has no operator profile: 0."""
    try:
        profile = json.loads(con.get_profiling_information())
    except (duckdb.Error, ValueError):
        return 0
    scans = 0
    nodes = list(profile.get("operator") or [])
    while nodes:
        node = nodes.pop()
        nodes.extend(node.get("children") or [])
        if node.get("type") != "TABLE_SCAN":
            continue
        if "bytes_scanned" in node:
            scans += int(node["bytes_scanned"])
        elif node.get("intermediate_rows"):
            per_row = node.get("intermediate_size_bytes", 0) / node["intermediate_rows"]
            scans += round(per_row * node.get("rows_scanned", 0))
    read = (profile.get("io") or {}).get("total_bytes_read") or 0
    return max(scans, int(read))


def dataset_args(d: dict) -> tuple[str, list[str], dict]:
    return d["name"], list(d["tables"]), d["location"]


def limit_cpu(seconds: float | None) -> None:
    """Let the coming query use *seconds* more CPU time (all threads), or lift the limit."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_CPU)
    if seconds is None:
        resource.setrlimit(resource.RLIMIT_CPU, (hard, hard))
        return
    used = resource.getrusage(resource.RUSAGE_SELF)
    soft = math.ceil(used.ru_utime + used.ru_stime + seconds)
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


def confine(address_space: int, parent: int) -> None:
    """Die with the service, no core files, and a hard address-space limit."""
    prctl = getattr(ctypes.CDLL(None, use_errno=True), "prctl", None)  # Linux only
    if prctl is not None:
        pr_set_pdeathsig = 1
        prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the service died before the line above
        os._exit(0)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if address_space:
        resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))


#: the frame pipe's capacity (``F_SETPIPE_SZ``; Linux allows up to 1 MiB unprivileged):
#: fewer wake-ups of both processes per batch than with the default 64 KiB
PIPE_SIZE = 1 << 20


def widen_pipe(fd: int) -> None:
    with contextlib.suppress(OSError, AttributeError):  # not Linux, or over pipe-max-size
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)


def main(argv: list[str]) -> None:
    config = json.loads(argv[1])
    widen_pipe(1)
    out = os.fdopen(os.dup(1), "wb")
    err = os.dup(2)
    os.dup2(err, 1)  # stray writes to stdout cannot corrupt the frames
    # DuckDB prints each profiled query's plan to descriptor 2: discarded; Python's own
    # messages (sys.stderr) still reach the service's stderr
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    sys.stderr = os.fdopen(err, "w", buffering=1)
    confine(config["address_space"], config["parent"])
    worker = Worker(config, out)
    threading.Thread(target=worker.listen, args=(sys.stdin.buffer,), daemon=True).start()
    try:
        worker.serve()
    except BrokenPipeError:  # the service went away mid-answer
        os._exit(0)


if __name__ == "__main__":
    main(sys.argv)
