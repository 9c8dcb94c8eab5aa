"""Roles held by one replica at a time (table ``fort_leaders``): e.g. fort-groups' periodic
reconciliation, which every replica would otherwise run against the hub at once.

A replica claims a role for *ttl* seconds and claims it again before that runs out (each pass
of the work it leads); a role that ran out, or was released at a replica's shutdown, goes to
the next replica that claims it::

    leaders = Leaders(store)
    if leaders.claim("fort-groups.reconcile", "fort-groups-0:10101", now, ttl=180):
        ...  # this replica does the work now
    leaders.release("fort-groups.reconcile", "fort-groups-0:10101")  # at shutdown
"""

from __future__ import annotations

import datetime as dt
import zlib

from sqlalchemy import select

from . import schema as S
from .core import Store, isoformat


def role_lock(name: str) -> int:
    """Advisory lock key serializing the claims of role *name* (PostgreSQL; SQLite has BEGIN
    IMMEDIATE)."""
    return 4242_2000_000 + zlib.crc32(name.encode()) % 1_000_000


class Leaders:
    """Repository over ``fort_leaders``."""

    def __init__(self, store: Store):
        self.store = store

    def claim(self, name: str, holder: str, now: dt.datetime, ttl: float) -> bool:
        """Hold role *name* until ``now + ttl`` if it is free, ran out or is *holder*'s
        already; True when *holder* holds it now, False while another replica does."""
        t = S.leaders
        expires = isoformat(now + dt.timedelta(seconds=ttl))
        with self.store.transaction() as conn:
            self.store.lock_exclusive(conn, role_lock(name))
            row = conn.execute(select(t.c.holder, t.c.expires).where(t.c.name == name)).first()
            if row is None:
                conn.execute(t.insert().values(name=name, holder=holder, expires=expires))
                return True
            if row.holder != holder and row.expires > isoformat(now):
                return False
            conn.execute(t.update().where(t.c.name == name).values(holder=holder, expires=expires))
            return True

    def release(self, name: str, holder: str) -> bool:
        """Give role *name* up if *holder* holds it (at shutdown: another replica takes it over
        at its next claim instead of after the ttl)."""
        t = S.leaders
        with self.store.transaction() as conn:
            gone = conn.execute(t.delete().where(t.c.name == name, t.c.holder == holder))
            return bool(gone.rowcount)

    def holder(self, name: str, now: dt.datetime) -> str | None:
        """Who holds role *name* now (None: nobody, or their claim ran out)."""
        t = S.leaders
        with self.store.reading() as conn:
            row = conn.execute(select(t.c.holder, t.c.expires).where(t.c.name == name)).first()
        return row.holder if row is not None and row.expires > isoformat(now) else None
