"""The store contract: every test runs on SQLite and on PostgreSQL (the ``store_url`` fixture)."""

from __future__ import annotations

import datetime as dt
import itertools
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import func, select

from fort_hub.store import GENESIS, Store, StoreError, compute_hash, schema
from fort_hub.store.audit import AuditError
from fort_hub.store.chainformat import canonical, canonical_parts
from fort_hub.store.memberships import Memberships

UTC = dt.UTC


# ---- schema ------------------------------------------------------------------------------------


def test_schema_creation_is_idempotent(store_url):
    first = Store(store_url)
    first.audit.record("svc", "test.first", "r")
    second = Store(store_url)  # creates nothing new, loses nothing
    second.create_schema()
    second.create_schema()
    assert [r.action for r in second.audit.query()] == ["test.first"]
    with second.reading() as conn:
        version = conn.execute(
            select(schema.meta.c.value).where(schema.meta.c.key == "schema_version")
        ).scalar_one()
    assert version == str(schema.SCHEMA_VERSION)
    second.audit.record("svc", "test.second", "r")
    assert second.audit.verify().ok
    first.dispose()
    second.dispose()


def test_schema_from_the_future_is_refused(store):
    with store.transaction() as conn:
        conn.execute(
            schema.meta.update()
            .where(schema.meta.c.key == "schema_version")
            .values(value=str(schema.SCHEMA_VERSION + 1))
        )
    with pytest.raises(StoreError, match="newer than this fort-hub"):
        Store(store.url)


def test_unsupported_url_names_the_problem():
    with pytest.raises(StoreError, match="unsupported store URL 'mysql://u:\\*\\*\\*@h/db'"):
        Store("mysql://u:secret@h/db", create=False)


def test_postgres_url_spellings_use_psycopg():
    s = Store("postgres://fort@127.0.0.1:1/fort", create=False)
    assert s.url == "postgresql+psycopg://fort@127.0.0.1:1/fort"
    s.dispose()


# ---- audit -------------------------------------------------------------------------------------


def test_reads_leave_no_transaction_behaviour_behind_for_writers(store):
    """On PostgreSQL a read runs in autocommit (no BEGIN/COMMIT round trips); the pooled
    connection it used is transactional again for the next writer: a failed write rolls back."""
    with store.reading() as conn:
        conn.execute(select(func.count()).select_from(schema.memberships))
        if store.dialect == "postgresql":
            assert conn.connection.dbapi_connection.autocommit is True
    t = schema.memberships
    row = {"group_name": "g", "username": "u", "expires": None, "source": "api",
           "updated_by": "t", "updated": "2026-01-01T00:00:00+00:00"}  # fmt: skip
    with pytest.raises(StoreError), store.transaction() as conn:
        if store.dialect == "postgresql":
            assert conn.connection.dbapi_connection.autocommit is False
        conn.execute(t.insert().values(**row))
        conn.execute(t.insert().values(**row))  # the same key again: the transaction fails
    with store.reading() as conn:
        assert conn.execute(select(func.count()).select_from(t)).scalar() == 0


def test_record_returns_the_committed_record(store):
    rec = store.audit.record(
        "alice", "query.submit", "url_shares", "allow", "grants[0]",
        details={"sql": "SELECT 1", "when": dt.date(2026, 1, 2)},
        request_id="req-1", client="10.0.0.7",
    )  # fmt: skip
    assert (rec.seq, rec.prev_hash) == (1, GENESIS)
    assert rec.hash == compute_hash(rec.as_dict())
    assert rec.details == {"sql": "SELECT 1", "when": "2026-01-02"}  # stored as JSON
    # what a fresh connection reads back is exactly what record() returned
    fresh = Store(store.url, create=False)
    assert fresh.audit.query() == [rec]
    assert fresh.audit.head() == (1, rec.hash)
    fresh.dispose()


def test_record_rejects_a_bad_decision(store):
    with pytest.raises(ValueError, match="decision must be 'allow', 'deny' or 'failed'"):
        store.audit.record("alice", "query.submit", "x", "maybe")
    assert store.audit.head() == (0, GENESIS)


def test_failed_decision_chains_like_the_others(store):
    """#14: "failed" (allowed, then failed while carried out) is a third decision; records
    with it chain and verify exactly like allow / deny records, before and after them."""
    store.audit.record("alice", "query.submit", "url_shares", "allow", "granted")
    failed = store.audit.record("alice", "query.complete", "url_shares", "failed", "Binder Error")
    store.audit.record("dave", "query.submit", "url_shares", "deny", "no grant")
    assert failed.hash == compute_hash(failed.as_dict())
    assert [r.decision for r in store.audit.query()] == ["deny", "failed", "allow"]
    assert store.audit.verify().ok


def test_record_truncates_long_fields_and_fills_request_id(store):
    rec = store.audit.record("a" * 1000, "x" * 500, "r", client="c" * 300)
    assert (len(rec.actor), len(rec.action), len(rec.client)) == (255, 128, 128)
    assert len(rec.request_id) == 32
    assert store.audit.verify().ok


def test_chain_links_records(store):
    recs = [store.audit.record("alice", "a.b", f"r{i}") for i in range(5)]
    assert [r.seq for r in recs] == [1, 2, 3, 4, 5]
    for before, after in itertools.pairwise(recs):
        assert after.prev_hash == before.hash
    assert str(store.audit.verify()) == "OK: 5 records, chain intact"


def test_unicode_and_awkward_values_hash_identically(store):
    rec = store.audit.record(
        "zoë", "query.submit", "データ", "deny", 'quote " backslash \\ newline \n tab \t',
        details={"nested": {"b": [1, 2.5, None, True], "a": "é"}, "emoji": "🔒"},
    )  # fmt: skip
    assert store.audit.verify().ok
    [back] = store.audit.query()
    assert back == rec


def test_query_filters_and_pagination(store):
    for i in range(25):
        store.audit.record(
            ["alice", "bob"][i % 2], ["query.submit", "spawn.start"][i % 3 == 0], f"r{i % 4}"
        )
    newest = store.audit.query(limit=10)
    assert [r.seq for r in newest] == list(range(25, 15, -1))
    page2 = store.audit.query(limit=10, before_seq=newest[-1].seq)
    assert [r.seq for r in page2] == list(range(15, 5, -1))
    page3 = store.audit.query(limit=10, before_seq=page2[-1].seq)
    assert [r.seq for r in page3] == list(range(5, 0, -1))
    assert store.audit.query(limit=10, before_seq=1) == []

    alice = store.audit.query(user="alice", limit=100)
    assert {r.actor for r in alice} == {"alice"} and len(alice) == 13
    spawns = store.audit.query(action="spawn.start", limit=100)
    assert [r.seq for r in spawns] == [25, 22, 19, 16, 13, 10, 7, 4, 1]
    assert [r.seq for r in store.audit.query(resource="r3", user="bob", limit=100)] == [
        24, 20, 16, 12, 8, 4,
    ]  # fmt: skip
    cutoff = store.audit.query(limit=100)[4].ts  # the 21st record's time
    assert [r.seq for r in store.audit.query(since=cutoff)] == [25, 24, 23, 22, 21]
    since_dt = dt.datetime.fromisoformat(cutoff)
    assert len(store.audit.query(since=since_dt)) == 5


def test_iter_all_pages_through_everything(store):
    for i in range(12):
        store.audit.record("svc", "a.b", str(i))
    assert [r.resource for r in store.audit.iter_all(batch=5)] == [str(i) for i in range(12)]


def test_canonical_parts_splice_to_the_canonical_encoding():
    fields = {
        "ts": "2026-11-25T17:56:34.123456+00:00", "actor": "zoë", "action": "a.b",
        "resource": "r", "decision": "allow", "reason": '"q"', "details": {"z": 1, "a": [1.5]},
        "request_id": "x", "client": "",
    }  # fmt: skip
    pre, mid, suf = canonical_parts(fields)
    full = {"seq": 1234, **fields, "prev_hash": "ab" * 32}
    assert pre + ("ab" * 32).encode() + mid + b"1234" + suf == canonical(full)


def test_concurrent_threads_are_group_committed_into_one_chain(store):
    n_threads, per_thread = 8, 25
    barrier = threading.Barrier(n_threads)

    def worker(t):
        barrier.wait()
        return [store.audit.record(f"user{t}", "a.b", f"{t}-{i}").seq for i in range(per_thread)]

    with ThreadPoolExecutor(n_threads) as pool:
        seqs = [s for chunk in pool.map(worker, range(n_threads)) for s in chunk]
    total = n_threads * per_thread
    assert sorted(seqs) == list(range(1, total + 1))  # every caller got its own seq
    result = store.audit.verify()
    assert result.ok and result.checked == total
    with store.reading() as conn:
        assert conn.execute(select(func.count()).select_from(schema.audit_log)).scalar() == total


async def test_arecord_from_many_coroutines(store):
    import asyncio

    recs = await asyncio.gather(*(store.audit.arecord("alice", "a.b", str(i)) for i in range(30)))
    assert sorted(r.seq for r in recs) == list(range(1, 31))
    assert store.audit.verify().ok


def test_a_bad_record_in_a_batch_does_not_fail_the_others(store):
    """A record the database refuses fails alone (fail closed), not its batch neighbours."""
    from fort_hub.store.audit import _Pending

    good = _Pending(_fields("alice", "r1"))
    bad = _Pending({**_fields("mallory", "r2"), "resource": None})  # NOT NULL column
    good2 = _Pending(_fields("bob", "r3"))
    store.audit._group_commit([_fields("svc", "warm-up")])  # set up the writer
    store.audit._write([[good], [bad], [good2]])
    assert good.result is not None and good2.result is not None
    assert bad.result is None and "action refused" in str(bad.error)
    assert [r.resource for r in store.audit.iter_all()] == ["warm-up", "r1", "r3"]
    assert store.audit.verify().ok


def test_record_many_is_one_transaction_or_nothing(store, monkeypatch):
    """The records of one record_many call (e.g. a reconciliation's changes to one hub group)
    are committed together: a bad one fails them all, and a call over MAX_BATCH records is not
    split across transactions (an error in a later part left earlier changes audited for hub
    changes that never happened)."""
    from fort_hub.store import audit as audit_mod

    log = store.audit
    log.record("svc", "warm-up")
    with pytest.raises(AuditError):  # record_many's unit, with a record the database refuses
        log._group_commit([_fields("u0", "r0"), {**_fields("mallory", "r1"), "resource": None}])
    assert [r.actor for r in log.iter_all()] == ["svc"]
    monkeypatch.setattr(audit_mod, "MAX_BATCH", 2)
    appended = []
    real = log._append
    monkeypatch.setattr(log, "_append", lambda batch: appended.append(len(batch)) or real(batch))
    log.record_many([{"actor": f"u{i}", "action": "a.b"} for i in range(3)])
    assert appended == [3]  # one transaction
    assert [r.actor for r in log.iter_all()] == ["svc", "u0", "u1", "u2"]
    assert log.verify().ok


def test_record_with_commits_a_change_and_its_records_together_or_neither(store):
    """record_with: the change and its records in one transaction (a query's final state and
    its completion); a change that finds nothing writes no record; a record the database
    refuses undoes the change too."""
    from fort_hub.store.usage import UsageCounters

    usage, seen = UsageCounters(store), []
    store.audit.add_observer(lambda *args: seen.append(args))
    store.audit.record("svc", "warm-up")

    def bump(conn):
        return usage.add_in(conn, "alice", "m", "w", 1) < 3  # true twice, then false

    value, recs = store.audit.record_with(bump, [{"actor": "alice", "action": "a.one"},
                                                 {"actor": "alice", "action": "a.two"}])  # fmt: skip
    assert value is True and [(r.seq, r.action) for r in recs] == [(2, "a.one"), (3, "a.two")]
    assert [(a, d, ok) for a, d, _, ok in seen[1:]] == [("a.one", "allow", True),
                                                        ("a.two", "allow", True)]  # fmt: skip
    assert store.audit.record_with(bump, [{"actor": "alice", "action": "a.b"}])[0] is True
    value, recs = store.audit.record_with(bump, [{"actor": "alice", "action": "a.not"}])
    assert value is False and recs == [] and usage.get("alice", "m", "w") == 3  # committed
    bad = {"actor": "mallory", "action": "a.bad", "resource": "\x00"}  # PostgreSQL refuses NUL
    if store.dialect == "sqlite":  # which SQLite stores: a trigger refuses the record instead
        with store.transaction() as conn:
            conn.exec_driver_sql(
                "CREATE TRIGGER refuse BEFORE INSERT ON fort_audit_log WHEN NEW.actor = "
                "'mallory' BEGIN SELECT RAISE(ABORT, 'refused'); END"
            )
    with pytest.raises(AuditError, match="action refused"):
        store.audit.record_with(lambda conn: usage.add_in(conn, "bob", "m", "w", 1), [bad])
    assert usage.get("bob", "m", "w") == 0  # undone with its record
    assert seen[-1][0] == "a.bad" and seen[-1][3] is False
    assert [r.action for r in store.audit.iter_all()] == ["warm-up", "a.one", "a.two", "a.b"]
    assert store.audit.verify().ok


def test_record_with_reports_a_failed_commit_as_not_committed(store, monkeypatch):
    """The metrics' observers learn whether the records were committed: records appended in a
    transaction whose commit then fails were reported as committed (an alert on failed audit
    writes would miss them)."""
    from contextlib import contextmanager

    seen, transaction = [], store.transaction
    store.audit.add_observer(lambda *args: seen.append(args))

    @contextmanager
    def failing_commit():
        with transaction() as conn:
            yield conn
            raise StoreError("the commit failed")  # rolled back by the real transaction

    monkeypatch.setattr(store, "transaction", failing_commit)
    with pytest.raises(AuditError, match="action refused"):
        store.audit.record_with(lambda conn: True, [{"actor": "alice", "action": "a.lost"}])
    assert [(a, ok) for a, _, _, ok in seen] == [("a.lost", False)]
    monkeypatch.undo()
    assert [r.action for r in store.audit.iter_all()] == []


def test_record_with_and_group_commits_keep_one_chain(store):
    """Threads appending through record_with (their own transactions) and through record
    (the group-commit writer) at once: one unbroken chain, every record once."""
    n_threads, per_thread = 6, 10
    barrier = threading.Barrier(n_threads)

    def worker(t):
        barrier.wait()
        for i in range(per_thread):
            if t % 2:
                store.audit.record_with(lambda conn: True, [{"actor": f"u{t}", "action": f"{i}"}])
            else:
                store.audit.record(f"u{t}", f"{i}")

    with ThreadPoolExecutor(n_threads) as pool:
        list(pool.map(worker, range(n_threads)))
    records = list(store.audit.iter_all())
    assert [r.seq for r in records] == list(range(1, n_threads * per_thread + 1))
    assert sorted((r.actor, r.action) for r in records) == sorted(
        (f"u{t}", f"{i}") for t in range(n_threads) for i in range(per_thread)
    )
    assert store.audit.verify().ok


def _fields(actor, resource):
    return {
        "ts": "2026-11-25T17:56:34.123456+00:00", "actor": actor, "action": "a.b",
        "resource": resource, "decision": "allow", "reason": "", "details": {},
        "request_id": "rid", "client": "",
    }  # fmt: skip


# ---- usage counters ----------------------------------------------------------------------------


def test_usage_add_and_get(store):
    assert store.usage.get("alice", "queries", "2026-11-25") == 0
    assert store.usage.add("alice", "queries", "2026-11-25") == 1
    assert store.usage.add("alice", "queries", "2026-11-25", 4) == 5
    assert store.usage.add("alice", "queries", "2026-11-25", -2) == 3
    assert store.usage.get("alice", "queries", "2026-11-25") == 3
    assert store.usage.get("alice", "queries", "2026-11-26") == 0
    assert store.usage.get("bob", "queries", "2026-11-25") == 0


def test_usage_try_consume_stops_at_the_limit(store):
    got = [store.usage.try_consume("alice", "q", "d1", 1, 3) for _ in range(5)]
    assert [(c.allowed, c.used, c.limit) for c in got] == [
        (True, 1, 3), (True, 2, 3), (True, 3, 3), (False, 3, 3), (False, 3, 3),
    ]  # fmt: skip
    assert store.usage.get("alice", "q", "d1") == 3
    big = store.usage.try_consume("bob", "bytes", "d1", 10**12, 10**12 - 1)
    assert (big.allowed, big.used) == (False, 0)
    assert store.usage.get("bob", "bytes", "d1") == 0  # a refused consume leaves no row behind


def test_usage_try_consume_is_atomic_under_concurrency(store):
    limit = 40

    def worker(_):
        return sum(store.usage.try_consume("alice", "q", "d", 1, limit).allowed for _ in range(15))

    with ThreadPoolExecutor(6) as pool:
        allowed = sum(pool.map(worker, range(6)))
    assert allowed == limit
    assert store.usage.get("alice", "q", "d") == limit


def test_usage_prune(store):
    for window in ("2026-11-23", "2026-11-24", "2026-11-25"):
        store.usage.add("alice", "queries", window, 2)
        store.usage.add("alice", "bytes", window, 7)
    assert store.usage.prune("queries", "2026-11-25") == 2
    assert store.usage.get("alice", "queries", "2026-11-24") == 0
    assert store.usage.get("alice", "queries", "2026-11-25") == 2
    assert store.usage.get("alice", "bytes", "2026-11-23") == 7  # other metrics untouched
    assert store.usage.prune("queries", "2026-11-25") == 0


# ---- memberships -------------------------------------------------------------------------------


def test_memberships_repository(store):
    m = Memberships(store)
    now = dt.datetime(2026, 11, 25, 12, tzinfo=UTC)
    later = now + dt.timedelta(days=30)
    m.upsert("urls-study", "alice", later, source="api", updated_by="admin")
    m.upsert("ads-study", "alice", now - dt.timedelta(seconds=1), source="policy")
    m.upsert("ads-study", "bob")
    got = m.get("urls-study", "alice")
    assert (got.expires, got.source, got.updated_by) == (later, "api", "admin")
    assert m.get("urls-study", "bob") is None
    assert m.for_user("alice", now) == {"urls-study": later}
    assert m.for_user("bob", now) == {"ads-study": None}
    assert [(x.group, x.username) for x in m.expired(now)] == [("ads-study", "alice")]
    assert [(x.group, x.username) for x in m.list()] == [
        ("ads-study", "alice"), ("ads-study", "bob"), ("urls-study", "alice"),
    ]  # fmt: skip
    assert [x.username for x in m.list(group="ads-study")] == ["alice", "bob"]
    # upsert replaces expiry and provenance
    m.upsert("urls-study", "alice", None, source="policy", updated_by="sync")
    got = m.get("urls-study", "alice")
    assert (got.expires, got.source, got.updated_by) == (None, "policy", "sync")
    assert m.remove("urls-study", "alice") is True
    assert m.remove("urls-study", "alice") is False
    with pytest.raises(ValueError, match="source must be one of"):
        m.upsert("g", "u", source="ldap")


def test_memberships_mirror_the_policy_in_one_transaction(store):
    """#13: the reconciler writes the policy's rows together (30,000 for 10,000 users)."""
    m = Memberships(store)
    until = dt.datetime(2030, 1, 1, tzinfo=UTC)
    m.upsert("urls-study", "alice", None, source="api", updated_by="admin")
    m.upsert("old-study", "bob", None, source="policy")
    ups = [("urls-study", "alice", until), ("ads-study", "bob", None)]
    ups += [(f"g{i}", f"u{i}", None) for i in range(500)]
    m.mirror_policy(ups, [("old-study", "bob")], updated_by="fort-groups")
    got = {(x.group, x.username): (x.expires, x.source, x.updated_by) for x in m.list()}
    assert len(got) == 502 and ("old-study", "bob") not in got
    assert got[("urls-study", "alice")] == (until, "policy", "fort-groups")
    assert got[("ads-study", "bob")] == (None, "policy", "fort-groups")
    m.mirror_policy([], [])  # nothing to do is fine


def test_a_pass_never_deletes_an_admins_grant_made_after_it_read_the_rows(store):
    """A pass reads the rows, then writes: an admin's grant in between is kept, both for a
    policy copy it removes (the member left the file) and for an expired grant it clears."""
    m = Memberships(store)
    now = dt.datetime.now(UTC)
    m.upsert("ads-study", "bob", None, source="policy")  # the copy the pass will remove
    m.upsert("urls-study", "dan", now - dt.timedelta(days=1), source="api")  # expired
    read = {(x.group, x.username): x for x in m.list()}  # the pass reads
    m.upsert("ads-study", "bob", now + dt.timedelta(days=7), source="api", updated_by="admin")
    m.upsert("urls-study", "dan", now + dt.timedelta(days=7), source="api", updated_by="admin")
    m.mirror_policy([], [("ads-study", "bob")], updated_by="fort-groups")
    assert m.remove_unchanged(read[("urls-study", "dan")]) is False
    assert {(x.group, x.username, x.updated_by) for x in m.list()} == {
        ("ads-study", "bob", "admin"), ("urls-study", "dan", "admin"),
    }  # fmt: skip
    assert m.remove_unchanged(m.get("urls-study", "dan")) is True  # unchanged since read
    assert m.get("urls-study", "dan") is None
    # an admin's removal takes only a grant, not the file's entry a pass mirrored meanwhile
    m.upsert("urls-study", "eve", None, source="policy")
    assert m.remove("urls-study", "eve", "api") is False and m.get("urls-study", "eve")
    assert m.remove("ads-study", "bob", "api") is True and m.get("ads-study", "bob") is None


def test_dispose_returns_the_writer_connection_clean(store_url):
    """The audit writer's kept connection goes back to the pool as the pool expects it."""
    Store(store_url).dispose()  # create the schema
    store = Store(store_url, create=False)  # so the writer's is this pool's only connection
    store.audit.record("svc", "a.b", "r")
    writer = store.audit._conn.driver_connection
    store.audit.close()
    assert store.engine.pool.checkedin() == 1
    with store.transaction() as conn:  # a normal transaction works on the pooled connection
        assert conn.connection.driver_connection is writer
        conn.execute(schema.usage.insert().values(subject="s", metric="m", window="w", value=1))
        if store.dialect == "postgresql":
            from sqlalchemy import text

            assert conn.execute(text("SHOW lock_timeout")).scalar() == "0"
    assert store.usage.get("s", "m", "w") == 1
    store.audit.record("svc", "a.b", "again")  # and the writer reconnects
    assert store.audit.verify().checked == 2
    store.dispose()


def test_memberships_unless_deauthorized(store):
    """The decision read of every request: active memberships, or None while the user's
    sign-in is deauthorized (SQLite and PostgreSQL)."""
    import datetime as dt

    from fort_hub.authenticators.identities import Identities
    from fort_hub.store.memberships import Memberships

    now = dt.datetime.now(dt.UTC)
    m = Memberships(store)
    m.upsert("g1", "kim", now + dt.timedelta(days=1))
    m.upsert("g2", "kim", now - dt.timedelta(days=1))  # ended
    m.upsert("g3", "kim", None)
    assert m.for_user_unless_deauthorized("kim", now) == {"g1": now + dt.timedelta(days=1),
                                                         "g3": None}  # fmt: skip
    assert m.for_user_unless_deauthorized("nobody", now) == {}
    m.upsert("g4", "kim", None, source="policy")  # fort-groups' copy of the policy: not counted
    assert "g4" not in m.for_user_unless_deauthorized("kim", now)
    assert "g4" not in m.for_user("kim", now) and m.get("g4", "kim").source == "policy"
    ids = Identities(store)
    ids.bind("fb-kim", "kim")
    assert m.for_user_unless_deauthorized("kim", now) is not None
    ids.revoke("fb-kim")
    assert m.for_user_unless_deauthorized("kim", now) is None
    ids.bind("fb-kim", "kim")  # signing in again
    assert set(m.for_user_unless_deauthorized("kim", now)) == {"g1", "g3"}


def test_leaders_one_holder_at_a_time(store):
    """#13: a role (fort-groups' reconciliation) is held by one replica at a time: claimed
    while free, renewed by its holder, refused to another until it runs out or is released."""
    from fort_hub.store.leaders import Leaders

    leaders, now = Leaders(store), dt.datetime(2026, 12, 2, 12, tzinfo=dt.UTC)
    later = now + dt.timedelta(seconds=30)
    assert leaders.holder("role", now) is None
    assert leaders.claim("role", "a", now, 60)
    assert not leaders.claim("role", "b", later, 60)  # a's claim lasts until now + 60 s
    assert leaders.claim("role", "a", later, 60)  # renewed: until later + 60 s
    assert not leaders.claim("role", "b", now + dt.timedelta(seconds=80), 60)
    assert leaders.holder("role", now + dt.timedelta(seconds=80)) == "a"
    assert leaders.claim("role", "b", later + dt.timedelta(seconds=61), 60)  # a's ran out
    assert not leaders.release("role", "a")  # not a's any more
    assert leaders.claim("other-role", "a", now, 60)  # roles are independent
    assert leaders.release("role", "b")
    assert leaders.claim("role", "a", later + dt.timedelta(seconds=62), 60)  # released: free
