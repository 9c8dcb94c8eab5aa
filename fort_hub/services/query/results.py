"""Stored query results: one Arrow IPC *stream* per query, written batch by batch, kept in a
**result store** until the query record's ``expires`` passes.

The result store is a plug-point (``c.QueryService.result_store_class``, entry point group
``fort_hub.result_stores``): :class:`LocalResultStore` (``local``, a directory: the default, one
replica or a shared volume) and :class:`.results_s3.S3ResultStore` (``s3``: any replica serves
any query's result). The contract of :class:`ResultStore`, all a store implements:

- ``sink(query_id, max_rows, max_bytes)`` -> a :class:`FileSink` the engine writes batches to
  (``write``/``set_schema``, caps enforced); ``commit()`` makes the result readable (returns its
  location), ``discard()`` drops it. ``sink.spool`` is the local file being written, which a
  follower of a running query reads as it grows. The sink offers that file for an engine to
  append to itself (``direct()``, then ``appended()`` per batch, see
  :class:`~.engines.base.ResultSink`): ``sink.size`` is what was appended and checked, and
  ``sink.mapped(offset, length)`` a checked range (read, or mapped from 1 MiB), valid after
  the commit or discard, refused once the sink is closed. Both stores behave alike here: the
  S3 store's sink writes a local spool file in ``S3ResultStore.spool_dir`` and uploads it at
  ``commit()`` (then removes it; a range handed out stays valid).
- ``location(query_id)`` -> where the result is (kept in the query record, for admins);
- ``size(query_id)`` and ``open(query_id)`` -> a binary file object with ``read(n)`` and
  ``close()`` over the stored stream; both raise :class:`FileNotFoundError` once it is gone;
- ``remove(query_id)`` (idempotent) and ``ids()`` (every stored query id, for sweeps).

The readers below (:func:`iter_bytes`, :func:`page`, :func:`iter_csv`) use only this contract.
The stream format means an ``application/vnd.apache.arrow.stream`` download is a plain copy of
the stored bytes in chunks (no re-encoding, never the whole result in memory); JSON pages and
CSV decode one record batch at a time.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import mmap
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.ipc as ipc
from traitlets import Unicode
from traitlets.config import LoggingConfigurable

from . import ipcmeta
from .engines.base import EngineError, ResultSink, check_result_caps
from .engines.worker import END_OF_STREAM

CHUNK = 4 << 20
#: appended ranges at least this long are handed to followers mapped, shorter ones read: a
#: mapping keeps a file descriptor open until it is sent (CPython's mmap duplicates it), so
#: a lagging follower holds at most MAX_PENDING / MAP_AT_LEAST of them
MAP_AT_LEAST = 1 << 20
SUFFIX = ".arrows"


class FileSink(ResultSink):
    """Writes batches (or the bytes of an Arrow IPC stream, :meth:`write_ipc`) to
    ``<path>.partial``, or lets the engine append the stream's bytes there itself
    (:meth:`direct`); :meth:`commit` adds the end-of-stream marker and renames it into place."""

    def __init__(self, path: str, max_rows: int, max_bytes: int):
        self.path = path
        self.partial = path + ".partial"
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        self.rows = 0
        self.nbytes = 0
        self.schema: pa.Schema | None = None
        self._sink: Any = None
        self._writer: ipc.RecordBatchStreamWriter | None = None
        self._raw = False  # IPC bytes were appended (write_ipc): no writer of our own
        self._fd: int | None = None  # direct(): the partial file, read-only (fstat, mmap)
        self._fd_lock = threading.Lock()
        self.size = 0  # direct(): the bytes the engine appended, checked

    @property
    def spool(self) -> str:
        """The local file being written (followers read it while it grows)."""
        return self.partial

    def _create(self) -> None:
        # created 0600 whatever the umask (pa.OSFile would create it 0666 & ~umask)
        os.close(os.open(self.partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
        os.chmod(self.partial, 0o600)  # an older file of that name keeps its mode otherwise

    def set_schema(self, schema: pa.Schema) -> None:
        if self._fd is not None:  # direct(): the engine writes the file
            if self.schema is None:
                self.schema = schema
        elif self._sink is None:
            self._create()
            self._sink = pa.OSFile(self.partial, "wb")
            self.schema = schema

    def direct(self) -> str:
        """Create the (empty) partial file for the engine to append the IPC stream's bytes to
        (opened by it write-only, append-only; see :meth:`ResultSink.direct`); each batch is
        then reported with :meth:`appended`."""
        if self._sink is not None or self._fd is not None:
            raise ValueError("direct() comes before anything is written")
        self._create()
        self._fd = os.open(self.partial, os.O_RDONLY | os.O_CLOEXEC)
        self._raw = True
        return self.partial

    def appended(self, rows: int, nbytes: int, length: int) -> None:
        """The engine appended *length* bytes (one batch; it may already be writing the next):
        the file must hold them, and they must hold *rows* rows (counted here from the
        messages' metadata, :func:`.ipcmeta.count_rows`: the row cap never takes the engine's
        word). The byte cap counts the larger of *nbytes* and *length* per batch, and at
        least the file's real size; :meth:`commit` checks that the file holds nothing else."""
        with self._fd_lock:  # not while _close() closes it (a discard at shutdown, say)
            if self._fd is None:
                raise EngineError("the result file is closed (the query was ended)")
            fd = self._fd
            real = os.fstat(fd).st_size
            if real < self.size + length:
                raise EngineError(f"the result file has {real} bytes, not the "
                                  f"{self.size + length} stated")  # fmt: skip
            counted = counted_rows(
                ipcmeta.count_rows, lambda at, n: os.pread(fd, n, at), self.size, length
            )
        self._check_stated(rows, counted)
        self.nbytes += max(nbytes, length)
        check_result_caps(self.rows + counted, max(self.nbytes, real), self.max_rows,
                          self.max_bytes)  # fmt: skip
        self.size += length
        self.rows += counted

    @staticmethod
    def _check_stated(stated: int, counted: int) -> None:
        if stated != counted:
            raise EngineError(f"the query engine stated {stated} rows for a batch of {counted}; "
                              "its result is refused")  # fmt: skip

    def mapped(self, offset: int, length: int):
        """Bytes ``offset .. offset+length`` of the direct() file: mapped (a memoryview that
        keeps its mapping alive; valid after the file is renamed or removed) when at least
        :data:`MAP_AT_LEAST` long, else read."""
        if not length:
            return b""
        with self._fd_lock:
            if self._fd is None:
                raise EngineError("the result file is closed (the query was ended)")
            if length < MAP_AT_LEAST:  # a small range: read (a mapping holds a file descriptor)
                return os.pread(self._fd, length, offset)
            start = offset - offset % mmap.ALLOCATIONGRANULARITY
            flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
            m = mmap.mmap(self._fd, offset + length - start, flags=flags, prot=mmap.PROT_READ,
                          offset=start)  # fmt: skip
        return memoryview(m)[offset - start :]

    def write(self, batch: pa.RecordBatch) -> None:
        self.set_schema(batch.schema)
        if self._raw or self._fd is not None:
            raise ValueError("a result is written either as batches or as IPC bytes")
        self.nbytes += batch.nbytes
        check_result_caps(self.rows + batch.num_rows, self.nbytes, self.max_rows, self.max_bytes)
        if self._writer is None:
            self._writer = ipc.new_stream(self._sink, self.schema)
        self._writer.write_batch(batch)
        self.rows += batch.num_rows

    def write_ipc(self, data, rows: int, nbytes: int) -> None:
        """Append the next piece of the result's IPC stream as it is (see
        :meth:`ResultSink.write_ipc`); :meth:`set_schema` came first."""
        if self._sink is None or self._writer is not None:
            raise ValueError("write_ipc needs set_schema first, no batch written before and no "
                             "direct()")  # fmt: skip
        counted = counted_rows(ipcmeta.count_rows_in, data)
        self._check_stated(rows, counted)
        self.nbytes += nbytes
        check_result_caps(self.rows + counted, self.nbytes, self.max_rows, self.max_bytes)
        self._raw = True
        self._sink.write(data)
        self.rows += counted

    def _close(self, complete: bool = True) -> None:
        if self._fd is not None:
            with self._fd_lock:
                real = os.fstat(self._fd).st_size
                os.close(self._fd)
                self._fd = None
            if complete and real != self.size:
                raise EngineError(f"the result file has {real} bytes, not the {self.size} stated")
            if complete:  # the engine's bytes (or none), then the end-of-stream marker
                with open(self.partial, "ab") as f:
                    if self.size:
                        f.write(END_OF_STREAM)
                    else:
                        ipc.new_stream(f, self.schema).close()
        if self._sink is None:
            return
        if self._writer is not None:
            self._writer.close()
        elif self._raw and complete:
            self._sink.write(END_OF_STREAM)
        elif complete:  # a schema and no batch
            ipc.new_stream(self._sink, self.schema).close()
        self._sink.close()
        self._sink = self._writer = None

    def commit(self) -> str:
        if self.schema is None:  # no schema at all: an empty result with no columns
            self.set_schema(pa.schema([]))
        self._close()
        os.replace(self.partial, self.path)
        return self.path

    def discard(self) -> None:
        self._close(complete=False)
        for p in (self.partial, self.path):
            with contextlib.suppress(FileNotFoundError):
                os.remove(p)


def counted_rows(count: Callable[..., int], *args) -> int:
    """``count(*args)`` (:func:`.ipcmeta.count_rows` or ``count_rows_in``); bytes that are
    not whole IPC messages raise :class:`EngineError`."""
    try:
        return count(*args)
    except ipcmeta.MalformedStream as e:
        raise EngineError(f"the query engine wrote a malformed result ({e})") from None


class ResultStore(LoggingConfigurable):
    """Where fort-query keeps results (the contract is in the module docstring)."""

    def sink(self, query_id: str, max_rows: int, max_bytes: int) -> FileSink:
        raise NotImplementedError

    def location(self, query_id: str) -> str:
        raise NotImplementedError

    def size(self, query_id: str) -> int:
        raise NotImplementedError

    def open(self, query_id: str) -> BinaryIO:
        raise NotImplementedError

    def remove(self, query_id: str) -> None:
        raise NotImplementedError

    def ids(self) -> set[str]:
        raise NotImplementedError

    def exists(self, query_id: str) -> bool:
        try:
            self.size(query_id)
        except FileNotFoundError:
            return False
        return True

    def sweep_orphans(self, known: Callable[[], set[str]]) -> int:
        """Remove stored results whose query is not in ``known()`` (e.g. left by a crash).
        *known* is called after the listing, so that a result another replica stores meanwhile
        is never taken for an orphan."""
        stored = self.ids()
        orphans = stored - known()
        for qid in orphans:
            self.remove(qid)
        return len(orphans)

    def close(self) -> None:
        """Release clients at shutdown."""


class LocalResultStore(ResultStore):
    """Results in a local directory (mode 0700, each file 0600: only the service's user can
    list or read them). One replica, or several sharing one ReadWriteMany volume."""

    directory = Unicode(
        help="""The directory holding result files; QueryService sets it from
        `QueryService.results_dir`.

            c.LocalResultStore.directory = "/var/lib/fort/query-results"
        """,
    ).tag(config=True)

    def __init__(self, directory: str = "", **kwargs):
        super().__init__(**kwargs)
        if directory:
            self.directory = directory
        if not self.directory:
            raise ValueError("LocalResultStore.directory is not set")
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        # makedirs' mode is masked by the umask and ignored for an existing directory
        os.chmod(self.directory, 0o700)

    def path(self, query_id: str) -> str:
        return os.path.join(self.directory, f"{query_id}{SUFFIX}")

    def sink(self, query_id: str, max_rows: int, max_bytes: int) -> FileSink:
        return FileSink(self.path(query_id), max_rows, max_bytes)

    def location(self, query_id: str) -> str:
        return self.path(query_id)

    def size(self, query_id: str) -> int:
        return os.path.getsize(self.path(query_id))

    def open(self, query_id: str) -> BinaryIO:
        return pa.memory_map(self.path(query_id), "r")

    def remove(self, query_id: str) -> None:
        FileSink(self.path(query_id), 0, 0).discard()

    def ids(self) -> set[str]:
        return {name.split(".", 1)[0] for name in os.listdir(self.directory)}


def iter_bytes(store: ResultStore, query_id: str, chunk: int = CHUNK) -> Iterator[bytes]:
    """The Arrow IPC stream, as stored, in chunks."""
    f = store.open(query_id)
    try:
        while data := f.read(chunk):
            yield data
    finally:
        f.close()


def _batches(store: ResultStore, query_id: str):
    source = store.open(query_id)
    try:
        reader = ipc.open_stream(source)
    except BaseException:
        source.close()
        raise
    return reader.schema, iter(reader), source


def schema_json(schema: pa.Schema) -> list[dict[str, str]]:
    return [{"name": f.name, "type": str(f.type)} for f in schema]


#: the most of a result's Arrow data one JSON page or one CSV chunk is made from: a page is
#: built in the service's memory, as Python objects and then JSON text several times that size,
#: so a page is cut at this budget whatever ``max_rows`` asks (a row of 1 MB, 200 to a page,
#: grew fort-query by 767 MB per request)
PAGE_BYTES = 8 * 2**20


class RowTooLarge(ValueError):
    """One row of the result is larger than a JSON page may be."""


def written_size(piece: pa.RecordBatch) -> int:
    """About how many bytes *piece* becomes written out row by row: its Arrow data, with a
    dictionary column (DuckDB's ENUM) counted as its values repeated, not its dictionary once
    (200 rows of one 1 MB label are 1 MB in Arrow and 200 MB in JSON)."""
    size = 0
    for col in piece.columns:
        if not pa.types.is_dictionary(col.type):
            size += col.nbytes
            continue
        values, size = col.dictionary, size + col.indices.nbytes
        t = values.type
        if (
            pa.types.is_string(t)
            or pa.types.is_binary(t)
            or pa.types.is_large_string(t)
            or (pa.types.is_large_binary(t))
        ):
            lengths = pc.take(pc.binary_length(values), col.indices)
            size += int(pc.sum(lengths).as_py() or 0)
        elif len(values):
            size += values.nbytes * len(col) // len(values)
    return size


def fit(piece: pa.RecordBatch, budget: int) -> pa.RecordBatch:
    """The first rows of *piece* (at least one) whose written size fits *budget*, halving."""
    while piece.num_rows > 1 and written_size(piece) > budget:
        piece = piece.slice(0, piece.num_rows // 2)
    return piece


def page(store: ResultStore, query_id: str, offset: int, max_rows: int) -> dict[str, Any]:
    """Rows ``offset .. offset+max_rows`` as JSON-ready data, with the next offset (or None);
    fewer rows when they would exceed :data:`PAGE_BYTES` (RowTooLarge when the first does)."""
    schema, batches, source = _batches(store, query_id)
    rows: list[dict] = []
    seen = used = 0
    more = False
    try:
        for batch in batches:
            n = batch.num_rows
            if seen + n <= offset:
                seen += n
                continue
            start = max(0, offset - seen)
            need = max_rows - len(rows)
            if need == 0:
                more = True
                break
            piece = fit(batch.slice(start, need), PAGE_BYTES - used)
            size = written_size(piece)
            if size > PAGE_BYTES - used:  # its one row does not fit
                if not rows:
                    raise RowTooLarge(
                        f"row {seen + start} of the result holds {size:,} bytes, more "
                        f"than a JSON page may ({PAGE_BYTES:,}): download it with format=arrow"
                    )
                more = True
                break
            rows.extend(piece.to_pylist())
            used += size
            seen += n
            if start + piece.num_rows < n:
                more = True
                break
    finally:
        source.close()
    return {
        "schema": schema_json(schema),
        "rows": rows,
        "next_offset": offset + len(rows) if more else None,
    }


def json_dumps(data: Any) -> str:
    """JSON with NaN/Infinity as null, bytes as hex and other values (dates, decimals) as text."""
    try:
        return json.dumps(data, default=_json_default, allow_nan=False)
    except ValueError:
        return json.dumps(_finite(data), default=_json_default, allow_nan=False)


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, float):
        return None
    return str(value)


def iter_csv(store: ResultStore, query_id: str) -> Iterator[bytes]:
    """The result as CSV with a header, one record batch at a time."""
    schema, batches, source = _batches(store, query_id)
    try:
        header = True
        for batch in batches:
            start = 0
            while start < batch.num_rows:  # in pieces of PAGE_BYTES (a row at least)
                piece = fit(batch.slice(start), PAGE_BYTES)
                buf = io.BytesIO()
                pacsv.write_csv(
                    pa.Table.from_batches([piece], schema),
                    buf,
                    pacsv.WriteOptions(include_header=header),
                )
                header = False
                start += piece.num_rows
                yield buf.getvalue()
        if header:
            yield (",".join(f.name for f in schema) + "\n").encode()
    finally:
        source.close()
