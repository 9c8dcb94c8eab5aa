"""Per-user usage limits of fort-query, from the policy's ``quota_for``.

- ``max_concurrent_queries``: queued + running queries (counted from the query records, so a
  restart that fails in-flight queries also frees their slots);
- ``queries_per_day`` and ``bytes_scanned_per_day``: counters in ``fort_usage`` per UTC day;
- ``max_result_rows``: enforced while the result is written.

A refusal is :class:`QuotaExceeded` (HTTP 429) naming the limit, the use and the reset time.
"""

from __future__ import annotations

import datetime as dt
import zlib
from collections.abc import Callable
from typing import Any

from sqlalchemy import bindparam, select

from ...policy.model import Quota
from ...store import Store, schema
from ...store.core import isoformat

QUERIES = "query.count"


def user_lock(username: str) -> int:
    """Advisory lock key serializing one user's admissions (PostgreSQL; SQLite has BEGIN
    IMMEDIATE)."""
    return 4242_1000 + zlib.crc32(username.encode()) % 1_000_000


BYTES = "query.bytes_scanned"
#: today's scanned bytes of a user (built once: every admission reads it)
_SCANNED = select(schema.usage.c.value).where(
    schema.usage.c.subject == bindparam("username"),
    schema.usage.c.metric == BYTES,
    schema.usage.c.window == bindparam("window"),
)


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

    def admit(
        self, username: str, quota: Quota, insert: Callable[[Any], int | None] | None = None
    ) -> None:
        """Count one query against today's limits and, in the same transaction, call
        *insert(conn)* (which returns the user's in-flight count instead of inserting when that
        is at ``max_concurrent_queries``). Raises :class:`QuotaExceeded`; then nothing is kept."""
        with self.store.transaction() as conn:
            self.admit_in(conn, username, quota, insert)

    def admit_in(
        self, conn, username: str, quota: Quota, insert: Callable[[Any], int | None] | None = None
    ) -> None:
        """:meth:`admit` inside the caller's transaction *conn*, which must not commit when
        this raises :class:`QuotaExceeded` (a ``with store.transaction()`` block rolls back on
        the exception)."""
        window, resets = day_window(self.clock())
        self.store.lock_exclusive(conn, user_lock(username))
        scanned = conn.execute(_SCANNED, {"username": username, "window": window}).scalar()
        if (scanned or 0) >= quota.bytes_scanned_per_day:
            raise QuotaExceeded(
                "bytes_scanned_per_day", scanned, quota.bytes_scanned_per_day, resets
            )
        used = self.store.usage.add_in(conn, username, QUERIES, window, 1)
        if used > quota.queries_per_day:
            raise QuotaExceeded("queries_per_day", used - 1, quota.queries_per_day, resets)
        busy = insert(conn) if insert else None
        if busy is not None:
            raise QuotaExceeded("max_concurrent_queries", busy, quota.max_concurrent_queries, None)

    def refund(self, username: str) -> None:
        """Undo :meth:`admit` (the query was refused later, before it ran)."""
        window, _ = day_window(self.clock())
        self.store.usage.add(username, QUERIES, window, -1)

    def add_scanned_in(self, conn, username: str, nbytes: int) -> None:
        """Count *nbytes* scanned by a query of *username* today, inside the caller's
        transaction *conn* (the query's final state's)."""
        if nbytes > 0:
            window, _ = day_window(self.clock())
            self.store.usage.add_in(conn, username, BYTES, window, int(nbytes))

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
