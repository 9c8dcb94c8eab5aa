"""A new hub user's study groups, joined in the hub at once (with ``FortSettings.hub_groups``
on; off, the default, there is no hub copy of study groups to join).

fort-groups keeps JupyterHub's groups in line with the fort store, but it can add a user only
once the hub knows them, so before #13 a researcher signing in for the first time joined their
study's hub group at fort-groups' next pass (up to ``GroupsService.reconcile_interval`` later):
their first spawn ran without the group (KubeSpawner's ``group_overrides``, group roles), and
each pass's ``POST /hub/api/groups/{name}/users`` made the hub load and return the whole group.

:func:`join_study_groups` runs in the hub when it creates a user (the authenticator's
``add_user``): it reads the user's memberships from the policy and the fort store (the
authority, at that moment, as every decision reads them), keeps the hub groups fort-groups manages (the ``fort-groups``
mark; any other group is left to fort-groups' own rules), records a ``groups.add`` audit record
for each in one transaction, and only then adds them. If the record cannot be written, nothing
is added (fail closed) and fort-groups adds them at its next pass, recorded as usual.
"""

from __future__ import annotations

from jupyterhub import orm

from ..access import Access
from ..policy import Policy
from ..services.groups.reconcile import member_reason, owned

#: the audit actor of a group joined when the hub created the user (fort-groups records its
#: own changes as ``fort-groups``)
ACTOR = "jupyterhub"


def managed_groups(db, names) -> list[orm.Group]:
    """The hub groups among *names* that carry fort-groups' mark, by name."""
    if not names:
        return []
    rows = db.query(orm.Group).filter(orm.Group.name.in_(sorted(names))).all()
    # compared again here: a database may match names case-insensitively
    mine = (g for g in rows if g.name in names and owned({"properties": g.properties}))
    return sorted(mine, key=lambda g: g.name)


def join_records(username: str, groups: list[str], expiries: dict, policy: Policy) -> list[dict]:
    """The ``groups.add`` audit records of *username* joining *groups* (pure)."""
    return [join_record(username, g, member_reason(expiries.get(g), policy)) for g in groups]


def join_record(username: str, group: str, reason: str) -> dict:
    return {
        "actor": ACTOR, "action": "groups.add", "resource": f"groups/{group}/members/{username}",
        "decision": "allow", "reason": reason,
        "details": {"group": group, "user": username, "by": "new hub user"},
    }  # fmt: skip


async def join_study_groups(user, access: Access) -> list[str]:
    """Add *user* (JupyterHub's ``User``: ``name``, ``db``, ``orm_user``) to the fort-managed
    hub groups of the memberships that count for them now, as the decision point
    (:class:`~fort_hub.access.Access`) decides them: expired, deauthorized and undeclared
    memberships do not. Returns the names joined. Store and audit errors propagate, with
    nothing changed in the hub."""
    policy, wanted = await access.store.run(access.memberships, user.name)
    try:
        groups = [g for g in managed_groups(user.db, wanted) if g not in user.orm_user.groups]
    except Exception:
        user.db.rollback()
        raise
    if not groups:
        return []
    records = join_records(user.name, [g.name for g in groups], wanted, policy)
    await access.store.audit.arecord_many(records)
    # the hub's other requests ran meanwhile (fort-groups may have added them): check again,
    # with no await between this check and the change
    joined = {g.name for g in groups if g not in user.orm_user.groups}
    try:
        user.orm_user.groups.extend(g for g in groups if g.name in joined)
        user.db.commit()
    except Exception as e:  # recorded as decided, so also recorded as not made
        user.db.rollback()
        await access.store.audit.arecord_many([not_made(r, str(e)) for r in records])
        raise
    skipped = [r for r in records if r["details"]["group"] not in joined]
    if skipped:
        await access.store.audit.arecord_many([not_made(r, "already a member") for r in skipped])
    return sorted(joined)


def not_made(record: dict, why: str) -> dict:
    """The record that the change *record* describes was not made (as fort-groups records a
    change the hub refused)."""
    return {
        **record, "reason": f"not made: {why}"[:500],
        "details": {**record["details"], "outcome": "failed"},
    }  # fmt: skip


__all__ = ["ACTOR", "join_records", "join_study_groups", "managed_groups", "not_made"]
