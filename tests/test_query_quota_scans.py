"""A query that ends without a result still counts what it scanned against
``bytes_scanned_per_day``. It counted 0 before (left alone in stop 26): a researcher could scan
without a byte quota by making each query fail, time out, overflow a cap or be cancelled, up to
``queries_per_day`` of them. Through the real fort-query service over HTTP, with the DuckDB
engine's worker processes; Athena's side is the engine's own (moto's Athena reports no scan)."""

from __future__ import annotations

import asyncio
import time

import pytest
import requests

from fort_hub.policy.model import Dataset
from fort_hub.services.query.engines.athena import AthenaEngine
from fort_hub.services.query.engines.base import EngineError, EngineJob, QueryCancelled
from fort_hub.services.query.results import FileSink
from tests.query_support import QueryEnv

#: DuckDB fails on the first row it converts: after it read the column
FAILS = "SELECT CAST(url AS INTEGER) AS x FROM url_shares"
#: 200^5 rows: runs until it is stopped
SLOW = "SELECT count(*) FROM url_shares a, url_shares b, url_shares c, url_shares d, url_shares e"

ENDINGS = {
    "engine error": ({}, FAILS, "failed", "Could not convert"),
    "row cap": ({"QueryService__max_result_rows": 50}, "SELECT * FROM url_shares", "failed",
                "max_result_rows"),
    "query_timeout": ({"QueryService__query_timeout": 1.0}, SLOW, "failed", "query_timeout"),
    # the worker is killed by the kernel (SIGXCPU): it cannot say what it read
    "worker killed": ({"DuckDBEngine__worker_cpu_limit": 1.0, "QueryService__query_timeout": 60},
                      SLOW, "failed", "worker_cpu_limit"),
}  # fmt: skip


def used_today(env) -> int:
    return env.get("usage").json()["limits"]["bytes_scanned_per_day"]["used"]


def warmed(env: QueryEnv) -> QueryEnv:
    """*env* once a query worker has started and answered (a query stopped while its worker
    still starts has scanned nothing, rightly counted 0); the warm-up reads no file."""
    q = env.run("SELECT 1 AS x")
    assert q["state"] == "succeeded" and q["bytes_scanned"] == 0, q
    return env


@pytest.mark.parametrize("ending", list(ENDINGS))
def test_a_query_ending_without_a_result_counts_what_it_scanned(ending, tmp_path, sqlite_url):
    settings, sql, state, reason = ENDINGS[ending]
    env = warmed(QueryEnv(tmp_path, sqlite_url, **settings).start())
    try:
        q = env.run(sql)
        assert q["state"] == state and reason in q["error"], q
        assert q["bytes_scanned"] > 0, q  # before: 0
        assert used_today(env) == q["bytes_scanned"]
    finally:
        env.stop()


def test_a_cancelled_query_counts_what_it_scanned(env_store):
    env = warmed(env_store)
    r = env.post(SLOW)
    assert r.status_code == 202, r.text
    qid = r.json()["id"]
    engine = env.app.runner.engines["duckdb"]
    deadline = time.monotonic() + 20
    while qid not in engine._running:  # its worker has been sent the query
        assert time.monotonic() < deadline
        time.sleep(0.02)
    time.sleep(0.5)  # it has read the file (in ms) and joins rows
    gone = requests.delete(env.base + f"queries/{qid}", headers=env.h(), timeout=30)
    assert gone.status_code in (200, 202, 204), gone.text
    q = env.wait(qid)
    assert q["state"] == "cancelled" and q["bytes_scanned"] > 0, q
    assert used_today(env) == q["bytes_scanned"]


@pytest.fixture
def env_store(tmp_path, store_url):
    e = QueryEnv(tmp_path, store_url).start()
    yield e
    e.stop()


def test_failing_queries_cannot_scan_past_the_byte_quota(tmp_path, store_url, example_policy_path):
    """The attack itself: queries made to fail after their scan, one after another. Before, the
    quota never refused them (each counted 0); now the byte quota refuses the next one once
    the failed scans reach it."""
    text = example_policy_path.read_text().replace(
        "bytes_scanned_per_day: 100G", "bytes_scanned_per_day: 3000"
    )
    env = QueryEnv(tmp_path, store_url, policy_text=text).start()
    try:
        recorded = 0
        for _ in range(20):
            r = env.post(FAILS)
            if r.status_code != 202:
                break
            q = env.wait(r.json()["id"])
            assert q["state"] == "failed"
            recorded += q["bytes_scanned"]
        assert r.status_code == 429, r.text
        assert r.json()["error"]["quota"]["limit"] == "bytes_scanned_per_day"
        assert r.json()["error"]["quota"]["used"] == recorded >= 3000
    finally:
        env.stop()


# ----- Athena: the failed or cancelled execution's DataScannedInBytes -----------------------------


class FakeAthena:
    """The three Athena calls the engine makes; the execution ends in *state* having scanned
    *scanned* bytes (moto's Athena always reports 0, so it cannot show this)."""

    def __init__(self, state: str, scanned: int):
        self.state, self.scanned = state, scanned

    def start_query_execution(self, **_):
        return {"QueryExecutionId": "athena-qid-1"}

    def get_query_execution(self, QueryExecutionId):
        return {"QueryExecution": {
            "QueryExecutionId": QueryExecutionId,
            "Status": {"State": self.state, "StateChangeReason": "Query exhausted resources"},
            "Statistics": {"DataScannedInBytes": self.scanned},
        }}  # fmt: skip

    def stop_query_execution(self, **_):
        self.state = "CANCELLED"


@pytest.mark.parametrize("state,error", [("FAILED", EngineError), ("CANCELLED", QueryCancelled)])
def test_athena_counts_a_failed_or_cancelled_executions_scan(state, error, tmp_path, monkeypatch):
    engine = AthenaEngine(poll_initial=0.01)
    fake = FakeAthena(state, 7_340_032)
    monkeypatch.setattr(engine, "_client", lambda job, service: fake)
    job = EngineJob(
        id="q" * 32, sql="SELECT 1", username="alice", role_arn="arn:aws:iam::1:role/r",
        dataset=Dataset("x", "athena", tables=("t",), location={"database": "d"}),
    )  # fmt: skip
    sink = FileSink(str(tmp_path / "r.arrows"), 100, 10**6)
    with pytest.raises(error) as raised:
        asyncio.run(engine.run(job, sink))
    assert raised.value.bytes_scanned == 7_340_032  # before: the error carried no scan
    assert raised.value.engine_id == "athena-qid-1"


class StoppingAthena(FakeAthena):
    """Athena stopping a running execution: it reports RUNNING for two more polls after the
    stop, and its final scan only with CANCELLED."""

    def __init__(self):
        super().__init__("RUNNING", 1_000)
        self.polls_left: int | None = None

    def get_query_execution(self, QueryExecutionId):
        if self.polls_left is not None:
            self.polls_left -= 1
            if self.polls_left <= 0:
                self.state, self.scanned = "CANCELLED", 9_000_000
        return super().get_query_execution(QueryExecutionId)

    def stop_query_execution(self, **_):
        self.polls_left = 3


def test_athena_counts_a_cancelled_executions_final_scan(tmp_path, monkeypatch):
    """Review: the cancel was raised at once with the scan of a still-running execution (often
    0), while Athena goes on scanning until it has stopped it."""
    engine = AthenaEngine(poll_initial=0.01, poll_max=0.02)
    fake = StoppingAthena()
    monkeypatch.setattr(engine, "_client", lambda job, service: fake)
    job = EngineJob(
        id="c" * 32, sql="SELECT 1", username="alice", role_arn="arn:aws:iam::1:role/r",
        dataset=Dataset("x", "athena", tables=("t",), location={"database": "d"}),
    )  # fmt: skip

    async def go():
        task = asyncio.ensure_future(engine.run(job, FileSink(str(tmp_path / "c"), 100, 10**6)))
        await asyncio.sleep(0.1)
        await engine.cancel(job.id)
        return await task

    with pytest.raises(QueryCancelled) as raised:
        asyncio.run(go())
    assert raised.value.bytes_scanned == 9_000_000
