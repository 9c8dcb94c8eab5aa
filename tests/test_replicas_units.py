"""What replicas of a fort service share through the store, as plain objects over SQLite and
PostgreSQL (the ``store`` fixture): the credentials rate limit, query leases and cross-replica
cancellation requests."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from fort_hub.access import Access
from fort_hub.policy import load_policy
from fort_hub.services.credentials.backends import StubStsBackend
from fort_hub.services.credentials.issuer import RATE_METRIC, CredentialIssuer, IssuerSettings
from fort_hub.services.handler import ServiceError

UTC = dt.UTC


def two_issuers(store, example_policy_path, per_minute: int, clock):
    text = example_policy_path.read_text().replace(
        "credential_requests_per_minute: 60", f"credential_requests_per_minute: {per_minute}"
    )
    example_policy_path.write_text(text)
    policy = load_policy(example_policy_path)
    access = Access(store, lambda: policy, clock)
    return [CredentialIssuer(access, StubStsBackend(), IssuerSettings()) for _ in range(2)]


def test_credentials_rate_limit_is_shared_by_replicas(store, example_policy_path):
    now = [dt.datetime(2026, 12, 2, 10, 15, 40, tzinfo=UTC)]
    issuers = two_issuers(store, example_policy_path, 3, lambda: now[0])

    async def scenario():
        for i in range(3):  # alternating replicas: three requests in all, not three each
            await issuers[i % 2].rate_limit("alice", 3)
        with pytest.raises(ServiceError) as refused:
            await issuers[1].rate_limit("alice", 3)
        await issuers[0].rate_limit("bob", 3)  # another user has their own window
        now[0] += dt.timedelta(seconds=25)  # the next minute: a new window, the old one pruned
        await issuers[1].rate_limit("alice", 3)
        return refused.value

    refusal = asyncio.run(scenario())
    assert refusal.status_code == 429 and refusal.headers == {"Retry-After": "20"}
    assert "3 per minute" in refusal.message
    assert store.usage.get("alice", RATE_METRIC, "2026-12-02T10:16") == 1
    assert store.usage.get("alice", RATE_METRIC, "2026-12-02T10:15") == 0  # pruned


def test_reset_rate_limit_clears_it_for_every_replica(store, example_policy_path):
    now = dt.datetime(2026, 12, 2, 10, 15, tzinfo=UTC)
    issuers = two_issuers(store, example_policy_path, 1, lambda: now)

    async def scenario():
        await issuers[0].rate_limit("alice", 1)
        await issuers[0].rate_limit("bob", 1)
        issuers[1].reset_rate_limit("alice")
        await issuers[0].rate_limit("alice", 1)  # alice starts afresh, bob does not
        with pytest.raises(ServiceError):
            await issuers[1].rate_limit("bob", 1)
        issuers[1].reset_rate_limit()
        await issuers[0].rate_limit("bob", 1)

    asyncio.run(scenario())


def test_usage_clear(store):
    store.usage.add("alice", "m", "w1", 2)
    store.usage.add("bob", "m", "w1", 2)
    store.usage.add("alice", "other", "w1", 2)
    assert store.usage.clear("m", "alice") == 1
    assert (store.usage.get("alice", "m", "w1"), store.usage.get("bob", "m", "w1")) == (0, 2)
    assert store.usage.clear("m") == 1
    assert store.usage.get("alice", "other", "w1") == 2


def test_query_leases_renew_reap_and_release(store):
    from fort_hub.store.leases import QueryLeases
    from fort_hub.store.queries import QueryRecord, QueryRecords

    t0 = dt.datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
    records, leases = QueryRecords(store), QueryLeases(store)

    def admit(qid, replica):
        records.insert(QueryRecord(qid, "alice", "d", "duckdb", "SELECT 1", "running", "t"))
        with store.transaction() as conn:
            leases.take_in(conn, qid, replica, t0 + dt.timedelta(seconds=30))

    admit("a" * 32, "r1")
    admit("b" * 32, "r2")
    admit("c" * 32, "r2")
    admit("d" * 32, "r1")  # r1 no longer runs it (e.g. its final state could not be saved)
    records.update("c" * 32, state="cancelled")  # by another replica
    later = t0 + dt.timedelta(seconds=40)
    renewed = leases.renew("r1", later + dt.timedelta(seconds=30), ["a" * 32])
    assert renewed == {"a" * 32: "running"}
    # r2 stopped renewing: its running query fails with the reason, its leases go; so does
    # the query r1 holds a lease on but no longer runs (not kept alive by r1's heartbeat)
    reaped = leases.reap(later, "gone")
    assert sorted(r.id for r in reaped) == ["b" * 32, "d" * 32]
    assert records.get("b" * 32).state == "failed" and records.get("b" * 32).error == "gone"
    assert records.get("c" * 32).state == "cancelled"
    assert leases.holders() == {"a" * 32: "r1"}
    assert leases.reap(later, "gone") == []
    # a restart of r1 fails what its previous run held, lease or not
    assert [r.id for r in leases.reap(later, "restarted", replica="r1")] == ["a" * 32]
    leases.release("a" * 32)
    assert leases.holders() == {}


def test_concurrent_reapers_fail_each_query_once(store):
    from concurrent.futures import ThreadPoolExecutor

    from fort_hub.store.leases import QueryLeases
    from fort_hub.store.queries import QueryRecord, QueryRecords

    t0 = dt.datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
    records, leases = QueryRecords(store), QueryLeases(store)
    for i in range(20):
        qid = f"{i:032x}"
        records.insert(QueryRecord(qid, "alice", "d", "duckdb", "SELECT 1", "running", "t"))
        with store.transaction() as conn:
            leases.take_in(conn, qid, "gone", t0)
    later = t0 + dt.timedelta(minutes=1)
    with ThreadPoolExecutor(4) as pool:
        reaped = list(pool.map(lambda _: leases.reap(later, "gone"), range(4)))
    ids = [r.id for batch in reaped for r in batch]
    assert sorted(ids) == [f"{i:032x}" for i in range(20)]  # each exactly once
    assert leases.holders() == {}


def test_a_replica_stops_a_query_another_replica_failed(tmp_path, sqlite_url):
    """After e.g. a store outage longer than the lease, another replica fails the query; the
    replica still running it stops the engine at its next heartbeat and leaves that record
    (and its audit trail) as the other replica wrote it."""
    import time

    from fort_hub.services.query.finals import LOST_REASON
    from fort_hub.store.leases import QueryLeases
    from tests.query_support import QueryEnv

    slow = (
        "SELECT count(*) FROM url_shares a, url_shares b, url_shares c, url_shares d, url_shares e"
    )
    env = QueryEnv(tmp_path, sqlite_url, QueryService__heartbeat_interval=0.2).start()
    try:
        r = env.post(slow)
        assert r.status_code == 202, r.text
        qid = r.json()["id"]
        runner = env.app.runner
        assert runner.live_outcome(qid) is not None
        later = dt.datetime.now(UTC) + dt.timedelta(hours=1)  # the other replica's view
        assert [q.id for q in QueryLeases(env.app.fort_store).reap(later, LOST_REASON)] == [qid]
        deadline = time.monotonic() + 20
        while runner.live_outcome(qid) is not None:
            assert time.monotonic() < deadline, "the running replica never stopped the query"
            time.sleep(0.1)
        q = env.get(f"queries/{qid}").json()
        assert q["state"] == "failed" and q["error"] == LOST_REASON
        completes = env.app.fort_store.audit.query(action="query.complete", limit=10)
        # its end is audited by the replica that failed it (runner.reap), not twice
        assert [c for c in completes if c.details.get("query_id") == qid] == []
        assert env.run("SELECT 1")["state"] == "succeeded"  # the engine serves on
    finally:
        env.stop()


def test_a_query_admitted_during_a_heartbeat_is_not_cancelled(tmp_path, sqlite_url, monkeypatch):
    """The heartbeat compares the queries running here with the store's answer to its lease
    renewal: a query admitted while the renewal ran was not in that answer, was taken for one
    another replica had ended, and was stopped as 'cancelled by the user'."""
    import asyncio
    import threading

    import requests

    from tests.query_support import QueryEnv

    slow = "SELECT count(*) FROM url_shares a, url_shares b, url_shares c, url_shares d"
    medium = "SELECT count(*) FROM url_shares a, url_shares b, url_shares c"
    env = QueryEnv(tmp_path, sqlite_url, QueryService__heartbeat_interval=10).start()
    try:
        runner = env.app.runner
        first = env.post(slow)  # something runs here, so the heartbeat renews leases
        assert first.status_code == 202, first.text
        gate, real = threading.Event(), runner.leases.renew

        def renew(*args):  # the store answers, then the answer takes a while to arrive
            answer = real(*args)
            assert gate.wait(20)
            return answer

        monkeypatch.setattr(runner.leases, "renew", renew)
        beat = asyncio.run_coroutine_threadsafe(runner.heartbeat(), env.app.loop)
        second = env.post(medium)  # admitted while the renewal's answer is on its way
        assert second.status_code == 202, second.text
        gate.set()
        beat.result(20)
        q = env.wait(second.json()["id"])
        assert q["state"] == "succeeded", q  # not "cancelled by the user"
        requests.delete(env.base + f"queries/{first.json()['id']}", headers=env.h(), timeout=30)
    finally:
        env.stop()
