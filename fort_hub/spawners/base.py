"""Behaviour both fort spawners share: group-filtered profiles, server-side enforcement, the
audit record of every spawn and stop, and the notebook's environment.

Whose groups count: the fort policy's static members plus the fort store's memberships, which
carry expiry, as the decision point (``fort_hub.access.Access``) reads them; a deauthorized
sign-in counts for nothing. JupyterHub's own groups are not
consulted: they hold no expiry, and fort-groups keeps them in step with the store anyway.
Groups are read again at every spawn, so a membership that expired or changed since the last
spawn takes effect at the next one.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from jupyterhub.utils import maybe_future
from tornado import web
from traitlets import Unicode, default

from .. import scopes
from ..access import Access
from ..config import FortSettings
from ..naming import check_username_problem
from ..policy import Policy, PolicyError
from ..store.audit import AuditError
from .identity import aws_config_text
from .profiles import (
    ProfileError,
    Selection,
    build_profile_list,
    options_from_form,
    validate_user_options,
)


def _summarize(options: Any) -> dict[str, str]:
    """What was asked for, bounded in size, for the audit record of a refusal."""
    if not isinstance(options, dict):
        return {"_type": type(options).__name__}
    return {str(k)[:64]: str(v)[:200] for k, v in list(options.items())[:20]}


def _applied_at_start(spawner, user_options) -> None:
    return None


def fort_check_access(policy: Policy, username: str, groups: list[str]) -> None:
    """Refuse (:class:`ProfileError`) a user in no active study group, even when a profile is
    open to everyone, and a username that would widen the user's S3 prefix
    (:mod:`fort_hub.naming`)."""
    problem = check_username_problem(username)
    if problem:
        raise ProfileError(f"{problem}; ask a fort admin to rename the account")
    if not groups:
        contact = policy.contact or "a fort admin"
        raise ProfileError(
            "you are not in any active study group, so no server can start; "
            f"to join one, ask {contact}"
        )


class SpawnDenied(web.HTTPError):
    """A spawn the policy does not allow (403), or one that could not be audited (503)."""

    def __init__(self, status: int, message: str):
        super().__init__(status, message)
        self.jupyterhub_message = message


def with_plan(base: dict[str, Any], plan: SpawnPlan | None) -> dict[str, Any]:
    """Audit details: *base* (the user, the server, the identity mode) and what *plan*
    resolved to."""
    d = dict(base)
    if plan is not None:
        s = plan.selection
        d.update(
            profile=s.slug, image=s.image, unlisted_image=s.unlisted,
            resources=s.resources(), groups=plan.groups, roles=list(plan.roles),
        )  # fmt: skip
    return d


@dataclass
class _Decision:
    """One start's inputs (read on the event loop) and its outcome (set in the store thread by
    ``FortSpawnerMixin._fort_decide``)."""

    policy: Policy
    name: str
    options: Any
    tolerations: list[dict[str, Any]]
    base: dict[str, Any]
    identity: dict[str, Any]
    plan: SpawnPlan | None = None
    refusal: str | None = None
    record: dict[str, Any] = field(default_factory=dict)


@dataclass
class SpawnPlan:
    """What one start resolved to, for the manifests, the environment and the audit log."""

    groups: list[str]
    profile_list: list[dict[str, Any]]
    selection: Selection
    roles: dict[str, str]
    region: str
    user_prefix: str
    details: dict[str, Any] = field(default_factory=dict)


class FortSpawnerMixin(FortSettings):
    """Mixed into a JupyterHub spawner (before it in the bases)."""

    identity_mode_name = "vending"

    services_url = Unicode(
        help="""Base URL of the fort services as the notebook reaches them, ending in `/`.

        The notebook gets `FORT_SERVICES_URL` and `FORT_GROUPS_URL`, `FORT_CREDENTIALS_URL`,
        `FORT_QUERY_URL` (this URL + service name + `/`). Default for `FortKubeSpawner`:
        `http://proxy-public/services/` (Z2JH's proxy Service); for `FortLocalSpawner`: derived
        from `JupyterHub.public_url` when that is set.

            c.FortKubeSpawner.services_url = "http://proxy-public/services/"
        """,
    ).tag(config=True)

    aws_credentials_command = Unicode(
        "fort-aws-credentials",
        help="""The `credential_process` command in the notebook's AWS config file.

            c.FortKubeSpawner.aws_credentials_command = "/opt/conda/bin/fort-aws-credentials"
        """,
    ).tag(config=True)

    @default("apply_user_options")
    def _fort_apply_user_options(self):
        # user_options are validated against the policy and applied in start(); a no-op here
        # keeps JupyterHub (5.3+) from warning that they are unhandled
        return _applied_at_start

    @default("server_token_scopes")
    def _fort_server_token_scopes(self):
        return scopes.server_token_scopes()

    _fort_plan: SpawnPlan | None = None
    _fort_running = False

    # ----- groups and profiles -----------------------------------------------------------------

    def fort_base_tolerations(self) -> list[dict[str, Any]]:
        """Tolerations every pod has (the chart's); profile tolerations are added to them."""
        return []

    def _policy(self) -> Policy:
        try:
            return self.fort_policy
        except (PolicyError, ValueError, OSError) as e:
            self.log.error("fort policy unavailable: %s", e)
            raise SpawnDenied(
                503, "spawning is unavailable: the fort policy could not be read"
            ) from None

    async def fort_groups(self, policy: Policy) -> list[str]:
        """The user's effective groups right now, from the decision point (fort_hub.access):
        expired memberships and a deauthorized sign-in count for nothing."""
        access = Access(self.fort_store, lambda: policy, self.fort_clock, self.admin_group)
        _, groups = await access.aeffective(self.user.name)
        return groups

    def fort_profile_list(self, spawner=None):
        """The ``profile_list`` for this user (a kubespawner ``profile_list`` callable): the
        list checked at this start, else (awaitable) the list for the user's groups now."""
        if self._fort_plan is not None:
            return self._fort_plan.profile_list
        return self._fort_current_profile_list()

    async def _fort_current_profile_list(self) -> list[dict[str, Any]]:
        policy = self._policy()
        groups = await self.fort_groups(policy)
        return build_profile_list(policy, groups, base_tolerations=self.fort_base_tolerations())

    # ----- enforcement and audit ---------------------------------------------------------------

    @default("options_from_form")
    def _fort_default_options_from_form(self):
        return self._fort_options_from_form

    def fort_parse_form(self, formdata) -> dict[str, Any]:
        """Form fields to ``user_options`` (kubespawner's field names)."""
        return options_from_form(formdata)

    async def _fort_options_from_form(self, formdata):
        """Parse the spawn form and refuse at once what this user may not pick, so the form is
        shown again with the reason (start checks again: REST requests skip the form)."""
        options = self.fort_parse_form(formdata)
        try:
            policy = self._policy()  # no study group, no server: say so on the form
            fort_check_access(policy, self.user.name, await self.fort_groups(policy))
            profile_list = await maybe_future(self.fort_profile_list())
            self.fort_check_selection(validate_user_options(options, profile_list))
        except ProfileError as e:
            raise SpawnDenied(403, f"Spawn refused: {e}") from None
        return options

    def _audit_base(self, plan: SpawnPlan | None) -> dict[str, Any]:
        """The audit details of this server (and of *plan*). On the event loop only: the user's
        and the server's names are the hub's database objects."""
        base = {"user": self.user.name, "server": self.name or "",
                "identity_mode": self.identity_mode_name}  # fmt: skip
        return with_plan(base, plan)

    async def fort_audit(self, action: str, decision: str, reason: str, details: dict) -> None:
        await self.fort_store.audit.arecord(**self._fort_record(action, decision, reason, details))

    def _fort_record(self, action: str, decision: str, reason: str, details: dict) -> dict:
        """An audit record of this server (``AuditLog.record``'s arguments); *details* hold
        the user's and the server's names (:meth:`_audit_base`), so this also runs off the
        event loop."""
        if "user" in details and "server" in details:
            user, server = details["user"], details["server"]
        else:  # e.g. details restored from an older state (on the event loop)
            user, server = self.user.name, self.name or ""
        return {
            "actor": user, "action": action, "resource": f"server:{user}/{server}",
            "decision": decision, "reason": reason, "details": details,
            "client": type(self).__name__,
        }  # fmt: skip

    async def fort_prepare(self) -> SpawnPlan:
        """Resolve and check this start in ONE store transaction: the user's groups read fresh,
        the profile list and the request checked against them, and the ``spawn.start`` audit
        record of the decision (allow or deny) appended; the server starts only once that
        transaction has committed (fail closed). One thread hop and one transaction instead of
        a read and then the record's commit."""
        self._fort_plan = None
        decision = _Decision(self._policy(), self.user.name, self.user_options,
                             self.fort_base_tolerations(), self._audit_base(None),
                             self.fort_identity_context())  # fmt: skip
        try:
            await self.fort_store.run(
                self.fort_store.audit.record_with,
                lambda conn: self._fort_decide(conn, decision),
                lambda _: [decision.record],
            )
        except AuditError as e:
            if decision.refusal is None:
                self.log.error("refusing spawn for %s: audit log unavailable: %s", decision.name, e)
                raise SpawnDenied(
                    503, "Spawn refused: the fort store or its audit log is unavailable"
                ) from None
            self.log.error("audit log unavailable while refusing a spawn for %s", self.user)
        if decision.refusal is not None:
            raise SpawnDenied(403, f"Spawn refused: {decision.refusal}")
        self._fort_plan = decision.plan
        return decision.plan

    def _fort_decide(self, conn, d: _Decision) -> bool:
        """The decision of :meth:`fort_prepare`, in the store thread and transaction *conn*:
        pure functions of the policy, the groups read in *conn* and the request (plus the
        spawner's identity details); sets ``d.plan`` or ``d.refusal``, and ``d.record``. Never
        touches the hub's database objects (``self.user``, the server's name: read on the
        event loop into *d*): the hub's one session is not for other threads."""
        access = Access(self.fort_store, lambda: d.policy, self.fort_clock, self.admin_group)
        _, groups = access.effective_in(conn, d.name)  # effective: expired memberships dropped
        policy = d.policy
        profile_list = build_profile_list(policy, groups, base_tolerations=d.tolerations)
        try:
            fort_check_access(policy, d.name, groups)
            selection = validate_user_options(d.options, profile_list)
            self.fort_check_selection(selection)
        except ProfileError as e:
            d.refusal = str(e)
            details = {**d.base, "groups": groups, "outcome": "refused",
                       "requested": _summarize(d.options)}  # fmt: skip
            d.record = self._fort_record("spawn.start", "deny", d.refusal, details)
            return True
        plan = SpawnPlan(
            groups=groups,
            profile_list=profile_list,
            selection=selection,
            roles=policy.roles_for(groups),
            region=policy.aws.region,
            user_prefix=policy.user_prefix(d.name),
        )
        identity = self.fort_identity_details(plan, policy, d.identity)
        plan.details = {**with_plan(d.base, plan), **identity}
        d.plan = plan
        reason = f"profile '{selection.slug}' is available to {groups}"
        d.record = self._fort_record("spawn.start", "allow", reason,
                                     {**plan.details, "outcome": "starting"})  # fmt: skip
        return True

    def fort_check_selection(self, selection: Selection) -> None:
        """Spawner-specific checks of a valid selection; raise :class:`ProfileError` to refuse."""

    def fort_identity_context(self) -> dict[str, Any]:
        """On the event loop, before the decision: what :meth:`fort_identity_details` needs
        from this spawner that may read the hub's database objects (a name templated from the
        user's, say)."""
        return {}

    def fort_identity_details(
        self, plan: SpawnPlan, policy: Policy, context: dict[str, Any]
    ) -> dict[str, Any]:
        """Extra identity facts for the audit record (the IRSA role, say), from *plan*, the
        decision's *policy* and :meth:`fort_identity_context`. On a store thread: pure."""
        return {}

    async def fort_run_start(self, start) -> Any:
        """Run the underlying ``start`` and audit a failure (the refusal was audited already)."""
        try:
            result = await maybe_future(start())
        except SpawnDenied:
            raise
        except (Exception, asyncio.CancelledError) as e:
            plan = self._fort_plan
            details = {**(plan.details if plan else self._audit_base(None)), "outcome": "failed"}
            try:
                await self.fort_audit("spawn.start", "allow", f"start failed: {e}"[:500], details)
            except AuditError:
                self.log.error("audit log unavailable recording a failed spawn of %s", self.user)
            raise
        self._fort_running = True
        return result

    async def fort_audit_stop(self) -> None:
        """Record ``spawn.stop`` once per started server. A stop is never blocked by the audit
        log (refusing to stop a server would be worse); a failure to record is logged."""
        if not self._fort_running:
            return
        self._fort_running = False
        plan = self._fort_plan
        known = plan.details if plan else self._audit_base_restored() or self._audit_base(None)
        details = {**known, "outcome": "stopped"}
        try:
            await self.fort_audit("spawn.stop", "allow", "server stopped", details)
        except AuditError as e:
            self.log.error("could not audit the stop of %s's server: %s", self.user.name, e)
        finally:
            self._fort_store_stopped_state()  # last: no await after it (see there)

    def _fort_store_stopped_state(self) -> None:
        """Put the state without ``fort_plan`` on the hub's spawner row at the very end of
        ``stop()``: JupyterHub's own commit right after ``stop()`` (the server and the token
        removed, no await in between) then writes it, and the state it saves after
        ``clear_state()`` is unchanged, so that is no second UPDATE and commit of the hub
        database per stop. Never before an await: the hub's one database session is shared by
        every request, and any request finishing while the row is dirty rolls the whole session
        back ("Rolling back dirty objects"), which expires every user, spawner and token object
        the hub holds (each reloaded from its database on next use)."""
        orm_spawner = getattr(self, "orm_spawner", None)
        if orm_spawner is not None:
            orm_spawner.state = self.get_state()

    # ----- notebook environment ----------------------------------------------------------------

    def fort_services_url(self) -> str:
        if self.services_url:
            return self.services_url.rstrip("/") + "/"
        public = getattr(self, "public_hub_url", "") or ""
        if public:
            root = public.rstrip("/")
            root = root[: -len("/hub")] if root.endswith("/hub") else root
            return root + "/services/"
        return ""

    def fort_credentials_command(self) -> str:
        return self.aws_credentials_command

    def fort_aws_config(self) -> str:
        plan = self._fort_plan
        command = self.fort_credentials_command()
        if plan is None:
            return aws_config_text({}, "", command)
        return aws_config_text(plan.roles, plan.region, command)

    def fort_env(self) -> dict[str, str]:
        """``FORT_*`` and AWS variables (the pinned notebook environment)."""
        plan = self._fort_plan
        env = {"FORT_USER": self.user.name}
        if plan is not None:
            env["FORT_GROUPS"] = ",".join(plan.groups)
            env["FORT_USER_PREFIX"] = plan.user_prefix
            if plan.region:
                env["AWS_DEFAULT_REGION"] = plan.region
        url = self.fort_services_url()
        if url:
            env["FORT_SERVICES_URL"] = url
            env["FORT_GROUPS_URL"] = f"{url}{scopes.GROUPS_SERVICE}/"
            env["FORT_CREDENTIALS_URL"] = f"{url}{scopes.CREDENTIALS_SERVICE}/"
            env["FORT_QUERY_URL"] = f"{url}{scopes.QUERY_SERVICE}/"
        return env

    def get_env(self):
        env = super().get_env()
        env.update(self.fort_env())
        return env

    # ----- state -------------------------------------------------------------------------------

    def get_state(self):
        state = super().get_state()
        if self._fort_running and self._fort_plan is not None:
            state["fort_plan"] = self._fort_plan.details
        return state

    def load_state(self, state):
        super().load_state(state)
        details = state.get("fort_plan") if state else None
        if details:
            # after a hub restart: enough to audit the eventual stop
            self._fort_running = True
            self._fort_restored_details = details

    def _audit_base_restored(self) -> dict[str, Any] | None:
        return getattr(self, "_fort_restored_details", None)
