"""Per-user AWS identity for notebooks: pure builders for both modes.

- ``vending`` (default): the notebook has no cloud identity of its own. It gets an AWS config
  file whose profiles run ``credential_process = fort-aws-credentials --role NAME``; that
  command fetches short-lived session credentials for the user from the fort-credentials
  service with the server's own ``JUPYTERHUB_API_TOKEN``. :func:`aws_config_text` writes it.
- ``irsa``: one Kubernetes ServiceAccount per user, annotated with the IAM role of the user's
  group (:func:`irsa_role`); see :func:`fort_hub.spawners.manifests.service_account_manifest`.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..policy import Policy

IDENTITY_MODES = ("vending", "irsa")
ROLE_ARN_ANNOTATION = "eks.amazonaws.com/role-arn"


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


def irsa_role(policy: Policy, groups: list[str]) -> str | None:
    """The IAM role ARN a ServiceAccount carries for a member of *groups* (already effective):
    the role of the first of their groups, in policy order, that has one. An IRSA
    ServiceAccount holds one role; users needing several should use ``vending``."""
    order = {name: i for i, name in enumerate(policy.groups)}
    for group in sorted(groups, key=lambda g: order.get(g, len(order))):
        arn = policy.aws.roles.get(group)
        if arn:
            return arn
    return None
