"""Per-user AWS identity for notebooks: pure builders for both modes.

- ``vending`` (default): the notebook has no cloud identity of its own. It gets an AWS config
  file whose profiles run ``credential_process = fort-aws-credentials --role NAME``; that
  command fetches short-lived session credentials for the user from the fort-credentials
  service with the server's own ``JUPYTERHUB_API_TOKEN``. :func:`aws_config_text` writes it.
- ``irsa``: one Kubernetes ServiceAccount per user *and group*, ``<prefix>.<group>.<user>``
  (:func:`service_account_name`), annotated with the IAM role of that group
  (:func:`irsa_grant`); see :func:`fort_hub.spawners.manifests.service_account_manifest`. AWS
  lets a pod's token assume every role whose trust policy matches the token's subject, so each
  study role must trust only its own groups' names (:func:`irsa_trust_policy`): ``<prefix>.``
  ``<group>.*``. A group's part never holds a dot and a user's part neither, so no name of one
  group's members matches another group's pattern.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any

from ..policy import Policy

#: a group name used as it is in a ServiceAccount name: a DNS label without "--" (hashed
#: names hold "---", so no name used as it is equals a hashed one)
_PLAIN_GROUP = re.compile(r"^[a-z0-9](?:[-a-z0-9]{0,38}[a-z0-9])?\Z")
#: the first part of a ServiceAccount name (``c.FortKubeSpawner.service_account_name_template``)
SA_PREFIX = r"[a-z0-9](?:[-a-z0-9]{0,30}[a-z0-9])?"

IDENTITY_MODES = ("vending", "irsa")
ROLE_ARN_ANNOTATION = "eks.amazonaws.com/role-arn"
#: seconds the web identity token the EKS webhook mounts is valid (its default: 86400)
TOKEN_EXPIRATION_ANNOTATION = "eks.amazonaws.com/token-expiration"


def aws_config_text(
    roles: Mapping[str, str], region: str = "", command: str = "fort-aws-credentials"
) -> str:
    """The AWS config file for a user with *roles* (role name -> ARN, in preference order).

    One ``[profile NAME]`` per role and ``[default]`` = the first role. A user without roles
    gets a file without profiles, so nothing falls back to another credential source.
    """
    lines = ["# Written by fort-hub: credentials come from the fort-credentials service."]
    names = list(roles)
    sections = [("default", names[0])] if names else []
    sections += [(f"profile {name}", name) for name in names]
    for header, role in sections:
        lines += ["", f"[{header}]", f"credential_process = {command} --role {role}"]
        if region:
            lines.append(f"region = {region}")
    return "\n".join(lines) + "\n"


def irsa_grant(policy: Policy, groups: list[str]) -> tuple[str, str] | None:
    """(group, IAM role ARN) of the ServiceAccount for a member of *groups* (already
    effective): the first of their groups, in policy order, that has a role. An IRSA
    ServiceAccount holds one role; users needing several should use ``vending``."""
    order = {name: i for i, name in enumerate(policy.groups)}
    for group in sorted(groups, key=lambda g: order.get(g, len(order))):
        arn = policy.aws.roles.get(group)
        if arn:
            return group, arn
    return None


def irsa_role_held(policy: Policy, groups: list[str], role_arn: str) -> bool:
    """Whether a member of *groups* (effective now) is still granted *role_arn* by one of them:
    a running ``irsa`` server whose role no group grants any more is stopped."""
    return any(policy.aws.roles.get(g) == role_arn for g in groups)


def group_slug(group: str) -> str:
    """*group* as the middle part of a ServiceAccount name: itself if it is a DNS label
    without "--", else a lowercase form with a hash of the name (``urls_Study`` ->
    ``urls-study---1a2b3c4d``). Never holds a dot; distinct groups get distinct slugs."""
    if _PLAIN_GROUP.match(group) and "--" not in group:
        return group
    base = re.sub(r"[^a-z0-9]+", "-", group.lower()).strip("-")[:24].rstrip("-") or "g"
    return f"{base}---{hashlib.sha256(group.encode()).hexdigest()[:8]}"


def service_account_name(prefix: str, group: str, user_slug: str) -> str:
    """The ServiceAccount of *group*'s members in ``irsa`` mode: ``<prefix>.<group>.<user>``
    (*user_slug*: kubespawner's safe slug of the user name, which holds no dot)."""
    return f"{prefix}.{group_slug(group)}.{user_slug}"


def irsa_trust_policy(
    oidc_provider_arn: str, namespace: str, prefix: str, groups: list[str]
) -> dict[str, Any]:
    """The trust policy of a study role that *groups* are granted, for the cluster's IAM OIDC
    provider (``arn:aws:iam::<account>:oidc-provider/<issuer>``): web identity tokens of the
    ServiceAccounts of those groups' members in *namespace*, for STS, and no other."""
    issuer = oidc_provider_arn.partition(":oidc-provider/")[2]
    if not oidc_provider_arn.startswith("arn:aws") or not issuer:
        raise ValueError(f"not an IAM OIDC provider ARN: {oidc_provider_arn!r}")
    if not re.fullmatch(SA_PREFIX, prefix):
        raise ValueError(f"the prefix must be a DNS label without dots, not {prefix!r}")
    if not re.fullmatch(r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?", namespace):
        raise ValueError(f"the namespace must be a DNS label, not {namespace!r}")
    subjects = [f"system:serviceaccount:{namespace}:{service_account_name(prefix, g, '*')}"
                for g in sorted(set(groups))]  # fmt: skip
    return {
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"Federated": oidc_provider_arn},
            "Action": "sts:AssumeRoleWithWebIdentity",
            "Condition": {
                "StringEquals": {f"{issuer}:aud": "sts.amazonaws.com"},
                "StringLike": {f"{issuer}:sub": subjects},
            },
        }],
    }  # fmt: skip


def irsa_trust_policies(
    policy: Policy, oidc_provider_arn: str, namespace: str, prefix: str
) -> dict[str, dict[str, Any]]:
    """Role ARN -> :func:`irsa_trust_policy` for every study role of *policy*."""
    groups_of: dict[str, list[str]] = {}
    for group, arn in policy.aws.roles.items():
        if group in policy.groups and arn:
            groups_of.setdefault(arn, []).append(group)
    return {arn: irsa_trust_policy(oidc_provider_arn, namespace, prefix, groups)
            for arn, groups in sorted(groups_of.items())}  # fmt: skip
