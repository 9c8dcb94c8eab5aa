"""Reconcile JupyterHub groups with the fort policy and the fort store's memberships.

fort-groups owns the hub groups it created: they carry ``{"fort-groups": {"managed": true}}`` in
their properties. It never touches another group. For every group the policy declares, the
desired members are the policy's static members whose membership has not expired plus the active
memberships added through the admin API (``fort_memberships``, source ``api``). Members are added
and removed to match (only users the hub already knows; a user who never signed in is added on a
later run). Each change is audited *before* it is made; when the audit log is down nothing
changes.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from ...policy import Policy, dates
from ...store import StoreError
from ...store.memberships import Membership, Memberships
from ..base import HubApi, HubApiError
from .hubusers import HubUsers, paged

OWNER_KEY = "fort-groups"
#: the audit reason when a hub group member fort-groups did not put there is removed (drift)
DRIFT_REASON = "not a fort member (added to the hub group outside fort-groups)"
#: why a member leaves a hub group that fort keeps no copy of (FortSettings.hub_groups off)
COPY_OFF_REASON = "hub group copy off (FortSettings.hub_groups): membership is in the fort store"


def owned(group_model: dict) -> bool:
    props = group_model.get("properties") or {}
    marker = props.get(OWNER_KEY)
    return isinstance(marker, dict) and marker.get("managed") is True


@dataclass(frozen=True)
class Change:
    action: str  # groups.add / groups.remove / groups.expire / groups.create
    group: str
    user: str = ""
    reason: str = ""

    def as_dict(self) -> dict:
        return {
            "action": self.action,
            "group": self.group,
            "user": self.user,
            "reason": self.reason,
        }


def desired_members(
    policy: Policy, rows: list[Membership], now: dt.datetime
) -> dict[str, dict[str, dt.datetime | None]]:
    """group -> {user: expiry} that should be in each policy group (pure)."""
    out: dict[str, dict[str, dt.datetime | None]] = {g: {} for g in policy.groups}
    for g in policy.groups.values():
        for m in g.members:
            if m.expires is None or m.expires > now:
                out[g.name][m.username] = m.expires
    for r in rows:
        if r.group in out and r.active(now) and r.source == "api":
            out[r.group].setdefault(r.username, r.expires)
    return out


def expired_members(policy: Policy, rows: list[Membership], now: dt.datetime) -> set[tuple]:
    """(group, user) pairs whose membership has expired (policy or store)."""
    out = {
        (g.name, m.username)
        for g in policy.groups.values()
        for m in g.members
        if m.expires is not None and m.expires <= now
    }
    out |= {(r.group, r.username) for r in rows if not r.active(now)}
    return out


def policy_rows(policy: Policy, rows: list[Membership]) -> tuple[list, list]:
    """Store rows to write (group, user, expires) and remove (group, user) so the store's
    ``source=policy`` rows mirror the policy file (pure). Other ``api`` rows are left alone."""
    existing = {(r.group, r.username): r for r in rows}
    upserts, removals = [], []
    static = set()
    for g in policy.groups.values():
        for m in g.members:
            static.add((g.name, m.username))
            row = existing.get((g.name, m.username))
            # a run-time row for a policy member (from before #14 an admin could add one) is
            # replaced: the policy's membership is the one decisions use
            if row is None or row.source != "policy" or row.expires != m.expires:
                upserts.append((g.name, m.username, m.expires))
    for key, row in existing.items():
        if row.source == "policy" and key not in static:
            removals.append(key)
    return upserts, removals


def member_reason(expires: dt.datetime | None, policy: Policy) -> str:
    """The audit reason for adding a member: ``member through 2030-06-30`` (the last valid day
    in the policy's time zone, as people entered it), or ``member``."""
    if expires is None:
        return "member"
    shown = dates.show_expiry(expires, policy.tz)
    return f"member {shown}" if shown.startswith("until") else f"member through {shown}"


class Reconciler:
    """One reconciliation pass at a time; ``await reconciler.run(reason)`` returns the changes."""

    def __init__(self, app):
        self.app = app
        self.hub_users = HubUsers(app.hub_api, app.hub_users_listing_interval)

    @property
    def hub(self) -> HubApi:
        return self.app.hub_api

    async def run(self, reason: str = "periodic") -> list[Change]:
        """One pass. The hub's users are those :class:`HubUsers` knows; when the hub refuses a
        name as unknown (deleted since it last listed them all), it lists them all and the
        pass runs again, once."""
        try:
            return await self._run(reason)
        except HubApiError as e:
            if e.status != 400 or "No such user" not in str(e):
                raise
            self.app.log.info("reconciliation (%s): %s; listing the hub's users again", reason, e)
            self.hub_users.forget()
            return await self._run(reason)

    async def _run(self, reason: str) -> list[Change]:
        app = self.app
        policy = app.fort_policy
        now = app.clock()
        store = app.fort_store
        members = Memberships(store)
        rows = await store.run(members.list)
        upserts, removals = policy_rows(policy, rows)
        if upserts or removals:
            await store.run(members.mirror_policy, upserts, removals, app.service_name)
            rows = await store.run(members.list)
        hub_groups = {g["name"]: g for g in await paged(self.hub, "groups")}
        hub_users = await self.hub_users.current()
        rows = await self._reread_expired(rows, now)
        want = desired_members(policy, rows, now)
        expired = expired_members(policy, rows, now)
        changes: list[Change] = []
        for name in policy.groups:
            await self._sync_group(policy, name, hub_groups.get(name), want[name], expired,
                                   hub_users, changes)  # fmt: skip
        for name, group in hub_groups.items():
            if name not in policy.groups and owned(group):
                why = "group no longer in the policy"
                await self._apply([Change("groups.remove", name, user, why)
                                   for user in sorted(group.get("users", []))], changes)  # fmt: skip
        await self._drop_expired(rows, now)
        if changes:
            app.log.info("reconciliation (%s): %d change(s)", reason, len(changes))
        return changes

    async def _sync_group(self, policy, name, group, wanted, expired, hub_users, changes) -> None:
        """Bring hub group *name* (its model, None if missing) to the members in *wanted*; a
        group with no hub copy (``FortSettings.copies_to_hub``) is emptied, not created."""
        app = self.app
        copied = app.copies_to_hub(name)
        if not copied and (group is None or not owned(group)):
            return  # no copy: never created, nor adopted (a group not fort's is left alone)
        if group is None:
            group = await self._create(name, changes)
        current = await self._current_members(name, group)
        if current is None:
            return
        target = {u for u in wanted if u in hub_users} if copied else set()
        adds = [Change("groups.add", name, u, member_reason(wanted[u], policy))
                for u in sorted(target - current)]  # fmt: skip
        await self._apply(adds, changes)
        removes = []
        for user in sorted(current - target):
            if not copied:
                removes.append(Change("groups.remove", name, user, COPY_OFF_REASON))
                continue
            action = "groups.expire" if (name, user) in expired else "groups.remove"
            why = "membership expired" if action == "groups.expire" else DRIFT_REASON
            if action == "groups.remove":
                app.log.warning(
                    "hub group %r holds %r, who is not a fort member of it (added outside "
                    "fort-groups, e.g. in JupyterHub's admin page): removing; fort-groups "
                    "manages this group, add members on its admin page",
                    name, user,
                )  # fmt: skip
            removes.append(Change(action, name, user, why))
        await self._apply(removes, changes)

    async def _drop_expired(self, rows: list[Membership], now) -> None:
        """Delete the expired admin grants of *rows*, unless an admin extended one since."""
        store, members = self.app.fort_store, Memberships(self.app.fort_store)
        for r in rows:
            if r.source == "api" and not r.active(now):
                await store.run(members.remove_unchanged, r)

    async def _reread_expired(self, rows: list[Membership], now) -> list[Membership]:
        """*rows* with each expired admin grant read again, just before the hub is changed: a
        grant extended since the pass read the rows (by another replica's admin API; this
        replica's waits for the pass) keeps its member in the hub group. A grant deleted
        since stays as read: its member still leaves the hub group as expired. The expired
        grants are deleted only after the hub changes, so a failed pass leaves them for the
        next one to take out as expired, not as drift."""
        store, members, out = self.app.fort_store, Memberships(self.app.fort_store), []
        for r in rows:
            if r.source == "api" and not r.active(now):
                r = await store.run(members.get, r.group, r.username) or r
            out.append(r)
        return out

    async def _current_members(self, name: str, group: dict | None) -> set[str] | None:
        """The members of hub group *name* (*group*: its model, None when this pass created
        it), after taking it over if it may be; None: not fort's, leave it alone."""
        if group is None:
            return set()
        if not owned(group):
            # an empty group without properties (e.g. created by the hub for a role's
            # `groups`) holds nothing to lose: adopt it
            pristine = not group.get("users") and not group.get("properties")
            if not (self.app.adopt_existing_groups or pristine):
                self.app.log.warning(
                    "hub group %r exists but is not managed by fort-groups; leaving it alone "
                    "(set GroupsService.adopt_existing_groups = True to take it over)",
                    name,
                )
                return None
            await self._mark(name, group.get("properties") or {})
        return set(group.get("users", []))

    async def _create(self, name: str, changes: list[Change]) -> dict | None:
        """Create hub group *name*: None when created here; the group's model when the hub
        says it exists (409: created since this pass listed the groups, by another replica of
        fort-groups reconciling at the same time, or by someone else), which the caller then
        treats as any existing group."""
        await self._audit(Change("groups.create", name, "", "declared in the policy"))
        try:
            await self.hub.request("POST", f"groups/{name}", {"users": []})
        except HubApiError as e:
            if e.status != 409:
                raise
            self.app.log.info("hub group %r was created meanwhile (another replica?)", name)
            return await self.hub.request("GET", f"groups/{name}")
        await self._mark(name, {})
        changes.append(Change("groups.create", name))
        return None

    async def _mark(self, name: str, props: dict) -> None:
        await self.hub.request(
            "PUT", f"groups/{name}/properties", {**props, OWNER_KEY: {"managed": True}}
        )

    async def _audit(self, change: Change) -> None:
        await self.app.fort_store.audit.arecord(**self._record(change))

    def _record(self, change: Change, failed: str = "") -> dict:
        """The audit record of *change* (arguments of ``AuditLog.record``); *failed*: the
        record that the change, recorded before, was not made (the hub's answer), as a failed
        spawn's ``spawn.start`` says."""
        details = {"group": change.group, "user": change.user, "by": "reconcile"}
        return {
            "actor": self.app.service_name, "action": change.action,
            "resource": f"groups/{change.group}/members/{change.user}"
            if change.user else f"groups/{change.group}",
            "decision": "allow",
            "reason": f"not made: {failed}"[:500] if failed else change.reason,
            "details": {**details, "outcome": "failed"} if failed else details,
        }  # fmt: skip

    async def _apply(self, batch: list[Change], changes: list[Change]) -> None:
        """Audit every change of *batch* (one group, all adds or all removals; one
        transaction), then change the hub in one request, and append them to *changes*. AuditError propagates: the hub
        is not changed. One request per group, not per user: the hub loads and returns the
        whole group at every request, so a request per user made a pass quadratic in the
        group's size (1,000 researchers arriving in a study)."""
        if not batch:
            return
        await self.app.fort_store.audit.arecord_many([self._record(c) for c in batch])
        method = "POST" if batch[0].action == "groups.add" else "DELETE"
        users = [c.user for c in batch]
        try:
            await self.hub.request(method, f"groups/{batch[0].group}/users", {"users": users})
        except HubApiError as e:  # recorded as decided, so also recorded as not made
            await self.app.fort_store.audit.arecord_many(
                [self._record(c, failed=str(e)) for c in batch]
            )
            raise
        changes.extend(
            c if c.action != "groups.add" else Change(c.action, c.group, c.user) for c in batch
        )


__all__ = ["OWNER_KEY", "Change", "Reconciler", "StoreError", "desired_members", "owned"]
