"""The result-store contract (fort_hub.services.query.results), one suite run against every
result store: the local directory and S3 (moto's server on 127.0.0.1). Two store objects over
the same directory or bucket stand for two replicas of fort-query."""

from __future__ import annotations

import os
import time

import boto3
import pyarrow as pa
import pytest

from fort_hub.services.query import ipcmeta
from fort_hub.services.query import results as R
from fort_hub.services.query.engines.base import EngineError, ResultSink, ResultTooLarge
from fort_hub.services.query.engines.worker import (
    END_OF_STREAM,
    IpcPieces,
    append_pieces,
    open_spool,
)
from fort_hub.services.query.results import LocalResultStore, ResultStore
from fort_hub.services.query.results_s3 import S3ResultStore

QID, OTHER = "a" * 32, "b" * 32


@pytest.fixture
def aws_env(monkeypatch):
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


@pytest.fixture(params=["local", "s3"])
def replicas(request, tmp_path, aws_env):
    """Two result-store objects sharing one backing store."""
    if request.param == "local":
        stores = [LocalResultStore(str(tmp_path / "results")) for _ in range(2)]
    else:
        url = request.getfixturevalue("moto_url")
        bucket = f"fort-results-{os.urandom(4).hex()}"
        boto3.client("s3", endpoint_url=url).create_bucket(Bucket=bucket)
        stores = [
            S3ResultStore(bucket=bucket, endpoint_url=url, spool_dir=str(tmp_path / f"spool{i}"))
            for i in range(2)
        ]
    yield stores
    for s in stores:
        s.close()


def table(n: int = 10) -> pa.Table:
    return pa.table({"x": list(range(n)), "name": [f"n{i}" for i in range(n)]})


def write(store: ResultStore, qid: str, t: pa.Table, max_rows: int = 10**6) -> str:
    sink = store.sink(qid, max_rows, 10**9)
    for batch in t.to_batches(max_chunksize=3):
        sink.write(batch)
    return sink.commit()


def test_a_committed_result_is_read_by_another_replica(replicas):
    writer, reader = replicas
    t = table(10)
    location = write(writer, QID, t)
    assert location == writer.location(QID) == reader.location(QID)
    assert reader.exists(QID) and not reader.exists(OTHER)
    raw = b"".join(R.iter_bytes(reader, QID, chunk=7))
    assert reader.size(QID) == len(raw)
    assert pa.ipc.open_stream(raw).read_all().equals(t)
    first = R.page(reader, QID, 0, 4)
    assert first["rows"] == t.slice(0, 4).to_pylist() and first["next_offset"] == 4
    last = R.page(reader, QID, 8, 4)
    assert last["rows"] == t.slice(8).to_pylist() and last["next_offset"] is None
    assert first["schema"] == [{"name": "x", "type": "int64"}, {"name": "name", "type": "string"}]
    csv = b"".join(R.iter_csv(reader, QID)).decode().splitlines()
    assert csv[0] == '"x","name"' and csv[1:3] == ['0,"n0"', '1,"n1"'] and len(csv) == 11


def test_an_empty_result_has_its_schema_or_none(replicas):
    writer, reader = replicas
    sink = writer.sink(QID, 10, 10**6)
    sink.set_schema(pa.schema([("x", pa.int64())]))
    sink.commit()
    assert R.page(reader, QID, 0, 5) == {
        "schema": [{"name": "x", "type": "int64"}], "rows": [], "next_offset": None,
    }  # fmt: skip
    assert b"".join(R.iter_csv(reader, QID)) == b"x\n"
    writer.sink(OTHER, 10, 10**6).commit()  # no schema at all
    assert R.page(reader, OTHER, 0, 5)["schema"] == []


def test_the_spool_grows_while_the_query_writes(replicas):
    writer, _ = replicas
    sink = writer.sink(QID, 100, 10**6)
    sink.write(table(3).to_batches()[0])
    assert os.path.getsize(sink.spool) > 0
    assert not writer.exists(QID)  # nothing readable before commit
    sink.commit()
    assert writer.exists(QID)


def test_caps_discard_and_remove(replicas):
    writer, reader = replicas
    sink = writer.sink(QID, 5, 10**9)
    with pytest.raises(ResultTooLarge):
        for batch in table(10).to_batches(max_chunksize=3):
            sink.write(batch)
    sink.discard()
    assert not os.path.exists(sink.spool) and not reader.exists(QID)
    write(writer, QID, table(2))
    reader.remove(QID)
    reader.remove(QID)  # idempotent
    assert not writer.exists(QID)
    for read in (reader.size, reader.open):
        with pytest.raises(FileNotFoundError):
            read(QID)
    with pytest.raises(FileNotFoundError):
        R.page(reader, QID, 0, 1)


def test_a_result_discarded_after_its_commit_is_gone_for_every_replica(replicas):
    """A query cancelled at its very end: the runner discards a sink already committed. The S3
    sink removed only its spool files, and the uploaded result stayed until an orphan sweep."""
    writer, reader = replicas
    sink = writer.sink(QID, 100, 10**6)
    sink.write(table(3).to_batches()[0])
    sink.commit()
    assert reader.exists(QID)
    sink.discard()
    assert not reader.exists(QID) and not writer.exists(QID)
    assert reader.ids() == set()


def test_ids_and_orphan_sweep(replicas):
    writer, reader = replicas
    write(writer, QID, table(1))
    write(writer, OTHER, table(1))
    assert reader.ids() == {QID, OTHER}
    assert reader.sweep_orphans(lambda: {QID}) == 1
    assert writer.ids() == {QID} and writer.exists(QID)
    sink = writer.sink(OTHER, 10, 10**6)  # being written: its partial file is an orphan too
    sink.write(table(1).to_batches()[0])
    assert reader.sweep_orphans(lambda: {QID}) == (1 if isinstance(reader, LocalResultStore) else 0)
    sink.discard()


def test_s3_store_needs_a_bucket(aws_env):
    with pytest.raises(ValueError, match=r"S3ResultStore\.bucket"):
        S3ResultStore()


def test_s3_sweep_removes_only_stale_spool_files_of_no_live_sink(tmp_path, aws_env, moto_url):
    """Spool files a crash left mid-write (``.partial``) or mid-upload were never removed."""
    bucket = f"fort-results-{os.urandom(4).hex()}"
    boto3.client("s3", endpoint_url=moto_url).create_bucket(Bucket=bucket)
    spool = tmp_path / "spool"
    store = S3ResultStore(bucket=bucket, endpoint_url=moto_url, spool_dir=str(spool))
    try:
        old = time.time() - store.spool_max_age - 60
        crashed = [spool / f"{'c' * 32}.arrows.partial", spool / f"{'d' * 32}.arrows"]
        fresh = spool / f"{'e' * 32}.arrows.partial"  # e.g. another replica's, writing now
        other = spool / "notes.txt"
        for f in (*crashed, fresh, other):
            f.write_bytes(b"x")
        for f in (*crashed, other):
            os.utime(f, (old, old))
        live = store.sink(QID, 10, 10**6)  # a query of this process, quiet for a long time
        live.write(table(1).to_batches()[0])
        os.utime(live.spool, (old, old))
        assert store.sweep_orphans(set) == 2
        assert sorted(p.name for p in spool.iterdir()) == sorted(
            [fresh.name, other.name, os.path.basename(live.spool)]
        )
        live.commit()  # its own upload is unaffected
        assert store.exists(QID) and not os.path.exists(live.spool)
        os.utime(fresh, (old, old))
        assert store.sweep_spool() == 1 and sorted(p.name for p in spool.iterdir()) == [other.name]
    finally:
        store.close()


def test_s3_spool_max_age_must_be_positive(aws_env):
    with pytest.raises(ValueError, match="spool_max_age"):
        S3ResultStore(bucket="b", spool_max_age=0)


def test_ipc_pieces_are_stored_as_they_are(replicas):
    """The DuckDB workers' bytes (one IPC stream in pieces, a dictionary replaced between
    batches) are appended as they are; the stored result ends with the end-of-stream marker;
    the caps count the stated rows and bytes; the base sink reads the same pieces back."""
    writer, reader = replicas
    kinds = pa.dictionary(pa.int8(), pa.string())
    schema = pa.schema([("x", pa.int64()), ("kind", kinds)])
    batches = [
        pa.record_batch([pa.array([1, 2]), pa.array(["a", "b"]).dictionary_encode()], schema),
        pa.record_batch([pa.array([3]), pa.array(["c"]).dictionary_encode()], schema),
    ]
    stream = IpcPieces(schema)
    pieces = [b"".join(bytes(memoryview(p)) for p in stream.batch(b)) for b in batches]
    sink = writer.sink(QID, 3, 10**6)
    sink.set_schema(schema)
    for piece, batch in zip(pieces, batches, strict=True):
        sink.write_ipc(piece, batch.num_rows, batch.nbytes)
    with pytest.raises(ResultTooLarge, match="max_result_rows"):
        sink.write_ipc(pieces[1], 1, 1)  # a 4th row
    with pytest.raises(EngineError, match="stated 0 rows for a batch of 1"):
        sink.write_ipc(pieces[1], 0, 1)  # the rows are counted, not taken as stated
    sink.commit()
    raw = b"".join(R.iter_bytes(reader, QID))
    assert raw.endswith(END_OF_STREAM)
    got = pa.ipc.open_stream(raw).read_all()
    assert got.to_pydict() == {"x": [1, 2, 3], "kind": ["a", "b", "c"]}

    class Batches(ResultSink):
        max_rows, max_bytes, rows = 10, 10**6, 0

        def __init__(self):
            self.batches = []

        def write(self, batch):
            self.batches.append(batch)

    fallback = Batches()
    for piece, batch in zip(pieces, batches, strict=True):
        fallback.write_ipc(piece, batch.num_rows, batch.nbytes)
    assert [b.to_pydict() for b in fallback.batches] == [b.to_pydict() for b in batches]


def test_an_engine_appends_to_the_spool_file_itself(replicas):
    """direct(): the engine (a DuckDB worker) appends the IPC stream's pieces to the partial
    file (0600, created empty by the sink); the sink checks them, maps them for a waiting
    downloader and adds the end-of-stream marker on commit; another replica reads it."""
    writer, reader = replicas
    schema = pa.schema([("x", pa.int64())])
    batches = [pa.record_batch([pa.array(range(i, i + 2000))], schema) for i in (0, 2000)]
    stream = IpcPieces(schema)
    sink = writer.sink(QID, 4000, 10**6)
    path = sink.direct()
    assert os.stat(path).st_size == 0 and os.stat(path).st_mode & 0o777 == 0o600
    sink.set_schema(schema)
    fd = open_spool(path)
    try:
        offsets = []
        for b in batches:
            offsets.append(sink.size)
            n = append_pieces(fd, stream.batch(b))
            sink.appended(b.num_rows, b.nbytes, n)
        first = bytes(sink.mapped(offsets[0], offsets[1]))
        second = bytes(sink.mapped(offsets[1], sink.size - offsets[1]))
        extra = append_pieces(fd, stream.batch(batches[0]))  # 2,000 rows over the cap
        with pytest.raises(ResultTooLarge, match="max_result_rows"):
            sink.appended(2000, batches[0].nbytes, extra)
    finally:
        os.close(fd)
    with open(path, "rb") as f:
        assert f.read(len(first) + len(second)) == first + second
    os.truncate(path, sink.size)  # the refused batch (the worker writes none past a cap)
    sink.commit()
    raw = b"".join(R.iter_bytes(reader, QID))
    assert raw.endswith(END_OF_STREAM) and raw.startswith(first + second)
    assert pa.ipc.open_stream(raw).read_all().equals(pa.Table.from_batches(batches))


def test_the_engines_file_is_checked_against_its_real_size(tmp_path):
    """The caps and the commit count the bytes really in the file, not only those stated."""
    schema = pa.schema([("x", pa.int64())])
    piece = b"".join(bytes(memoryview(p)) for p in IpcPieces(schema).batch(
        pa.record_batch([pa.array(range(100))], schema)
    ))  # fmt: skip

    def sink_with(data: bytes, max_bytes: int = 10**6):
        sink = R.FileSink(str(tmp_path / f"{os.urandom(4).hex()}.arrows"), 10**6, max_bytes)
        path = sink.direct()
        sink.set_schema(schema)
        with open(path, "ab") as f:
            f.write(data)
        return sink

    short = sink_with(piece[:-8])
    with pytest.raises(EngineError, match="not the"):
        short.appended(100, 800, len(piece))
    longer = sink_with(piece + b"\0" * 64)  # more than stated: refused at the commit
    longer.appended(100, 800, len(piece))
    with pytest.raises(EngineError, match="not the"):
        longer.commit()
    longer.discard()
    assert not os.path.exists(longer.partial) and not os.path.exists(longer.path)
    big = sink_with(piece + b"\0" * 4096, max_bytes=len(piece) + 100)  # stated: within the cap
    with pytest.raises(ResultTooLarge, match="max_result_bytes"):
        big.appended(100, 800, len(piece))
    empty = sink_with(b"")
    empty.commit()
    assert pa.ipc.open_stream(pa.memory_map(empty.path)).read_all().schema == schema
    os.symlink(empty.path, tmp_path / "link")  # the worker opens no link and creates nothing
    for path in (tmp_path / "link", tmp_path / "missing"):
        with pytest.raises(OSError):
            open_spool(str(path))


@pytest.mark.parametrize("end", ["commit", "discard"])
def test_followers_get_small_ranges_read_and_nothing_once_the_file_is_closed(replicas, end):
    """Review of #13: a mapping holds a file descriptor until it is sent, so ranges under
    MAP_AT_LEAST are read, not mapped (a lagging follower of narrow batches held one
    descriptor per batch); once the file is closed (a discard at shutdown while the engine's
    thread still reports a batch), appended() and mapped() refuse instead of using a closed,
    possibly reused, descriptor. The ResultSink contract (size, mapped), alike in both
    stores, after a commit (the S3 store uploads and removes its spool file) or a discard."""
    writer, reader = replicas
    sink = writer.sink(QID, 10**9, 10**10)
    path = sink.direct()
    assert sink.size == 0
    schema = pa.schema([("x", pa.int64())])
    stream = IpcPieces(schema)
    small, large = (
        b"".join(bytes(memoryview(p)) for p in stream.batch(pa.record_batch([pa.array(
            range(n))], schema)))
        for n in (100, R.MAP_AT_LEAST // 8)
    )  # fmt: skip
    assert len(small) < R.MAP_AT_LEAST <= len(large)
    with open(path, "ab") as f:
        f.write(small + large)
    sink.appended(100, len(small), len(small))
    sink.appended(R.MAP_AT_LEAST // 8, len(large), len(large))
    assert sink.size == len(small) + len(large)
    got = sink.mapped(0, len(small))
    assert isinstance(got, bytes) and got == small
    mapped = sink.mapped(len(small), len(large))
    assert isinstance(mapped, memoryview) and mapped == large
    if end == "commit":
        sink.set_schema(schema)
        sink.commit()
        assert pa.ipc.open_stream(reader.open(QID)).read_all().num_rows == 100 + R.MAP_AT_LEAST // 8
    else:
        sink.discard()
        assert not reader.exists(QID) and not os.path.exists(path)
    for late in (lambda: sink.appended(1, 10, 10), lambda: sink.mapped(0, 10)):
        with pytest.raises(EngineError, match="closed"):
            late()
    assert bytes(mapped[-8:]) == large[-8:]  # a mapping handed out stays valid


def test_the_rows_are_counted_from_the_ipc_messages(tmp_path):
    """#13: the row cap never takes an engine's word. The rows of appended IPC bytes are read
    from each record batch message's metadata (dictionaries, nested columns, the schema
    message count no rows); a batch stated with fewer (or more) rows than it holds, or bytes
    that are not whole IPC messages, are refused."""
    kinds = pa.dictionary(pa.int8(), pa.string())
    schema = pa.schema([("x", pa.int64()), ("k", kinds), ("l", pa.list_(pa.int32())),
                        ("s", pa.struct([("a", pa.string())]))])  # fmt: skip
    stream = IpcPieces(schema)
    pieces = []
    for n in (3, 0, 1000):
        batch = pa.record_batch([
            pa.array(range(n)), pa.array(["a", "b"] * (n // 2) + ["c"] * (n % 2)).cast(kinds),
            pa.array([[1, 2, 3]] * n, pa.list_(pa.int32())), pa.array([{"a": "x"}] * n),
        ], schema)  # fmt: skip
        pieces.append((n, b"".join(bytes(memoryview(p)) for p in stream.batch(batch))))
    assert [ipcmeta.count_rows_in(data) for _, data in pieces] == [3, 0, 1000]
    assert ipcmeta.count_rows_in(b"".join(data for _, data in pieces)) == 1003
    for bad in (pieces[0][1][:-8], pieces[0][1] + END_OF_STREAM, b"\0" * 16, b"\xff" * 4):
        with pytest.raises(ipcmeta.MalformedStream):
            ipcmeta.count_rows_in(bad)

    sink = R.FileSink(str(tmp_path / "q.arrows"), 10**6, 10**9)
    path = sink.direct()
    with open(path, "ab") as f:
        f.write(pieces[0][1] + pieces[2][1] + b"\0" * 64)
    sink.appended(3, 10, len(pieces[0][1]))
    with pytest.raises(EngineError, match="stated 5 rows for a batch of 1000"):
        sink.appended(5, 10, len(pieces[2][1]))
    sink.appended(1000, 10, len(pieces[2][1]))
    with pytest.raises(EngineError, match="malformed"):
        sink.appended(0, 10, 64)  # zeros, not a message
    assert sink.rows == 1003
    sink.discard()


def test_a_file_shorter_than_stated_is_a_malformed_stream_not_an_internal_error():
    """A result file truncated after its bytes were stated (e.g. by a compromised worker): the
    row count says so in its own words (before: ``struct.error``, an internal error)."""
    schema = pa.schema([("x", pa.int64())])
    data = b"".join(bytes(memoryview(p)) for p in IpcPieces(schema).batch(
        pa.record_batch([pa.array(range(5))], schema)))  # fmt: skip
    short = data[:4]
    with pytest.raises(ipcmeta.MalformedStream, match="cut short"):
        ipcmeta.count_rows(lambda at, n: short[at : at + n], 0, len(data))
