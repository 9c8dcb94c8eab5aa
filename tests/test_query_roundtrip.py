"""The waiting submit (``POST queries?wait=``, issue #13): a small result in the submit's own
answer with its audit records committed first and grouped, a large one streamed while the
query runs (the stored copy written beside it), cancel and failures during the stream, the
fallbacks (no ``wait``, no Arrow, a query still running when ``wait`` is over)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as dt
import threading
import time

import pyarrow as pa
import pytest
import requests
from urllib3.exceptions import ProtocolError

from fort_hub.client import FortClient, FortQueryError
from fort_hub.services.query import stream
from fort_hub.services.query.engines.base import Outcome, QueryCancelled
from fort_hub.services.query.engines.duckdb import DuckDBEngine
from fort_hub.services.query.engines.worker import END_OF_STREAM
from fort_hub.services.query.quotas import day_window
from fort_hub.store import Store
from fort_hub.store.audit import AuditError
from fort_hub.store.queries import QueryRecords
from tests.query_support import QueryEnv

ARROW = "application/vnd.apache.arrow.stream"
SLOW = "SELECT count(*) FROM url_shares a, url_shares b, url_shares c, url_shares d, url_shares e"


class DripEngine(DuckDBEngine):
    """Writes 50-row batches every 20 ms until 400 batches or a cancel (a long result that
    streams slowly)."""

    def __init__(self, **kwargs):
        super().__init__(**{**kwargs, "idle_workers": 0})
        self.stopped: set[str] = set()

    def drip(self, job, sink):
        for i in range(400):
            if job.id in self.stopped:
                raise QueryCancelled("cancelled")
            sink.write(pa.record_batch({"i": pa.array(range(i * 50, i * 50 + 50))}))
            time.sleep(0.02)
        return Outcome(rows=sink.rows)

    async def run(self, job, sink):
        return await asyncio.get_running_loop().run_in_executor(None, self.drip, job, sink)

    async def cancel(self, job_id):
        self.stopped.add(job_id)


def post(env, sql, wait=10, accept=ARROW, **kw):
    return requests.post(
        env.base + "queries", params={"wait": wait} if wait is not None else None,
        json={"sql": sql, "dataset": "url_shares"}, headers=env.h(Accept=accept),
        timeout=30, **kw,
    )  # fmt: skip


def audit(env):
    store = Store(env.store_url)
    try:
        return list(store.audit.iter_all()), store.audit.verify()
    finally:
        store.dispose()


@pytest.fixture
def env(tmp_path, store_url):
    e = QueryEnv(tmp_path, store_url, DuckDBEngine__batch_rows=20).start()
    yield e
    e.stop()


def test_small_result_in_the_submit_answer_records_first_grouped(env):
    sql = "SELECT url, shares FROM url_shares ORDER BY shares, url LIMIT 30"
    r = post(env, sql)
    assert r.status_code == 200 and r.headers["Content-Type"] == ARROW
    qid = r.headers["X-Fort-Query-Id"]
    assert r.headers["Location"].endswith(qid)
    table = pa.ipc.open_stream(r.content).read_all()
    assert table.num_rows == 30 and table.column_names == ["url", "shares"]
    # by the time the answer arrived the final state and the records were committed
    rec = env.get(f"queries/{qid}").json()
    assert rec["state"] == "succeeded" and rec["rows"] == 30 and rec["result_available"]
    records, verified = audit(env)
    assert verified.ok, str(verified)
    mine = [a for a in records if a.details.get("query_id") == qid]
    assert [a.action for a in mine] == ["query.submit", "query.complete", "query.download"]
    complete, download = mine[1], mine[2]
    assert download.seq == complete.seq + 1  # committed together, in one transaction
    assert download.request_id == r.headers["X-Request-Id"]
    assert "in the submit's answer" in download.reason
    # the stored copy is the same result, downloadable again
    again = env.get(f"queries/{qid}/results", headers={"Accept": ARROW})
    assert pa.ipc.open_stream(again.content).read_all().equals(table)


def test_without_wait_or_arrow_the_api_is_as_before(env):
    r = post(env, "SELECT 1 AS x", wait=None)
    assert r.status_code == 202 and set(r.json()) == {"id", "state"}
    assert r.headers["X-Fort-Query-Id"] == r.json()["id"]
    r = post(env, "SELECT 1 AS x", accept="application/json")  # wait, JSON: the record
    assert r.status_code == 200 and r.json()["state"] == "succeeded" and r.json()["rows"] == 1
    r = post(env, "SELECT 1 AS x", wait=61)
    assert r.status_code == 400 and "wait" in r.json()["error"]["message"]


def test_query_still_running_when_wait_is_over_gets_202(env):
    r = post(env, SLOW, wait=1)
    assert r.status_code == 202 and r.json()["state"] == "running"
    qid = r.json()["id"]
    requests.delete(env.base + f"queries/{qid}", headers=env.h(), timeout=10)
    assert env.wait(qid)["state"] == "cancelled"


def test_a_failed_query_answers_its_record_not_a_result(env):
    r = post(env, "SELECT CAST('x' AS INTEGER) AS n")
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("application/json")
    assert r.json()["state"] == "failed" and r.json()["error"]
    with pytest.raises(FortQueryError, match=r"(?i)convert|cast"):
        FortClient(url=env.base.removesuffix("api/v1/"), token="alice-token").query(
            "SELECT CAST('x' AS INTEGER) AS n", "url_shares", progress=False
        )


def test_large_result_streams_and_the_stored_copy_matches(tmp_path, sqlite_url):
    env = QueryEnv(
        tmp_path, sqlite_url, DuckDBEngine__batch_rows=20, QueryService__inline_result_bytes=500
    ).start()
    try:
        fort = FortClient(url=env.base.removesuffix("api/v1/"), token="alice-token")
        fort.submit_wait = 30  # a loaded machine may take over 0.5 s to the first batch
        table = fort.query("SELECT * FROM url_shares ORDER BY shares, url", "url_shares")
        assert table.num_rows == 200
        qid = fort.history()[0]["id"]
        env.wait(qid)  # the final state is saved just after the stream's end
        assert fort.results(qid).equals(table)  # the stored copy, written beside the stream
        # the completion's record is written after the stream's end (not an action's gate)
        deadline = time.monotonic() + 10
        while True:
            records, verified = audit(env)
            mine = [a for a in records if a.details.get("query_id") == qid]
            if len(mine) == 4 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert verified.ok
        assert mine[0].action == "query.submit" and sorted(a.action for a in mine[1:]) == [
            "query.complete", "query.download", "query.download"
        ]  # fmt: skip
        # the submit's download was recorded before its first byte, so before the stored
        # copy's download (the completion's may land on either side of that one): alone
        # ("streamed ...") when the stream started while the query ran, or with the completion
        # when a fast engine ended the query before the answer held more than the inline size
        downloads = [a.reason for a in mine if a.action == "query.download"]
        assert downloads[0] in (
            "result as arrow (streamed in the submit's answer)",
            "result as arrow (in the submit's answer)",
        )
        assert downloads[1] == "result as arrow"
    finally:
        env.stop()


def test_failure_mid_stream_is_an_error_not_a_truncated_success(tmp_path, sqlite_url):
    env = QueryEnv(
        tmp_path, sqlite_url, DuckDBEngine__batch_rows=20, QueryService__max_result_rows=150,
        QueryService__inline_result_bytes=500,
    ).start()  # fmt: skip
    try:
        fort = FortClient(url=env.base.removesuffix("api/v1/"), token="alice-token")
        with pytest.raises(FortQueryError, match="max_result_rows"):
            fort.query("SELECT * FROM url_shares", "url_shares", progress=False)
        # raw: the stream carries batches but never the end-of-stream marker
        try:
            r = post(env, "SELECT * FROM url_shares")
        except requests.exceptions.ChunkedEncodingError:
            pass  # cut off mid-body
        else:
            assert r.status_code == 200
            with pytest.raises(pa.ArrowInvalid):
                pa.ipc.open_stream(r.content).read_all()
        for listed in env.get("queries").json()["queries"]:
            q = env.wait(listed["id"])
            assert q["state"] == "failed" and "max_result_rows" in q["error"]
            assert not q["result_available"]
            assert env.get(f"queries/{q['id']}/results").status_code == 409
        assert audit(env)[1].ok
    finally:
        env.stop()


def test_cancel_during_a_streamed_download_also_when_the_reader_stalls(
    tmp_path, sqlite_url, monkeypatch
):
    # the downloader reads nothing: after 2 KB pending the engine waits for it; cancel must
    # still end the query at once
    monkeypatch.setattr(stream, "MAX_PENDING", 2000)
    env = QueryEnv(
        tmp_path, sqlite_url, QueryService__inline_result_bytes=500,
        QueryService__duckdb_engine_class="tests.test_query_roundtrip.DripEngine",
    ).start()  # fmt: skip
    try:
        r = post(env, "SELECT 1", stream=True)
        assert r.status_code == 200 and r.headers["Content-Type"] == ARROW
        qid = r.headers["X-Fort-Query-Id"]
        time.sleep(0.5)  # the engine is now held back by the stalled reader
        assert env.get(f"queries/{qid}").json()["state"] == "running"
        t0 = time.monotonic()
        d = requests.delete(env.base + f"queries/{qid}", headers=env.h(), timeout=10)
        assert d.status_code == 202
        q = env.wait(qid, timeout=10)
        assert q["state"] == "cancelled" and time.monotonic() - t0 < 5
        broken = (pa.ArrowInvalid, requests.exceptions.RequestException, ProtocolError)
        with pytest.raises(broken):
            pa.ipc.open_stream(r.raw.read()).read_all()  # never a complete-looking stream
        r.close()
        assert audit(env)[1].ok
    finally:
        env.stop()


def test_a_downloader_going_away_does_not_hold_the_query(tmp_path, sqlite_url, monkeypatch, caplog):
    monkeypatch.setattr(stream, "MAX_PENDING", 2000)
    env = QueryEnv(
        tmp_path, sqlite_url, QueryService__inline_result_bytes=500,
        QueryService__duckdb_engine_class="tests.test_query_roundtrip.DripEngine",
    ).start()  # fmt: skip
    try:
        r = post(env, "SELECT 1", stream=True)
        qid = r.headers["X-Fort-Query-Id"]
        r.close()  # gone: the engine goes on writing the stored copy
        q = env.wait(qid, timeout=30)
        assert q["state"] == "succeeded" and q["rows"] == 400 * 50
    finally:
        env.stop()


def test_a_commit_lost_after_it_succeeded_counts_and_audits_the_query_once(
    tmp_path, sqlite_url, monkeypatch
):
    """The final transaction committed but its caller saw an error (the connection lost after
    COMMIT): saving the state "alone" again found it not in flight, counted the scanned bytes a
    second time, removed the query's own result and audited its completion twice."""
    env = QueryEnv(
        tmp_path, sqlite_url,
        QueryService__duckdb_engine_class="tests.test_query_service.ScanningEngine",
    ).start()  # fmt: skip
    try:
        audit_log = env.app.fort_store.audit
        real = audit_log.record_with

        def committed_then_lost(*args, **kwargs):
            real(*args, **kwargs)
            raise AuditError("audit record not written, action refused: connection lost")

        monkeypatch.setattr(audit_log, "record_with", committed_then_lost)
        r = post(env, "SELECT 1 AS x")
        assert r.status_code == 200 and r.headers["Content-Type"] == ARROW, r.text
        qid = r.headers["X-Fort-Query-Id"]
        assert pa.ipc.open_stream(r.content).read_all().to_pydict() == {"x": [1]}
        assert env.get(f"queries/{qid}/results").status_code == 200  # not removed
        used = env.get("usage").json()["limits"]["bytes_scanned_per_day"]["used"]
        assert used == 600  # once
        records, verified = audit(env)
        mine = [x.action for x in records if (x.details or {}).get("query_id") == qid]
        assert mine.count("query.complete") == 1, mine
        assert verified.ok
    finally:
        env.stop()


def test_a_failed_querys_result_is_discarded_off_the_event_loop(tmp_path, sqlite_url, monkeypatch):
    """Discarding a result may be a network call (S3 deletes an uploaded object): on the event
    loop, an unreachable S3 would stall every request and the leases' heartbeat."""
    from fort_hub.services.query.results import FileSink

    threads = []
    discard = FileSink.discard

    def recording(self):
        threads.append(threading.current_thread())
        discard(self)

    monkeypatch.setattr(FileSink, "discard", recording)
    env = QueryEnv(tmp_path, sqlite_url).start()
    try:
        r = post(env, "SELECT CAST('x' AS INTEGER) AS n")
        assert r.status_code == 200 and r.json()["state"] == "failed"
        assert threads and all(t is not env.thread.thread for t in threads), threads
    finally:
        env.stop()


def test_audit_down_no_result_in_the_answer(env, monkeypatch):
    def broken(*a, **k):
        raise AuditError("audit record not written, action refused: database is locked")

    monkeypatch.setattr(env.app.fort_store.audit, "record_many", broken)
    monkeypatch.setattr(env.app.fort_store.audit, "record_with", broken)
    r = post(env, "SELECT 1 AS x")
    assert r.status_code == 503 and r.headers["Content-Type"].startswith("application/json")
    assert "not sent" in r.json()["error"]["message"]


def test_a_streamed_answer_is_the_workers_stream_chunked_as_sent(tmp_path, sqlite_url):
    """A result streamed in the submit's answer is the worker's IPC stream forwarded as it is
    (dictionaries replaced between batches included), in HTTP/1.1 chunks written by the
    service itself; the stored copy holds the same stream."""
    import duckdb

    env = QueryEnv(
        tmp_path, sqlite_url, DuckDBEngine__batch_rows=7, QueryService__inline_result_bytes=100
    ).start()
    body = "SELECT country::ENUM('US', 'DE', 'BR', 'IN') AS e, shares, url FROM T ORDER BY url"
    try:
        r = post(env, body.replace(" T", " url_shares"), wait=30, stream=True)
        assert r.status_code == 200 and r.headers["Transfer-Encoding"] == "chunked"
        raw = r.raw.read()
        got = pa.ipc.open_stream(raw).read_all()
        qid = r.headers["X-Fort-Query-Id"]
        # the final state is committed just after the stream's end: wait for it (long poll)
        done = requests.get(env.base + f"queries/{qid}?wait=10", headers=env.h(), timeout=30)
        assert done.json()["state"] == "succeeded"
        stored = requests.get(
            env.base + f"queries/{qid}/results", headers=env.h(Accept=ARROW), timeout=30
        )
        path = tmp_path / "data" / "url_shares.parquet"
        expected = duckdb.sql(body.replace(" T", f" read_parquet('{path}')")).to_arrow_table()
        assert got.num_rows == 200 and got.equals(expected)
        assert stored.content == raw
    finally:
        env.stop()


def test_tee_hands_over_batches_and_aborts_a_waiting_writer():
    """The tee alone: batches reach the follower in order; a writer held back by a lagging
    follower is released by abort."""

    class ListSink:
        max_rows, max_bytes, rows = 10**9, 10**12, 0

        def __init__(self):
            self.batches = []

        def set_schema(self, schema):
            pass

        def write(self, batch):
            self.batches.append(batch)
            self.rows += batch.num_rows

    async def main():
        inner = ListSink()
        tee = stream.TeeSink(inner, asyncio.get_running_loop())
        follower = tee.follow()
        batches = [pa.record_batch({"x": [i] * 1000}) for i in range(5)]
        done = threading.Event()
        error = []

        def produce():
            try:
                for b in batches:
                    tee.write(b)
            except QueryCancelled as e:
                error.append(e)
            done.set()

        old = stream.MAX_PENDING
        chunks = stream.IpcChunks(batches[0].schema)
        chunks.batch(batches[0])  # the first piece holds the schema too
        stream.MAX_PENDING = len(chunks.batch(batches[1]))  # one batch ahead at most
        try:
            threading.Thread(target=produce, daemon=True).start()
            assert isinstance(await follower.get(), pa.Schema)
            first = await follower.get()  # the start of an IPC stream: the schema, batch 0
            assert (
                pa.ipc.open_stream(first + END_OF_STREAM)
                .read_all()
                .equals(pa.Table.from_batches(batches[:1]))
            )
            await asyncio.sleep(0.3)
            # taken: 1; queued: 2 and 3 (the 3rd went when one batch was pending); 4th waits
            assert not done.is_set() and len(inner.batches) == 3
            assert tee.follow() is None  # too late to follow
            tee.abort(QueryCancelled("cancelled"))
            await asyncio.get_running_loop().run_in_executor(None, done.wait, 5)
            assert error and len(inner.batches) == 3
        finally:
            stream.MAX_PENDING = old

    asyncio.run(main())


def test_a_query_another_replica_ended_sends_nothing_and_audits_no_download(env, monkeypatch):
    """Another replica failed the query (its lease ran out) while it ran here: the waiting
    submit gets no result, and the audit log holds no download and no second completion (the
    state and the grouped records were committed side by side, so the log said 'complete,
    allow' and 'download, allow' for a result that was never sent)."""
    import datetime as dt

    from fort_hub.services.query.finals import LOST_REASON
    from fort_hub.store.leases import QueryLeases

    runner = env.app.runner
    real = runner._save_final

    async def reaped_first(rec, *args, **kwargs):
        later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)  # the other replica's view
        await runner.store.run(QueryLeases(runner.store).reap, later, LOST_REASON)
        return await real(rec, *args, **kwargs)

    monkeypatch.setattr(runner, "_save_final", reaped_first)
    r = post(env, "SELECT 1 AS x")
    assert r.status_code == 200 and not r.headers["Content-Type"].startswith(ARROW), r.text
    q = r.json()  # the query's record, as that replica wrote it
    assert q["state"] == "failed" and q["error"] == LOST_REASON, q
    qid = q["id"]
    records, verified = audit(env)
    assert verified.ok
    mine = [(a.action, a.decision) for a in records if a.details.get("query_id") == qid]
    assert mine == [("query.submit", "allow")], mine


def test_a_follower_closed_after_the_end_was_queued_still_ends():
    """A downloader going away empties its queue, the end marker with it: a handler still
    waiting on the follower then hung for ever, holding the result it had."""

    async def main():
        tee = stream.TeeSink(ListSinkForEnd(), asyncio.get_running_loop())
        follower = tee.follow()
        tee.end()
        await asyncio.sleep(0.05)  # the end marker reaches the follower's queue
        follower.close()
        items = [await asyncio.wait_for(follower.get(), 5)]
        while items[-1] is not stream.END:
            items.append(await asyncio.wait_for(follower.get(), 5))

    asyncio.run(main())


class ListSinkForEnd:
    max_rows, max_bytes, rows = 10**9, 10**12, 0

    def set_schema(self, schema):
        pass

    def write(self, batch):
        pass


def test_the_decision_and_the_admission_are_one_transaction(env, monkeypatch):
    """The caller's groups are read inside the admission's transaction (one BEGIN and COMMIT
    fewer on every submission, #13): the membership read and the quota's writes share one
    connection, and a refused caller's transaction writes nothing."""
    runner = env.app.runner
    seen = []
    real_effective, real_admit = runner.access.effective_in, runner.quotas.admit_in

    def effective_in(conn, username, policy=None):
        seen.append(("decision", conn, conn.in_transaction()))
        return real_effective(conn, username, policy)

    def admit_in(conn, *args, **kwargs):
        seen.append(("admission", conn, conn.in_transaction()))
        return real_admit(conn, *args, **kwargs)

    monkeypatch.setattr(runner.access, "effective_in", effective_in)
    monkeypatch.setattr(runner.quotas, "admit_in", admit_in)
    r = post(env, "SELECT 1 AS x FROM url_shares LIMIT 1")
    assert r.status_code == 200, r.text
    (what1, conn1, tx1), (what2, conn2, tx2) = seen
    assert (what1, what2) == ("decision", "admission") and conn1 is conn2 and tx1 and tx2
    # a caller with no grant is refused inside that transaction: no record, no usage counted
    r = requests.post(
        env.base + "queries", json={"sql": "SELECT 1", "dataset": "url_shares"},
        headers={"Authorization": "token mallory-token"}, timeout=30,
    )  # fmt: skip
    assert r.status_code == 403
    store = Store(env.store_url)
    try:
        today, _ = day_window(dt.datetime.now(dt.UTC))
        assert store.usage.get("mallory", "query.count", today) == 0
        assert [q.username for q in QueryRecords(store).list(None)] == ["alice"]
    finally:
        store.dispose()


def test_a_result_that_cannot_be_stored_fails_the_query_and_sends_nothing(env, monkeypatch):
    """The stored copy is committed on the final transaction's store thread, just before it
    (#13: one hop fewer): when that commit fails, the query is recorded as failed, no
    download is audited, nothing is sent and the partial file is removed."""
    from fort_hub.services.query import results

    def full_disk(self):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(results.FileSink, "commit", full_disk)
    r = post(env, "SELECT 1 AS x FROM url_shares LIMIT 1")
    assert r.status_code == 200 and not r.headers["Content-Type"].startswith(ARROW), r.text
    q = r.json()
    assert q["state"] == "failed" and q["error"] == "internal error (OSError)", q
    records, verified = audit(env)
    assert verified.ok
    mine = [(a.action, a.decision) for a in records if a.details.get("query_id") == q["id"]]
    assert mine == [("query.submit", "allow"), ("query.complete", "failed")], mine
    assert not list((env.tmp / "results").glob(f"{q['id']}*"))


def test_a_follow_of_a_query_waiting_for_a_worker_streams_once_it_runs(tmp_path, sqlite_url):
    """Review of #13: a worker's result file exists (empty) from the query's start, so the
    followed download asks for it until the engine has a schema; it asked once, before the
    loop, and a follow made while the query waited for a worker (or was planned) never
    streamed: it waited for the end and served the stored copy."""
    env = QueryEnv(tmp_path, sqlite_url, DuckDBEngine__max_running=1).start()
    try:
        busy = requests.post(env.base + "queries", json={"sql": SLOW, "dataset": "url_shares"},
                             headers=env.h(), timeout=30).json()["id"]  # fmt: skip
        # many batches: its schema comes at once, its rows for a while after
        rows = "SELECT a.* FROM url_shares a, url_shares b, url_shares c LIMIT 900000"
        waiting = requests.post(env.base + "queries", json={"sql": rows,
                                "dataset": "url_shares"}, headers=env.h(), timeout=30)  # fmt: skip
        qid = waiting.json()["id"]
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            followed = pool.submit(
                requests.get, env.base + f"queries/{qid}/results?follow=true",
                headers=env.h(Accept=ARROW), timeout=120,
            )  # fmt: skip
            time.sleep(0.5)  # the follow waits; the query waits for the only worker
            assert requests.delete(env.base + f"queries/{busy}", headers=env.h(),
                                   timeout=30).status_code in (200, 202)  # fmt: skip
            r = followed.result(120)
        assert r.status_code == 200
        assert pa.ipc.open_stream(r.content).read_all().num_rows == 900_000
        records, verified = audit(env)
        assert verified.ok
        (download,) = [a for a in records if a.action == "query.download"
                       and a.details.get("query_id") == qid]  # fmt: skip
        assert download.reason == "result as arrow (followed while running)", download.reason
    finally:
        env.stop()
