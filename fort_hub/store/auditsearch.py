"""Finding the audit records that concern a user: what they did (the actor) *or* what was done
to them (the subject), in SQL for the store's queries and in Python for readers that walk the
chain (``fort-hub audit export --user``)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from sqlalchemy import or_

if TYPE_CHECKING:
    from .audit import AuditRecord

#: keys of a record's ``details`` that name the user an action was done to
SUBJECT_KEYS = ("user", "owner", "username")


def like_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def is_subject(rec: AuditRecord, user: str) -> bool:
    """True when *rec* describes something done to *user* (the Python twin of
    :func:`subject_clause`, for readers that walk the chain)."""
    res = rec.resource
    if res.endswith(f"/members/{user}") or res.startswith(f"server:{user}/"):
        return True
    return any(rec.details.get(k) == user for k in SUBJECT_KEYS)


def subject_clause(t, user: str):
    """SQL: the record describes something done to *user*: the resource is their membership
    (``groups/G/members/USER``) or server (``server:USER/...``), or ``details`` names them under
    one of :data:`SUBJECT_KEYS` (details are stored as sorted JSON with ``": "`` separators)."""
    u = like_escape(user)
    conds = [
        t.c.resource.like(f"%/members/{u}", escape="\\"),
        t.c.resource.like(f"server:{u}/%", escape="\\"),
    ]
    for key in SUBJECT_KEYS:
        pattern = like_escape(json.dumps({key: user})[1:-1])
        conds.append(t.c.details.like(f"%{pattern}%", escape="\\"))
    return or_(*conds)


__all__ = ["SUBJECT_KEYS", "is_subject", "like_escape", "subject_clause"]
