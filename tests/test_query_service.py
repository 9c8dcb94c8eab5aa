"""fort-query end to end in-process (fake hub API for tokens): results in three formats,
authorization, who sees what, cancel, timeout, quotas with an injected clock, restart with a
query in flight, the audit log down, result expiry. Runs on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from urllib.parse import urljoin

import pyarrow as pa
import pytest
import requests

from fort_hub.services.query.app import RESTART_REASON
from fort_hub.services.query.engines.base import EngineError
from fort_hub.services.query.engines.duckdb import DuckDBEngine
from fort_hub.store import Store
from fort_hub.store.audit import AuditError
from fort_hub.store.queries import QueryRecord, QueryRecords
from tests.query_support import QueryEnv

SLOW = "SELECT count(*) FROM url_shares a, url_shares b, url_shares c, url_shares d, url_shares e"
ARROW = {"Accept": "application/vnd.apache.arrow.stream"}


@pytest.fixture
def env(tmp_path, store_url):
    e = QueryEnv(tmp_path, store_url).start()
    yield e
    e.stop()


def audit_actions(env, user):
    store = Store(env.store_url)
    try:
        return [(r.action, r.decision, r.reason) for r in store.audit.query(user=user, limit=100)]
    finally:
        store.dispose()


def test_query_results_in_three_formats_and_paging(env):
    q = env.run("SELECT url, shares FROM url_shares ORDER BY shares, url")
    assert q["state"] == "succeeded" and q["rows"] == 200 and q["result_available"]
    arrow = env.get(f"queries/{q['id']}/results", headers=ARROW)
    assert arrow.headers["Content-Type"] == "application/vnd.apache.arrow.stream"
    table = pa.ipc.open_stream(arrow.content).read_all()
    assert table.num_rows == 200 and table.column_names == ["url", "shares"]
    # JSON pages walk the same rows
    rows, token = [], None
    while True:
        params = {"max_rows": 64, **({"page_token": token} if token else {})}
        page = env.get(f"queries/{q['id']}/results", params=params).json()
        rows += page["rows"]
        token = page["next_page_token"]
        if token is None:
            break
    assert rows == table.to_pylist()
    csv = env.get(f"queries/{q['id']}/results?format=csv").text.splitlines()
    assert csv[0] == '"url","shares"' and len(csv) == 201
    assert env.get(f"queries/{q['id']}/results?page_token=abc").status_code == 400
    actions = {a for a, _, _ in audit_actions(env, "alice")}
    assert {"query.submit", "query.complete", "query.download"} <= actions


def test_submit_location_is_the_query_url(env):
    """It was '/services/fort-query/api%2Fv1%2Fqueries/<id>': the slashes escaped, so
    following it led nowhere."""
    r = env.post("SELECT 1 AS x")
    assert r.status_code == 202, r.text
    qid = r.json()["id"]
    assert r.headers["Location"] == f"/services/fort-query/api/v1/queries/{qid}"
    followed = requests.get(urljoin(env.base, r.headers["Location"]), headers=env.h(), timeout=30)
    assert followed.status_code == 200 and followed.json()["id"] == qid
    env.wait(qid)


def test_refusals_are_audited_with_reason(env):
    r = env.post("SELECT * FROM url_shares UNION SELECT * FROM ads_targeting")
    assert r.status_code == 403 and "ads_targeting" in r.json()["error"]["message"]
    r = env.post("SELECT 1; SELECT 2")
    assert r.status_code == 400 and "exactly one statement" in r.json()["error"]["message"]
    r = env.post("SELECT * FROM ads_targeting", dataset="ads_targeting")
    assert r.status_code == 403 and "ads_targeting" in r.json()["error"]["message"]
    r = env.post("SELECT 1", token="mallory-token")
    assert r.status_code == 403
    denies = [x for x in audit_actions(env, "alice") if x[1] == "deny"]
    assert len(denies) == 3 and all(a == "query.submit" for a, _, _ in denies)
    assert any("ads_targeting" in reason for _, _, reason in denies)
    # a token without the query scope, and none at all
    assert env.get("queries", token="noscope-token").status_code == 403
    assert env.get("queries", token="bad").status_code in (401, 403)
    # malformed bodies
    import requests

    bad = requests.post(env.base + "queries", data="{", headers=env.h(), timeout=10)
    assert bad.status_code == 400 and "JSON" in bad.json()["error"]["message"]
    assert env.post(None).status_code == 400  # sql: null


def test_users_see_only_their_own_queries_admins_see_all(env):
    q = env.run("SELECT * FROM ads_targeting LIMIT 3", dataset="ads_targeting", token="bob-token")
    assert env.get(f"queries/{q['id']}").status_code == 404  # alice
    assert env.get(f"queries/{q['id']}/results").status_code == 404
    assert env.get("queries?user=bob").status_code == 403
    assert [x["id"] for x in env.get("queries").json()["queries"]] == []
    assert env.get(f"queries/{q['id']}", token="admin-token").json()["user"] == "bob"
    every = env.get("queries?all=true", token="admin-token").json()["queries"]
    assert q["id"] in [x["id"] for x in every]
    assert env.get(f"queries/{q['id']}/results", token="admin-token").status_code == 200
    ds = env.get("datasets").json()["datasets"]
    assert [d["name"] for d in ds] == ["url_shares"]
    assert [c["name"] for c in ds[0]["tables"][0]["columns"]] == [
        "url",
        "country",
        "shares",
        "views",
    ]


def test_cancel_a_running_query(env):
    qid = env.post(SLOW).json()["id"]
    time.sleep(0.3)
    r = requests_delete(env, qid)
    assert r.status_code == 202
    q = env.wait(qid)
    assert q["state"] == "cancelled" and not q["result_available"]
    assert requests_delete(env, qid).status_code == 409
    assert ("query.cancel", "allow") in {(a, d) for a, d, _ in audit_actions(env, "alice")}


def requests_delete(env, qid, token="alice-token"):
    import requests

    return requests.delete(env.base + f"queries/{qid}", headers=env.h(token), timeout=10)


def test_timeout_interrupts(tmp_path, sqlite_url):
    env = QueryEnv(tmp_path, sqlite_url, QueryService__query_timeout=0.5).start()
    try:
        t0 = time.monotonic()
        q = env.run(SLOW)
        assert q["state"] == "failed" and "query_timeout" in q["error"]
        assert time.monotonic() - t0 < 10
    finally:
        env.stop()


def test_engine_failure_is_audited_as_failed_not_deny(env):
    """#14: a query the engine could not run was audited as decision "deny" (a refusal)."""
    q = env.run("SELECT CAST(url AS INTEGER) FROM url_shares")
    assert q["state"] == "failed" and q["error"]
    # the completion's record is written after the final state is saved (a CI flake)
    deadline = time.monotonic() + 10
    while True:
        done = [(d, r) for a, d, r in audit_actions(env, "alice") if a == "query.complete"]
        if done or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert done and done[0][0] == "failed" and done[0][1] == q["error"]
    assert ("query.submit", "allow") in {(a, d) for a, d, _ in audit_actions(env, "alice")}


def test_result_row_cap(tmp_path, sqlite_url):
    env = QueryEnv(tmp_path, sqlite_url, QueryService__max_result_rows=50).start()
    try:
        q = env.run("SELECT * FROM url_shares")
        assert q["state"] == "failed" and "max_result_rows" in q["error"]
    finally:
        env.stop()


def test_quota_exhaustion_and_reset_with_injected_clock(tmp_path, sqlite_url, example_policy_path):
    text = example_policy_path.read_text().replace("queries_per_day: 500", "queries_per_day: 2")
    env = QueryEnv(tmp_path, sqlite_url, policy_text=text).start()
    now = [dt.datetime(2030, 1, 1, 23, 0, tzinfo=dt.UTC)]
    env.app.clock = lambda: now[0]
    try:
        assert env.run("SELECT 1")["state"] == "succeeded"
        assert env.run("SELECT 2")["state"] == "succeeded"
        r = env.post("SELECT 3")
        assert r.status_code == 429
        err = r.json()["error"]
        assert "queries_per_day" in err["message"] and "2 of 2" in err["message"]
        assert err["quota"]["resets"].startswith("2030-01-02T00:00:00")
        assert r.headers["Retry-After"] == "3600"  # an hour until the next UTC day
        now[0] += dt.timedelta(minutes=59, seconds=30)
        assert env.post("SELECT 3").headers["Retry-After"] == "30"
        now[0] -= dt.timedelta(minutes=59, seconds=30)
        usage = env.get("usage").json()["limits"]["queries_per_day"]
        assert usage == {"used": 2, "max": 2, "resets": err["quota"]["resets"]}
        now[0] += dt.timedelta(hours=1, minutes=1)  # the next UTC day
        assert env.run("SELECT 4")["state"] == "succeeded"
    finally:
        env.stop()


class ScanningEngine(DuckDBEngine):
    """DuckDB reporting 600 scanned bytes per query, as Athena reports DataScannedInBytes, for
    a query that ends without a result too (it counts as well)."""

    async def run(self, job, sink):
        try:
            outcome = await super().run(job, sink)
        except EngineError as e:
            e.bytes_scanned = 600
            raise
        outcome.bytes_scanned = 600
        return outcome


def test_concurrency_and_bytes_quotas(tmp_path, sqlite_url, example_policy_path):
    text = example_policy_path.read_text().replace(
        "bytes_scanned_per_day: 100G", "bytes_scanned_per_day: 2000"
    )
    env = QueryEnv(
        tmp_path, sqlite_url, policy_text=text,
        QueryService__duckdb_engine_class="tests.test_query_service.ScanningEngine",
    )  # fmt: skip
    try:
        env.start()
        ids = [env.post(SLOW).json()["id"] for _ in range(2)]  # max_concurrent_queries: 2
        r = env.post("SELECT 1")
        assert r.status_code == 429 and "max_concurrent_queries" in r.json()["error"]["message"]
        assert r.json()["error"]["quota"] == {
            "limit": "max_concurrent_queries", "used": 2, "max": 2, "resets": None,
        }  # fmt: skip
        assert r.headers["Retry-After"] == "5"  # a slot frees when one of them finishes
        for qid in ids:
            requests_delete(env, qid)
            assert env.wait(qid)["bytes_scanned"] == 600  # a cancelled scan counts too
        q = env.run("SELECT 1")  # 600 bytes: under the limit when it starts (1800 then)
        assert q["state"] == "succeeded" and q["bytes_scanned"] == 600
        assert env.run("SELECT 2")["bytes_scanned"] == 600  # 2400 now
        r = env.post("SELECT 3")
        assert r.status_code == 429
        assert "bytes_scanned_per_day" in r.json()["error"]["message"]
        assert "2400 of 2000" in r.json()["error"]["message"]
    finally:
        env.stop()


def test_duckdb_bytes_scanned_counts_against_the_daily_quota(
    tmp_path, sqlite_url, example_policy_path
):
    """The embedded engine reports what a query read from its Parquet file (it stayed 0 before,
    so bytes_scanned_per_day never applied on DuckDB)."""
    text = example_policy_path.read_text().replace(
        "bytes_scanned_per_day: 100G", "bytes_scanned_per_day: 10000"
    )
    env = QueryEnv(tmp_path, sqlite_url, policy_text=text).start()
    try:
        one = env.run("SELECT sum(shares) AS s FROM url_shares")
        two = env.run("SELECT sum(shares) AS s, max(url) AS u FROM url_shares")
        assert one["state"] == two["state"] == "succeeded"
        assert 0 < one["bytes_scanned"] < two["bytes_scanned"]  # a second column read
        recorded = one["bytes_scanned"] + two["bytes_scanned"]
        assert env.get("usage").json()["limits"]["bytes_scanned_per_day"]["used"] == recorded
        for _ in range(10):  # each query reads a few kB of the sample: soon over the limit
            r = env.post("SELECT * FROM url_shares")
            if r.status_code != 202:
                break
            recorded += env.wait(r.json()["id"])["bytes_scanned"]
        assert r.status_code == 429, r.text
        assert r.json()["error"]["quota"] == {
            "limit": "bytes_scanned_per_day", "used": recorded, "max": 10000,
            "resets": r.json()["error"]["quota"]["resets"],
        }  # fmt: skip
        assert recorded >= 10000
    finally:
        env.stop()


def test_engine_error_is_recorded_in_plain_words_with_the_original(env):
    q = env.run("SELECT age FROM url_shares")
    assert q["state"] == "failed"
    assert q["error"].startswith('no column "age" in the tables of this query; did you mean')
    assert "fort.datasets()" in q["error"] and "Binder Error" not in q["error"]
    assert q["error_detail"].startswith('Binder Error: Referenced column "age" not found')
    ok = env.run("SELECT 1 AS x")
    assert ok["error"] is None and ok["error_detail"] is None


def test_a_store_from_before_error_detail_gets_the_column(store):
    from sqlalchemy import text

    store.create_schema()
    with store.transaction() as conn:  # the table as an older fort-hub created it
        conn.execute(text("ALTER TABLE fort_queries DROP COLUMN error_detail"))
    store.create_schema()
    store.create_schema()  # idempotent
    now = dt.datetime.now(dt.UTC).isoformat()
    QueryRecords(store).insert(
        QueryRecord(
            "d" * 32,
            "alice",
            "url_shares",
            "duckdb",
            "SELECT 1",
            "failed",
            now,
            error="plain",
            error_detail="original",
        )
    )
    assert QueryRecords(store).get("d" * 32).error_detail == "original"


def test_restart_fails_inflight_queries(env):
    # a query a crashed process left running, and one in flight at a graceful stop
    records = QueryRecords(env.app.fort_store)
    now = env.app.clock().isoformat()
    crashed = QueryRecord("c" * 32, "alice", "url_shares", "duckdb", "SELECT 1", "running", now)
    records.insert(crashed)
    live = env.post(SLOW).json()["id"]
    time.sleep(0.2)
    env.restart()
    a, b = env.get(f"queries/{crashed.id}").json(), env.get(f"queries/{live}").json()
    assert a["state"] == "failed" and a["error"] == RESTART_REASON
    assert b["state"] == "failed" and b["error"]
    assert env.get("usage").json()["limits"]["max_concurrent_queries"]["used"] == 0


def test_audit_store_down_fails_closed(env, monkeypatch):
    def broken(*a, **k):
        raise AuditError("audit record not written, action refused: database is locked")

    monkeypatch.setattr(env.app.fort_store.audit, "record", broken)
    r = env.post("SELECT * FROM url_shares")
    assert r.status_code == 503 and "audit" in r.json()["error"]["message"]
    listed = env.get("queries").json()["queries"]
    assert listed and listed[0]["state"] == "failed"  # recorded, never run
    assert listed[0]["started"] is None
    monkeypatch.undo()
    q = env.run("SELECT 1")
    monkeypatch.setattr(env.app.fort_store.audit, "record", broken)
    r = env.get(f"queries/{q['id']}/results", headers=ARROW)
    assert r.status_code == 503  # no download without its audit record


def test_results_expire(env):
    q = env.run("SELECT 1 AS x")
    path = env.app.runner.results.path(q["id"])
    assert os.path.exists(path)
    env.app.clock = lambda: dt.datetime.now(dt.UTC) + dt.timedelta(days=2)
    assert env.thread.call(env.app.runner.remove_expired) == 1
    r = env.get(f"queries/{q['id']}/results")
    assert r.status_code == 410 and "expired" in r.json()["error"]["message"]
    assert env.get(f"queries/{q['id']}").json()["result_available"] is False
    assert not os.path.exists(path)  # the file itself is gone, not only the record's pointer


def test_openapi_document_is_served(env):
    import requests

    doc = requests.get(env.base + "openapi.json", timeout=10).json()
    assert doc["openapi"].startswith("3.1") and "/queries/{query_id}/results" in doc["paths"]
    assert json.dumps(doc)  # valid JSON


def test_follow_streams_while_running_and_never_completes_a_failed_result(tmp_path, sqlite_url):
    from fort_hub.client import FortClient, FortQueryError

    env = QueryEnv(
        tmp_path, sqlite_url, DuckDBEngine__batch_rows=20, QueryService__max_result_rows=150
    ).start()
    try:
        fort = FortClient(url=env.base.removesuffix("api/v1/"), token="alice-token")
        table = fort.query("SELECT * FROM url_shares ORDER BY shares, url LIMIT 150", "url_shares")
        assert table.num_rows == 150
        qid = fort.history()[0]["id"]
        assert fort.results(qid).equals(table)  # the stored file, read after the fact
        # followed while running, the same result as the stored file
        qid = fort.submit("SELECT * FROM url_shares ORDER BY shares, url LIMIT 150", "url_shares")
        assert fort.results(qid, follow=True).equals(table)
        # 200 rows > max_result_rows: the query fails after some batches were written
        for _ in range(3):
            qid = fort.submit("SELECT * FROM url_shares", "url_shares")
            with pytest.raises(FortQueryError, match="max_result_rows"):
                fort.results(qid, follow=True)
        with pytest.raises(FortQueryError, match="max_result_rows"):
            fort.query("SELECT * FROM url_shares", "url_shares", progress=False)
        # raw: a followed stream of a failed query never carries the end-of-stream marker
        qid = fort.submit("SELECT * FROM url_shares", "url_shares")
        import requests

        try:
            r = env.get(f"queries/{qid}/results?follow=true", headers=ARROW)
        except requests.exceptions.ChunkedEncodingError:
            outcome = "cut off"  # the connection closed mid-body
        else:
            if r.status_code == 200:
                with pytest.raises(pa.ArrowInvalid):
                    pa.ipc.open_stream(r.content).read_all()
                outcome = "truncated"
            else:
                assert r.status_code == 409
                assert "max_result_rows" in r.json()["error"]["message"]
                outcome = "refused"
        print("followed failed query:", outcome)
    finally:
        env.stop()


@pytest.mark.parametrize("field", ["sql", "dataset"])
def test_nul_character_is_a_400_and_audited(env, field):
    """A NUL in `sql` reached the query record's insert before the SQL check: PostgreSQL
    refused it and the caller got 503, with the attempt unaudited."""
    body = {"sql": "SELECT 1 AS x FROM url_shares", "dataset": "url_shares"}
    body[field] = body[field][:5] + "\x00" + body[field][5:]
    r = requests.post(env.base + "queries", json=body, headers=env.h(), timeout=30)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["message"] == f"{field} contains a NUL character"
    assert_submission_denied_in_audit(env, r)


def assert_submission_denied_in_audit(env, r) -> None:
    """The last ``query.submit`` record of alice is the refusal answered in *r*."""
    store = Store(env.store_url)
    try:
        (rec,) = store.audit.query(user="alice", action="query.submit", limit=1)
    finally:
        store.dispose()
    assert rec.decision == "deny" and rec.request_id == r.headers["X-Request-Id"]


def nested_subqueries(levels: int) -> str:
    return "SELECT * FROM " + "(SELECT * FROM " * levels + "url_shares" + ")" * levels


def refused_as_too_deep(env, sql: str) -> None:
    """*sql* is refused with 400 "nested too deeply", audited, and the service still runs."""
    r = env.post(sql)
    assert r.status_code == 400, r.text[:300]
    assert "nested too deeply" in r.json()["error"]["message"]
    assert_submission_denied_in_audit(env, r)
    assert env.run("SELECT 1 AS x")["state"] == "succeeded"  # still serving


@pytest.mark.parametrize("sql", [
    nested_subqueries(3_900),  # 62 KB: within the default max_sql_bytes
    "SELECT " + "[" * 500 + "1" + "]" * 500,
    "SELECT " + "abs(" * 500 + "1" + ")" * 500,
], ids=["subqueries", "arrays", "calls"])  # fmt: skip
def test_deeply_nested_sql_is_a_400_and_audited(env, sql):
    """A tree the parser built may still be too deep to walk or render: that is a refusal too
    (with a mypyc-compiled sqlglot these three were 500s with no audit record)."""
    refused_as_too_deep(env, sql)


def test_nesting_up_to_a_raised_max_sql_bytes_does_not_crash_the_service(tmp_path, sqlite_url):
    """6,665 unclosed subqueries (99,989 characters, under the parser's 100,000 and a
    max_sql_bytes raised to 128 KiB): refused. A mypyc-compiled sqlglot (``sqlglot[c]``)
    crashed the whole service on this (segmentation fault): fort-hub keeps the pure-Python
    build, whose parser raises RecursionError."""
    env = QueryEnv(tmp_path, sqlite_url, QueryService__max_sql_bytes=128 * 1024).start()
    try:
        refused_as_too_deep(env, "SELECT * FROM " + "(SELECT * FROM " * 6_665)
    finally:
        env.stop()
