"""fort-groups: study groups with expiring membership, kept in JupyterHub groups.

``python -m fort_hub.services.groups``. See docs/services.md.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os

from tornado import web
from tornado.ioloop import PeriodicCallback
from traitlets import Bool, Float

from ... import scopes
from ...naming import check_username_problem, is_safe_username
from ...store import isoformat
from ...store.memberships import Memberships
from ..base import FortServiceApp, HubApiError
from .admin import admin_handlers
from .api import api_handlers
from .reconcile import Reconciler, owned


class GroupsService(FortServiceApp):
    """The fort-groups hub service."""

    name = "fort-groups"
    default_service_name = scopes.GROUPS_SERVICE
    description = "Study groups with expiring membership, reconciled into JupyterHub groups"

    reconcile_interval = Float(
        60.0,
        help="""Seconds between reconciliation runs (they also run at start, on every policy
        change and after each admin change). Expired memberships are removed within this time.

            c.GroupsService.reconcile_interval = 30
        """,
    ).tag(config=True)

    adopt_existing_groups = Bool(
        False,
        help="""Take over hub groups named in the policy that fort-groups did not create
        (marks them as managed, then adds and removes their members). By default such groups
        are left alone and a warning is logged.

            c.GroupsService.adopt_existing_groups = True
        """,
    ).tag(config=True)

    def handlers(self):
        return api_handlers() + admin_handlers()

    def template_path(self) -> str:
        return os.path.join(os.path.dirname(__file__), "templates")

    def initialize(self, argv=None):
        super().initialize(argv)
        self.reconciler = Reconciler(self)
        self._reconcile_lock: asyncio.Lock | None = None
        self.last_reconcile: dict = {}

    async def on_start(self) -> None:
        self._reconcile_lock = asyncio.Lock()
        self._reconcile_timer = PeriodicCallback(
            lambda: self.schedule_reconcile("periodic"), self.reconcile_interval * 1000
        )
        self._reconcile_timer.start()
        self.schedule_reconcile("start")

    async def shutdown(self) -> None:
        self._reconcile_timer.stop()
        await super().shutdown()

    def on_policy_change(self, policy) -> None:
        self.schedule_reconcile("policy reload")

    def schedule_reconcile(self, reason: str) -> asyncio.Task:
        task = asyncio.ensure_future(self.reconcile(reason))
        self._tasks = getattr(self, "_tasks", set())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def reconcile(self, reason: str = "manual") -> list:
        """One reconciliation pass (serialized). Errors are logged, never raised to the loop."""
        async with self._reconcile_lock:
            started = self.clock()
            try:
                changes = await self.reconciler.run(reason)
            except Exception as e:
                self.log.error("reconciliation (%s) failed: %s", reason, e)
                self.last_reconcile = {"at": isoformat(started), "reason": reason, "error": str(e)}
                return []
            self._groups_cache.clear()
            self.last_reconcile = {
                "at": isoformat(started), "reason": reason,
                "changes": [c.as_dict() for c in changes],
            }  # fmt: skip
            return changes

    # ----- what handlers and pages share -----------------------------------------------------

    async def describe_user(self, username: str) -> dict:
        policy = self.fort_policy
        now = self.clock()
        groups = await self.groups_of(username)
        eff = policy.effective_groups(username, groups, now)
        rows = {
            m.group: m
            for m in await self.fort_store.run(Memberships(self.fort_store).list, None, username)
        }
        return {
            "user": username,
            "groups": [
                {
                    "name": g,
                    "expires": isoformat(groups[g]),
                    "source": rows[g].source if g in rows else "policy",
                }
                for g in eff
            ],
            "grants": policy.grants_for(eff),
            "datasets": policy.datasets_for(eff, "query"),
            "profiles": [
                {"slug": p.slug, "display_name": p.display_name} for p in policy.profiles_for(eff)
            ],
            "roles": policy.roles_for(eff),
            "quota": policy.quota_for(eff).as_dict(),
            "user_prefix": policy.user_prefix(username) if is_safe_username(username) else "",
        }

    def _static(self, group: str, user: str) -> bool:
        return any(m.username == user for m in self.fort_policy.static_members(group))

    async def add_member(
        self, actor: str, group: str, user: str, expires: dt.datetime | None, request_id: str,
        client: str,
    ) -> dict:  # fmt: skip
        """Add or extend a membership (audit first, then the store, then the hub)."""
        problem = check_username_problem(user)
        if problem:  # it would widen the user's S3 prefix (fort_hub.naming)
            raise web.HTTPError(400, problem)
        store = self.fort_store
        prior = await store.run(Memberships(store).get, group, user)
        verb = "extend" if prior and prior.active(self.clock()) else "add"
        await store.audit.arecord(
            actor, "groups.add", f"groups/{group}/members/{user}", "allow",
            f"{verb} until {isoformat(expires) or 'no expiry'}",
            details={"group": group, "user": user, "expires": isoformat(expires), "by": "api"},
            request_id=request_id, client=client,
        )  # fmt: skip
        m = await store.run(Memberships(store).upsert, group, user, expires, "api", actor)
        self._groups_cache.pop(user, None)
        in_hub = await self._hub_members(group, [user], add=True)
        return {
            "group": group, "user": user, "expires": isoformat(m.expires), "source": m.source,
            "in_hub_group": in_hub,
        }  # fmt: skip

    async def remove_member(
        self, actor: str, group: str, user: str, request_id: str, client: str
    ) -> None:
        if self._static(group, user):
            raise web.HTTPError(
                409, f"{user!r} is a member of {group!r} through the policy file; edit the policy"
            )
        store = self.fort_store
        prior = await store.run(Memberships(store).get, group, user)
        if prior is None:
            raise web.HTTPError(404, f"{user!r} is not a member of {group!r}")
        await store.audit.arecord(
            actor, "groups.remove", f"groups/{group}/members/{user}", "allow", "removed by admin",
            details={"group": group, "user": user, "by": "api"},
            request_id=request_id, client=client,
        )  # fmt: skip
        await store.run(Memberships(store).remove, group, user)
        self._groups_cache.pop(user, None)
        await self._hub_members(group, [user], add=False)

    async def _hub_members(self, group: str, users: list[str], add: bool) -> bool:
        """Apply to the hub group now; on failure the next reconciliation does it."""
        try:
            model = await self.hub_api.request("GET", f"groups/{group}")
            if not owned(model):
                self.log.warning("hub group %s is not managed by fort-groups; not changed", group)
                return False
            await self.hub_api.request(
                "POST" if add else "DELETE", f"groups/{group}/users", {"users": users}
            )
            return True
        except HubApiError as e:
            self.log.info("hub group %s not updated now (%s); reconciliation will", group, e)
            return False
