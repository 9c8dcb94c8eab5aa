"""``Identities(store)``: external identities bound to hub usernames (``fort_identities``) and
data-deletion requests (``fort_deletions``).

The provider's stable subject (Facebook's app-scoped user id) is the key: a hub username is
bound to one subject at its first login, and a later login that maps to the same username from
a different subject is refused (account takeover through a changed email).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from ..store import schema
from ..store.core import isoformat, parse_time, utcnow

if TYPE_CHECKING:
    from ..store import Store


@dataclass(frozen=True)
class Identity:
    provider: str
    subject: str
    username: str
    created: dt.datetime
    revoked: dt.datetime | None


@dataclass(frozen=True)
class Deletion:
    code: str
    provider: str
    subject: str
    username: str | None
    status: str
    requested: dt.datetime
    completed: dt.datetime | None


def _same(r, subject: str, username: str) -> bool:
    return r._mapping["subject"] == subject and r._mapping["username"] == username


def _identity(r) -> Identity:
    m = r._mapping
    return Identity(m["provider"], m["subject"], m["username"], parse_time(m["created"]),
                    parse_time(m["revoked"]))  # fmt: skip


class Identities:
    def __init__(self, store: Store, provider: str = "facebook"):
        self.store = store
        self.provider = provider

    def by_username(self, username: str) -> Identity | None:
        t = schema.identities
        with self.store.reading() as conn:
            r = conn.execute(
                select(t).where(t.c.provider == self.provider, t.c.username == username)
            ).first()
        return _identity(r) if r else None

    def by_subject(self, subject: str) -> Identity | None:
        t = schema.identities
        with self.store.reading() as conn:
            r = conn.execute(
                select(t).where(t.c.provider == self.provider, t.c.subject == subject)
            ).first()
        return _identity(r) if r else None

    def both(self, subject: str, username: str) -> tuple[Identity | None, Identity | None]:
        """(binding of *username*, binding of *subject*), read together in one query."""
        with self.store.reading() as conn:
            found = [_identity(r) for r in self._bindings(conn, subject, username)]
        by_name = next((i for i in found if i.username == username), None)
        return by_name, next((i for i in found if i.subject == subject), None)

    def bind(self, subject: str, username: str) -> Identity:
        """Bind *subject* to *username* (idempotent) and clear a revocation. Raises ValueError
        if either side is already bound to someone else."""
        current = self.by_subject(subject)
        if current and current.username == username and current.revoked is None:
            return current  # the usual re-login: no write
        with self.store.transaction() as conn:
            return self.bind_in(conn, subject, username)

    def bind_recorded(self, subject: str, username: str, record: dict[str, Any]) -> Identity:
        """:meth:`bind` and the login's audit *record* (a dict of ``AuditLog.record``'s
        arguments) in ONE store transaction: the binding and its record are committed together,
        or neither is (``AuditError``; ValueError as :meth:`bind`). One commit and one thread
        hop per login instead of a read, a binding transaction and the record's commit."""
        identity, _ = self.store.audit.record_with(
            lambda conn: self.bind_in(conn, subject, username), [record]
        )
        return identity

    def bind_in(self, conn, subject: str, username: str) -> Identity:
        """:meth:`bind` inside the caller's transaction *conn*; writes nothing when the binding
        is already there and not revoked (the usual re-login)."""
        rows = self._bindings(conn, subject, username)
        if any(_same(r, subject, username) and r._mapping["revoked"] is None for r in rows):
            return _identity(next(r for r in rows if _same(r, subject, username)))
        self.store.lock_exclusive(conn, 4242_0003)
        rows = self._bindings(conn, subject, username)  # again, under the lock
        for r in rows:
            if not _same(r, subject, username):
                m = r._mapping
                raise ValueError(
                    f"{self.provider} identity {m['subject']} is bound to {m['username']!r}"
                )
        t = schema.identities
        if rows:
            conn.execute(
                t.update()
                .where(t.c.provider == self.provider, t.c.subject == subject)
                .values(revoked=None)
            )
            created = rows[0]._mapping["created"]
        else:
            created = isoformat(utcnow())
            conn.execute(
                t.insert().values(provider=self.provider, subject=subject,
                                  username=username, created=created, revoked=None)
            )  # fmt: skip
        # what this transaction wrote: no read back
        return Identity(self.provider, subject, username, parse_time(created), None)

    def _bindings(self, conn, subject: str, username: str) -> list:
        t = schema.identities
        return conn.execute(
            select(t).where(
                t.c.provider == self.provider,
                (t.c.subject == subject) | (t.c.username == username),
            )
        ).all()

    def revoke(self, subject: str) -> Identity | None:
        """Mark the subject's stored token as revoked (deauthorize callback)."""
        t = schema.identities
        with self.store.transaction() as conn:
            conn.execute(
                t.update()
                .where(t.c.provider == self.provider, t.c.subject == subject)
                .values(revoked=isoformat(utcnow()))
            )
        return self.by_subject(subject)

    def last_login(self, username: str) -> dt.datetime | None:
        """When *username* last signed in (the newest ``auth.login`` in the audit log, which
        every hub process shares), or None."""
        for rec in self.store.audit.query(actor=username, action="auth.login", limit=1):
            return parse_time(rec.ts)
        return None

    def record_deletion(self, code: str, subject: str, username: str | None, status: str) -> None:
        now = isoformat(utcnow())
        with self.store.transaction() as conn:
            conn.execute(
                schema.deletions.insert().values(
                    code=code, provider=self.provider, subject=subject, username=username,
                    status=status, requested=now, completed=now if status == "completed" else None,
                )
            )  # fmt: skip

    def deletion(self, code: str) -> Deletion | None:
        t = schema.deletions
        with self.store.reading() as conn:
            r = conn.execute(select(t).where(t.c.code == code)).first()
        if not r:
            return None
        m = r._mapping
        return Deletion(m["code"], m["provider"], m["subject"], m["username"], m["status"],
                        parse_time(m["requested"]), parse_time(m["completed"]))  # fmt: skip
