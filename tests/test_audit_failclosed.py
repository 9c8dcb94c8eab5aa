"""A store that is down, read-only or locked makes ``record`` raise AuditError (callers deny)."""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest

from fort_hub.audit import AuditError
from fort_hub.store import Store, StoreError, StoreUnavailable
from tests.conftest import require_postgres
from tests.hubproc import free_port


def test_postgresql_on_a_closed_port(tmp_path):
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/test"
    with pytest.raises(StoreUnavailable, match="the fort store is unavailable"):
        Store(url)  # a service refuses to start
    store = Store(url, create=False)
    start = time.monotonic()
    with pytest.raises(AuditError, match="audit record not written, action refused"):
        store.audit.record("alice", "query.submit", "url_shares")
    assert time.monotonic() - start < 10
    store.dispose()


@pytest.mark.parametrize("where", ["missing-dir/fort.sqlite", "a-file/fort.sqlite"])
def test_sqlite_path_that_cannot_be_opened(tmp_path, where):
    (tmp_path / "a-file").write_text("not a directory")
    store = Store(f"sqlite:///{tmp_path / where}", create=False)
    with pytest.raises(AuditError, match="unable to open database file"):
        store.audit.record("alice", "query.submit", "url_shares")
    with pytest.raises(StoreError):
        Store(f"sqlite:///{tmp_path / where}")
    assert not (tmp_path / "missing-dir").exists()


def test_sqlite_read_only_database(tmp_path):
    path = tmp_path / "fort.sqlite"
    Store(f"sqlite:///{path}").audit.record("svc", "a.b", "before")
    ro = Store(f"sqlite:///file:{path}?mode=ro&uri=true", create=False)
    with pytest.raises(AuditError, match="readonly database"):
        ro.audit.record("alice", "query.submit", "url_shares")
    ro.dispose()
    assert [r.resource for r in Store(f"sqlite:///{path}").audit.iter_all()] == ["before"]


def test_sqlite_writer_lock_held_too_long(tmp_path):
    path = tmp_path / "fort.sqlite"
    Store(f"sqlite:///{path}")
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        store = Store(f"sqlite:///{path}", create=False, busy_timeout_ms=200)
        with pytest.raises(AuditError, match="database is locked"):
            store.audit.record("alice", "query.submit", "url_shares")
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    rec = store.audit.record("alice", "query.submit", "url_shares")  # and it recovers
    assert rec.seq == 1


@pytest.mark.postgres
def test_postgresql_lock_held_too_long(pg_url):
    import psycopg

    Store(pg_url)
    raw = pg_url.replace("postgresql+psycopg", "postgresql")
    with psycopg.connect(raw) as blocker:
        blocker.execute("SELECT pg_advisory_xact_lock(42420001)")
        store = Store(pg_url, create=False, busy_timeout_ms=300)
        with pytest.raises(AuditError, match="lock timeout"):
            store.audit.record("alice", "query.submit", "url_shares")
        blocker.rollback()
    assert store.audit.record("alice", "query.submit", "url_shares").seq == 1
    store.dispose()


@pytest.mark.postgres
def test_postgresql_connection_killed_fails_closed_then_recovers(pg_url):
    import psycopg

    require_postgres()
    store = Store(pg_url)
    store.audit.record("svc", "a.b", "first")
    raw = pg_url.replace("postgresql+psycopg", "postgresql")
    writer_pid = store.audit._conn.driver_connection.info.backend_pid
    with psycopg.connect(raw, autocommit=True) as admin:
        assert admin.execute("SELECT pg_terminate_backend(%s)", (writer_pid,)).fetchone()[0]
    outcomes = []
    for _ in range(2):
        try:
            outcomes.append(store.audit.record("alice", "query.submit", "x").seq)
        except AuditError as e:
            outcomes.append(str(e).split(":")[0])
    # the record on the dead connection is refused, then the writer reconnects
    assert outcomes == ["audit record not written, action refused", 2]
    assert store.audit.verify().ok
    store.dispose()


@pytest.mark.postgres
def test_nul_character_is_refused_alone(pg_url):
    """PostgreSQL cannot store NUL in text: that record is refused, its batch neighbours not."""
    store = Store(pg_url)
    barrier = threading.Barrier(3)
    results = {}

    def call(name, resource):
        barrier.wait()
        try:
            results[name] = store.audit.record(name, "query.submit", resource).seq
        except AuditError:
            results[name] = "refused"

    threads = [
        threading.Thread(target=call, args=(n, r))
        for n, r in (("alice", "ok"), ("mallory", "bad\x00"), ("bob", "ok"))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results["mallory"] == "refused"
    assert sorted([results["alice"], results["bob"]]) == [1, 2]
    assert store.audit.verify().ok
    store.dispose()
