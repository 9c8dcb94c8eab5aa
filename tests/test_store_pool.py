"""The PostgreSQL store's pool: a connection is pinged before use only after it sat idle for
``Store(ping_after_idle_s=...)``, so a busy pool spends no round trip per transaction on it,
and a connection the server dropped meanwhile is replaced instead of failing a request."""

from __future__ import annotations

import time

import psycopg
import pytest
from sqlalchemy import text

from fort_hub.store import Store, StoreUnavailable

pytestmark = pytest.mark.postgres


def backend_pid(store: Store) -> int:
    with store.reading() as conn:
        return conn.execute(text("SELECT pg_backend_pid()")).scalar_one()


def kill(pg_url: str, pid: int) -> None:
    raw = pg_url.split("?")[0].replace("postgresql+psycopg", "postgresql")
    with psycopg.connect(raw, autocommit=True) as admin:
        assert admin.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()[0]


def count_pings(store: Store, monkeypatch) -> list[int]:
    dialect, pings = store.engine.dialect, []
    real = dialect.do_ping

    def counted(dbapi_conn):
        pings.append(1)
        return real(dbapi_conn)

    monkeypatch.setattr(dialect, "do_ping", counted)
    return pings


def test_a_connection_used_a_moment_ago_is_not_pinged(pg_url, monkeypatch):
    store = Store(pg_url, ping_after_idle_s=30)
    pings = count_pings(store, monkeypatch)
    pids = {backend_pid(store) for _ in range(20)}
    with store.transaction() as conn:
        conn.execute(text("SELECT 1"))
    assert (len(pids), pings) == (1, [])  # one pooled connection, never pinged
    store.dispose()


def test_an_idle_connection_is_pinged_and_a_dead_one_replaced(pg_url, monkeypatch):
    store = Store(pg_url, ping_after_idle_s=0.2)
    pings = count_pings(store, monkeypatch)
    first = backend_pid(store)
    pings.clear()  # (the schema's connection may have waited long enough for a ping already)
    time.sleep(0.3)
    assert backend_pid(store) == first and len(pings) == 1  # alive: pinged, kept
    kill(pg_url, first)
    time.sleep(0.3)
    with store.transaction() as conn:  # the ping finds it dead: a new connection, no error
        second = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
    assert second != first and len(pings) == 2
    store.dispose()


def test_a_connection_killed_within_the_window_fails_closed_then_recovers(pg_url):
    """Not pinged (used a moment ago): its transaction fails as StoreUnavailable, which every
    caller treats as "refuse", and the pool is replaced for the next one."""
    store = Store(pg_url, ping_after_idle_s=60)
    first = backend_pid(store)
    kill(pg_url, first)
    with pytest.raises(StoreUnavailable):
        backend_pid(store)
    assert backend_pid(store) != first
    store.dispose()
