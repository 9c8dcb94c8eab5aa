"""Atomic usage counters for quotas and rate limits, in the fort store."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import bindparam, select

from . import schema

if TYPE_CHECKING:
    from .core import Store


@dataclass(frozen=True)
class Consumed:
    """Result of :meth:`UsageCounters.try_consume`."""

    allowed: bool
    used: int  # the counter after the call (unchanged when not allowed)
    limit: int


class UsageCounters:
    """``store.usage``: counters keyed by (subject, metric, window).

    A *window* is any string naming a period, e.g. ``"2026-11-25"`` for a daily quota or
    ``"2026-11-25T17:56"`` for a per-minute rate limit; old windows are removed with
    :meth:`prune`.
    """

    def __init__(self, store: Store):
        self.store = store
        t = schema.usage
        # built once (the dialect's upsert): quotas and rate limits run it on every request
        self._add = (
            store.insert(t)
            .values(subject=bindparam("subject"), metric=bindparam("metric"),
                    window=bindparam("window"), value=bindparam("amount"))
            .on_conflict_do_update(
                index_elements=[t.c.subject, t.c.metric, t.c.window],
                set_={"value": t.c.value + bindparam("amount")},
            )
            .returning(t.c.value)
        )  # fmt: skip

    def get(self, subject: str, metric: str, window: str) -> int:
        t = schema.usage
        with self.store.reading() as conn:
            row = conn.execute(
                select(t.c.value).where(
                    t.c.subject == subject, t.c.metric == metric, t.c.window == window
                )
            ).first()
        return int(row[0]) if row else 0

    def add_in(self, conn, subject: str, metric: str, window: str, amount: int) -> int:
        """Add *amount* inside the caller's transaction *conn* and return the new value (for
        decisions that must commit together with other writes, e.g. a quota admission)."""
        params = {"subject": subject, "metric": metric, "window": window, "amount": amount}
        return int(conn.execute(self._add, params).scalar_one())

    def add(self, subject: str, metric: str, window: str, amount: int = 1) -> int:
        """Add *amount* (may be negative) and return the new value."""
        with self.store.transaction() as conn:
            return self.add_in(conn, subject, metric, window, amount)

    def try_consume(
        self, subject: str, metric: str, window: str, amount: int, limit: int
    ) -> Consumed:
        """Atomically add *amount* unless that would take the counter over *limit*."""
        with self.store.transaction() as conn:
            used = self.add_in(conn, subject, metric, window, amount)
            if used > limit:
                conn.rollback()
                return Consumed(False, used - amount, limit)
        return Consumed(True, used, limit)

    def recent(self, subject: str | None = None, limit: int = 200) -> list[dict]:
        """Counters newest window first (of *subject* only, when given), for admin views."""
        t = schema.usage
        stmt = select(t).order_by(t.c.window.desc(), t.c.subject).limit(limit)
        if subject:
            stmt = stmt.where(t.c.subject == subject)
        with self.store.reading() as conn:
            return [dict(r._mapping) for r in conn.execute(stmt)]

    def clear(self, metric: str, subject: str | None = None) -> int:
        """Delete every window of *metric* (of *subject* only, when given)."""
        t = schema.usage
        stmt = t.delete().where(t.c.metric == metric)
        if subject is not None:
            stmt = stmt.where(t.c.subject == subject)
        with self.store.transaction() as conn:
            return conn.execute(stmt).rowcount or 0

    def prune(self, metric: str, keep_from_window: str) -> int:
        """Delete windows of *metric* that sort before *keep_from_window*."""
        t = schema.usage
        with self.store.transaction() as conn:
            res = conn.execute(
                t.delete().where(t.c.metric == metric, t.c.window < keep_from_window)
            )
            return res.rowcount or 0
