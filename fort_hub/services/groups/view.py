"""What the fort-groups admin page shows, as plain data (pure; tested by comparing data).

:func:`group_views` puts side by side what fort-groups wants in each hub group (the policy and
the store, exactly as :func:`fort_hub.services.groups.reconcile.desired_members` decides it) and
what the hub group holds, and explains every difference (*drift*) with its cause and what the
next reconciliation will do about it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass

from ...policy import Policy, dates
from ...store.memberships import Membership
from .reconcile import desired_members, owned

NOT_HUB_USER = "not yet a hub user (never signed in): added at the first reconciliation after"
NOT_HUB_USER += " they sign in"
MISSING = "missing from the hub group (removed outside fort-groups?): the next reconciliation"
MISSING += " adds them back"
EXTRA = "in the hub group but not a fort member (added in JupyterHub's admin page?): the next"
EXTRA += " reconciliation removes them; add them here to keep them"
EXPIRED = "membership expired: the next reconciliation removes them from the hub group"
NOT_COPIED = "kept in the fort store only (FortSettings.hub_groups is off): no hub group"


@dataclass(frozen=True)
class MemberView:
    user: str
    expires: dt.datetime | None  # the first instant no longer valid (what decisions use)
    shown: str  # "2026-12-31", "never" (what people read)
    last_day: str  # ISO date of the last valid day, "" for never
    source: str  # policy / api
    active: bool
    in_hub: str  # "yes" / "no"
    note: str  # why not in the hub group (empty when all is well)


@dataclass(frozen=True)
class GroupView:
    name: str
    description: str
    members: tuple[MemberView, ...]
    drift: tuple[tuple[str, str], ...]  # (user, cause) for hub members fort does not want
    hub_note: str  # the hub group itself is missing or not managed by fort-groups
    #: how the page shows *hub_note*: "warning" (something to fix) or "info" (a setting)
    hub_note_kind: str = "warning"


def _member_expiry(policy: Policy, group: str, rows: dict) -> dict[str, tuple]:
    """user -> (expires, source) as the decision point reads it: the policy's row first."""
    out: dict[str, tuple] = {}
    for m in policy.groups[group].members:
        out[m.username] = (m.expires, "policy")
    for (g, user), r in rows.items():
        if g == group and r.source == "api":
            out.setdefault(user, (r.expires, "api"))
    return out


def _member_view(user, exp, source, now, tz, hub: tuple | None, explain: bool) -> MemberView:
    """*hub*: (the hub group's users, the hub's users), None when the hub could not be asked;
    *explain*: say why the hub group differs (only for a group fort-groups manages)."""
    active = exp is None or exp > now
    note, in_group = "", "?"
    if hub is not None:
        in_hub, hub_users = hub
        in_group = "yes" if user in in_hub else "no"
        if explain and active and user not in in_hub:
            note = NOT_HUB_USER if user not in hub_users else MISSING
        elif explain and not active and user in in_hub:
            note = EXPIRED
    last = dates.last_day(exp, tz).isoformat() if exp else ""
    shown = dates.show_expiry(exp, tz)
    return MemberView(user, exp, shown, last, source, active, in_group, note)


def _hub_note(group: dict | None) -> str:
    if group is None:
        return "the hub group does not exist yet: the next reconciliation creates it"
    if not owned(group):
        return (
            "the hub group is not managed by fort-groups (set "
            "GroupsService.adopt_existing_groups = True to take it over): its members are not "
            "changed"
        )
    return ""


def group_views(
    policy: Policy,
    rows: list[Membership],
    hub_groups: dict[str, dict] | None,
    hub_users: set[str] | None,
    now: dt.datetime,
    copies=lambda group: True,
) -> list[GroupView]:
    """One :class:`GroupView` per policy group. *hub_groups* / *hub_users* are None when the
    hub could not be asked (then nothing is said about the hub); *copies*: whether a group is
    kept in a hub group (``FortSettings.copies_to_hub``; one that is not says so instead)."""
    want = desired_members(policy, rows, now)
    by_key = {(r.group, r.username): r for r in rows}
    tz = policy.tz
    out = []
    for g in policy.groups.values():
        if not copies(g.name):
            out.append(_store_only(policy, g, by_key, now))
            continue
        hub_group = (hub_groups or {}).get(g.name)
        in_hub = set((hub_group or {}).get("users", []))
        managed = hub_group is None or owned(hub_group)
        members = []
        hub = (in_hub, hub_users or set()) if hub_groups is not None else None
        for user, (exp, source) in sorted(_member_expiry(policy, g.name, by_key).items()):
            members.append(_member_view(user, exp, source, now, tz, hub, managed))
        listed = {m.user for m in members}
        extra = sorted(in_hub - set(want[g.name]) - listed) if managed else []
        drift = tuple((u, EXTRA) for u in extra)
        hub_note = _hub_note(hub_group) if hub_groups is not None else ""
        out.append(GroupView(g.name, g.description, tuple(members), drift, hub_note))
    return out


def _store_only(policy: Policy, g, by_key: dict, now: dt.datetime) -> GroupView:
    """The view of a policy group that has no hub copy: its members, nothing about the hub."""
    members = tuple(
        _member_view(user, exp, source, now, policy.tz, None, False)
        for user, (exp, source) in sorted(_member_expiry(policy, g.name, by_key).items())
    )
    members = tuple(dataclasses.replace(m, in_hub="—") for m in members)
    return GroupView(g.name, g.description, members, (), NOT_COPIED, "info")


__all__ = [
    "EXPIRED",
    "EXTRA",
    "MISSING",
    "NOT_COPIED",
    "NOT_HUB_USER",
    "GroupView",
    "MemberView",
    "group_views",
]
