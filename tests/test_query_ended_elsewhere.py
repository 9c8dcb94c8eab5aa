"""A query another replica ended (cancelled there, or failed as lost) while its engine here
was still writing: the downloader following its result here must not get a complete-looking
stream (left alone in stop 26: the followers were told "succeeded", the engine's own view,
and got the end-of-stream marker of a query whose record says cancelled)."""

from __future__ import annotations

import datetime as dt
import threading
import time

import pytest
import requests

from fort_hub.services.query.engines.duckdb import DuckDBEngine
from fort_hub.services.query.results import END_OF_STREAM
from fort_hub.store import Store, StoreError
from fort_hub.store.core import isoformat
from fort_hub.store.queries import INFLIGHT, QueryRecords
from tests.query_support import QueryEnv

ARROW = {"Accept": "application/vnd.apache.arrow.stream"}


class HeldEngine(DuckDBEngine):
    """DuckDB that holds each query after its first batch is in the result file (and handed
    to the followers) until :attr:`go` is set: the moment another replica ends it."""

    go = threading.Event()

    async def run(self, job, sink):
        appended = sink.appended

        def then_hold(*args):
            appended(*args)
            self.go.wait(30)

        sink.appended = then_hold
        return await super().run(job, sink)


@pytest.fixture
def env(tmp_path, sqlite_url):
    HeldEngine.go.clear()
    e = QueryEnv(
        tmp_path, sqlite_url,
        QueryService__duckdb_engine_class=f"{__name__}.HeldEngine",
        QueryService__lease_ttl=600.0, QueryService__heartbeat_interval=120.0,
    ).start()  # fmt: skip
    yield e
    HeldEngine.go.set()
    e.stop()


def follow_until_first_bytes(env, qid: str):
    """A downloader following *qid*'s result (a thread): (thread, bytes received, what ended
    its answer: [status, error?, "done"]) once it has the first batch."""
    received, ended = bytearray(), []

    def follow():
        try:
            with requests.get(env.base + f"queries/{qid}/results?follow=true",
                              headers=env.h(**ARROW), stream=True, timeout=60) as got:  # fmt: skip
                ended.append(got.status_code)
                for chunk in got.iter_content(None):
                    received.extend(chunk)
        except requests.RequestException as e:
            ended.append(e)
        ended.append("done")

    follower = threading.Thread(target=follow)
    follower.start()
    deadline = time.monotonic() + 30
    while not received:  # the follower streams the first batch: the engine is held after it
        assert time.monotonic() < deadline and "done" not in ended, ended
        time.sleep(0.02)
    return follower, received, ended


def assert_broken_off(follower, received, ended) -> None:
    """The answer broke off (no last chunk), as for a query that fails midway; not a clean end
    with the end-of-stream marker (a complete-looking result)."""
    follower.join(30)
    assert not follower.is_alive()
    assert len(ended) == 3 and ended[0] == 200, ended  # before: [200, "done"]
    assert isinstance(ended[1], requests.exceptions.ChunkedEncodingError), ended
    assert not bytes(received).endswith(END_OF_STREAM)


def submit(env) -> str:
    r = env.post("SELECT url, shares FROM url_shares ORDER BY shares, url")
    assert r.status_code == 202, r.text
    return r.json()["id"]


def test_a_follower_gets_no_complete_stream_of_a_query_ended_elsewhere(env):
    qid = submit(env)
    follower, received, ended = follow_until_first_bytes(env, qid)
    # what another replica does on DELETE of a query it does not run (QueryRunner.cancel)
    store = Store(env.store_url)
    try:
        now = isoformat(dt.datetime.now(dt.UTC))
        assert QueryRecords(store).update(
            qid, INFLIGHT, state="cancelled", error="cancelled by the user", finished=now
        )
    finally:
        store.dispose()
    HeldEngine.go.set()  # the engine here finishes writing and sees it ended elsewhere
    assert_broken_off(follower, received, ended)
    assert env.wait(qid)["state"] == "cancelled"


def test_a_follower_gets_no_complete_stream_of_a_query_whose_end_was_not_recorded(env, monkeypatch):
    """Review: the store failing as the query ended (its state not recorded, so it is later
    failed as lost) still sent the end-of-stream marker."""
    qid = submit(env)
    follower, received, ended = follow_until_first_bytes(env, qid)
    records = env.app.runner.records
    real = records.update_in

    def store_down(conn, query_id, *args, **values):
        if query_id == qid and "finished" in values:
            raise StoreError("the store is unreachable (test)")
        return real(conn, query_id, *args, **values)

    monkeypatch.setattr(records, "update_in", store_down)
    HeldEngine.go.set()
    assert_broken_off(follower, received, ended)
