"""Handing the result to a waiting downloader as the engine produces it.

:class:`TeeSink` wraps the :class:`~.engines.base.ResultSink` of the result store (the stored
copy, written as before) and also hands every piece of the result's Arrow IPC stream to the
:class:`Follower` a waiting submit (``POST queries?wait=``) attached before the engine
started: the schema (a ``pa.Schema``), then the stream's bytes piece by piece (the schema
message with the first), then :data:`END`; the downloader adds the end-of-stream marker on
success. The DuckDB workers append their bytes to the stored copy's file themselves
(``direct``/``appended``): each batch is handed on as a read-only mapping of the range just
appended (no copy in this process; the socket reads the page cache). Bytes given to
``write_ipc`` are stored and sent as they are; batches of other engines are serialized once
(:class:`IpcChunks`). The first bytes leave while the query still runs.

Batches cross from the engine's thread to the event loop. A follower that lags more than
:data:`MAX_PENDING` bytes behind the engine holds the engine's thread back (the result is never
held in memory twice over; a DuckDB worker appending to the stored copy itself goes on up to
the caps meanwhile: the file, not memory, holds what the follower has not taken); a follower
that goes away, a cancel, a timeout or the service's shutdown (:meth:`TeeSink.abort`) release
it at once.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pyarrow as pa

from .engines.base import ResultSink
from .engines.worker import IpcPieces

#: bytes of batches a follower may have received but not yet sent before the engine waits
MAX_PENDING = 64 << 20
#: the last item a follower gets: the engine wrote everything it will write
END = object()


class Follower:
    """The event-loop side of one waiting downloader: :meth:`get` returns the schema, then
    each batch, then :data:`END`."""

    def __init__(self, tee: TeeSink):
        self.tee = tee
        self.queue: asyncio.Queue = asyncio.Queue()
        self.pending = 0  # bytes queued, not yet taken (guarded by the tee's condition)
        self.closed = False
        #: set by the runner when it records this follower's download together with the
        #: query's completion (the result is small and the downloader still waits for it)
        self.claimed = False
        #: the download audit record (``AuditLog.record`` arguments), set by the downloader
        self.download_audit: dict[str, Any] | None = None
        #: resolved once the query's final state and audit records are committed (the
        #: exception, e.g. AuditError, if they were not)
        self.recorded: asyncio.Future = asyncio.get_running_loop().create_future()
        #: the downloader sends what it has and goes on streaming (no inline answer)
        self.streaming = False

    async def get(self) -> Any:
        item = await self.queue.get()
        if item is not END and not isinstance(item, pa.Schema):
            with self.tee.cond:
                self.pending -= len(item)
                self.tee.cond.notify_all()
        return item

    def close(self) -> None:
        """Detach: the engine no longer waits for this follower, whose batches are dropped."""
        with self.tee.cond:
            self.closed = True
            self.tee.cond.notify_all()
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(END)  # a get() waiting (or to come) ends instead of hanging


class TeeSink(ResultSink):
    """A :class:`ResultSink` writing into *inner* and handing batches to followers."""

    def __init__(self, inner: ResultSink, loop: asyncio.AbstractEventLoop):
        self.inner = inner
        self.max_rows, self.max_bytes = inner.max_rows, inner.max_bytes
        self.loop = loop
        self.cond = threading.Condition()
        self.followers: list[Follower] = []
        self.schema: pa.Schema | None = None
        self.written = 0  # batches written so far
        self.nbytes = 0  # their Arrow bytes
        self._chunks: IpcChunks | None = None  # serializes batches written with write()
        self._aborted: BaseException | None = None

    @property
    def rows(self) -> int:
        return self.inner.rows

    def follow(self) -> Follower | None:
        """A follower getting every batch, or None once the engine has started writing (it
        would miss the first batches: read the stored copy instead). On the event loop."""
        with self.cond:
            if self.schema is not None or self._aborted is not None:
                return None
            f = Follower(self)
            self.followers.append(f)
            return f

    def _publish(self, item: Any, nbytes: int = 0) -> None:
        with self.cond:
            live = [f for f in self.followers if not f.closed]
            for f in live:
                f.pending += nbytes
        for f in live:
            self.loop.call_soon_threadsafe(f.queue.put_nowait, item)

    def set_schema(self, schema: pa.Schema) -> None:
        self.inner.set_schema(schema)
        if self.schema is None:
            self.schema = schema
            self._publish(schema)

    def write(self, batch: pa.RecordBatch) -> None:
        """A batch (engines producing batches, e.g. Athena): stored, and serialized once for
        the followers."""
        self._wait_for_followers()
        if self.schema is None:
            self.set_schema(batch.schema)
        self.inner.write(batch)  # the caps are the inner sink's
        if self._chunks is None:
            self._chunks = IpcChunks(self.schema)
        self._published(self._chunks.batch(batch), batch.nbytes)

    def write_ipc(self, data, rows: int, nbytes: int) -> None:
        """IPC stream bytes (the DuckDB workers'): the same bytes are stored and sent."""
        self._wait_for_followers()
        self.inner.write_ipc(data, rows, nbytes)  # the caps are the inner sink's
        self._published(data, nbytes)

    def direct(self) -> str | None:
        return self.inner.direct()

    def appended(self, rows: int, nbytes: int, length: int) -> None:
        """A batch the engine appended to the stored copy's file (see :meth:`direct`): checked
        by the inner sink (real size, caps), then mapped for the followers, if any."""
        self._wait_for_followers()
        offset = self.inner.size
        self.inner.appended(rows, nbytes, length)  # the caps are the inner sink's
        with self.cond:
            live = any(not f.closed for f in self.followers)
        self._published(self.inner.mapped(offset, length) if live else b"", nbytes)

    def _published(self, data, nbytes: int) -> None:
        self.written += 1
        self.nbytes += nbytes
        self._publish(data, len(data))

    def _wait_for_followers(self) -> None:
        with self.cond:
            while True:
                if self._aborted is not None:
                    raise self._aborted
                if all(f.closed or f.pending <= MAX_PENDING for f in self.followers):
                    return
                self.cond.wait(1.0)

    def commit(self) -> Any:
        return self.inner.commit()

    def discard(self) -> None:
        self.inner.discard()

    def abort(self, error: BaseException) -> None:
        """Make the engine's next (or waiting) write raise *error* (cancel, timeout, shutdown)."""
        with self.cond:
            if self._aborted is None:
                self._aborted = error
            self.cond.notify_all()

    def end(self) -> None:
        """Tell the followers the engine is done writing (after any batch still on its way).
        On the event loop."""
        for f in self.followers:
            self.loop.call_soon(f.queue.put_nowait, END)

    def recorded(self, error: BaseException | None = None) -> None:
        """The final state (and the claimed downloads' records) are committed, or *error*."""
        for f in self.followers:
            if not f.recorded.done():
                if error is None:
                    f.recorded.set_result(None)
                else:
                    f.recorded.set_exception(error)
                    f.recorded.exception()  # retrieved: no "never retrieved" warning


class IpcChunks(IpcPieces):
    """An Arrow IPC stream serialized piece by piece, each batch's pieces joined:
    :meth:`batch` returns the bytes to send for one batch (the schema first), :meth:`end` the
    end-of-stream marker."""

    def batch(self, batch: pa.RecordBatch) -> bytes:
        return b"".join(super().batch(batch))

    def end(self) -> bytes:
        return b"".join(super().end())
