"""Stored query results: one Arrow IPC *stream* file per query, written batch by batch.

The stream format on disk means an ``application/vnd.apache.arrow.stream`` download is a plain
copy of the file's bytes in chunks (no re-encoding, never the whole result in memory); JSON pages
and CSV read the file through a memory map one record batch at a time. Files are removed when the
query record's ``expires`` passes (see :meth:`ResultStore.remove`).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.ipc as ipc

from .engines.base import ResultSink, check_result_caps

CHUNK = 4 << 20


class FileSink(ResultSink):
    """Writes batches to ``<path>.partial``; :meth:`commit` renames it into place."""

    def __init__(self, path: str, max_rows: int, max_bytes: int):
        self.path = path
        self.partial = path + ".partial"
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        self.rows = 0
        self.nbytes = 0
        self._sink: Any = None
        self._writer: ipc.RecordBatchStreamWriter | None = None

    def set_schema(self, schema: pa.Schema) -> None:
        if self._writer is None:
            # created 0600 whatever the umask (pa.OSFile would create it 0666 & ~umask)
            os.close(os.open(self.partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
            os.chmod(self.partial, 0o600)  # an older file of that name keeps its mode otherwise
            self._sink = pa.OSFile(self.partial, "wb")
            self._writer = ipc.new_stream(self._sink, schema)

    def write(self, batch: pa.RecordBatch) -> None:
        self.set_schema(batch.schema)
        self.nbytes += batch.nbytes
        check_result_caps(self.rows + batch.num_rows, self.nbytes, self.max_rows, self.max_bytes)
        self._writer.write_batch(batch)
        self.rows += batch.num_rows

    def _close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._sink.close()
            self._writer = None

    def commit(self) -> str:
        if self._writer is None:  # no schema at all: an empty result with no columns
            self.set_schema(pa.schema([]))
        self._close()
        os.replace(self.partial, self.path)
        return self.path

    def discard(self) -> None:
        self._close()
        for p in (self.partial, self.path):
            with contextlib.suppress(FileNotFoundError):
                os.remove(p)


class ResultStore:
    """The directory holding result files: mode 0700, each file 0600 (only the service's
    user can list or read results)."""

    def __init__(self, directory: str):
        self.directory = directory
        os.makedirs(directory, mode=0o700, exist_ok=True)
        # makedirs' mode is masked by the umask and ignored for an existing directory
        os.chmod(directory, 0o700)

    def path(self, query_id: str) -> str:
        return os.path.join(self.directory, f"{query_id}.arrows")

    def sink(self, query_id: str, max_rows: int, max_bytes: int) -> FileSink:
        return FileSink(self.path(query_id), max_rows, max_bytes)

    def remove(self, query_id: str) -> None:
        FileSink(self.path(query_id), 0, 0).discard()

    def sweep_orphans(self, known: set[str]) -> int:
        """Remove result files whose query is not in *known* (e.g. left by a crash)."""
        n = 0
        for name in os.listdir(self.directory):
            qid = name.split(".", 1)[0]
            if qid not in known:
                os.remove(os.path.join(self.directory, name))
                n += 1
        return n


def iter_bytes(path: str, chunk: int = CHUNK) -> Iterator[bytes]:
    """The Arrow IPC stream, as stored, in chunks."""
    with open(path, "rb") as f:
        while data := f.read(chunk):
            yield data


def _batches(path: str) -> tuple[pa.Schema, Iterator[pa.RecordBatch], pa.MemoryMappedFile]:
    source = pa.memory_map(path, "r")
    reader = ipc.open_stream(source)
    return reader.schema, iter(reader), source


def schema_json(schema: pa.Schema) -> list[dict[str, str]]:
    return [{"name": f.name, "type": str(f.type)} for f in schema]


def page(path: str, offset: int, max_rows: int) -> dict[str, Any]:
    """Rows ``offset .. offset+max_rows`` as JSON-ready data, with the next offset (or None)."""
    schema, batches, source = _batches(path)
    rows: list[dict] = []
    seen = 0
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
            piece = batch.slice(start, need)
            rows.extend(piece.to_pylist())
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


def iter_csv(path: str) -> Iterator[bytes]:
    """The result as CSV with a header, one record batch at a time."""
    schema, batches, source = _batches(path)
    try:
        header = True
        for batch in batches:
            buf = io.BytesIO()
            pacsv.write_csv(
                pa.Table.from_batches([batch], schema),
                buf,
                pacsv.WriteOptions(include_header=header),
            )
            header = False
            yield buf.getvalue()
        if header:
            yield (",".join(f.name for f in schema) + "\n").encode()
    finally:
        source.close()
