"""The hub's answers to "whose token is this?" (table ``fort_hub_answers``), shared by every fort
service and every replica of one, so that the hub is asked once per token and cache period, not
once per service process (see :mod:`fort_hub.services.hubauth`, which decides what the rows mean).

A row holds what the hub said for one token (and browser session): the user model its
``GET /hub/api/user`` returned, when the hub was asked, and a MAC over both keyed by the
services' shared secret and the token.
It is keyed by a hash of the token; the token itself is never stored. This repository only stores
and returns rows: how old an answer may be, and whether its MAC holds, is the reader's decision.
"""

from __future__ import annotations

import datetime as dt
from typing import NamedTuple

from sqlalchemy import bindparam, func, select

from . import schema as S
from .core import Store, isoformat

_T = S.hub_answers
_GET = select(_T.c.model, _T.c.asked, _T.c.mac).where(
    _T.c.token_hash == bindparam("key"), _T.c.asked > bindparam("since")
)
_PURGE = _T.delete().where(_T.c.asked <= bindparam("before"))


class StoredAnswer(NamedTuple):
    model: str  # JSON, as written
    asked: str  # ISO UTC, as written
    mac: str


class HubAnswers:
    """Repository over ``fort_hub_answers``: :meth:`get` and :meth:`put` by token hash."""

    def __init__(self, store: Store):
        self.store = store

    def get(self, key: str, since: dt.datetime) -> StoredAnswer | None:
        """The row stored under *key* if the hub was asked after *since*, else None."""
        with self.store.reading() as conn:
            row = conn.execute(_GET, {"key": key, "since": isoformat(since)}).first()
        return StoredAnswer(*row) if row is not None else None

    def put(self, key: str, answer: StoredAnswer, purge_before: dt.datetime | None = None) -> None:
        """Store *answer* under *key* (replacing what was there); with *purge_before*, also
        delete the rows asked before then, in the same transaction."""
        values = {"token_hash": key, **answer._asdict()}
        stmt = self.store.insert(_T).values(**values)
        stmt = stmt.on_conflict_do_update(
            index_elements=[_T.c.token_hash],
            set_={c: stmt.excluded[c] for c in StoredAnswer._fields},
        )
        with self.store.transaction() as conn:
            if purge_before is not None:
                conn.execute(_PURGE, {"before": isoformat(purge_before)})
            conn.execute(stmt)

    def count(self) -> int:
        """How many rows there are, old ones included."""
        with self.store.reading() as conn:
            return conn.execute(select(func.count()).select_from(_T)).scalar_one()
