"""The pure parts of "My access" (fort_hub/services/query/myaccess.py): meters, durations and
the recent-queries rows, compared as data."""

from __future__ import annotations

import datetime as dt

from fort_hub.services.query.myaccess import duration, meters, query_rows
from fort_hub.store.queries import QueryRecord

UTC = dt.UTC
NOW = dt.datetime(2026, 12, 2, 12, tzinfo=UTC)


def record(**over) -> QueryRecord:
    return QueryRecord(**{
        "id": "ab" * 16, "username": "alice", "dataset": "url_shares", "engine": "duckdb",
        "sql": "SELECT 1", "state": "succeeded", "submitted": "2026-12-02T10:00:00+00:00",
        "started": "2026-12-02T10:00:01+00:00", "finished": "2026-12-02T10:00:04.25+00:00",
        "rows": 14, "result_path": "/r/x.arrow", "expires": "2026-12-03T10:00:04+00:00",
        **over,
    })  # fmt: skip


def test_meters_from_the_usage_answer():
    usage = {
        "max_concurrent_queries": {"used": 1, "max": 2, "resets": None},
        "queries_per_day": {"used": 450, "max": 500, "resets": "2026-12-03T00:00:00+00:00"},
        "bytes_scanned_per_day": {"used": 0, "max": 10**11, "resets": "2026-12-03T00:00:00+00:00"},
        "max_result_rows": {"used": None, "max": 10**6, "resets": None},
    }
    assert meters(usage) == [
        {"key": "queries_per_day", "label": "Queries today", "used": 450, "max": 500,
         "percent": 90, "resets": "2026-12-03T00:00:00+00:00", "bytes": False},
        {"key": "bytes_scanned_per_day", "label": "Data scanned today", "used": 0,
         "max": 10**11, "percent": 0, "resets": "2026-12-03T00:00:00+00:00", "bytes": True},
        {"key": "max_concurrent_queries", "label": "Queries running or queued now", "used": 1,
         "max": 2, "percent": 50, "resets": None, "bytes": False},
    ]  # fmt: skip


def test_a_meter_never_passes_full_and_a_zero_limit_is_full():
    usage = {"queries_per_day": {"used": 7, "max": 5}, "max_concurrent_queries": {"used": 0,
             "max": 0}}  # fmt: skip
    assert [m["percent"] for m in meters(usage)] == [100, 100]


def test_durations_for_people():
    assert duration(record()) == "3.2 s"
    assert duration(record(finished="2026-12-02T10:04:06+00:00")) == "4 min 5 s"
    assert duration(record(finished="2026-12-02T12:30:01+00:00")) == "2 h 30 min"
    assert duration(record(started=None, finished=None, state="queued")) == ""


def test_rows_offer_a_download_only_while_the_result_is_kept():
    kept, gone, failed = query_rows(
        [
            record(),
            record(expires="2026-12-02T11:00:00+00:00"),
            record(state="failed", result_path=None, rows=None, error="engine error"),
        ],
        NOW,
    )
    assert kept["download"] and kept["short"] == "abababab" and kept["duration"] == "3.2 s"
    assert not gone["download"]
    assert not failed["download"] and failed["error"] == "engine error"
