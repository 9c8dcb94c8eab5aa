"""fort-groups: study groups with expiring membership, kept in the fort store (and copied into
JupyterHub groups with ``FortSettings.hub_groups`` on).

``python -m fort_hub.services.groups``. See docs/services.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os

from tornado.ioloop import PeriodicCallback
from traitlets import Bool, Float, TraitError, validate

from ... import scopes
from ...store import StoreError, isoformat
from ...store.leaders import Leaders
from ..base import FortServiceApp
from ..handler import ServiceError
from ..metrics import GroupsMetrics
from .admin import admin_handlers
from .api import api_handlers
from .members import HubGroups, MembershipAdmin
from .reconcile import Reconciler

#: the store's lease on the scheduled reconciliations (one replica runs them at a time)
RECONCILE_ROLE = "fort-groups.reconcile"


class GroupsService(FortServiceApp):
    """The fort-groups hub service."""

    name = "fort-groups"
    default_service_name = scopes.GROUPS_SERVICE
    description = "Study groups with expiring membership, kept in the fort store"

    reconcile_interval = Float(
        60.0,
        help="""Seconds between reconciliation runs (they also run at start, on every policy
        change). Each membership change is applied to the hub group in the same request and each
        expiry at its time; this periodic run is the safety net (e.g. for edits made to the hub
        groups elsewhere).

            c.GroupsService.reconcile_interval = 30
        """,
    ).tag(config=True)

    hub_users_listing_interval = Float(
        600.0,
        help="""Seconds between full listings of the hub's users by the reconciliation (a
        member is added to a hub group only once the hub knows the user). In between, a pass
        asks the hub only for the users created since the last one (newest first), so a pass
        costs the hub in proportion to the new users, not to all of them (a full listing cost
        the hub about 470 ms of CPU at 1,000 users). A user renamed in the hub is seen under
        the new name at the next full listing; a user deleted from the hub triggers one at
        once (the hub refuses the name).

            c.GroupsService.hub_users_listing_interval = 3600
        """,
    ).tag(config=True)

    admin_wait_seconds = Float(
        10.0,
        help="""How long an admin's membership change (API or admin page) waits for a
        reconciliation pass running in this replica. A change and a pass run one at a time, so
        that a pass that read a grant before the change cannot undo it in the hub group. If the
        pass (or another admin's change) still runs after this many seconds (a slow or
        unreachable hub), the change is refused and nothing is written: the API answers 503
        with a `Retry-After` header, the admin page says to send the change again.

            c.GroupsService.admin_wait_seconds = 30
        """,
    ).tag(config=True)

    @validate("reconcile_interval", "hub_users_listing_interval", "admin_wait_seconds")
    def _validate_interval(self, proposal):
        if not 0 < proposal["value"] < math.inf:
            raise TraitError(
                f"GroupsService.{proposal['trait'].name} must be positive, finite seconds, "
                f"not {proposal['value']!r}"
            )
        return proposal["value"]

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
        self.leaders = Leaders(self.fort_store)
        hub = HubGroups(self.hub_api, self.copies_to_hub)
        self.memberships = MembershipAdmin(self.fort_store, self.access, hub)
        self._expiry_timer: asyncio.TimerHandle | None = None
        # a pass and an admin's change, one at a time (bound to a loop at its first wait)
        self._reconcile_lock = asyncio.Lock()
        self._queued_pass: dict | None = None  # a scheduled pass not yet running
        self.last_reconcile: dict = {}

    async def on_start(self) -> None:
        self._reconcile_lock = asyncio.Lock()
        self._queued_pass = None
        self._reconcile_timer = PeriodicCallback(
            lambda: self.schedule_reconcile("periodic"), self.reconcile_interval * 1000
        )
        self._reconcile_timer.start()
        self.schedule_reconcile("start")

    async def shutdown(self) -> None:
        self._reconcile_timer.stop()
        if self._expiry_timer is not None:
            self._expiry_timer.cancel()
        try:  # another replica leads the reconciliation at its next pass, not after the ttl
            await self.fort_store.run(self.leaders.release, RECONCILE_ROLE, self.replica_name)
        except StoreError as e:
            self.log.warning("could not give up the reconciliation's lease: %s", e)
        await super().shutdown()

    def on_policy_change(self, policy) -> None:
        self.schedule_reconcile("policy reload")

    def schedule_reconcile(self, reason: str) -> asyncio.Task:
        """A reconciliation pass: periodic, at start and on a policy change only in the replica
        leading them (see :meth:`leading`); at an expiry in the replica whose timer fired (the
        hub group loses the member at that moment; a pass is idempotent). While a scheduled
        pass waits for the running one, later requests join it instead of queueing their own:
        it reads everything anew when it starts, so passes slower than
        `reconcile_interval` never pile up. A joined pass claims the lease if any request
        would, and runs without it if any request is an expiry. The task is shared by every
        request it took: a caller must not cancel it (wrap it in ``asyncio.shield`` to wait
        with a timeout)."""
        queued = self._queued_pass
        if queued is None:
            queued = {"reasons": [], "claim": False, "must_run": False}
            queued["task"] = task = asyncio.ensure_future(self._queued_run(queued))
            self._queued_pass = queued
            task.add_done_callback(lambda _: self._unqueue(queued))  # e.g. cancelled
            self._tasks = getattr(self, "_tasks", set())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        if reason not in queued["reasons"]:
            queued["reasons"].append(reason)
        queued["claim"] |= reason != "expiry"
        queued["must_run"] |= reason == "expiry"
        return queued["task"]

    def _unqueue(self, queued: dict) -> None:
        """Requests from now on need a pass of their own."""
        if self._queued_pass is queued:
            self._queued_pass = None

    async def _queued_run(self, queued: dict) -> list:
        async with self._reconcile_lock:
            self._unqueue(queued)  # no await before this: a later request is not lost
            reason = ", ".join(queued["reasons"])
            return await self._pass(reason, queued["claim"], queued["must_run"])

    def make_metrics(self) -> GroupsMetrics:
        return GroupsMetrics(self.service_name)

    async def reconcile(self, reason: str = "manual", *, if_leading: bool = False) -> list:
        """One reconciliation pass (serialized); with *if_leading*, only while this replica
        leads them. Errors are logged, never raised to the loop."""
        async with self._reconcile_lock:
            return await self._pass(reason, claim=if_leading, must_run=not if_leading)

    async def _pass(self, reason: str, claim: bool, must_run: bool) -> list:
        """A pass under the lock. *claim*: claim (or renew) the lease first, and unless
        *must_run*, run only while this replica holds it."""
        started = self.clock()
        if claim and not await self.leading(reason, started) and not must_run:
            return []
        try:
            changes = await self.reconciler.run(reason)
        except Exception as e:
            self.log.error("reconciliation (%s) failed: %s", reason, e)
            self.last_reconcile = {"at": isoformat(started), "reason": reason, "error": str(e)}
            self.metrics.reconciled(ok=False)
            return []
        self.metrics.reconciled(ok=True)
        await self.arm_expiry_timer()
        self.last_reconcile = {
            "at": isoformat(started), "reason": reason,
            "changes": [c.as_dict() for c in changes],
        }  # fmt: skip
        return changes

    async def leading(self, reason: str, now) -> bool:
        """Whether this replica runs the scheduled reconciliations: it claims (or keeps) the
        store's lease on them for three `reconcile_interval`s at each pass, so with several
        replicas one of them reconciles the hub at a time, and another takes over when it
        stops (at once when it shut down, else when its lease ran out)."""
        ttl = 3 * self.reconcile_interval
        try:
            held = await self.fort_store.run(
                self.leaders.claim, RECONCILE_ROLE, self.replica_name, now, ttl
            )
        except StoreError as e:
            self.log.error("reconciliation (%s) not run: the store is unavailable: %s", reason, e)
            return False
        if not held:
            self.last_reconcile = {
                "at": isoformat(now), "reason": reason, "changes": [],
                "skipped": "another replica of fort-groups runs the reconciliation",
            }  # fmt: skip
        return held

    # ----- the hub's copy follows the store ------------------------------------------------

    async def arm_expiry_timer(self) -> None:
        """Reconcile at the next expiry (policy or store), so the hub group loses an expired
        member at that moment, not at the next periodic run."""
        if self._expiry_timer is not None:
            self._expiry_timer.cancel()
            self._expiry_timer = None
        now = self.clock()
        try:
            nxt = await self.fort_store.run(self.memberships.next_expiry, now)
        except StoreError as e:
            self.log.error("cannot read the next expiry (the periodic run will catch up): %s", e)
            return
        if nxt is None:
            return
        delay = max(0.0, (nxt - now).total_seconds()) + 0.05
        if delay < self.reconcile_interval:
            self._expiry_timer = asyncio.get_running_loop().call_later(
                delay, self.schedule_reconcile, "expiry"
            )

    # an admin's change waits for a pass running here (and a pass for it): a pass that read
    # the grant before the change would otherwise undo its hub change

    @contextlib.asynccontextmanager
    async def _admins_turn(self):
        """The reconciliation lock for an admin's change, waited for at most
        `admin_wait_seconds`; else a 503 and nothing done."""
        try:
            async with asyncio.timeout(self.admin_wait_seconds):
                await self._reconcile_lock.acquire()
        except TimeoutError:
            raise ServiceError(
                503, f"fort-groups is still changing the hub groups after "
                f"{self.admin_wait_seconds:g} s (a reconciliation pass, or another admin's "
                "change); nothing was changed: send the change again",
                headers={"Retry-After": str(math.ceil(self.admin_wait_seconds))},
            ) from None  # fmt: skip
        try:
            yield
        finally:
            self._reconcile_lock.release()

    async def add_member(
        self, actor, group, user, expires, request_id, client, expiry_given=True
    ) -> dict:
        async with self._admins_turn():
            out = await self.memberships.add(
                actor, group, user, expires, request_id, client, expiry_given
            )
        await self.arm_expiry_timer()
        return out

    async def remove_member(self, actor, group, user, request_id, client) -> None:
        async with self._admins_turn():
            await self.memberships.remove(actor, group, user, request_id, client)
        await self.arm_expiry_timer()

    async def describe_user(self, username: str) -> dict:
        return await self.memberships.describe(username)
