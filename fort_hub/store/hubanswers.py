"""The hub's answers to "whose token is this?" (table ``fort_hub_answers``), shared by every fort
service and every replica of one, so that the hub is asked once per token and cache period, not
once per service process.

Only what the hub said is kept: the user model its ``GET /hub/api/user`` returned for the token
(name, kind, the token's scopes), keyed by the token's SHA-256 (the token itself is never
stored), until ``expires``. It identifies the caller and nothing more: memberships and admin
powers are read from the store on every request, as before. A row past its ``expires`` is never
returned, and is deleted by the next :meth:`HubAnswers.put`.
"""

from __future__ import annotations

import datetime as dt
import json

from sqlalchemy import bindparam, func, select

from . import schema as S
from .core import Store, isoformat, parse_time

_GET = select(S.hub_answers.c.model, S.hub_answers.c.expires).where(
    S.hub_answers.c.token_hash == bindparam("key"), S.hub_answers.c.expires > bindparam("now")
)
_PURGE = S.hub_answers.delete().where(S.hub_answers.c.expires <= bindparam("now"))


class HubAnswers:
    """Repository over ``fort_hub_answers``: :meth:`get` and :meth:`put` by token hash."""

    def __init__(self, store: Store):
        self.store = store

    def get(self, key: str, now: dt.datetime) -> tuple[dict, dt.datetime] | None:
        """The model stored under *key* and when it expires, or None (none, or expired at
        *now*)."""
        with self.store.reading() as conn:
            row = conn.execute(_GET, {"key": key, "now": isoformat(now)}).first()
        if row is None:
            return None
        return json.loads(row[0]), parse_time(row[1])

    def put(self, key: str, model: dict, expires: dt.datetime, now: dt.datetime) -> None:
        """Store *model* under *key* until *expires* (replacing what was there), and delete the
        rows that expired by *now*."""
        values = {"token_hash": key, "model": json.dumps(model), "expires": isoformat(expires)}
        stmt = self.store.insert(S.hub_answers).values(**values)
        stmt = stmt.on_conflict_do_update(
            index_elements=[S.hub_answers.c.token_hash],
            set_={"model": stmt.excluded.model, "expires": stmt.excluded.expires},
        )
        with self.store.transaction() as conn:
            conn.execute(_PURGE, {"now": isoformat(now)})
            conn.execute(stmt)

    def count(self) -> int:
        """How many rows there are, expired ones included (for tests and the admin)."""
        with self.store.reading() as conn:
            return conn.execute(select(func.count()).select_from(S.hub_answers)).scalar_one()
