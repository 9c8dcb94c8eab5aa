"""Membership changes and the "me" view of fort-groups, as a plain object.

:class:`MembershipAdmin` is built from the fort store, the decision point
(:class:`fort_hub.access.Access`, which carries the policy and the clock) and a
:class:`HubGroups` that mirrors each change into the JupyterHub group in the same request
(for the groups it keeps there: ``FortSettings.copies_to_hub``).
It holds no state of its own, so any number of fort-groups processes can serve the same store.
"""

from __future__ import annotations

import datetime as dt
import logging

from ...access import Access
from ...naming import check_username_problem, is_safe_username
from ...policy import dates
from ...store import Store, isoformat
from ...store.memberships import Memberships
from ..base import HubApi, HubApiError
from ..handler import ServiceError
from .reconcile import owned

log = logging.getLogger("fort_hub.groups")


class HubGroups:
    """The hub's copy of the memberships: changed at once, best effort (reconciliation is the
    safety net)."""

    def __init__(self, hub: HubApi, copies=lambda group: True):
        self.hub = hub
        self.copies = copies

    async def apply(self, group: str, users: list[str], add: bool) -> bool | None:
        """Add or remove *users* in the hub group now; False when the hub could not be changed
        (the next reconciliation does it), None when *group* has no hub copy."""
        if not self.copies(group):
            return None
        try:
            model = await self.hub.request("GET", f"groups/{group}")
            if not owned(model):
                log.warning("hub group %s is not managed by fort-groups; not changed", group)
                return False
            await self.hub.request(
                "POST" if add else "DELETE", f"groups/{group}/users", {"users": users}
            )
            return True
        except HubApiError as e:
            log.info("hub group %s not updated now (%s); reconciliation will", group, e)
            return False


class MembershipAdmin:
    """Add, extend and remove memberships (audit first, then the store, then the hub)."""

    def __init__(self, store: Store, access: Access, hub: HubGroups):
        self.store = store
        self.access = access
        self.hub = hub
        self.members = Memberships(store)

    def show(self, expires: dt.datetime | None) -> str:
        """An expiry as people see it (``through 2026-12-31``, ``no expiry``)."""
        if expires is None:
            return "no expiry"
        text = dates.show_expiry(expires, self.access.policy().tz)
        return text if text.startswith("until") else f"through {text}"

    def _refuse_static(self, group: str, user: str, verb: str) -> None:
        for m in self.access.policy().static_members(group):
            if m.username == user:
                raise ServiceError(
                    409, f"{user!r} is a member of {group!r} through the policy file "
                    f"({self.show(m.expires)}), which this page cannot {verb}: edit the policy",
                )  # fmt: skip

    async def add(
        self, actor: str, group: str, user: str, expires: dt.datetime | None, request_id: str,
        client: str, expiry_given: bool = True,
    ) -> dict:  # fmt: skip
        """Add *user* to *group* until *expires*, or change a current membership's expiry
        (which needs *expiry_given*: a missing date never makes a membership permanent).
        Returns the membership with ``change`` (added / extended / shortened / unchanged) and
        ``message``, a sentence saying exactly what changed."""
        problem = check_username_problem(user)
        if problem:  # it would widen the user's S3 prefix (fort_hub.naming)
            raise ServiceError(400, problem)
        self._refuse_static(group, user, "change")
        store = self.store
        prior = await self._runtime_member(group, user)
        current = prior if prior and prior.active(self.access.clock()) else None
        if current is not None and not expiry_given:
            raise ServiceError(
                400, f"{user} is already a member of {group} ({self.show(current.expires)}); "
                "give a new expiry date to change it",
            )  # fmt: skip
        change, message = self._describe(group, user, current, expires)
        if change != "unchanged":
            await store.audit.arecord(
                actor, "groups.add", f"groups/{group}/members/{user}", "allow", message,
                details={"group": group, "user": user, "expires": isoformat(expires), "by": "api",
                         "change": change,
                         "previous_expires": isoformat(current.expires) if current else None},
                request_id=request_id, client=client,
            )  # fmt: skip
            await store.run(self.members.upsert, group, user, expires, "api", actor)
        in_hub = await self.hub.apply(group, [user], add=True)
        return {
            "group": group, "user": user, "expires": isoformat(expires),
            "last_day": dates.last_day(expires, self.access.policy().tz).isoformat()
            if expires else None,
            "source": "api", "in_hub_group": in_hub, "change": change, "message": message,
        }  # fmt: skip

    def _describe(self, group, user, current, expires) -> tuple[str, str]:
        if current is None:
            return "added", f"added {user} to {group} ({self.show(expires)})"
        before, after = current.expires, expires
        if before == after:
            return (
                "unchanged",
                f"{user} is already in {group} ({self.show(after)}); nothing changed",
            )
        longer = after is None or (before is not None and after > before)
        change = "extended" if longer else "shortened"
        return change, f"{change} {user} in {group}: {self.show(before)} → {self.show(after)}"

    async def _runtime_member(self, group: str, user: str):
        """*user*'s membership of *group* added through this API, or None. A ``source=policy``
        row is fort-groups' copy of the policy file (the file decides; _refuse_static): one
        left from a member the file dropped since is no membership."""
        m = await self.store.run(self.members.get, group, user)
        return m if m is not None and m.source != "policy" else None

    async def remove(self, actor: str, group: str, user: str, request_id: str, client: str) -> None:
        self._refuse_static(group, user, "remove")
        store = self.store
        if await self._runtime_member(group, user) is None:
            raise ServiceError(404, f"{user!r} is not a member of {group!r}")
        await store.audit.arecord(
            actor, "groups.remove", f"groups/{group}/members/{user}", "allow", "removed by admin",
            details={"group": group, "user": user, "by": "api"},
            request_id=request_id, client=client,
        )  # fmt: skip
        # only the grant: a pass may have mirrored the file's entry for them since
        if not await store.run(self.members.remove, group, user, "api"):
            raise ServiceError(404, f"{user!r} is not a member of {group!r} any more")
        await self.hub.apply(group, [user], add=False)

    async def describe(self, username: str) -> dict:
        """What *username* may do now: groups with expiry and source, grants, datasets,
        profiles, roles, quota and S3 prefix."""
        policy = self.access.policy()
        groups = await self.access.agroups(username)
        eff = policy.effective_groups(username, groups, self.access.clock())

        def static(group: str) -> bool:  # the decision point reads the policy's row first
            return any(m.username == username for m in policy.static_members(group))

        return {
            "user": username,
            "groups": [
                {
                    "name": g,
                    "expires": isoformat(groups[g]),
                    "last_day": dates.last_day(groups[g], policy.tz).isoformat()
                    if groups[g]
                    else None,
                    "source": "policy" if static(g) else "api",
                }
                for g in eff
            ],
            "timezone": policy.timezone,
            "grants": policy.grants_for(eff),
            "datasets": policy.datasets_for(eff, "query"),
            "profiles": [
                {"slug": p.slug, "display_name": p.display_name} for p in policy.profiles_for(eff)
            ],
            "roles": policy.roles_for(eff),
            "quota": policy.quota_for(eff).as_dict(),
            "user_prefix": policy.user_prefix(username) if is_safe_username(username) else "",
        }

    def next_expiry(self, now: dt.datetime) -> dt.datetime | None:
        """The earliest future expiry among the policy's members and the store's memberships:
        when the hub's copy must next change."""
        policy = self.access.policy()
        times = [m.expires for g in policy.groups.values() for m in g.members if m.expires]
        times += [m.expires for m in self.members.list() if m.expires]
        future = [t for t in times if t > now]
        return min(future) if future else None


__all__ = ["HubGroups", "MembershipAdmin"]
