"""``FortKubeSpawner``: kubespawner 7 with policy-filtered profiles and per-user AWS identity.

Plug it into a stock Zero-to-JupyterHub hub::

    hub:
      config:
        JupyterHub:
          spawner_class: fort-kubernetes
        FortSettings:
          policy_file: /etc/fort/policy.yaml
          store_url: postgresql://fort@fort-db:5432/fort

Every ``c.KubeSpawner.*`` setting the chart writes still applies (this is a subclass). The
``profile_list`` comes from the fort policy, filtered by the user's groups at every spawn.
"""

from __future__ import annotations

import asyncio
import copy
import re
import time
from typing import Any

from kubernetes_asyncio.client import V1EnvVar
from kubernetes_asyncio.client.rest import ApiException
from kubespawner import KubeSpawner
from traitlets import Float, Integer, Unicode, default, validate

from ..store import StoreError
from ..store.audit import AuditError
from .base import FortSpawnerMixin, SpawnDenied, SpawnPlan
from .identity import (
    IDENTITY_MODES,
    ROLE_ARN_ANNOTATION,
    SA_PREFIX,
    irsa_grant,
    irsa_role_held,
    service_account_name,
)
from .manifests import (
    AWS_CONFIG_ANNOTATION,
    AWS_CONFIG_PATH,
    IDENTITY_COMPONENT,
    LABEL_USER,
    MANAGED_BY,
    aws_config_mount,
    aws_config_volume,
    fort_annotations,
    fort_labels,
    identity_annotations,
    label_value,
    role_patch,
    service_account_manifest,
)

#: the only form of ``service_account_name_template``: a DNS label, then the group and the user
SA_TEMPLATE = re.compile(rf"^({SA_PREFIX})\.\{{group\}}\.\{{username\}}\Z")
#: the exit status ``poll`` reports for a server stopped because its role is no longer granted
ROLE_REVOKED = 3

#: settings a profile may override; restored before every spawn, because JupyterHub keeps one
#: spawner object per server across restarts and kubespawner merges dict overrides into it
OVERRIDABLE = (
    "image", "cpu_guarantee", "cpu_limit", "mem_guarantee", "mem_limit", "extra_resource_limits",
    "node_selector", "tolerations", "service_account", "automount_service_account_token",
)  # fmt: skip


def _snapshot(value: Any) -> Any:
    """A copy for comparison later: the overridable dicts are flat (kubespawner merges into them
    in place) and the lists are only ever replaced."""
    if isinstance(value, dict):
        return dict(value)
    return list(value) if isinstance(value, list) else value


def _env_name(env) -> str:
    return env["name"] if type(env) is dict else env.name


class FortKubeSpawner(FortSpawnerMixin, KubeSpawner):
    """KubeSpawner whose profiles, identity and audit follow the fort policy."""

    #: set once poll() found the server's role no longer granted (until the next start)
    _fort_revoked = False

    aws_identity_mode = Unicode(
        "vending",
        help="""How a notebook pod gets AWS credentials: `vending` or `irsa`.

        - `vending` (default): the pod has no cloud identity. An AWS config file (mounted at
          `/etc/fort/aws/config`, `AWS_CONFIG_FILE`) has one profile per role of the user's
          groups with `credential_process = fort-aws-credentials --role NAME`, which asks the
          fort-credentials service with the server's own API token. No IAM role per user.
        - `irsa`: a ServiceAccount per user and group (`service_account_name_template`)
          annotated `eks.amazonaws.com/role-arn` with the role of the user's first group that
          has one; each study role must trust only its groups' ServiceAccounts (`fort-hub
          irsa-trust` prints the trust policies). A server whose role no group of the user
          grants any more is stopped at its next poll (`c.Spawner.poll_interval`). The hub
          needs the RBAC of the chart `k8s/irsa-rbac`.

            c.FortKubeSpawner.aws_identity_mode = "irsa"
        """,
    ).tag(config=True)

    @validate("aws_identity_mode")
    def _validate_mode(self, proposal):
        if proposal["value"] not in IDENTITY_MODES:
            raise ValueError(
                f"FortKubeSpawner.aws_identity_mode must be one of {IDENTITY_MODES}, "
                f"not {proposal['value']!r}"
            )
        return proposal["value"]

    service_account_name_template = Unicode(
        "fort.{group}.{username}",
        help="""Name of the ServiceAccount of a user and the group whose role it carries, in
        `irsa` mode: `<prefix>.{group}.{username}`, where `{group}` is the group's name (or a
        hashed form of it unless it is a DNS label of at most 40 characters without `--`) and
        `{username}` kubespawner's "safe" slug of the user name (whatever `slug_scheme` says).
        Only the prefix may change: each study role's trust policy admits
        `system:serviceaccount:<namespace>:<prefix>.<group>.*` (see `fort-hub irsa-trust`),
        and neither part holds a dot, so one group's names never match another group's
        pattern. A user whose groups have no role gets no ServiceAccount of fort's.

            c.FortKubeSpawner.service_account_name_template = "notebook.{group}.{username}"
        """,
    ).tag(config=True)

    @validate("service_account_name_template")
    def _validate_sa_template(self, proposal):
        if not SA_TEMPLATE.match(proposal["value"]):
            raise ValueError(
                "FortKubeSpawner.service_account_name_template must be <prefix>.{group}."
                "{username} with a DNS label as the prefix (the study roles' trust policies "
                f"match <prefix>.<group>.*), not {proposal['value']!r}"
            )
        return proposal["value"]

    irsa_token_expiration = Integer(
        3600,
        help="""Seconds the web identity token of an `irsa` pod is valid
        (`eks.amazonaws.com/token-expiration` on its ServiceAccount; the EKS webhook's
        default is 86400). STS never asks whether the pod still runs: a copy of the token taken
        out of a pod whose server was stopped (a membership ended) can still be exchanged for
        the role's credentials until it expires. 600 to 86400.

            c.FortKubeSpawner.irsa_token_expiration = 1800
        """,
    ).tag(config=True)

    @validate("irsa_token_expiration")
    def _validate_token_expiration(self, proposal):
        if not 600 <= proposal["value"] <= 86400:
            raise ValueError(
                "FortKubeSpawner.irsa_token_expiration must be 600 to 86400 seconds, not "
                f"{proposal['value']}"
            )
        return proposal["value"]

    irsa_settle_time = Float(
        1.0,
        help="""Seconds to wait after creating or re-annotating a ServiceAccount before the pod
        is created, so the EKS pod-identity webhook's cache sees the new role (the webhook
        race). The ServiceAccount is also read back until it carries the role.

            c.FortKubeSpawner.irsa_settle_time = 2
        """,
    ).tag(config=True)

    @default("services_url")
    def _default_services_url(self):
        # Z2JH's proxy Service; the services are routed by the proxy under /services/
        return "http://proxy-public/services/"

    @property
    def identity_mode_name(self):
        return self.aws_identity_mode

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.profile_list and not callable(self.profile_list):
            self.log.warning(
                "FortKubeSpawner ignores the configured KubeSpawner.profile_list: profiles "
                "come from the fort policy (%s)",
                self.policy_file or "$FORT_POLICY_FILE",
            )
        self.profile_list = self.fort_profile_list
        self._fort_base = {name: copy.deepcopy(getattr(self, name)) for name in OVERRIDABLE}

    def _fort_restore(self, override: Any) -> None:
        """Put back the configured value of every setting a profile may have overridden.

        Skipped when the same profile override is applied again to settings nobody changed since
        (restoring and re-applying would give the same values): the common re-spawn.
        """
        applied = self._fort_applied
        if (
            applied is not None
            and applied[0] == override
            and all(getattr(self, name) == value for name, value in applied[1].items())
        ):
            return
        for name, value in self._fort_base.items():
            if getattr(self, name) != value:
                setattr(self, name, copy.deepcopy(value))

    _fort_applied: tuple[Any, dict[str, Any]] | None = None

    def fort_parse_form(self, formdata) -> dict[str, Any]:
        return KubeSpawner._options_from_form(self, formdata)

    def fort_base_tolerations(self) -> list[dict[str, Any]]:
        return list(self._sorted_dict_values(self._fort_base["tolerations"]) or [])

    def fort_identity_context(self) -> dict[str, Any]:
        if self.aws_identity_mode != "irsa":
            return {}
        prefix = SA_TEMPLATE.match(self.service_account_name_template).group(1)
        # the "safe" slug whatever slug_scheme says: [a-z0-9-] only (no dot), at most 48
        user = self._expand_user_properties("{username}", slug_scheme="safe")
        return {"sa_prefix": prefix, "user_slug": user}

    def fort_identity_details(self, plan: SpawnPlan, policy, context) -> dict[str, Any]:
        if not context:
            return {}
        grant = irsa_grant(policy, plan.groups)
        if grant is None:
            return {"service_account": None, "role_arn": None}
        group, arn = grant
        name = service_account_name(context["sa_prefix"], group, context["user_slug"])
        return {"service_account": name, "role_arn": arn, "role_group": group}

    # ----- spawn -------------------------------------------------------------------------------

    async def start(self):
        self._fort_plan = None
        self._fort_revoked = False
        return await self.fort_run_start(super().start)

    async def load_user_options(self):
        plan = self._fort_plan or await self.fort_prepare()
        name = plan.details.get("service_account")
        key = (plan.selection.override, self.aws_identity_mode, name)
        self._fort_restore(key)
        self._fort_applied = None
        await super().load_user_options()
        if self.aws_identity_mode == "irsa" and name:  # no role: no ServiceAccount of fort's
            self.service_account = name
            self.automount_service_account_token = True
            await self.ensure_service_account(name, plan.details["role_arn"])
        self._fort_applied = (key, {n: _snapshot(getattr(self, n)) for n in OVERRIDABLE})

    async def get_pod_manifest(self):
        pod = await super().get_pod_manifest()
        plan = self._fort_plan
        if plan is None:
            return pod
        slug = plan.selection.slug
        pod.metadata.labels.update(fort_labels(self.user.name, plan.groups, slug))
        pod.metadata.annotations.update(fort_annotations(self.user.name, plan.groups, slug))
        notebook = pod.spec.containers[0]
        # the fort variables go first: they reference nothing, so variables configured in
        # c.KubeSpawner.environment may refer to them as $(FORT_USER) etc.
        fort = self.fort_env()
        notebook.env = [V1EnvVar(name=k, value=v) for k, v in fort.items()] + [
            e for e in notebook.env or () if _env_name(e) not in fort
        ]
        if self.aws_identity_mode == "vending":
            pod.metadata.annotations[AWS_CONFIG_ANNOTATION] = self.fort_aws_config()
            pod.spec.volumes = [*(pod.spec.volumes or []), aws_config_volume()]
            notebook.volume_mounts = [*(notebook.volume_mounts or []), aws_config_mount()]
        return pod

    def get_env(self):
        # kubespawner's environment only: get_pod_manifest adds the fort variables to the
        # container directly (kubespawner's per-variable processing is the costly part of a
        # manifest, and they need none of it)
        return KubeSpawner.get_env(self)

    def fort_env(self) -> dict[str, str]:
        env = super().fort_env()
        if self.aws_identity_mode == "vending":
            env["AWS_CONFIG_FILE"] = AWS_CONFIG_PATH
        return env

    async def stop(self, now=False):
        await super().stop(now=now)
        await self.fort_audit_stop()

    # ----- irsa ServiceAccount -----------------------------------------------------------------

    async def _k8s(self, call, *args, **kwargs):
        return await asyncio.wait_for(call(*args, **kwargs), self.k8s_api_request_timeout)

    async def ensure_service_account(self, name: str, role_arn: str) -> dict:
        """Create the user's ServiceAccount *name* (of one group) or patch its role, then wait
        until the API serves it with that role (and ``irsa_settle_time`` for the webhook's
        cache)."""
        ns = self.namespace
        labels = self._build_common_labels({})
        want = identity_annotations(role_arn, self.irsa_token_expiration)
        try:
            current = await self._k8s(self.api.read_namespaced_service_account, name, ns)
            have = current.metadata.annotations or {}
            changed = any(have.get(k) != v for k, v in want.items())
            if changed:
                self.log.info("ServiceAccount %s/%s: %s -> %s", ns, name,
                              {k: have.get(k) for k in want}, want)  # fmt: skip
                patch = role_patch(role_arn, self.irsa_token_expiration)
                await self._k8s(self.api.patch_namespaced_service_account, name, ns, patch)
        except ApiException as e:
            if e.status != 404:
                raise SpawnDenied(503, f"Spawn failed: cannot read ServiceAccount {name}") from e
            manifest = service_account_manifest(
                name, ns, self.user.name, role_arn, labels, self.irsa_token_expiration
            )
            self.log.info("Creating ServiceAccount %s/%s (role %s)", ns, name, role_arn)
            try:
                await self._k8s(self.api.create_namespaced_service_account, ns, manifest)
            except ApiException as e2:
                if e2.status != 409:
                    raise SpawnDenied(503, f"Spawn failed: cannot create {name}") from e2
            changed = True
        return await self._wait_service_account(name, ns, role_arn, changed)

    async def _wait_service_account(self, name, ns, role_arn, changed) -> dict:
        deadline = time.monotonic() + self.k8s_api_request_retry_timeout
        delay = 0.05
        while True:
            try:
                sa = await self._k8s(self.api.read_namespaced_service_account, name, ns)
                if (sa.metadata.annotations or {}).get(ROLE_ARN_ANNOTATION) == role_arn:
                    break
            except ApiException as e:
                if e.status != 404:
                    raise
            if time.monotonic() > deadline:
                raise SpawnDenied(503, f"Spawn failed: ServiceAccount {name} did not appear")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)
        if changed and self.irsa_settle_time > 0:
            await asyncio.sleep(self.irsa_settle_time)
        return sa.to_dict()

    async def delete_forever(self):
        """On user deletion, also remove the user's ServiceAccounts (``irsa`` mode): every one
        labelled with the user, whichever group it was for."""
        await super().delete_forever()
        if self.aws_identity_mode != "irsa" or self.name:
            return  # named servers share the user's ServiceAccounts
        selector = ",".join(f"{k}={v}" for k, v in {
            **MANAGED_BY, "component": IDENTITY_COMPONENT, LABEL_USER: label_value(self.user.name),
        }.items())  # fmt: skip
        found = await self._k8s(
            self.api.list_namespaced_service_account, self.namespace, label_selector=selector
        )
        for sa in found.items:
            name = sa.metadata.name
            if (sa.metadata.annotations or {}).get(LABEL_USER) != self.user.name:
                continue  # another user whose name has the same label value
            try:
                await self._k8s(self.api.delete_namespaced_service_account, name, self.namespace)
            except ApiException as e:
                if e.status != 404:
                    raise
            self.log.info("Deleted ServiceAccount %s/%s of %s", self.namespace, name,
                          self.user.name)  # fmt: skip

    # ----- irsa: a role no longer granted ends the server ----------------------------------------

    async def poll(self):
        """kubespawner's poll; in ``irsa`` mode also stops a running server whose AWS role no
        group of the user grants any more (a membership ended or expired, or the policy
        changed), decided from the fort store and the policy now: the pod's token keeps
        refreshing its credentials for as long as it runs, so only stopping ends them."""
        if self._fort_revoked:  # stopped for its role (or being stopped): stays so until a start
            return ROLE_REVOKED
        status = await super().poll()
        if status is not None or self.aws_identity_mode != "irsa":
            return status
        role = self.fort_running_role()
        if not role:
            return None
        try:
            groups = await self.fort_groups(self._policy())
            held = irsa_role_held(self._policy(), groups, role)
        except (SpawnDenied, StoreError) as e:  # unknown now: asked again at the next poll
            self.log.error("could not check the AWS role of %s's server: %s", self.user.name, e)
            return None
        if held or self._fort_revoked:  # another poll revoked it meanwhile
            return ROLE_REVOKED if self._fort_revoked else None
        self._fort_revoked = True
        await self.fort_revoke(role, groups)
        return ROLE_REVOKED

    def fort_running_role(self) -> str | None:
        """The IAM role the running server's ServiceAccount carries (from its start's plan, or
        the state saved for it across a hub restart)."""
        plan = self._fort_plan
        details = plan.details if plan else self._audit_base_restored() or {}
        return details.get("role_arn") if self._fort_running else None

    async def fort_revoke(self, role: str, groups: list[str]) -> None:
        """Record why, then stop the server (a stop is never blocked by the audit log)."""
        reason = f"AWS role {role} is no longer granted to any of {groups}: server stopped"
        self.log.warning("%s's server: %s", self.user.name, reason)
        plan = self._fort_plan
        details = {**(plan.details if plan else self._audit_base_restored() or {}),
                   "outcome": "revoked"}  # fmt: skip
        try:
            await self.fort_audit("spawn.revoke", "deny", reason, details)
        except AuditError as e:
            self.log.error("could not audit revoking %s's server: %s", self.user.name, e)
        await self.stop(now=True)
