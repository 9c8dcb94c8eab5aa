"""Counting the rows of Arrow IPC stream bytes from their messages' metadata alone.

fort-query does not take an engine's word for how many rows it wrote: the row cap
(``max_result_rows``) is checked on the rows the stream itself holds. Each IPC message is a
continuation token, the length of its metadata (a flatbuffer ``Message``), the metadata, then
a body of ``Message.bodyLength`` bytes; a record batch's metadata states its ``length`` (its
rows, the number every reader of the stream uses). :func:`count_rows` reads the 8-byte prefix
and the metadata of each message (a few hundred bytes) through a ``read_at(offset, n)``
callable (``os.pread`` on the result file, or a slice of bytes in memory) and skips the
bodies: the cost is per message, not per byte, and nothing of the result is copied.

Anything that is not a sequence of whole, well-formed messages (a truncated message, an
end-of-stream marker, bytes left over) raises :class:`MalformedStream`.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

CONTINUATION = 0xFFFFFFFF
PREFIX = struct.Struct("<Ii")
#: Message.header_type values (format/Message.fbs)
SCHEMA, DICTIONARY_BATCH, RECORD_BATCH = 1, 2, 3
#: metadata larger than this is refused (a schema of thousands of columns stays well below)
MAX_METADATA = 16 << 20


class MalformedStream(ValueError):
    """The bytes are not whole Arrow IPC stream messages."""


def _scalar(buf: bytes, fmt: str, pos: int):
    size = struct.calcsize(fmt)
    if pos < 0 or pos + size > len(buf):
        raise MalformedStream("a message's metadata points outside itself")
    return struct.unpack_from(fmt, buf, pos)[0]


def _field(buf: bytes, table: int, index: int) -> int | None:
    """The position of field *index* of the flatbuffer table at *table*, None if absent."""
    vtable = table - _scalar(buf, "<i", table)
    vsize = _scalar(buf, "<H", vtable)
    at = 4 + 2 * index
    if at + 2 > vsize:
        return None
    offset = _scalar(buf, "<H", vtable + at)
    return table + offset if offset else None


def _table(buf: bytes, pos: int) -> int:
    """The table an offset field at *pos* points to."""
    return pos + _scalar(buf, "<I", pos)


def message_info(metadata: bytes) -> tuple[int, int, int]:
    """(header type, body length, rows) of one message's flatbuffer metadata (rows: a
    record batch's ``length``, else 0)."""
    root = _table(metadata, 0)
    kind_at = _field(metadata, root, 1)
    kind = _scalar(metadata, "<B", kind_at) if kind_at is not None else 0
    body_at = _field(metadata, root, 3)
    body = _scalar(metadata, "<q", body_at) if body_at is not None else 0
    if body < 0:
        raise MalformedStream("a message states a negative body length")
    rows = 0
    if kind == RECORD_BATCH:
        header_at = _field(metadata, root, 2)
        if header_at is None:
            raise MalformedStream("a record batch message has no header")
        length_at = _field(metadata, _table(metadata, header_at), 0)
        rows = _scalar(metadata, "<q", length_at) if length_at is not None else 0
        if rows < 0:
            raise MalformedStream("a record batch states a negative length")
    elif kind not in (SCHEMA, DICTIONARY_BATCH):
        raise MalformedStream(f"an unexpected IPC message (type {kind})")
    return kind, body, rows


def count_rows(read_at: Callable[[int, int], bytes], offset: int, length: int) -> int:
    """The rows of the record batches in the IPC stream bytes ``offset .. offset+length``
    (whole messages, no end-of-stream marker), read with ``read_at(offset, n)``."""
    end, rows = offset + length, 0
    while offset < end:
        if end - offset < PREFIX.size:
            raise MalformedStream("bytes left over after the last whole message")
        prefix = read_at(offset, PREFIX.size)
        if len(prefix) != PREFIX.size:  # the file is shorter than what was stated
            raise MalformedStream("a message's prefix is cut short")
        token, size = PREFIX.unpack(prefix)
        if token != CONTINUATION or size <= 0 or size > MAX_METADATA:
            raise MalformedStream("not an IPC message (or an end-of-stream marker)")
        offset += PREFIX.size
        if offset + size > end:
            raise MalformedStream("a message's metadata is cut short")
        metadata = read_at(offset, size)
        if len(metadata) != size:
            raise MalformedStream("a message's metadata is cut short")
        _kind, body, batch_rows = message_info(metadata)
        offset += size + body
        if offset > end:
            raise MalformedStream("a message's body is cut short")
        rows += batch_rows
    return rows


def count_rows_in(data) -> int:
    """:func:`count_rows` of IPC stream bytes held in memory (bytes or any buffer)."""
    view = memoryview(data).cast("B")
    return count_rows(lambda at, n: view[at : at + n].tobytes(), 0, view.nbytes)
