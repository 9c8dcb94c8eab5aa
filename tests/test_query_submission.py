"""A query's submission is ONE store transaction (#13): the caller's groups, the grant, the
admission (quotas, the record, its lease), the grant check of the parsed tables and the
``query.submit`` allow record, committed together before the engine starts, on SQLite and
PostgreSQL; a refusal writes its deny record and admits nothing; the SQL is parsed before that
transaction, never while it holds the store's write lock."""

from __future__ import annotations

import contextlib
import threading

import pytest
import requests

from fort_hub.services.query.quotas import day_window
from fort_hub.store import Store
from fort_hub.store.audit import AuditLog
from fort_hub.store.queries import QueryRecords
from tests.query_support import QueryEnv

ARROW = "application/vnd.apache.arrow.stream"


@pytest.fixture
def env(tmp_path, store_url):
    e = QueryEnv(tmp_path, store_url).start()
    yield e
    e.stop()


@pytest.fixture
def writes(env, monkeypatch):
    """The transactions and group-committed audit records opened on the service's store
    (``counted``), and what each saw when it began (``events``)."""
    store = env.app.fort_store
    counted = {"transaction": 0, "group_commit": 0}
    events: list[tuple[str, str]] = []
    real_tx, real_group = Store.transaction, AuditLog._group_commit

    def transaction(self, *a, **k):
        if self is store:
            counted["transaction"] += 1
            events.append(("transaction", threading.current_thread().name))
        return real_tx(self, *a, **k)

    def group_commit(self, *a, **k):
        if self.store is store:
            counted["group_commit"] += 1
            events.append(("group_commit", threading.current_thread().name))
        return real_group(self, *a, **k)

    monkeypatch.setattr(Store, "transaction", transaction)
    monkeypatch.setattr(AuditLog, "_group_commit", group_commit)
    return counted, events


def submit(env, sql, token="alice-token", dataset="url_shares"):
    return requests.post(
        env.base + "queries", params={"wait": 10}, json={"sql": sql, "dataset": dataset},
        headers={"Authorization": f"token {token}", "Accept": ARROW}, timeout=30,
    )  # fmt: skip


def nothing_admitted(env, username: str) -> None:
    store = Store(env.store_url)
    try:
        today, _ = day_window(env.app.clock())
        assert store.usage.get(username, "query.count", today) == 0
        assert [q for q in QueryRecords(store).list(None) if q.username == username] == []
    finally:
        store.dispose()


def test_a_submission_is_one_transaction_with_its_allow_record(env, writes, monkeypatch):
    counted, events = writes
    engine = env.app.runner.engines["duckdb"]
    real_run, at_start = engine.run, []

    async def run(job, sink):  # what was committed when the engine started
        at_start.append((dict(counted), env.app.fort_store.audit.query(action="query.submit")))
        return await real_run(job, sink)

    monkeypatch.setattr(engine, "run", run)
    r = submit(env, "SELECT url FROM url_shares ORDER BY url LIMIT 1")
    assert r.status_code == 200 and r.headers["Content-Type"] == ARROW, r.text
    (before_engine, records) = at_start[0]
    assert before_engine == {"transaction": 1, "group_commit": 0}, events
    assert events[0][1].startswith("fort-sqlcheck")  # parsed, then admitted on that thread
    (rec,) = records
    assert rec.decision == "allow" and rec.details["query_id"] == r.headers["X-Fort-Query-Id"]
    assert rec.details["tables"] == ["url_shares.url_shares"]
    assert rec.details["groups"] == ["urls-study"]


def test_the_write_lock_is_not_held_while_parsing(env, monkeypatch):
    runner, seen = env.app.runner, []
    real_parse, real_tx = runner.parse, Store.transaction
    inside = threading.local()

    def transaction(self, *a, **k):
        inside.open = True
        try:
            with real_tx(self, *a, **k) as conn:
                yield conn
        finally:
            inside.open = False

    def parse(*args):
        seen.append(getattr(inside, "open", False))
        return real_parse(*args)

    monkeypatch.setattr(Store, "transaction", contextlib.contextmanager(transaction))
    monkeypatch.setattr(runner, "parse", parse)
    assert submit(env, "SELECT 1 AS x FROM url_shares LIMIT 1").status_code == 200
    assert seen == [False]


@pytest.mark.parametrize(
    ("sql", "status", "says"),
    [
        ("SELECT * FROM ads_targeting.ads_targeting", 403, "no grant to query dataset"),
        ("DROP TABLE url_shares", 403, "DROP statements are not allowed"),
        ("SELECT FROM WHERE (", 400, "could not be parsed"),
    ],
)
def test_a_refused_query_is_audited_and_admits_nothing(env, writes, sql, status, says):
    counted, _ = writes
    r = submit(env, sql)
    assert r.status_code == status and says in r.json()["error"]["message"], r.text
    nothing_admitted(env, "alice")
    (rec,) = env.app.fort_store.audit.query(action="query.submit")
    assert rec.decision == "deny" and says in rec.reason
    assert rec.details["groups"] == ["urls-study"]  # decided from the store, then refused
    # the admission's transaction (rolled back) and the deny record's commit, nothing else
    assert counted["transaction"] + counted["group_commit"] == 2
    assert env.app.fort_store.audit.verify().ok


def test_a_caller_without_the_grant_is_refused_before_her_sql(env):
    """The grant to the dataset is decided first, as before: a caller without it learns
    nothing of her SQL's validity (403, not 400)."""
    r = submit(env, "SELECT FROM WHERE (", token="mallory-token")
    assert r.status_code == 403 and "you may not query dataset" in r.json()["error"]["message"]
    nothing_admitted(env, "mallory")
    (rec,) = env.app.fort_store.audit.query(action="query.submit")
    assert rec.actor == "mallory" and rec.decision == "deny"


def test_an_unknown_dataset_is_refused_without_a_parse(env, monkeypatch):
    from fort_hub.services.query import runner

    calls = []
    real = runner.parse_sql
    monkeypatch.setattr(runner, "parse_sql", lambda *a, **k: calls.append(a) or real(*a, **k))
    r = submit(env, "SELECT 1 AS x FROM ads_targeting", "bob-token", "ads_targeting")
    assert r.status_code == 200 and len(calls) == 1, r.text
    r = submit(env, "SELECT 1", dataset="nope")
    assert r.status_code == 403 and len(calls) == 1, r.text
    nothing_admitted(env, "alice")


def test_sql_sent_again_is_not_parsed_again_and_the_grants_are_still_decided(env, monkeypatch):
    from fort_hub.services.query import runner

    calls = []
    real = runner.parse_sql
    monkeypatch.setattr(runner, "parse_sql", lambda *a, **k: calls.append(a) or real(*a, **k))
    sql = "SELECT url FROM url_shares ORDER BY url LIMIT 1"
    assert submit(env, sql).status_code == 200 and submit(env, sql).status_code == 200
    assert len(calls) == 1
    r = submit(env, sql, token="bob-token")  # no grant to url_shares: decided now
    assert r.status_code == 403 and "you may not query dataset" in r.json()["error"]["message"]
    other = "SELECT * FROM ads_targeting.ads_targeting"
    for _ in range(2):  # a table refused by the grants, each time, from one parse
        r = submit(env, other)
        assert r.status_code == 403 and "no grant to query dataset" in r.text
    assert len(calls) == 2
    nothing_admitted(env, "bob")


def test_the_parse_cache_is_per_policy_and_bounded():
    from fort_hub.services.query.sqlcheck import ParseCache

    cache, one, two = ParseCache(size=2, max_sql=10), object(), object()
    cache.put(one, "SELECT 1", "d", "p1")
    assert cache.get(one, "SELECT 1", "d") == "p1"
    assert cache.get(one, "SELECT 1", "e") is None  # another dataset
    assert cache.get(two, "SELECT 1", "d") is None  # another policy (a reload)
    cache.put(two, "SELECT 2", "d", "p2")
    assert cache.get(one, "SELECT 1", "d") is None  # dropped with the old policy
    cache.put(two, "SELECT 3", "d", "p3")
    cache.put(two, "SELECT 4", "d", "p4")
    assert cache.get(two, "SELECT 2", "d") is None and cache.get(two, "SELECT 4", "d") == "p4"
    cache.put(two, "SELECT 12345", "d", "long")  # longer than max_sql: not kept
    assert cache.get(two, "SELECT 12345", "d") is None
