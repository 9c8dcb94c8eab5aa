"""The engine contract: what fort-query needs from a warehouse engine.

An engine is a :class:`QueryEngine` subclass chosen per dataset ``engine`` by
``c.QueryService.duckdb_engine_class`` and ``c.QueryService.athena_engine_class`` (an import
string, or a name registered in the ``fort_hub.query_engines`` entry point group). It must
provide:

- ``dialect``: the sqlglot dialect its SQL is parsed and authorized in;
- :meth:`QueryEngine.target`: the (catalog, schema) under which a dataset's tables are named in
  the SQL it runs (fort-query qualifies every real table with it);
- :meth:`QueryEngine.describe`: the tables of a dataset and their columns;
- :meth:`QueryEngine.run`: run one authorized query, writing its result batch by batch into a
  :class:`ResultSink` (which enforces the row and byte caps), and return an :class:`Outcome`;
- :meth:`QueryEngine.cancel`: stop a running query (called on ``DELETE`` and on timeout); ``run``
  must then raise :class:`QueryCancelled` promptly.

A query that fails, is cancelled or goes over a cap still counts against
``bytes_scanned_per_day`` for what it read: ``run`` sets :attr:`EngineError.bytes_scanned` (and
:attr:`EngineError.engine_id`) on the error it raises, where the engine knows them.

``run`` and ``describe`` are coroutines; blocking engines run their work in a thread.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
from traitlets.config import LoggingConfigurable

from ....policy.model import Dataset


class EngineError(Exception):
    """The engine refused or failed the query; the message is shown to the user. ``detail``
    is the engine's original message when the message rewrote it in plain words (recorded on
    the query as ``error_detail``). ``bytes_scanned``: what the query read before it ended,
    counted against ``bytes_scanned_per_day`` like a success's (None: not known, counted as
    0); ``engine_id``: the engine's own id of the query, if it had one."""

    def __init__(self, message: str, detail: str | None = None):
        super().__init__(message)
        self.detail = detail
        self.bytes_scanned: int | None = None
        self.engine_id = ""


class QueryCancelled(EngineError):
    """The query was stopped by :meth:`QueryEngine.cancel`."""


class ResultTooLarge(EngineError):
    """The result went over a row or byte cap."""


def check_result_caps(rows: int, nbytes: int, max_rows: int, max_bytes: int) -> None:
    """Raise :class:`ResultTooLarge` naming the cap if a result of *rows* rows and *nbytes*
    bytes (Arrow, uncompressed) goes over ``max_result_rows`` or ``max_result_bytes``."""
    if rows > max_rows:
        raise ResultTooLarge(
            f"the result has more than {max_rows} rows (limit max_result_rows); "
            "aggregate or add a LIMIT"
        )
    if nbytes > max_bytes:
        raise ResultTooLarge(
            f"the result is larger than {max_bytes} bytes (limit max_result_bytes); "
            "select fewer columns or rows"
        )


@dataclass
class EngineJob:
    """One authorized query handed to an engine."""

    id: str
    sql: str  # already checked and qualified by sqlcheck
    dataset: Dataset
    username: str
    groups: Sequence[str] = ()
    role_arn: str = ""  # the caller's AWS role for this dataset (Athena)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Outcome:
    rows: int
    bytes_scanned: int = 0
    engine_id: str = ""


class ResultSink:
    """Where an engine writes result batches. Implementations enforce ``max_rows`` and
    ``max_bytes`` and raise :class:`ResultTooLarge` naming the cap."""

    max_rows: int
    max_bytes: int
    rows: int
    #: with :meth:`direct`: the bytes of the file appended and checked so far (where the next
    #: batch :meth:`appended` reports starts)
    size: int = 0

    def write(self, batch: pa.RecordBatch) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def set_schema(self, schema: pa.Schema) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def write_ipc(self, data, rows: int, nbytes: int) -> None:
        """The next piece of the result as Arrow IPC stream bytes (the schema message with the
        first piece, then per piece the dictionaries and the one record batch it holds, no
        end-of-stream marker), of *rows* rows and *nbytes* Arrow bytes. A sink that stores or
        sends the bytes as they are overrides this; by default they are read back into a
        batch for :meth:`write`."""
        if getattr(self, "_ipc_feed", None) is None:
            self._ipc_feed = IpcFeed()
        self.write(self._ipc_feed.batch(data))

    def direct(self) -> str | None:
        """A local file the engine may append the result's Arrow IPC stream bytes to itself
        (see :meth:`write_ipc` for what they are), reporting each batch with
        :meth:`appended`; None (the default) if this sink takes bytes or batches only. Called
        before anything is written."""
        return None

    def appended(self, rows: int, nbytes: int, length: int) -> None:
        """The engine appended *length* bytes to the :meth:`direct` file: one batch of *rows*
        rows and *nbytes* Arrow bytes. Checks the file's real growth and the caps (the larger
        of *nbytes* and the real growth counts); raises :class:`ResultTooLarge` or
        :class:`EngineError`."""
        raise NotImplementedError

    def mapped(self, offset: int, length: int):
        """With :meth:`direct`: bytes ``offset .. offset+length`` of the file, a range already
        checked by :meth:`appended` (for a waiting downloader, :mod:`..stream`): a buffer
        that stays valid after the sink is committed or discarded; :class:`EngineError` once
        the sink is closed (committed or discarded)."""
        raise NotImplementedError


class IpcFeed:
    """Reads the pieces of one Arrow IPC stream (see :meth:`ResultSink.write_ipc`) back into
    record batches, one piece at a time."""

    def __init__(self):
        self._data: list = []
        self._reader: pa.ipc.RecordBatchStreamReader | None = None

    # the file-like side the stream reader reads from
    closed = False

    def read(self, n: int = -1) -> bytes:
        if not self._data:
            return b""
        view = self._data[0]
        if n < 0 or n >= len(view):
            self._data.pop(0)
            return bytes(view)
        self._data[0] = view[n:]
        return bytes(view[:n])

    def batch(self, data) -> pa.RecordBatch:
        self._data.append(memoryview(data).cast("B"))
        if self._reader is None:
            self._reader = pa.ipc.open_stream(pa.PythonFile(self, mode="r"))
        return self._reader.read_next_batch()


class QueryEngine(LoggingConfigurable):
    """Base class of fort-query engines (see the module docstring for the contract)."""

    dialect = "duckdb"

    def target(self, dataset: Dataset) -> tuple[str | None, str | None]:
        raise NotImplementedError

    async def describe(self, dataset: Dataset, job: EngineJob | None = None) -> dict[str, list]:
        """table -> [{"name": column, "type": type}, ...]"""
        raise NotImplementedError

    async def run(self, job: EngineJob, sink: ResultSink) -> Outcome:
        raise NotImplementedError

    async def cancel(self, job_id: str) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Release resources at shutdown."""
