"""Query records in the fort store (table ``fort_queries``)."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import bindparam, func, select

from . import schema as S
from .core import Store, isoformat

INFLIGHT = ("queued", "running")
FINAL = ("succeeded", "failed", "cancelled")

# built once: on every query's path (a statement built per call costs more than running it)
_INFLIGHT_OF = select(func.count()).where(
    S.queries.c.username == bindparam("username"), S.queries.c.state.in_(INFLIGHT)
)
_UPDATE = S.queries.update().where(S.queries.c.id == bindparam("b_id"))
_UPDATE_IF = _UPDATE.where(S.queries.c.state.in_(bindparam("b_states", expanding=True)))
_COLUMNS = frozenset(S.queries.c.keys())


@dataclass
class QueryRecord:
    id: str
    username: str
    dataset: str
    engine: str
    sql: str
    state: str
    submitted: str
    started: str | None = None
    finished: str | None = None
    rows: int | None = None
    bytes_scanned: int | None = None
    error: str | None = None
    error_detail: str | None = None  # the engine's original message when `error` rewrote it
    engine_id: str | None = None
    result_path: str | None = None
    expires: str | None = None

    def public(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("result_path")
        d["user"] = d.pop("username")
        d["result_available"] = self.state == "succeeded" and bool(self.result_path)
        return d


def row_to_record(r) -> QueryRecord:
    return QueryRecord(**dict(r._mapping))


class QueryRecords:
    """Repository over ``fort_queries``."""

    def __init__(self, store: Store):
        self.store = store

    def insert_if_below(self, conn, rec: QueryRecord, max_inflight: int) -> int | None:
        """In *conn*'s transaction (which holds the user's lock): insert *rec* unless its user
        already has *max_inflight* queries queued or running; then return that count."""
        n = conn.execute(_INFLIGHT_OF, {"username": rec.username}).scalar_one()
        if n >= max_inflight:
            return int(n)
        conn.execute(S.queries.insert(), asdict(rec))
        return None

    def insert(self, rec: QueryRecord) -> None:
        with self.store.transaction() as conn:
            conn.execute(S.queries.insert().values(**asdict(rec)))

    def delete(self, query_id: str) -> bool:
        """Remove a record that never became a query (refused after its admission)."""
        t = S.queries
        with self.store.transaction() as conn:
            return bool(conn.execute(t.delete().where(t.c.id == query_id)).rowcount)

    def get(self, query_id: str) -> QueryRecord | None:
        t = S.queries
        with self.store.reading() as conn:
            r = conn.execute(select(t).where(t.c.id == query_id)).first()
        return row_to_record(r) if r else None

    def list(
        self, username: str | None = None, limit: int = 50, before: str | None = None
    ) -> list[QueryRecord]:
        """Newest first; *username* None lists everyone's. Page with *before* (a submitted time)."""
        t = S.queries
        stmt = select(t).order_by(t.c.submitted.desc(), t.c.id.desc()).limit(limit)
        if username is not None:
            stmt = stmt.where(t.c.username == username)
        if before:
            stmt = stmt.where(t.c.submitted < before)
        with self.store.reading() as conn:
            return [row_to_record(r) for r in conn.execute(stmt)]

    def inflight_count(self, username: str) -> int:
        t = S.queries
        with self.store.reading() as conn:
            return int(
                conn.execute(
                    select(func.count()).where(t.c.username == username, t.c.state.in_(INFLIGHT))
                ).scalar_one()
            )

    def update(self, query_id: str, only_if_state: tuple[str, ...] = (), **values: Any) -> bool:
        """Set *values*; with *only_if_state*, only while the record is in one of those states
        (so a late finish cannot overwrite a cancellation). Returns whether a row changed."""
        with self.store.transaction() as conn:
            return self.update_in(conn, query_id, only_if_state, **values)

    def update_in(
        self, conn, query_id: str, only_if_state: tuple[str, ...] = (), **values: Any
    ) -> bool:
        """:meth:`update` inside the caller's transaction *conn*."""
        unknown = values.keys() - _COLUMNS
        if unknown or not values:
            raise ValueError(f"not columns of fort_queries: {sorted(unknown) or 'none given'}")
        params = {**values, "b_id": query_id}
        if only_if_state:
            params["b_states"] = list(only_if_state)
        return (conn.execute(_UPDATE_IF if only_if_state else _UPDATE, params).rowcount or 0) > 0

    def expired_results(self, now: dt.datetime) -> list[QueryRecord]:
        t = S.queries
        with self.store.reading() as conn:
            return [
                row_to_record(r)
                for r in conn.execute(
                    select(t).where(t.c.result_path.is_not(None), t.c.expires <= isoformat(now))
                )
            ]

    def ids_with_results(self) -> set[str]:
        """Queries whose stored result is kept: those with a result, and those in flight (on
        any replica: one may be storing its result right now)."""
        t = S.queries
        keep = t.c.result_path.is_not(None) | t.c.state.in_(INFLIGHT)
        with self.store.reading() as conn:
            return {r[0] for r in conn.execute(select(t.c.id).where(keep))}
