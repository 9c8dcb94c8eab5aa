"""Per-user usage limits of fort-query, from the policy's ``quota_for``.

- ``max_concurrent_queries``: queued + running queries (counted from the query records, so a
  restart that fails in-flight queries also frees their slots);
- ``queries_per_day`` and ``bytes_scanned_per_day``: counters in ``fort_usage`` per UTC day;
- ``max_result_rows``: enforced while the result is written.

A refusal is :class:`QuotaExceeded` (HTTP 429) naming the limit, the use and the reset time.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from ...policy.model import Quota
from ...store import Store
from ...store.core import isoformat

QUERIES = "query.count"
BYTES = "query.bytes_scanned"


class QuotaExceeded(Exception):
    def __init__(self, limit: str, used: int, maximum: int, resets: str | None):
        self.limit, self.used, self.maximum, self.resets = limit, used, maximum, resets
        when = f"; it resets at {resets}" if resets else "; a slot frees when one of them finishes"
        super().__init__(f"quota {limit} reached: {used} of {maximum} used{when}")

    def as_dict(self) -> dict[str, Any]:
        return {"limit": self.limit, "used": self.used, "max": self.maximum, "resets": self.resets}


def day_window(now: dt.datetime) -> tuple[str, str]:
    """(window name, reset time) of the UTC day containing *now*."""
    now = now.astimezone(dt.UTC)
    start = dt.datetime.combine(now.date(), dt.time(), tzinfo=dt.UTC)
    return now.date().isoformat(), isoformat(start + dt.timedelta(days=1))


class Quotas:
    def __init__(self, store: Store, clock: Callable[[], dt.datetime]):
        self.store = store
        self.clock = clock

    def admit(self, username: str, quota: Quota) -> None:
        """Count one query against today's limits, or raise :class:`QuotaExceeded`."""
        window, resets = day_window(self.clock())
        scanned = self.store.usage.get(username, BYTES, window)
        if scanned >= quota.bytes_scanned_per_day:
            raise QuotaExceeded(
                "bytes_scanned_per_day", scanned, quota.bytes_scanned_per_day, resets
            )
        got = self.store.usage.try_consume(username, QUERIES, window, 1, quota.queries_per_day)
        if not got.allowed:
            raise QuotaExceeded("queries_per_day", got.used, quota.queries_per_day, resets)

    def refund(self, username: str) -> None:
        """Undo :meth:`admit` (the query was refused later, before it ran)."""
        window, _ = day_window(self.clock())
        self.store.usage.add(username, QUERIES, window, -1)

    def add_scanned(self, username: str, nbytes: int) -> None:
        if nbytes > 0:
            window, _ = day_window(self.clock())
            self.store.usage.add(username, BYTES, window, int(nbytes))

    def usage(self, username: str, quota: Quota, inflight: int) -> dict[str, Any]:
        window, resets = day_window(self.clock())
        return {
            "max_concurrent_queries": {
                "used": inflight, "max": quota.max_concurrent_queries, "resets": None,
            },
            "queries_per_day": {
                "used": self.store.usage.get(username, QUERIES, window),
                "max": quota.queries_per_day, "resets": resets,
            },
            "bytes_scanned_per_day": {
                "used": self.store.usage.get(username, BYTES, window),
                "max": quota.bytes_scanned_per_day, "resets": resets,
            },
            "max_result_rows": {"used": None, "max": quota.max_result_rows, "resets": None},
        }  # fmt: skip
