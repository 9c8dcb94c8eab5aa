"""Leases on in-flight queries (table ``fort_query_leases``), so that several replicas of
fort-query share the work without sharing memory.

The replica that admits a query takes its lease in the admission's transaction and renews all
of its leases on a heartbeat (:meth:`QueryLeases.renew`, which also reports which of its queries
were cancelled meanwhile by another replica). A replica that dies stops renewing; any replica's
next heartbeat (or a restart of the same replica) fails the queries whose lease ran out
(:meth:`QueryLeases.reap`), with a reason, and frees their concurrency slots.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import and_, bindparam, or_, select

from . import schema as S
from .core import Store, isoformat
from .queries import INFLIGHT, QueryRecord, row_to_record

_RELEASE = S.query_leases.delete().where(S.query_leases.c.query_id == bindparam("query_id"))


class QueryLeases:
    """Repository over ``fort_query_leases``."""

    def __init__(self, store: Store):
        self.store = store

    def take_in(self, conn, query_id: str, replica: str, expires: dt.datetime) -> None:
        """Inside the caller's transaction (the admission): *replica* runs *query_id*."""
        conn.execute(
            S.query_leases.insert(),
            {"query_id": query_id, "replica": replica, "expires": isoformat(expires)},
        )

    def renew(self, replica: str, expires: dt.datetime, ids: list[str]) -> dict[str, str]:
        """Extend *replica*'s leases on the queries *ids* (those it runs now) to *expires*;
        returns ``{query_id: state}`` of them (a final state there means another replica
        cancelled or failed it). A lease of a query no longer running here is not kept alive:
        it runs out and the query is reaped."""
        ls, q = S.query_leases, S.queries
        mine = and_(ls.c.replica == replica, ls.c.query_id.in_(ids))
        with self.store.transaction() as conn:
            conn.execute(ls.update().where(mine).values(expires=isoformat(expires)))
            rows = conn.execute(
                select(q.c.id, q.c.state).join(ls, ls.c.query_id == q.c.id).where(mine)
            )
            return {r[0]: r[1] for r in rows}

    def release(self, query_id: str) -> None:
        with self.store.transaction() as conn:
            self.release_in(conn, query_id)

    def release_in(self, conn, query_id: str) -> None:
        """:meth:`release` inside the caller's transaction *conn* (e.g. the final state's)."""
        conn.execute(_RELEASE, {"query_id": query_id})

    def reap(self, now: dt.datetime, reason: str, replica: str | None = None) -> list[QueryRecord]:
        """Fail the in-flight queries whose lease ran out, that have none (left by a version
        without leases) or, with *replica*, that a previous run of this same replica held.
        Returns the records changed; their leases are removed."""
        ls, q = S.query_leases, S.queries
        stale = or_(ls.c.query_id.is_(None), ls.c.expires < isoformat(now))
        if replica is not None:
            stale = or_(stale, ls.c.replica == replica)
        stmt = (
            select(q)
            .outerjoin(ls, ls.c.query_id == q.c.id)
            .where(and_(q.c.state.in_(INFLIGHT), stale))
        )
        expired = select(ls.c.query_id).where(ls.c.expires < isoformat(now)).limit(1)
        with self.store.reading() as conn:  # most heartbeats find nothing: no write then
            if not conn.execute(stmt).first() and not conn.execute(expired).first():
                return []
        with self.store.transaction() as conn:
            rows = [row_to_record(r) for r in conn.execute(stmt)]
            ids = [r.id for r in rows]
            if ids:  # only what this call changed: two replicas reaping at once report once
                changed = set(
                    conn.execute(
                        q.update()
                        .where(q.c.id.in_(ids), q.c.state.in_(INFLIGHT))
                        .values(state="failed", error=reason, finished=isoformat(now))
                        .returning(q.c.id)
                    ).scalars()
                )
                rows = [r for r in rows if r.id in changed]
                conn.execute(ls.delete().where(ls.c.query_id.in_(ids)))
            # leases of queries that ended without their replica (cancelled elsewhere)
            conn.execute(ls.delete().where(ls.c.expires < isoformat(now)))
        return rows

    def holders(self) -> dict[str, str]:
        """``{query_id: replica}`` of every lease (for admin views and tests)."""
        ls = S.query_leases
        with self.store.reading() as conn:
            return {r[0]: r[1] for r in conn.execute(select(ls.c.query_id, ls.c.replica))}
