"""The single decision point: who is a member of what, and who is a fort admin, *now*.

Every grant of access (a query, a download, credentials, a spawn, a membership change, the
audit log) is decided from the fort store and the policy at the moment of the request. A hub
group, a hub scope or a cache is a copy, never the authority: JupyterHub's groups follow the
store (fort-groups updates them in the same request and at each expiry), and a hub scope such as
``custom:fort-groups:admin`` only says which *kind* of caller this is. A user's admin powers
come from a current, unexpired membership of ``admin_group`` (``admins``), checked here per
request.

:class:`Access` is a plain object built from a store, a policy source and a clock, so any
number of processes make the same decision from the same store::

    access = Access(store, lambda: settings.fort_policy, clock)
    access.groups("alice")          # {"urls-study": datetime(...) | None}
    access.effective("alice")       # (policy, ["urls-study"])
    access.is_admin("admin")        # True while the admins membership lasts

Nothing is cached: each call reads the user's memberships and whether their sign-in was
deauthorized (one round trip over two indexed tables), so there is no copy to outlive an expiry, a removal, a
deauthorization or a policy change.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from .policy import Policy
from .store import Store
from .store.memberships import Memberships

DEFAULT_ADMIN_GROUP = "admins"


def user_groups(
    username: str,
    policy: Policy,
    store: Store | None = None,
    now: dt.datetime | None = None,
    stored: dict[str, dt.datetime | None] | None = None,
) -> dict[str, dt.datetime | None]:
    """A user's active memberships: group -> expiry, from the policy's static members and the
    fort store's run-time memberships (fort-groups' API; read from *store*, or given as
    *stored*; the store's copy of the policy is not read), limited to groups the policy
    declares."""
    now = now or dt.datetime.now(dt.UTC)
    out: dict[str, dt.datetime | None] = {}
    for group in policy.groups.values():
        for m in group.members:
            if m.username == username and (m.expires is None or m.expires > now):
                out[group.name] = m.expires
    if stored is None and store is not None:
        stored = Memberships(store).for_user(username, now)
    for name, expires in (stored or {}).items():
        if name in policy.groups:
            out.setdefault(name, expires)
    return out


class Access:
    """Membership and admin decisions from *store* and the policy, at the time *clock* says."""

    def __init__(
        self,
        store: Store,
        policy: Callable[[], Policy],
        clock: Callable[[], dt.datetime],
        admin_group: str = DEFAULT_ADMIN_GROUP,
    ):
        self.store = store
        self.policy = policy
        self.clock = clock
        self.admin_group = admin_group

    def groups(self, username: str) -> dict[str, dt.datetime | None]:
        """*username*'s active groups (policy static members + fort store memberships) with
        their expiry; none while their sign-in was deauthorized (until they sign in again).
        Raises StoreError when the store cannot be read (callers fail closed)."""
        return self._groups(username, self.policy(), self.clock())

    def effective(self, username: str) -> tuple[Policy, list[str]]:
        """(policy, the groups that count for *username* now), as the policy decides them."""
        policy, now = self.policy(), self.clock()
        groups = self._groups(username, policy, now)
        return policy, policy.effective_groups(username, groups, now)

    def memberships(self, username: str) -> tuple[Policy, dict[str, dt.datetime | None]]:
        """(policy, {group: expiry}) of the memberships that count for *username* now: the groups
        of :meth:`effective`, each with its expiry."""
        policy, now = self.policy(), self.clock()
        groups = self._groups(username, policy, now)
        return policy, {g: groups[g] for g in policy.effective_groups(username, groups, now)}

    def at_sign_in(self, username: str) -> list[str]:
        """The groups that let *username* sign in now: :meth:`effective`, except that a
        deauthorized sign-in counts (signing in again is how a user re-authorizes; the login
        that follows clears the mark). A stale store copy of a static policy entry does not
        outlive that entry's ``expires``."""
        policy, now = self.policy(), self.clock()
        groups = user_groups(username, policy, self.store, now)
        return policy.effective_groups(username, groups, now)

    def effective_in(
        self, conn, username: str, policy: Policy | None = None
    ) -> tuple[Policy, list[str]]:
        """:meth:`effective` read inside the caller's transaction *conn* (a decision and the
        write it allows in one transaction, e.g. fort-query's admission), with *policy* when
        the caller read it before the transaction (a policy reload must not hold the store's
        write lock)."""
        policy, now = policy or self.policy(), self.clock()
        groups = self._groups(username, policy, now, conn)
        return policy, policy.effective_groups(username, groups, now)

    def _groups(self, username: str, policy: Policy, now: dt.datetime, conn=None) -> dict:
        members = Memberships(self.store)
        stored = (
            members.for_user_unless_deauthorized(username, now)
            if conn is None
            else members.for_user_unless_deauthorized_in(conn, username, now)
        )
        return {} if stored is None else user_groups(username, policy, None, now, stored)

    def is_admin(self, username: str) -> bool:
        """True while *username*'s membership of the admin group counts (:meth:`effective`:
        unexpired, and not ended by a past ``expires`` of a static policy entry)."""
        return self.admin_group in self.effective(username)[1]

    async def agroups(self, username: str) -> dict[str, dt.datetime | None]:
        return await self.store.run(self.groups, username)

    async def aeffective(self, username: str) -> tuple[Policy, list[str]]:
        return await self.store.run(self.effective, username)

    async def ais_admin(self, username: str) -> bool:
        return await self.store.run(self.is_admin, username)


__all__ = ["DEFAULT_ADMIN_GROUP", "Access", "user_groups"]
