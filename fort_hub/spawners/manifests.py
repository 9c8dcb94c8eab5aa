"""Pure builders for the Kubernetes objects and pod fragments fort-hub adds (plain dicts, tested by
comparing data and with ``kubernetes-validate``)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from typing import Any

from .identity import ROLE_ARN_ANNOTATION, TOKEN_EXPIRATION_ANNOTATION

LABEL_USER = "fort.hub/user"
LABEL_GROUPS = "fort.hub/groups"
LABEL_PROFILE = "fort.hub/profile"
MANAGED_BY = {"app.kubernetes.io/managed-by": "fort-hub"}
IDENTITY_COMPONENT = "fort-user-identity"
#: the annotation the downward-API volume turns into the notebook's AWS config file
AWS_CONFIG_ANNOTATION = "fort.hub/aws-config"
AWS_CONFIG_VOLUME = "fort-aws-config"
AWS_CONFIG_DIR = "/etc/fort/aws"
AWS_CONFIG_PATH = f"{AWS_CONFIG_DIR}/config"

_LABEL_OK = re.compile(r"(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?")
_LABEL_BAD = re.compile(r"[^-A-Za-z0-9_.]+")


def label_value(text: str) -> str:
    """*text* as a valid label value (<= 63 characters of ``[-A-Za-z0-9_.]``, alphanumeric at
    both ends). Valid input is kept; anything else is sanitized and suffixed with a short hash
    of the original so two different inputs never share a value."""
    if _LABEL_OK.fullmatch(text):
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    cleaned = _LABEL_BAD.sub("-", text).strip("-_.")[:50].strip("-_.")
    return f"{cleaned}-{digest}" if cleaned else digest


def fort_labels(username: str, groups: Iterable[str], profile: str) -> dict[str, str]:
    """``fort.hub/*`` labels for per-user metrics and logs (groups joined by ``.``)."""
    return {
        LABEL_USER: label_value(username),
        LABEL_GROUPS: label_value(".".join(sorted(groups))),
        LABEL_PROFILE: label_value(profile),
    }


def fort_annotations(username: str, groups: Iterable[str], profile: str) -> dict[str, str]:
    """The same attribution, unabridged (groups comma-separated)."""
    return {
        LABEL_USER: username,
        LABEL_GROUPS: ",".join(sorted(groups)),
        LABEL_PROFILE: profile,
    }


def identity_annotations(role_arn: str | None, token_expiration: int | None = None) -> dict:
    """The EKS pod identity webhook's annotations of an ``irsa`` ServiceAccount: the role and
    the lifetime of the web identity token it mounts (seconds); None values remove them (a
    merge patch)."""
    return {
        ROLE_ARN_ANNOTATION: role_arn or None,
        TOKEN_EXPIRATION_ANNOTATION: str(token_expiration) if token_expiration else None,
    }


def service_account_manifest(
    name: str,
    namespace: str,
    username: str,
    role_arn: str | None,
    labels: Mapping[str, str] | None = None,
    token_expiration: int | None = None,
) -> dict[str, Any]:
    """The per-user ServiceAccount of ``irsa`` mode. Labelled so a clean-up can select every one
    (``app.kubernetes.io/managed-by=fort-hub,component=fort-user-identity``). Without a role it
    carries no role annotation (no AWS access)."""
    identity = identity_annotations(role_arn, token_expiration)
    annotations = {LABEL_USER: username, **{k: v for k, v in identity.items() if v}}
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {
                **(labels or {}),
                **MANAGED_BY,
                "component": IDENTITY_COMPONENT,
                LABEL_USER: label_value(username),
            },
            "annotations": annotations,
        },
    }


def role_patch(role_arn: str | None, token_expiration: int | None = None) -> dict[str, Any]:
    """Merge patch setting (or, with None, removing) the role and token lifetime annotations."""
    return {"metadata": {"annotations": identity_annotations(role_arn, token_expiration)}}


def aws_config_volume() -> dict[str, Any]:
    """A downward-API volume that renders the pod's ``fort.hub/aws-config`` annotation as the
    file ``config``: the kubelet writes it, read-only, with no Secret or extra RBAC."""
    return {
        "name": AWS_CONFIG_VOLUME,
        "downwardAPI": {
            "defaultMode": 0o444,
            "items": [
                {
                    "path": "config",
                    "fieldRef": {"fieldPath": f"metadata.annotations['{AWS_CONFIG_ANNOTATION}']"},
                }
            ],
        },
    }


def aws_config_mount() -> dict[str, Any]:
    return {"name": AWS_CONFIG_VOLUME, "mountPath": AWS_CONFIG_DIR, "readOnly": True}
