"""A new hub user's study groups, joined in the hub at once.

fort-groups keeps JupyterHub's groups in line with the fort store, but it can add a user only
once the hub knows them, so before #13 a researcher signing in for the first time joined their
study's hub group at fort-groups' next pass (up to ``GroupsService.reconcile_interval`` later):
their first spawn ran without the group (KubeSpawner's ``group_overrides``, group roles), and
each pass's ``POST /hub/api/groups/{name}/users`` made the hub load and return the whole group.

:func:`join_study_groups` runs in the hub when it creates a user (the authenticator's
``add_user``): it reads the user's memberships from the policy and the fort store (the
authority, at that moment), keeps the hub groups fort-groups manages (the ``fort-groups``
mark; any other group is left to fort-groups' own rules), records a ``groups.add`` audit record
for each in one transaction, and only then adds them. If the record cannot be written, nothing
is added (fail closed) and fort-groups adds them at its next pass, recorded as usual.
"""

from __future__ import annotations

import asyncio

from jupyterhub import orm

from ..access import user_groups
from ..policy import Policy
from ..services.groups.reconcile import member_reason, owned
from ..store import Store

#: the audit actor of a group joined when the hub created the user (fort-groups records its
#: own changes as ``fort-groups``)
ACTOR = "jupyterhub"


def managed_groups(db, names) -> list[orm.Group]:
    """The hub groups among *names* that carry fort-groups' mark, by name."""
    if not names:
        return []
    rows = db.query(orm.Group).filter(orm.Group.name.in_(sorted(names))).all()
    return sorted((g for g in rows if owned({"properties": g.properties})), key=lambda g: g.name)


def join_records(username: str, groups: list[str], expiries: dict, policy: Policy) -> list[dict]:
    """The ``groups.add`` audit records of *username* joining *groups* (pure)."""
    return [join_record(username, g, member_reason(expiries.get(g), policy)) for g in groups]


def join_record(username: str, group: str, reason: str) -> dict:
    return {
        "actor": ACTOR, "action": "groups.add", "resource": f"groups/{group}/members/{username}",
        "decision": "allow", "reason": reason,
        "details": {"group": group, "user": username, "by": "new hub user"},
    }  # fmt: skip


async def join_study_groups(user, policy: Policy, store: Store) -> list[str]:
    """Add *user* (JupyterHub's ``User``: ``name``, ``db``, ``orm_user``) to the fort-managed
    hub groups of their active memberships; returns the names joined. Store and audit errors
    propagate, with nothing changed in the hub."""
    loop = asyncio.get_running_loop()
    wanted = await loop.run_in_executor(None, user_groups, user.name, policy, store)
    current = set(user.orm_user.groups)
    groups = [g for g in managed_groups(user.db, wanted) if g not in current]
    if not groups:
        return []
    names = [g.name for g in groups]
    records = join_records(user.name, names, wanted, policy)
    await store.audit.arecord_many(records)
    try:
        user.orm_user.groups.extend(groups)
        user.db.commit()
    except Exception as e:  # recorded as decided, so also recorded as not made
        user.db.rollback()
        await store.audit.arecord_many([not_made(r, e) for r in records])
        raise
    return names


def not_made(record: dict, error: Exception) -> dict:
    """The record that the change *record* describes was not made (as fort-groups records a
    change the hub refused)."""
    return {
        **record, "reason": f"not made: {error}"[:500],
        "details": {**record["details"], "outcome": "failed"},
    }  # fmt: skip


__all__ = ["ACTOR", "join_records", "join_study_groups", "managed_groups", "not_made"]
