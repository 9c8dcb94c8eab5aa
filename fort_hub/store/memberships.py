"""Group memberships with expiry and provenance (``policy`` or ``api``), kept by fort-groups and
read by every plugin. JupyterHub groups hold *who* is a member; this table holds *until when*
and *where it came from*."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import bindparam, literal, select, union_all

from . import schema
from .core import isoformat, parse_time, utcnow

if TYPE_CHECKING:
    from .core import Store

SOURCES = ("policy", "api")

#: a user's memberships, or a row of NULLs while their sign-in is deauthorized; built once (a
#: statement built per call costs more than running it), every decision runs it
_FOR_USER_UNLESS_DEAUTHORIZED = union_all(
    select(literal(None).label("group_name"), literal(None).label("expires")).where(
        schema.identities.c.username == bindparam("username"),
        schema.identities.c.revoked.is_not(None),
    ),
    select(schema.memberships.c.group_name, schema.memberships.c.expires).where(
        schema.memberships.c.username == bindparam("username"),
        schema.memberships.c.source != "policy",
    ),
)


@dataclass(frozen=True)
class Membership:
    group: str
    username: str
    expires: dt.datetime | None
    source: str
    updated_by: str
    updated: dt.datetime

    def active(self, now: dt.datetime | None = None) -> bool:
        return self.expires is None or self.expires > (now or utcnow())


def _row(r) -> Membership:
    m = r._mapping
    return Membership(
        m["group_name"], m["username"], parse_time(m["expires"]), m["source"], m["updated_by"],
        parse_time(m["updated"]),
    )  # fmt: skip


class Memberships:
    """``Memberships(store)``: the ``fort_memberships`` table."""

    def __init__(self, store: Store):
        self.store = store

    def upsert(
        self,
        group: str,
        username: str,
        expires: dt.datetime | None = None,
        source: str = "api",
        updated_by: str = "",
    ) -> Membership:
        if source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, not {source!r}")
        t = schema.memberships
        now = utcnow()
        values = {
            "group_name": group, "username": username, "expires": isoformat(expires),
            "source": source, "updated_by": updated_by, "updated": isoformat(now),
        }  # fmt: skip
        stmt = self.store.insert(t).values(**values)
        stmt = stmt.on_conflict_do_update(
            index_elements=[t.c.group_name, t.c.username],
            set_={k: v for k, v in values.items() if k not in ("group_name", "username")},
        )
        with self.store.transaction() as conn:
            conn.execute(stmt)
        return Membership(group, username, expires, source, updated_by, now)

    def mirror_policy(
        self, upserts: list[tuple], removals: list[tuple[str, str]], updated_by: str = ""
    ) -> None:
        """Write the ``source=policy`` rows *upserts* ``(group, user, expires)`` and delete
        *removals* ``(group, user)``, all in one transaction (a policy of 10,000 users in
        three groups each is 30,000 rows: one transaction each took minutes)."""
        t = schema.memberships
        now = isoformat(utcnow())
        rows = [
            {"group_name": g, "username": u, "expires": isoformat(e), "source": "policy",
             "updated_by": updated_by, "updated": now}
            for g, u, e in upserts
        ]  # fmt: skip
        with self.store.transaction() as conn:
            if rows:
                stmt = self.store.insert(t)
                stmt = stmt.on_conflict_do_update(
                    index_elements=[t.c.group_name, t.c.username],
                    set_={k: stmt.excluded[k] for k in rows[0] if k not in ("group_name",
                                                                             "username")},
                )  # fmt: skip
                conn.execute(stmt, rows)
            for g, u in removals:  # only the policy's copy: an admin's grant since is kept
                conn.execute(
                    t.delete().where(t.c.group_name == g, t.c.username == u, t.c.source == "policy")
                )

    def remove(self, group: str, username: str, source: str | None = None) -> bool:
        """Delete *username*'s row of *group* (only a *source* row, when given); True if one
        was deleted."""
        t = schema.memberships
        where = [t.c.group_name == group, t.c.username == username]
        if source is not None:
            where.append(t.c.source == source)
        with self.store.transaction() as conn:
            res = conn.execute(t.delete().where(*where))
        return bool(res.rowcount)

    def remove_unchanged(self, m: Membership) -> bool:
        """Delete *m* only if its row is still as it was read (same source and ``updated``
        stamp): a pass that read it earlier must not delete what an admin wrote since."""
        t = schema.memberships
        where = (t.c.group_name == m.group, t.c.username == m.username, t.c.source == m.source,
                 t.c.updated == isoformat(m.updated))  # fmt: skip
        with self.store.transaction() as conn:
            return bool(conn.execute(t.delete().where(*where)).rowcount)

    def get(self, group: str, username: str) -> Membership | None:
        t = schema.memberships
        with self.store.reading() as conn:
            r = conn.execute(
                select(t).where(t.c.group_name == group, t.c.username == username)
            ).first()
        return _row(r) if r else None

    def list(self, group: str | None = None, username: str | None = None) -> list[Membership]:
        t = schema.memberships
        stmt = select(t).order_by(t.c.group_name, t.c.username)
        if group is not None:
            stmt = stmt.where(t.c.group_name == group)
        if username is not None:
            stmt = stmt.where(t.c.username == username)
        with self.store.reading() as conn:
            return [_row(r) for r in conn.execute(stmt)]

    def for_user(
        self, username: str, now: dt.datetime | None = None
    ) -> dict[str, dt.datetime | None]:
        """Active run-time memberships of *username* (fort-groups' API): group -> expiry (None =
        no expiry). The ``source=policy`` rows are fort-groups' copy of the policy file, which
        decisions read itself: a copy never decides (a member just removed from the file, or
        given an earlier ``expires``, would keep access until the next mirror)."""
        now = now or utcnow()
        return {
            m.group: m.expires
            for m in self.list(username=username)
            if m.source != "policy" and m.active(now)
        }

    def for_user_unless_deauthorized(
        self, username: str, now: dt.datetime | None = None
    ) -> dict[str, dt.datetime | None] | None:
        """:meth:`for_user` (run-time memberships only), or None while *username*'s sign-in is
        deauthorized (its sign-in identity revoked by Meta's deauthorize callback; signing in
        again clears it): both in one round trip, for decisions made on every request."""
        with self.store.reading() as conn:
            return self.for_user_unless_deauthorized_in(conn, username, now)

    def for_user_unless_deauthorized_in(
        self, conn, username: str, now: dt.datetime | None = None
    ) -> dict[str, dt.datetime | None] | None:
        """:meth:`for_user_unless_deauthorized` inside the caller's transaction *conn* (e.g.
        fort-query's admission: the decision and the quota in one transaction)."""
        now = now or utcnow()
        found = conn.execute(_FOR_USER_UNLESS_DEAUTHORIZED, {"username": username}).all()
        if any(r.group_name is None for r in found):
            return None
        out = {r.group_name: parse_time(r.expires) for r in found}
        return {g: e for g, e in out.items() if e is None or e > now}

    def expired(self, now: dt.datetime | None = None) -> list[Membership]:
        now = now or utcnow()
        return [m for m in self.list() if not m.active(now)]
